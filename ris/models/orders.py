"""Orders, their requested procedures (exams), scheduled procedure steps and status history.

The structure follows the DICOM Modality Worklist (PS3.4 K.6) and IHE Scheduled Workflow:
an order holds requested procedures, each with its accession number and pre-assigned Study
Instance UID; a requested procedure is carried out in scheduled procedure steps.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ris.db import Base, UTCDateTime, utcnow
from ris.models.catalog import ProcedureCode, Room
from ris.models.patients import Patient
from ris.models.types import ExamStatus, PatientClass, Priority, enum_column


class Order(Base):
    """A request for imaging from a physician: one or more requested procedures."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    placer_order_number: Mapped[str | None] = mapped_column(String(64), index=True)
    placer_issuer: Mapped[str | None] = mapped_column(String(64))
    ordering_physician: Mapped[str] = mapped_column(String(200), default="")
    referring_physician: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    icd10_codes: Mapped[str] = mapped_column(String(200), default="")  # comma separated
    priority: Mapped[Priority] = mapped_column(enum_column(Priority), default=Priority.ROUTINE)
    patient_class: Mapped[PatientClass] = mapped_column(
        enum_column(PatientClass, 1), default=PatientClass.OUTPATIENT
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    patient: Mapped[Patient] = relationship()
    procedures: Mapped[list[RequestedProcedure]] = relationship(
        back_populates="order", order_by="RequestedProcedure.id"
    )


class RequestedProcedure(Base):
    """One exam: what the modality performs and the radiologist reads (one study)."""

    __tablename__ = "requested_procedures"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    procedure_code_id: Mapped[int] = mapped_column(
        ForeignKey("procedure_codes.id", ondelete="RESTRICT"), index=True
    )
    accession_number: Mapped[str] = mapped_column(String(16), unique=True)
    requested_procedure_id: Mapped[str] = mapped_column(String(16), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(200))
    status: Mapped[ExamStatus] = mapped_column(enum_column(ExamStatus), index=True)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    arrived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    order: Mapped[Order] = relationship(back_populates="procedures")
    procedure_code: Mapped[ProcedureCode] = relationship(lazy="joined")
    steps: Mapped[list[ScheduledProcedureStep]] = relationship(
        back_populates="procedure", order_by="ScheduledProcedureStep.id"
    )


class ScheduledProcedureStep(Base):
    """A booked slot: when, in which room (station), for which requested procedure."""

    __tablename__ = "scheduled_procedure_steps"
    __table_args__ = (
        Index("ix_scheduled_procedure_steps_room_start", "room_id", "start_at"),
        Index("ix_scheduled_procedure_steps_station_start", "station_ae_title", "start_at"),
        Index("ix_scheduled_procedure_steps_modality_start", "modality", "start_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    procedure_id: Mapped[int] = mapped_column(
        ForeignKey("requested_procedures.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[str] = mapped_column(String(16), unique=True)  # SPS ID (0040,0009)
    modality: Mapped[str] = mapped_column(String(16))
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="RESTRICT"))
    station_ae_title: Mapped[str | None] = mapped_column(String(16))
    station_name: Mapped[str | None] = mapped_column(String(16))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    description: Mapped[str] = mapped_column(String(200))
    performing_physician: Mapped[str | None] = mapped_column(String(200))
    procedure: Mapped[RequestedProcedure] = relationship(back_populates="steps")
    room: Mapped[Room] = relationship(lazy="joined")


class StatusChange(Base):
    """One step on the status ladder: from, to, who, when and why."""

    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    procedure_id: Mapped[int] = mapped_column(
        ForeignKey("requested_procedures.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[ExamStatus | None] = mapped_column(enum_column(ExamStatus))
    to_status: Mapped[ExamStatus] = mapped_column(enum_column(ExamStatus))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    reason: Mapped[str | None] = mapped_column(Text)


class Counter(Base):
    """A named sequence (MRN, accession number, ...) incremented inside the caller's transaction."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
