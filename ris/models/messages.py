"""HL7 v2 traffic: the inbound message log, outbound destinations and the durable outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ris.db import Base, UTCDateTime, utcnow


class InboundMessage(Base):
    """One HL7 message received on the MLLP door, with the ACK Placa answered.

    A message is identified by its sender (MSH-3^MSH-4) and control ID (MSH-10): a second
    delivery is answered with the stored ACK and applied only once.
    """

    __tablename__ = "hl7_inbound"
    __table_args__ = (
        UniqueConstraint("sender", "control_id", name="uq_hl7_inbound_sender_control_id"),
        Index("ix_hl7_inbound_type_received", "message_type", "received_at"),
        Index("ix_hl7_inbound_status_received", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    sender: Mapped[str] = mapped_column(String(128))  # MSH-3^MSH-4
    control_id: Mapped[str | None] = mapped_column(String(64))  # MSH-10
    message_type: Mapped[str] = mapped_column(String(16))  # TYPE^EVENT
    version: Mapped[str] = mapped_column(String(16), default="")
    peer: Mapped[str | None] = mapped_column(String(64))  # host:port it came from
    raw: Mapped[str] = mapped_column(Text)
    ack: Mapped[str] = mapped_column(Text, default="")
    ack_code: Mapped[str] = mapped_column(String(2), default="")  # AA, AE, AR
    status: Mapped[str] = mapped_column(String(16))  # applied, error, rejected
    error: Mapped[str | None] = mapped_column(Text)
    deliveries: Mapped[int] = mapped_column(default=1)
    patient_id: Mapped[int | None] = mapped_column(index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HL7Destination(Base):
    """A peer Placa sends HL7 messages to (the HIS, the EMR, billing)."""

    __tablename__ = "hl7_destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int]
    message_types: Mapped[str] = mapped_column(String(64))  # comma separated: SIU,ORU,DFT
    receiving_application: Mapped[str] = mapped_column(String(64), default="")
    receiving_facility: Mapped[str] = mapped_column(String(64), default="")
    include_pdf: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def wants(self, message_type: str) -> bool:
        return message_type.split("^")[0] in self.message_types.split(",")


class OutboundMessage(Base):
    """A message waiting in, or gone through, the outbox of one destination.

    Written in the same transaction as the change that causes it; the scheduler sends each
    destination's messages in order and retries with back-off until the peer answers AA, or
    dead-letters a message the peer keeps refusing (:mod:`ris.hl7.outbound`).
    """

    __tablename__ = "hl7_outbound"
    __table_args__ = (
        Index("ix_hl7_outbound_destination_state_id", "destination_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("hl7_destinations.id", ondelete="RESTRICT")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message_type: Mapped[str] = mapped_column(String(16))  # e.g. SIU^S12
    control_id: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(
        String(16), default="queued"
    )  # queued, sent, failed, acknowledged; dead (dead-lettered), resent (dead, sent again)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    ack_code: Mapped[str | None] = mapped_column(String(2))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    patient_id: Mapped[int | None] = mapped_column(index=True)
    exam_id: Mapped[int | None] = mapped_column(index=True)
    destination: Mapped[HL7Destination] = relationship(lazy="joined")
