"""What the modalities report: Modality Performed Procedure Steps (MPPS, PS3.4 Annex F).

A performed step is created by a modality's N-CREATE (IN PROGRESS) and finished by an N-SET
(COMPLETED or DISCONTINUED). It points to the exam (requested procedure) it performed; a
step whose exam could not be identified has no exam (``procedure_id`` NULL) until a
technologist reconciles it.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ris.db import Base, UTCDateTime, utcnow
from ris.models import RequestedProcedure, ScheduledProcedureStep
from ris.models.types import enum_column


class PerformedStepStatus(enum.StrEnum):
    """Performed Procedure Step Status (0040,0252) defined terms."""

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


FINAL_STATUSES = frozenset({PerformedStepStatus.COMPLETED, PerformedStepStatus.DISCONTINUED})


class PerformedProcedureStep(Base):
    """One MPPS instance, as the modality last described it."""

    __tablename__ = "performed_procedure_steps"
    __table_args__ = (
        Index("ix_performed_procedure_steps_procedure_started", "procedure_id", "started_at"),
        Index("ix_performed_procedure_steps_station_started", "station_ae_title", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[PerformedStepStatus] = mapped_column(enum_column(PerformedStepStatus))
    # NULL: unscheduled, or not yet reconciled with an exam.
    procedure_id: Mapped[int | None] = mapped_column(
        ForeignKey("requested_procedures.id", ondelete="SET NULL")
    )
    scheduled_step_id: Mapped[int | None] = mapped_column(
        ForeignKey("scheduled_procedure_steps.id", ondelete="SET NULL"), index=True
    )
    performed_step_id: Mapped[str | None] = mapped_column(String(16))  # PPS ID (0040,0253)
    # What the modality sent, kept as sent: the reconciliation screen shows it.
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    patient_id_sent: Mapped[str] = mapped_column(String(64), default="")
    patient_birth_date_sent: Mapped[str] = mapped_column(String(8), default="")
    patient_sex_sent: Mapped[str] = mapped_column(String(16), default="")
    accession_number_sent: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_id_sent: Mapped[str] = mapped_column(String(16), default="")
    scheduled_step_id_sent: Mapped[str] = mapped_column(String(16), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    station_ae_title: Mapped[str] = mapped_column(String(16), default="")
    station_name: Mapped[str] = mapped_column(String(16), default="")
    location: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    number_of_images: Mapped[int] = mapped_column(default=0)
    # Radiation dose attributes as they arrived (keyword -> value), e.g. TotalTimeOfFluoroscopy.
    dose: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    discontinuation_reason: Mapped[str | None] = mapped_column(String(200))
    calling_ae: Mapped[str] = mapped_column(String(16))
    reconciled_by: Mapped[str | None] = mapped_column(String(128))
    reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    procedure: Mapped[RequestedProcedure | None] = relationship()
    scheduled_step: Mapped[ScheduledProcedureStep | None] = relationship()
    series: Mapped[list[PerformedSeries]] = relationship(
        back_populates="step",
        cascade="all, delete-orphan",
        order_by="PerformedSeries.id",
        lazy="selectin",
    )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class PerformedSeries(Base):
    """One item of the Performed Series Sequence (0040,0340)."""

    __tablename__ = "performed_series"

    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(
        ForeignKey("performed_procedure_steps.id", ondelete="CASCADE"), index=True
    )
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    description: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    protocol_name: Mapped[str] = mapped_column(String(64), default="")
    operator_name: Mapped[str] = mapped_column(String(200), default="")
    performing_physician: Mapped[str] = mapped_column(String(200), default="")
    retrieve_ae_title: Mapped[str] = mapped_column(String(16), default="")
    number_of_images: Mapped[int] = mapped_column(default=0)
    number_of_other_instances: Mapped[int] = mapped_column(default=0)
    step: Mapped[PerformedProcedureStep] = relationship(back_populates="series")
