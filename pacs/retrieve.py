"""Retrieve (C-MOVE, C-GET; PS3.4 C.4.2-C.4.3, IHE RAD-16): which instances to send, where.

A retrieve identifier names what to send by unique keys only (PS3.4 C.4.2.2.1): the key of
its level, with one or more values (a UID list), and optionally the unique keys of the
levels above, with one value each. :func:`select_instances` turns it into the stored files
to send, in one query, ordered by study, series and instance number, so the sub-operations
never touch the database again. :func:`find_destination` names where a C-MOVE sends them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from pacs.models import ArchivePatient, Instance, RemoteAE, Series, Study
from pacs.storage import valid_uid
from ris import audit
from ris.audit import Actor

logger = logging.getLogger(__name__)

# Failure statuses of a retrieve (PS3.4 C.4.2.1.5, C.4.3.1.4).
OUT_OF_RESOURCES_MATCHES = 0xA701  # unable to calculate the number of matches
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702  # unable to perform the sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MAX_SUBOPERATIONS = 65535  # the sub-operation counts are US

PATIENT_ROOT = frozenset(
    (PatientRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelGet)
)


class Level(enum.StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


# The unique key of each level and the column it matches.
UNIQUE_KEYS = {
    Level.PATIENT: ("PatientID", ArchivePatient.patient_id),
    Level.STUDY: ("StudyInstanceUID", Study.study_instance_uid),
    Level.SERIES: ("SeriesInstanceUID", Series.series_instance_uid),
    Level.IMAGE: ("SOPInstanceUID", Instance.sop_instance_uid),
}
LEVELS = list(UNIQUE_KEYS)


class RetrieveRefused(Exception):
    """The retrieve cannot be performed; ``status`` is the DICOM status to answer."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]  # Error Comment is LO


@dataclass(frozen=True)
class Retrievable:
    """One stored instance to send, as stored."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: Path
    size: int
    study_instance_uid: str


@dataclass(frozen=True)
class Selection:
    """The instances a retrieve sends and the studies they belong to (for the audit)."""

    instances: list[Retrievable]
    # Study Instance UID -> the RIS patient it is linked to (None while unmatched).
    studies: dict[str, int | None] = field(default_factory=dict)


def select_instances(
    db: Session, identifier: Dataset, sop_class_uid: str, archive_root: Path
) -> Selection:
    """The stored instances a retrieve identifier names, in study/series/instance order.

    Raises RetrieveRefused (0xA900) when the identifier lacks its level's unique key or
    names a level its information model has not, (0xA701) when it names more instances
    than one retrieve can count."""
    level = _level(identifier, sop_class_uid)
    query = _query(identifier, level)
    rows = db.execute(query).all()
    if len(rows) > MAX_SUBOPERATIONS:
        raise RetrieveRefused(
            OUT_OF_RESOURCES_MATCHES, f"{len(rows)} instances: more than one retrieve can count"
        )
    instances, studies = [], {}
    for sop_class, sop_instance, syntax, relative, size, study_uid, patient in rows:
        instances.append(
            Retrievable(
                sop_class,
                sop_instance,
                syntax,
                archive_file(archive_root, relative),
                size,
                study_uid,
            )
        )
        studies.setdefault(study_uid, patient)
    return Selection(instances, studies)


def _level(identifier: Dataset, sop_class_uid: str) -> Level:
    text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(text)
    except ValueError:
        raise RetrieveRefused(
            IDENTIFIER_DOES_NOT_MATCH, f"unknown Query/Retrieve Level {text!r}"
        ) from None
    if level is Level.PATIENT and sop_class_uid not in PATIENT_ROOT:
        raise RetrieveRefused(IDENTIFIER_DOES_NOT_MATCH, "Study Root has no PATIENT level")
    return level


def _query(identifier: Dataset, level: Level) -> Select[tuple[object, ...]]:
    query = (
        select(
            Instance.sop_class_uid,
            Instance.sop_instance_uid,
            Instance.transfer_syntax_uid,
            Instance.path,
            Instance.size,
            Study.study_instance_uid,
            Study.ris_patient_id,
        )
        .join(Series, Instance.series_fk == Series.id)
        .join(Study, Series.study_fk == Study.id)
        .join(ArchivePatient, Study.patient_fk == ArchivePatient.id)
        .order_by(
            Study.study_date,
            Study.id,
            func.coalesce(Series.series_number, 0),
            Series.id,
            func.coalesce(Instance.instance_number, 0),
            Instance.id,
        )
    )
    keyword, column = UNIQUE_KEYS[level]
    values = _key_values(identifier, keyword, uid=level is not Level.PATIENT)
    if not values:
        raise RetrieveRefused(
            IDENTIFIER_DOES_NOT_MATCH, f"a {level} level retrieve needs {keyword}"
        )
    query = query.where(column.in_(values))
    # The unique keys of the levels above, when sent, narrow the match (one value each).
    for upper in LEVELS[: LEVELS.index(level)]:
        upper_keyword, upper_column = UNIQUE_KEYS[upper]
        upper_values = _key_values(identifier, upper_keyword, uid=upper is not Level.PATIENT)
        if upper_values:
            query = query.where(upper_column.in_(upper_values))
    return query


def _key_values(identifier: Dataset, keyword: str, *, uid: bool) -> list[str]:
    """A unique key's values; empty when absent or zero length. Wildcards and malformed
    UIDs are refused: a retrieve names instances, it does not search for them."""
    tag = Tag(keyword)
    if tag not in identifier:
        return []
    # A UI value is read as sent (ASCII), not through pydicom's conversion, which would
    # warn about (or, in strict mode, refuse) the malformed UIDs refused here with a reason.
    element = identifier.get_item(tag) if uid else identifier[tag]
    raw = element.value
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace").split("\\")
    if raw is None or raw == "":
        return []
    items = list(raw) if isinstance(raw, Sequence) and not isinstance(raw, str) else [raw]
    values = [str(item).rstrip("\x00 ").strip() for item in items]
    values = [value for value in values if value]
    for value in values:
        if "*" in value or "?" in value:
            raise RetrieveRefused(IDENTIFIER_DOES_NOT_MATCH, f"{keyword} may not be a wildcard")
        if uid and not valid_uid(value):
            raise RetrieveRefused(
                IDENTIFIER_DOES_NOT_MATCH, f"{keyword} {value[:30]!r} is not a UID"
            )
    return values


def archive_file(root: Path, relative: str) -> Path:
    """The file of an index row: the stored relative path, never allowed out of the root."""
    path = PurePosixPath(relative)
    if path.is_absolute() or not path.parts or ".." in path.parts or "\\" in relative:
        raise RetrieveRefused(UNABLE_TO_PROCESS, "an index row points outside the archive")
    return root.joinpath(*path.parts)


def find_destination(db: Session, ae_title: str) -> tuple[str, int]:
    """Where a C-MOVE destination listens: a registered remote AE, else 0xA801."""
    title = (ae_title or "").strip()
    row = db.execute(select(RemoteAE.host, RemoteAE.port).where(RemoteAE.ae_title == title)).first()
    if row is None:
        raise RetrieveRefused(MOVE_DESTINATION_UNKNOWN, f"Move Destination unknown: {title}")
    return str(row.host), int(row.port)


@dataclass
class Counts:
    """The sub-operation counts of a retrieve (PS3.4 C.4.2.1.5)."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)


def record_retrieve(
    db: Session,
    actor: Actor,
    operation: str,
    selection: Selection,
    counts: Counts,
    *,
    destination: str,
    outcome: str,
) -> None:
    """One audit event per study sent: who (the calling AE) got which study, where to."""
    for study_uid, patient in selection.studies.items():
        sent = sum(1 for item in selection.instances if item.study_instance_uid == study_uid)
        audit.record(
            db,
            actor,
            f"dicom.{operation.lower().replace('-', '_')}",
            object_type="study",
            object_id=study_uid,
            patient_id=patient,
            outcome=outcome,
            detail={
                "destination": destination,
                "instances": sent,
                "completed": counts.completed,
                "failed": counts.failed,
                "warning": counts.warning,
            },
        )
