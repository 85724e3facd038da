"""What the WADO-RS, WADO-URI and STOW-RS routes share: errors, UIDs, media types, the
instance list of a request, file paths under the archive, retrieve URLs and the audit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flask import Response, current_app, jsonify, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacs.models import Instance, Series, Study
from pacs.storage import archive_root, valid_uid
from ris import audit
from ris.auth import current_actor

logger = logging.getLogger(__name__)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART = "multipart/related"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
UNCOMPRESSED = frozenset({EXPLICIT_LE, IMPLICIT_LE})
# What pydicom converts between without touching the pixel data (WADO transfer syntaxes).
CONVERTIBLE = UNCOMPRESSED | {DEFLATED_LE}
CHUNK = 1 << 20  # bytes read from a file at a time


class DicomWebError(Exception):
    """A request answered with ``status`` and a machine-readable reason (JSON body)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def error_json(status: int, reason: str) -> Response:
    response = jsonify({"error": reason, "status": status})
    response.status_code = status
    return response


def check_uid(value: str, what: str) -> str:
    if not valid_uid(value):
        raise DicomWebError(400, f"{what} {value[:70]!r} is not a valid UID")
    return value


# --- Media types in Accept ---------------------------------------------------------------


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``type/subtype`` and its parameters (lower-case keys)."""

    mime: str
    params: dict[str, str]
    quality: float

    @property
    def related_type(self) -> str | None:
        """The ``type`` parameter of ``multipart/related``."""
        return self.params.get("type")

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def parse_accept(header: str | None) -> list[MediaRange]:
    """The Accept header's media ranges, best first (quoted parameters with ``;`` kept)."""
    ranges: list[MediaRange] = []
    for order, entry in enumerate(_split(header or "*/*", ",")):
        parts = _split(entry, ";")
        if not parts or not parts[0].strip():
            continue
        params: dict[str, str] = {}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"').strip()
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        if quality > 0:
            ranges.append(MediaRange(parts[0].strip().lower(), params, quality - order * 1e-6))
    return sorted(ranges, key=lambda r: -r.quality)


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes (``type="a;b"`` stays whole)."""
    out, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return [part for part in out if part.strip()]


# --- The instances a request names ---------------------------------------------------------


@dataclass(frozen=True)
class InstanceRow:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str
    size: int
    study_id: int
    ris_patient_id: int | None


_INSTANCES = (
    select(
        Study.study_instance_uid,
        Series.series_instance_uid,
        Instance.sop_instance_uid,
        Instance.sop_class_uid,
        Instance.transfer_syntax_uid,
        Instance.path,
        Instance.size,
        Study.id,
        Study.ris_patient_id,
    )  # fmt: skip
    .join(Series, Series.id == Instance.series_fk)
    .join(Study, Study.id == Series.study_fk)
)


def instances_of(
    db: Session, study: str, series: str | None = None, instance: str | None = None
) -> list[InstanceRow]:
    """The instances a WADO path names, in series and instance number order (one query).

    Raises DicomWebError(404) when the study, series or instance is not in the archive."""
    check_uid(study, "Study Instance UID")
    query = _INSTANCES.where(Study.study_instance_uid == study)
    if series is not None:
        query = query.where(Series.series_instance_uid == check_uid(series, "Series Instance UID"))
    if instance is not None:
        uid = check_uid(instance, "SOP Instance UID")
        query = query.where(Instance.sop_instance_uid == uid)
    query = query.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    rows = [InstanceRow(*row) for row in db.execute(query)]
    if not rows:
        level = "instance" if instance else "series" if series else "study"
        raise DicomWebError(404, f"no such {level} in the archive")
    return rows


def file_of(row: InstanceRow) -> Path:
    """The archive file of ``row``; refuses a stored path that would leave the archive."""
    relative = PurePosixPath(row.path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        logger.error("Instance %s has an unsafe path %r", row.sop_instance_uid, row.path)
        raise DicomWebError(500, "the archive index is inconsistent")
    return archive_root(current_app.config["DATA_DIR"]) / relative


# --- URLs and the audit --------------------------------------------------------------------


def base_url() -> str:
    return url_for("dicomweb.wado_study", study="X", _external=True).rsplit("/studies/", 1)[0]


def study_url(study: str) -> str:
    return f"{base_url()}/studies/{study}"


def instance_url(study: str, series: str, instance: str, base: str | None = None) -> str:
    """The instance's WADO-RS URL; ``base`` given where no request context is (streams)."""
    return f"{base or base_url()}/studies/{study}/series/{series}/instances/{instance}"


def audit_retrieval(db: Session, rows: list[InstanceRow], what: str) -> None:
    """One audit event per request: who saw which study (and how much of it)."""
    first = rows[0]
    series = sorted({row.series_uid for row in rows})
    detail: dict[str, object] = {"what": what, "instances": len(rows), "path": request.path}
    if len(series) == 1:
        detail["series"] = series[0]
    audit.record(
        db, current_actor(), "dicomweb.retrieve", object_type="study",
        object_id=first.study_uid, patient_id=first.ris_patient_id, detail=detail,
    )  # fmt: skip
    db.commit()
