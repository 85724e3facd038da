"""Patients, their name search tokens, and the record of patient merges."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ris.db import Base, UTCDateTime, utcnow
from ris.models.types import MRISafety, PregnancyStatus, Sex, enum_column, search_key


class Patient(Base):
    """A person Placa images, identified by an MRN within its issuer."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("mrn_issuer", "mrn", name="uq_patients_mrn_issuer_mrn"),
        Index("ix_patients_mrn", "mrn"),
        Index("ix_patients_birth_date", "birth_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    mrn: Mapped[str] = mapped_column(String(64))
    mrn_issuer: Mapped[str] = mapped_column(String(64))
    # Person name in DICOM PN components (PS3.5 6.2): family^given^middle^prefix^suffix.
    family_name: Mapped[str] = mapped_column(String(64))
    given_name: Mapped[str] = mapped_column(String(64), default="")
    middle_name: Mapped[str] = mapped_column(String(64), default="")
    name_prefix: Mapped[str] = mapped_column(String(64), default="")
    name_suffix: Mapped[str] = mapped_column(String(64), default="")
    birth_date: Mapped[date | None]
    sex: Mapped[Sex | None] = mapped_column(enum_column(Sex, 1))
    phone: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(254))
    street: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(64))
    insurance_payer: Mapped[str | None] = mapped_column(String(128))
    insurance_member_id: Mapped[str | None] = mapped_column(String(64))
    contrast_allergy: Mapped[bool] = mapped_column(default=False)
    allergies: Mapped[str | None] = mapped_column(Text)
    pregnancy_status: Mapped[PregnancyStatus | None] = mapped_column(
        enum_column(PregnancyStatus, 1)
    )
    mri_safety: Mapped[MRISafety] = mapped_column(
        enum_column(MRISafety), default=MRISafety.NOT_SCREENED
    )
    medical_alerts: Mapped[str | None] = mapped_column(Text)
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def dicom_name(self) -> str:
        """The name as a DICOM PN value, trailing empty components dropped."""
        parts = [self.family_name, self.given_name, self.middle_name, self.name_prefix,
                 self.name_suffix]  # fmt: skip
        return "^".join(parts).rstrip("^")

    @property
    def display_name(self) -> str:
        """FAMILY, Given Middle — how a front desk reads a name aloud."""
        given = " ".join(p for p in (self.name_prefix, self.given_name, self.middle_name) if p)
        return f"{self.family_name.upper()}, {given}".rstrip(", ")

    @property
    def is_merged(self) -> bool:
        return self.merged_into_id is not None

    @property
    def has_alerts(self) -> bool:
        return bool(
            self.contrast_allergy
            or self.allergies
            or self.medical_alerts
            or self.pregnancy_status in (PregnancyStatus.POSSIBLY_PREGNANT,
                                         PregnancyStatus.DEFINITELY_PREGNANT)
            or self.mri_safety in (MRISafety.CONDITIONAL, MRISafety.UNSAFE)
        )  # fmt: skip


class PatientNameToken(Base):
    """One normalised word of a patient's name: search ignores case and accents by prefix."""

    __tablename__ = "patient_name_tokens"

    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[str] = mapped_column(search_key(), primary_key=True, index=True)


class PatientMerge(Base):
    """A merge of one patient record into another, with what was moved, so it can be undone."""

    __tablename__ = "patient_merges"

    id: Mapped[int] = mapped_column(primary_key=True)
    surviving_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    merged_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    merged_by: Mapped[str] = mapped_column(String(128))
    moved: Mapped[str] = mapped_column(Text)  # JSON: {"orders": [ids], ...}
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undone_by: Mapped[str | None] = mapped_column(String(128))
    surviving: Mapped[Patient] = relationship(foreign_keys=[surviving_id])
    merged: Mapped[Patient] = relationship(foreign_keys=[merged_id])
