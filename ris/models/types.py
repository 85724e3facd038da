"""Column types and enumerations shared by the RIS tables (DICOM and HL7 defined terms)."""

from __future__ import annotations

import enum

from sqlalchemy import Enum, String
from sqlalchemy.types import TypeEngine


def search_key() -> TypeEngine[str]:
    """A normalised search key: byte order ("C") on PostgreSQL so prefix ranges use the index."""
    return String(64).with_variant(String(64, collation="C"), "postgresql")


def enum_column(enum_class: type[enum.Enum], length: int = 16) -> Enum:
    """An enumeration stored as its value in a VARCHAR, the same on SQLite and PostgreSQL."""
    return Enum(
        enum_class,
        native_enum=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Sex(enum.StrEnum):
    """DICOM Patient's Sex (0010,0040) defined terms."""

    MALE = "M"
    FEMALE = "F"
    OTHER = "O"


class PregnancyStatus(enum.StrEnum):
    """DICOM Pregnancy Status (0010,21C0) enumerated values."""

    NOT_PREGNANT = "1"
    POSSIBLY_PREGNANT = "2"
    DEFINITELY_PREGNANT = "3"
    UNKNOWN = "4"


class MRISafety(enum.StrEnum):
    """What the MR room must know about implants and devices."""

    NOT_SCREENED = "not_screened"
    SAFE = "safe"
    CONDITIONAL = "conditional"
    UNSAFE = "unsafe"


class Priority(enum.StrEnum):
    """Requested Procedure Priority (0040,1003); HL7 S/A/R map to STAT/HIGH/ROUTINE."""

    STAT = "STAT"
    HIGH = "HIGH"
    ROUTINE = "ROUTINE"


class PatientClass(enum.StrEnum):
    """HL7 PV1-2 patient class: outpatient, inpatient, emergency."""

    OUTPATIENT = "O"
    INPATIENT = "I"
    EMERGENCY = "E"


class ExamStatus(enum.StrEnum):
    """The one status ladder of an exam (a requested procedure), shared by all of Placa."""

    ORDERED = "ordered"
    SCHEDULED = "scheduled"
    ARRIVED = "arrived"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    READ = "read"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"
    DISCONTINUED = "discontinued"


# Exams that still hold their time slot (and so can conflict with another booking).
HOLDS_SLOT = frozenset(
    {ExamStatus.SCHEDULED, ExamStatus.ARRIVED, ExamStatus.IN_PROGRESS, ExamStatus.COMPLETED,
     ExamStatus.READ}
)  # fmt: skip
