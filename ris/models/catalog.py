"""The department's resources: procedure codes and the rooms (devices) they are done in."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

from sqlalchemy import Column, ForeignKey, Numeric, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ris.db import Base

procedure_rooms = Table(
    "procedure_rooms",
    Base.metadata,
    Column(
        "procedure_code_id", ForeignKey("procedure_codes.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("room_id", ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
)


class Room(Base):
    """A room with its imaging device: what the Modality Worklist calls a station."""

    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    modality: Mapped[str] = mapped_column(String(16))  # DICOM Modality (0008,0060)
    ae_title: Mapped[str | None] = mapped_column(String(16), unique=True)  # the device's AE
    station_name: Mapped[str | None] = mapped_column(String(16))  # Station Name (0008,1010)
    opens_at: Mapped[time] = mapped_column(default=time(8, 0))
    closes_at: Mapped[time] = mapped_column(default=time(20, 0))
    open_days: Mapped[str] = mapped_column(String(7), default="12345")  # ISO weekdays, 1 = Monday
    active: Mapped[bool] = mapped_column(default=True)
    # Where an HL7 order with a start time but no station (IPC-9) is booked.
    default_for_modality: Mapped[bool] = mapped_column(default=False)

    def is_open_on(self, iso_weekday: int) -> bool:
        return str(iso_weekday) in self.open_days

    def __repr__(self) -> str:
        return f"<Room {self.code}>"


class ProcedureCode(Base):
    """An orderable procedure of the catalog (CPT, CCAM or a local code)."""

    __tablename__ = "procedure_codes"
    __table_args__ = (
        UniqueConstraint("code_system", "code", name="uq_procedure_codes_system_code"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code_system: Mapped[str] = mapped_column(String(16))  # HL7 coding system: CPT, CCAM, L...
    code: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(200))
    modality: Mapped[str] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))  # Body Part Examined (0018,0015)
    duration_minutes: Mapped[int] = mapped_column(default=15)
    technical_charge: Mapped[Decimal] = mapped_column(Numeric(10, 2), default=Decimal("0"))
    professional_charge: Mapped[Decimal] = mapped_column(Numeric(10, 2), default=Decimal("0"))
    active: Mapped[bool] = mapped_column(default=True)
    # Received from the HIS without being in the catalog: an admin must complete it before
    # the exam's charge can be captured.
    needs_mapping: Mapped[bool] = mapped_column(default=False, index=True)
    rooms: Mapped[list[Room]] = relationship(secondary=procedure_rooms, lazy="selectin",
                                             order_by=Room.code)  # fmt: skip

    def __repr__(self) -> str:
        return f"<ProcedureCode {self.code_system}:{self.code}>"
