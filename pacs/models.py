"""The archive's index: Patient → Study → Series → Instance, and the remote DICOM nodes.

The index holds what every C-FIND (PS3.4 C.6, patient and study root, every level) and
QIDO-RS key needs, each with an index; the images themselves are files under
``PLACA_DATA_DIR/archive`` (see :mod:`pacs.storage`). Text is stored decoded (the
Specific Character Set applied). Person names are also stored as a search key (lower case,
accents removed, components kept) so matching can ignore case and accents.

A study points to the RIS exam (requested procedure) and patient it belongs to once
reconciliation links it; until then it is "unmatched".

Storage commitment requests (:class:`StorageCommitment`) are kept with their decision until
their report is delivered (:mod:`pacs.commitment`).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine

from ris.db import Base, UTCDateTime, utcnow
from ris.models import Patient, RequestedProcedure
from ris.models.types import enum_column

UID = 64  # UI (PS3.5 6.2)
PN = 324  # PN: three component groups of 64 characters, separators
PN_KEY = 324


def name_key() -> TypeEngine[str]:
    """A person-name search key: byte order on PostgreSQL so prefix ranges use the index."""
    return String(PN_KEY).with_variant(String(PN_KEY, collation="C"), "postgresql")


class ArchivePatient(Base):
    """A patient as the images name it: Patient ID within its issuer."""

    __tablename__ = "archive_patients"
    __table_args__ = (
        UniqueConstraint(
            "patient_id", "issuer_of_patient_id", name="uq_archive_patients_patient_id_issuer"
        ),  # fmt: skip
        Index("ix_archive_patients_birth_date", "patient_birth_date"),
        Index("ix_archive_patients_name_key", "patient_name_key"),
        Index("ix_archive_patients_sex", "patient_sex"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))  # (0010,0020), "" when not sent
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")  # (0010,0021)
    patient_name: Mapped[str] = mapped_column(String(PN), default="")  # decoded PN text
    patient_name_key: Mapped[str] = mapped_column(name_key(), default="")  # pacs.storage.pn_key
    patient_birth_date: Mapped[date | None]
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Study(Base):
    """One study (Study Instance UID), with the counts C-FIND returns kept up to date."""

    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_study_date", "study_date"),
        Index("ix_studies_study_at", "study_at"),
        Index("ix_studies_accession_number", "accession_number"),
        Index("ix_studies_study_id", "study_id"),
        Index("ix_studies_referring_physician_key", "referring_physician_key"),
        Index("ix_studies_description", "study_description"),
        Index("ix_studies_unmatched", "procedure_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    patient_fk: Mapped[int] = mapped_column(
        ForeignKey("archive_patients.id", ondelete="RESTRICT"), index=True
    )
    study_date: Mapped[str] = mapped_column(String(8), default="")  # DA as sent (YYYYMMDD)
    study_time: Mapped[str] = mapped_column(String(16), default="")  # TM as sent
    # StudyDate + StudyTime read in the site's zone, in UTC; NULL without a valid date.
    study_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")  # (0020,0010)
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(PN), default="")
    referring_physician_key: Mapped[str] = mapped_column(name_key(), default="")
    modalities_in_study: Mapped[str] = mapped_column(String(200), default="")  # CT\SR
    number_of_study_related_series: Mapped[int] = mapped_column(default=0)
    number_of_study_related_instances: Mapped[int] = mapped_column(default=0)
    # Reconciliation with the RIS: NULL until an exam is identified (unmatched).
    procedure_id: Mapped[int | None] = mapped_column(
        ForeignKey("requested_procedures.id", ondelete="SET NULL")
    )
    ris_patient_id: Mapped[int | None] = mapped_column(
        ForeignKey("patients.id", ondelete="SET NULL"), index=True
    )
    images_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    linked_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    patient: Mapped[ArchivePatient] = relationship(lazy="joined")
    procedure: Mapped[RequestedProcedure | None] = relationship()
    ris_patient: Mapped[Patient | None] = relationship()


class Series(Base):
    """One series (Series Instance UID) of a study."""

    __tablename__ = "series"
    __table_args__ = (
        Index("ix_series_study_modality", "study_fk", "modality"),
        Index("ix_series_modality", "modality"),
        Index("ix_series_series_number", "series_number"),
        Index("ix_series_body_part_examined", "body_part_examined"),
        Index("ix_series_pps_start_date", "performed_procedure_step_start_date"),
        Index("ix_series_description", "series_description"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None]
    series_description: Mapped[str] = mapped_column(String(64), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    performed_procedure_step_start_date: Mapped[str] = mapped_column(String(8), default="")
    performed_procedure_step_start_time: Mapped[str] = mapped_column(String(16), default="")
    number_of_series_related_instances: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    study: Mapped[Study] = relationship()


class Instance(Base):
    """One stored SOP instance and its file (relative to the archive folder)."""

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_series_number", "series_fk", "instance_number"),
        Index("ix_instances_sop_class_uid", "sop_class_uid"),
        Index("ix_instances_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_class_uid: Mapped[str] = mapped_column(String(UID))
    instance_number: Mapped[int | None]
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID))
    path: Mapped[str] = mapped_column(String(400), unique=True)  # relative to archive/
    size: Mapped[int] = mapped_column(BigInteger)
    # SHA-1 of the dataset as received (without the file meta): a checksum, not a seal.
    sha1: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    series: Mapped[Series] = relationship()


class RemoteAE(Base):
    """A DICOM node Placa knows: a C-MOVE destination and, with PLACA_AE_WHITELIST=1,
    one of the only calling AEs accepted."""

    __tablename__ = "remote_aes"

    id: Mapped[int] = mapped_column(primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int]
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CommitmentState(enum.StrEnum):
    """Where a storage commitment request stands with its N-EVENT-REPORT."""

    PENDING = "pending"  # decided, report not yet delivered (retried with back-off)
    REPORTED = "reported"  # the requestor answered the N-EVENT-REPORT
    FAILED = "failed"  # given up: never delivered after the last attempt


class StorageCommitment(Base):
    """One Storage Commitment Push Model request (PS3.4 J.3, IHE RAD-10), kept with its
    decision until the N-EVENT-REPORT is delivered, so a restart loses no report."""

    __tablename__ = "storage_commitments"
    __table_args__ = (
        Index("ix_storage_commitments_due", "state", "next_attempt_at"),
        Index("ix_storage_commitments_transaction", "transaction_uid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    transaction_uid: Mapped[str] = mapped_column(String(UID))  # (0008,1195)
    calling_ae: Mapped[str] = mapped_column(String(16))  # the requestor, reported to
    requestor_address: Mapped[str] = mapped_column(String(255), default="")
    # One entry per referenced instance, in request order: {"sop_class_uid",
    # "sop_instance_uid", "failure_reason"} where failure_reason is None when committed.
    references: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    state: Mapped[CommitmentState] = mapped_column(
        enum_column(CommitmentState), default=CommitmentState.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    # When the scheduler may (next) try to deliver; also the lease of a delivery under way.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(200))
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


__all__ = [
    "ArchivePatient", "CommitmentState", "Instance", "RemoteAE", "Series", "StorageCommitment",
    "Study",
]  # fmt: skip
