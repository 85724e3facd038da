"""Storing instances: the archive's files and its index, never losing what was acknowledged.

An instance arrives as its encoded dataset (what a C-STORE carries, or a file's dataset
after its meta header) and its transfer syntax. It is stored **as received**: Placa writes a
new File Meta Information header (PS3.10 7.1) and then the received bytes unchanged; it
never decodes and re-encodes the dataset. Only the header is parsed, up to the pixel data,
for the index.

The durability rule (a door answers Success only after all of it):

1. the file is written under a temporary name in its final folder, given its final name
   (a hard link, then the temporary name removed), fsynced, and the folder fsynced (new
   folders too, with their parents);
2. the index row is committed.

Any failure leaves neither a file nor a row: :func:`discard_file` removes a file written for
a transaction that did not commit.

Paths are built from validated UIDs (digits and dots only, at most 64 characters) and a
content hash, never from other attribute text:
``archive/<2 hex of sha1(study UID)>/<Study UID>/<Series UID>/<SOP UID>.<16 hex of sha1>.dcm``.
The content hash in the name means two copies of the same SOP instance with different
content never share a file, so a replacement is written beside the old file and the old
one removed only after the index points to the new one.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import logging
import os
import re
import secrets
import time as time_module
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import _read_file_meta_info, data_element_generator
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from pacs.header_scan import scan_elements
from pacs.models import ArchivePatient, Instance, Series, Study
from ris.db import UTCDateTime, utcnow
from ris.models import Order, RequestedProcedure
from ris.patients import normalise

logger = logging.getLogger(__name__)

ARCHIVE_FOLDER = "archive"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1426.1"  # Placa's, under a UUID-free root
IMPLEMENTATION_VERSION_NAME = "PLACA_1"
MAX_UID_LENGTH = 64
# Digits and dots, no empty component: nothing a path could climb with. Leading zeros in a
# component are wrong (PS3.5 9.1) but devices send them, so they are tolerated.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
PIXEL_DATA = 0x7FE00010

# Status codes of a refusal (PS3.4 B.2.3, PS3.7 C).
OUT_OF_RESOURCES = 0xA700  # the disk: full, read-only, an I/O error
INDEX_UNAVAILABLE = 0xA701  # the database did not answer or refused the commit
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000  # the dataset cannot be parsed
BAD_SOP_INSTANCE_UID = 0xC001
BAD_STUDY_INSTANCE_UID = 0xC002
BAD_SERIES_INSTANCE_UID = 0xC003


class Duplicates(enum.StrEnum):
    """What a re-sent SOP Instance UID does (``PLACA_ARCHIVE_DUPLICATES``)."""

    KEEP = "keep"  # answer Success, keep the first copy
    REPLACE = "replace"  # the new copy replaces the old one


class StoreRefused(Exception):
    """The instance is not stored; ``status`` is the DICOM status to answer."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]  # Error Comment is LO


class Outcome(enum.StrEnum):
    STORED = "stored"
    ALREADY_PRESENT = "already_present"
    REPLACED = "replaced"


@dataclass(frozen=True)
class Received:
    """An instance as it arrived: its encoded dataset (no file meta) and its encoding."""

    dataset: bytes | memoryview  # a file's or a STOW-RS part's: a view after its meta, no copy
    transfer_syntax_uid: str
    sop_class_uid: str  # as the request (or the file meta) names it
    sop_instance_uid: str
    calling_ae: str = ""
    sha1: str | None = None  # the dataset's, when the door hashed it as it arrived


# What the index reads; nothing else of the dataset is ever decoded.
INDEX_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
    "SeriesInstanceUID", "PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate",
    "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "ReferringPhysicianName", "Modality", "SeriesNumber", "SeriesDescription",
    "BodyPartExamined", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "InstanceNumber",
)  # fmt: skip
INDEX_TAGS = {int(Tag(keyword)): keyword for keyword in INDEX_KEYWORDS}
LAST_INDEX_TAG = max(INDEX_TAGS)
# Values that may carry characters beyond ASCII (PS3.5 6.1.2.3): decoded with the
# dataset's Specific Character Set; the others are ASCII by definition.
CHARSET_DEPENDENT = {"PatientID", "IssuerOfPatientID", "PatientName", "AccessionNumber",
                     "StudyID", "StudyDescription", "ReferringPhysicianName",
                     "SeriesDescription"}  # fmt: skip
PN_DELIMITERS = {0x5E, 0x3D, 0x5C}  # ^ = \ (escape sequences restart at each)
TEXT_DELIMITERS = {0x5C}


@dataclass(frozen=True)
class Header:
    """The attributes the index keeps, decoded (Specific Character Set applied)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: date | None
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    pps_start_date: str
    pps_start_time: str
    instance_number: int | None


@dataclass(frozen=True)
class StoredFile:
    """A file written and renamed into place (fsynced), relative to the archive folder."""

    path: str
    size: int
    sha1: str


@dataclass(frozen=True)
class StoreResult:
    outcome: Outcome
    instance_id: int
    study_id: int
    new_study: bool
    # A file that became unreferenced by this store (a replaced copy, or a concurrent
    # duplicate's): the caller removes it once the transaction has committed.
    obsolete_path: str | None = None
    # The file this store wrote and the new row uses: removed if the commit fails.
    written_path: str | None = None


# ------------------------------------------------------------------------- validation


def valid_uid(value: str) -> bool:
    return 0 < len(value) <= MAX_UID_LENGTH and _UID.match(value) is not None


def clean_uid(value: object) -> str:
    """A UID as sent, with the padding (NUL or space) removed."""
    return str(value or "").rstrip("\x00 ").strip()


# ------------------------------------------------------------------------- reading


def parse_header(received: Received) -> dict[str, str]:
    """The index's attributes as decoded text, read from the raw elements of the dataset up
    to the last one the index needs: nothing else is converted, the pixel data never read.

    Raises StoreRefused(0xC000) when the bytes cannot be parsed in their transfer syntax."""
    syntax = received.transfer_syntax_uid
    data = received.dataset
    raw: dict[str, bytes] = {}
    try:
        if syntax == DeflatedExplicitVRLittleEndian:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
        if syntax != ExplicitVRBigEndian:
            scanned = scan_elements(data, INDEX_TAGS, LAST_INDEX_TAG,
                                    explicit=syntax != ImplicitVRLittleEndian)  # fmt: skip
            if scanned is not None:
                return _decoded(scanned)
        elements = data_element_generator(
            BytesIO(data), is_implicit_VR=syntax == ImplicitVRLittleEndian,
            is_little_endian=syntax != ExplicitVRBigEndian, stop_when=_past_index_tags,
        )  # fmt: skip
        for element in elements:
            keyword = INDEX_TAGS.get(int(element.tag))
            if keyword is not None and isinstance(element.value, bytes):
                raw[keyword] = element.value
        return _decoded(raw)
    except Exception as exc:  # pydicom and the codecs raise many kinds for malformed input
        raise StoreRefused(CANNOT_UNDERSTAND, f"cannot parse the dataset: {exc}") from None


def _decoded(raw: dict[str, bytes]) -> dict[str, str]:
    charset = raw.pop("SpecificCharacterSet", b"").decode("ascii", "replace")
    names = [part.strip() for part in charset.split("\\")] if charset.strip() else []
    encodings = convert_encodings(names or None)
    decoded = {}
    for keyword, value in raw.items():
        if keyword in CHARSET_DEPENDENT:
            delimiters = PN_DELIMITERS if keyword.endswith("Name") else TEXT_DELIMITERS
            text = decode_bytes(value, encodings, delimiters)
        else:
            text = value.decode("ascii", "replace")
        decoded[keyword] = text.replace("\x00", "").strip()
    return decoded


def _past_index_tags(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return tag > LAST_INDEX_TAG


def read_index_header(received: Received) -> Header:
    """Parse and validate what the index needs; refuse what cannot be stored safely."""
    ds = parse_header(received)
    sop_class = clean_uid(ds.get("SOPClassUID"))
    sop_instance = clean_uid(ds.get("SOPInstanceUID"))
    if not valid_uid(sop_class) or sop_class != clean_uid(received.sop_class_uid):
        raise StoreRefused(DOES_NOT_MATCH_SOP_CLASS,
                           f"SOP Class UID {sop_class!r} is not the request's")  # fmt: skip
    if not valid_uid(sop_instance):
        raise StoreRefused(BAD_SOP_INSTANCE_UID, "SOP Instance UID missing or not a UID")
    if sop_instance != clean_uid(received.sop_instance_uid):
        raise StoreRefused(BAD_SOP_INSTANCE_UID, "SOP Instance UID is not the request's")
    study_uid = clean_uid(ds.get("StudyInstanceUID"))
    series_uid = clean_uid(ds.get("SeriesInstanceUID"))
    if not valid_uid(study_uid):
        raise StoreRefused(BAD_STUDY_INSTANCE_UID, "Study Instance UID missing or not a UID")
    if not valid_uid(series_uid):
        raise StoreRefused(BAD_SERIES_INSTANCE_UID, "Series Instance UID missing or not a UID")
    return Header(
        sop_class_uid=sop_class, sop_instance_uid=sop_instance,
        study_instance_uid=study_uid, series_instance_uid=series_uid,
        patient_id=_text(ds, "PatientID", 64),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID", 64),
        patient_name=_text(ds, "PatientName", 324),
        patient_birth_date=parse_da(_text(ds, "PatientBirthDate", 10)),
        patient_sex=_text(ds, "PatientSex", 16), study_date=_text(ds, "StudyDate", 8),
        study_time=_text(ds, "StudyTime", 16), accession_number=_text(ds, "AccessionNumber", 16),
        study_id=_text(ds, "StudyID", 16), study_description=_text(ds, "StudyDescription", 64),
        referring_physician_name=_text(ds, "ReferringPhysicianName", 324),
        modality=_text(ds, "Modality", 16), series_number=_integer(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription", 64),
        body_part_examined=_text(ds, "BodyPartExamined", 16),
        pps_start_date=_text(ds, "PerformedProcedureStepStartDate", 8),
        pps_start_time=_text(ds, "PerformedProcedureStepStartTime", 16),
        instance_number=_integer(ds, "InstanceNumber"),
    )  # fmt: skip


def _text(ds: dict[str, str], keyword: str, length: int) -> str:
    """The attribute's decoded value (several values stay joined by ``\\``), cut to fit."""
    return ds.get(keyword, "")[:length]


def _integer(ds: dict[str, str], keyword: str) -> int | None:
    text = _text(ds, keyword, 12).split("\\")[0]
    try:
        value = int(float(text)) if text else None
    except ValueError:
        return None
    return value if value is None or abs(value) < 2**31 else None


_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TM = re.compile(r"^(\d{2}):?(\d{2})?:?(\d{2})?(?:\.(\d{1,6}))?$")


def parse_da(text: str) -> date | None:
    """A DICOM DA value, or None when empty or malformed (kept as text in the index)."""
    match = _DA.match(text.strip())
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_tm(text: str) -> time | None:
    match = _TM.match(text.strip())
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    try:
        return time(int(hours), int(minutes or 0), min(int(seconds or 0), 59),
                    int((fraction or "0").ljust(6, "0")))  # fmt: skip
    except ValueError:
        return None


def local_to_utc(da: str, tm: str, zone: ZoneInfo) -> datetime | None:
    """StudyDate and StudyTime, read in the site's zone, as a UTC timestamp."""
    day = parse_da(da)
    if day is None:
        return None
    moment = datetime.combine(day, parse_tm(tm) or time.min).replace(tzinfo=zone)
    return moment.astimezone(UTC)


def pn_key(name: str) -> str:
    """A person name's search key: the alphabetic group, lower case, no accents, ``^`` kept."""
    alphabetic = name.split("=")[0]
    components = [" ".join(normalise(part).split()) for part in alphabetic.split("^")]
    return "^".join(components).rstrip("^")[:324]


def read_part10(data: bytes, calling_ae: str = "") -> Received:
    """A DICOM Part 10 file's dataset as received: the bytes after its file meta header
    (a view of them: copying 0.5 MB was half of this function's time on each STOW-RS part)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise StoreRefused(CANNOT_UNDERSTAND, "not a DICOM Part 10 file")
    stream = BytesIO(data)
    stream.seek(132)
    try:
        meta = _read_file_meta_info(stream)
    except Exception as exc:
        raise StoreRefused(CANNOT_UNDERSTAND, f"unreadable file meta: {exc}") from None
    syntax = _raw_uid(meta, 0x00020010)
    if not valid_uid(syntax):
        raise StoreRefused(CANNOT_UNDERSTAND, "the file meta names no transfer syntax")
    return Received(
        dataset=memoryview(data)[stream.tell():], transfer_syntax_uid=syntax,
        sop_class_uid=_raw_uid(meta, 0x00020002), sop_instance_uid=_raw_uid(meta, 0x00020003),
        calling_ae=calling_ae,
    )  # fmt: skip


def _raw_uid(meta: FileMetaDataset, tag: int) -> str:
    """A file meta UID as written, unvalidated (read_index_header validates what matters)."""
    element = meta.get_item(tag) if tag in meta else None
    value = getattr(element, "value", None)
    if isinstance(value, bytes):
        return clean_uid(value.decode("ascii", "replace"))
    return clean_uid(value)


# ------------------------------------------------------------------------- files


def archive_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / ARCHIVE_FOLDER


def relative_path(header: Header, sha1: str) -> str:
    """Where an instance lives, from validated UIDs and its content hash only."""
    for uid in (header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid):
        if not valid_uid(uid):  # read_index_header checked; a path must never trust a caller
            raise StoreRefused(BAD_SOP_INSTANCE_UID, "not a UID")
    fan_out = hashlib.sha1(header.study_instance_uid.encode()).hexdigest()[:2]
    name = f"{header.sop_instance_uid}.{sha1[:16]}.dcm"
    return f"{fan_out}/{header.study_instance_uid}/{header.series_instance_uid}/{name}"


def file_meta_bytes(received: Received, header: Header) -> bytes:
    """Preamble, "DICM" and the File Meta Information group (PS3.10 7.1) for the received
    dataset, encoded directly (Explicit VR Little Endian): it is on every store's path, and
    pydicom's writer costs more than the rest of the header handling together."""
    elements = [
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _padded(header.sop_class_uid, b"\x00")),
        _element(0x0003, b"UI", _padded(header.sop_instance_uid, b"\x00")),
        _element(0x0010, b"UI", _padded(received.transfer_syntax_uid, b"\x00")),
        _element(0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00")),
        _element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
    ]
    calling_ae = "".join(ch for ch in received.calling_ae if 32 < ord(ch) < 127)[:16]
    if calling_ae:
        elements.append(_element(0x0016, b"AE", _padded(calling_ae, b" ")))
    body = b"".join(elements)
    group_length = _element(0x0000, b"UL", len(body).to_bytes(4, "little"))
    return b"\x00" * 128 + b"DICM" + group_length + body


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    tag = (0x0002).to_bytes(2, "little") + element.to_bytes(2, "little")
    if vr == b"OB":  # 2 reserved bytes and a 4-byte length
        return tag + vr + b"\x00\x00" + len(value).to_bytes(4, "little") + value
    return tag + vr + len(value).to_bytes(2, "little") + value


def _padded(text: str, pad: bytes) -> bytes:
    value = text.encode("ascii")
    return value + pad if len(value) % 2 else value


def dataset_sha1(received: Received) -> str:
    """The hex SHA-1 of the received dataset: the door's, when it hashed it on arrival."""
    return received.sha1 or hashlib.sha1(received.dataset).hexdigest()


def write_file(
    root: Path, received: Received, header: Header, *, sync_folder: bool = True,
) -> StoredFile:  # fmt: skip
    """Write the instance durably (temporary file, its final name, fsync, fsync the folder).

    With ``sync_folder`` False the caller must fsync the folder (:func:`sync_folder`) before
    committing the row (the group commit does it once per folder and batch). Raises
    StoreRefused(0xA700) on any disk error, leaving nothing behind."""
    sha1 = dataset_sha1(received)
    relative = relative_path(header, sha1)
    final = root / relative
    temporary = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    meta = file_meta_bytes(received, header)
    try:
        _ensure_folder(root, final.parent)
        fd = _write_all(temporary, (meta, received.dataset))
        try:
            _place(temporary, final, fd)
        finally:
            os.close(fd)
        if sync_folder:
            _fsync_folder(final.parent)
    except OSError as exc:
        _remove_quietly(temporary)
        logger.error("Cannot write %s: %s", relative, exc)
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or "I/O error")
        raise StoreRefused(OUT_OF_RESOURCES, f"cannot write the file: {reason}") from exc
    return StoredFile(relative, len(meta) + len(received.dataset), sha1)


def sync_folder(root: Path, relative: str) -> None:
    """Make the renames into a file's folder durable; StoreRefused(0xA700) if it fails."""
    try:
        _fsync_folder((root / relative).parent)
    except OSError as exc:
        logger.error("Cannot fsync the folder of %s: %s", relative, exc)
        raise StoreRefused(OUT_OF_RESOURCES, f"cannot sync the folder: {exc.strerror}") from exc


def _write_all(path: Path, chunks: Iterable[bytes]) -> int:
    """Create ``path`` (it must not exist) and write the chunks; its descriptor, still open
    (the caller fsyncs and closes it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _place(temporary: Path, final: Path, fd: int) -> None:
    """Give the written file its final name, then make it durable.

    The name is given first, by a hard link, so that the file's fsync also commits the new
    directory entry (on ext4 and XFS one journal commit instead of two: the folder's fsync
    that follows finds nothing left to write). A killed process cannot leave a partial file
    under a final name: the link is made after the last write. A power cut before the fsync
    can, but no row points to it (the row is committed after the fsync) and a new copy of
    the same bytes replaces it. That replacement, and any other write over an existing name
    (the same bytes stored again, perhaps indexed), goes the classic way: fsync, then an
    atomic rename, so an indexed file is never replaced by data not yet on disk."""
    try:
        os.link(temporary, final)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        os.fsync(fd)  # the name exists, or this filesystem has no hard links
        _leave_page_cache(fd)
        os.rename(temporary, final)
        return
    try:
        os.unlink(temporary)
        os.fsync(fd)
    except OSError:
        _remove_quietly(final)  # made by this write: nothing is left behind
        raise
    _leave_page_cache(fd)


def _leave_page_cache(fd: int) -> None:
    """Let the kernel drop the file's pages, clean once fsynced, from its page cache.

    An archived image is written once and seldom read soon after: kept cached, every
    ingested megabyte takes a megabyte of fresh memory and pushes out what is read (the
    index, the studies being viewed). Each new page costs, besides: reclaiming another
    once memory is full, and on a virtual machine whose host takes freed memory back
    (free page reporting, ballooning) a host page fault on first touch, which made the
    write's copy into the cache the largest single cost of a stored instance on the
    benchmark's machine (``bench/README.md``). Dropped pages are reused by the next write
    while still warm. A later read comes from the disk."""
    if not hasattr(os, "posix_fadvise"):  # not on macOS: the kernel keeps its default
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:  # advice only: the file is stored either way
        logger.debug("posix_fadvise failed: %s", exc)


def _ensure_folder(root: Path, folder: Path) -> None:
    """Create ``folder`` and its missing parents, each made durable in its parent."""
    if folder.is_dir():
        return
    missing = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        if current == root or current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # another association made it at the same moment
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.error("Cannot remove %s: %s", path, exc)


TEMPORARY_MAX_AGE = 600  # seconds: a write takes milliseconds; an older one was abandoned


def sweep_temporary_files(root: Path, max_age: float = TEMPORARY_MAX_AGE) -> int:
    """Remove temporary files a killed process left (never a renamed, final file)."""
    if not root.is_dir():
        return 0
    limit = time_module.time() - max_age
    removed = 0
    try:
        for path in root.rglob(".*.tmp"):
            try:
                if path.is_file() and path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except OSError as exc:
                logger.warning("Cannot remove the abandoned %s: %s", path, exc)
    except OSError as exc:  # the folder changed under the walk: the next start sweeps again
        logger.warning("Archive sweep stopped: %s", exc)
    if removed:
        logger.warning("Removed %d abandoned temporary files from the archive", removed)
    return removed


def discard_file(root: Path, relative: str) -> None:
    """Remove a file whose index row was not committed (or no longer points to it)."""
    path = root / relative
    _remove_quietly(path)
    try:
        _fsync_folder(path.parent)
    except OSError:
        pass


# ------------------------------------------------------------------------- index


def find_instance(db: Session, sop_instance_uid: str) -> tuple[int, str] | None:
    """The stored instance's id and path, if this SOP Instance UID is in the archive."""
    row = db.execute(
        select(Instance.id, Instance.path).where(Instance.sop_instance_uid == sop_instance_uid)
    ).first()
    return (row[0], row[1]) if row else None


# The hot path's statements for an instance of a known series, run on the DBAPI cursor of
# the session's connection (inside its transaction): SQLAlchemy's execution of a prebuilt
# statement costs about 0.1 ms of CPU, five times a store, more than SQLite running them.
# Values are bound through the columns' own types (UTCDateTime), as SQLAlchemy would.
_INSTANCE_COLUMNS = ("sop_instance_uid", "series_fk", "sop_class_uid", "instance_number",
                     "transfer_syntax_uid", "path", "size", "sha1", "received_at",
                     "calling_ae")  # fmt: skip


@dataclass(frozen=True)
class _HotStatements:
    instance_by_uid: str
    series_by_uid: str
    insert_instance: str
    count_in_series: str
    count_in_study: str
    timestamp: Callable[[datetime], Any]

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _HotStatements:
        def mark(name: str) -> str:  # sqlite3's named style, or psycopg's
            return f":{name}" if dialect.name == "sqlite" else f"%({name})s"

        instances, series = Instance.__table__.name, Series.__table__.name
        count = "number_of_series_related_instances"
        study_count = "number_of_study_related_instances"
        processor = UTCDateTime().bind_processor(dialect) or (lambda value: value)
        return cls(
            instance_by_uid=f"SELECT id, path, series_fk FROM {instances} "
            f"WHERE sop_instance_uid = {mark('uid')}",
            series_by_uid=f"SELECT study_fk, id FROM {series} "
            f"WHERE series_instance_uid = {mark('uid')}",
            insert_instance=f"INSERT INTO {instances} ({', '.join(_INSTANCE_COLUMNS)}) VALUES "
            f"({', '.join(mark(c) for c in _INSTANCE_COLUMNS)}) RETURNING id",
            count_in_series=f"UPDATE {series} SET {count} = {count} + 1 "
            f"WHERE id = {mark('series_id')}",
            count_in_study=f"UPDATE {Study.__table__.name} SET {study_count} = {study_count} "
            f"+ 1, updated_at = {mark('now')} WHERE id = {mark('study_row')}",
            timestamp=processor,
        )


_HOT: dict[str, _HotStatements] = {}


def _hot(db: Session) -> tuple[_HotStatements, Any]:
    """The dialect's hot statements and a DBAPI cursor in the session's transaction."""
    connection = db.connection()
    dialect = connection.dialect
    hot = _HOT.get(dialect.name)
    if hot is None:
        hot = _HOT.setdefault(dialect.name, _HotStatements.for_dialect(dialect))
    return hot, connection.connection.cursor()


def index_instance(
    db: Session, header: Header, stored: StoredFile, *, transfer_syntax_uid: str,
    calling_ae: str, zone: ZoneInfo, duplicates: Duplicates,
) -> StoreResult:  # fmt: skip
    """Add (or replace) the instance's row, creating its patient, study and series as needed,
    and keep the counts right. Flushes; the caller commits, then answers."""
    hot, cursor = _hot(db)
    cursor.execute(hot.instance_by_uid, {"uid": header.sop_instance_uid})
    existing = cursor.fetchone()
    if existing is not None and duplicates is Duplicates.KEEP:
        series_study = db.scalar(select(Series.study_fk).where(Series.id == existing[2]))
        # Another association stored it first: this copy's file, if another, is not kept.
        obsolete = stored.path if stored.path != existing[1] else None
        return StoreResult(Outcome.ALREADY_PRESENT, existing[0], int(series_study or 0), False,
                           obsolete)  # fmt: skip
    study_id, series_id, new_study, new_series = _series_for(db, header, zone, calling_ae)
    values = dict(
        series_fk=series_id, sop_class_uid=header.sop_class_uid,
        instance_number=header.instance_number, transfer_syntax_uid=transfer_syntax_uid,
        path=stored.path, size=stored.size, sha1=stored.sha1, received_at=utcnow(),
        calling_ae=calling_ae[:16],
    )  # fmt: skip
    if existing is None:
        cursor.execute(hot.insert_instance, {
            **values, "sop_instance_uid": header.sop_instance_uid,
            "received_at": hot.timestamp(values["received_at"]),
        })  # fmt: skip
        instance_id = int(cursor.fetchone()[0])
        _count_new_instance(db, study_id, series_id, new_series)
        return StoreResult(Outcome.STORED, instance_id, study_id, new_study)
    old_id, old_path, old_series = existing
    db.execute(update(Instance).where(Instance.id == old_id).values(**values))
    if old_series != series_id:  # the new copy names another series: both sides recounted
        old_study = db.scalar(select(Series.study_fk).where(Series.id == old_series))
        recount_series(db, old_series)
        recount_study(db, int(old_study))
    recount_series(db, series_id)
    recount_study(db, study_id)
    obsolete = old_path if old_path != stored.path else None
    return StoreResult(Outcome.REPLACED, old_id, study_id, new_study, obsolete)


def _count_new_instance(db: Session, study_id: int, series_id: int, new_series: bool) -> None:
    if new_series:
        recount_study(db, study_id)  # series count and ModalitiesInStudy change too
        return
    hot, cursor = _hot(db)
    cursor.execute(hot.count_in_series, {"series_id": series_id})
    cursor.execute(hot.count_in_study, {"study_row": study_id, "now": hot.timestamp(utcnow())})


def recount_series(db: Session, series_id: int) -> None:
    """Recount a series from its instances (after a replacement); an empty one is removed."""
    count = db.scalar(select(func.count()).where(Instance.series_fk == series_id)) or 0
    if count == 0:
        db.execute(Series.__table__.delete().where(Series.id == series_id))
        return
    db.execute(update(Series).where(Series.id == series_id)
               .values(number_of_series_related_instances=count))  # fmt: skip


def recount_study(db: Session, study_id: int) -> None:
    """Recount a study's series, instances and modalities from the index itself."""
    series_count = db.scalar(select(func.count()).where(Series.study_fk == study_id)) or 0
    instance_count = db.scalar(
        select(func.count(Instance.id)).join(Series, Instance.series_fk == Series.id)
        .where(Series.study_fk == study_id)
    ) or 0  # fmt: skip
    modalities = sorted(
        m for m in db.scalars(select(Series.modality).distinct().where(Series.study_fk == study_id))
        if m
    )  # fmt: skip
    db.execute(
        update(Study).where(Study.id == study_id).values(
            number_of_study_related_series=series_count,
            number_of_study_related_instances=instance_count,
            modalities_in_study="\\".join(modalities)[:200], updated_at=utcnow(),
        )
    )  # fmt: skip


def _series_for(
    db: Session, header: Header, zone: ZoneInfo, calling_ae: str
) -> tuple[int, int, bool, bool]:
    """(study id, series id, study is new, series is new), creating what is missing."""
    hot, cursor = _hot(db)
    cursor.execute(hot.series_by_uid, {"uid": header.series_instance_uid})
    row = cursor.fetchone()
    if row is not None:
        return int(row[0]), int(row[1]), False, False
    study_id, new_study = _study_for(db, header, zone, calling_ae)
    series_id = db.execute(
        insert(Series).values(
            series_instance_uid=header.series_instance_uid, study_fk=study_id,
            modality=header.modality, series_number=header.series_number,
            series_description=header.series_description,
            body_part_examined=header.body_part_examined,
            performed_procedure_step_start_date=header.pps_start_date,
            performed_procedure_step_start_time=header.pps_start_time,
            number_of_series_related_instances=1, created_at=utcnow(),
        ).returning(Series.id)
    ).scalar_one()  # fmt: skip
    return study_id, int(series_id), new_study, True


def _study_for(db: Session, header: Header, zone: ZoneInfo, calling_ae: str) -> tuple[int, bool]:
    study_id = db.scalar(
        select(Study.id).where(Study.study_instance_uid == header.study_instance_uid)
    )
    if study_id is not None:
        return int(study_id), False
    patient_id = _patient_for(db, header)
    now = utcnow()
    study_id = db.execute(
        insert(Study).values(
            study_instance_uid=header.study_instance_uid, patient_fk=patient_id,
            study_date=header.study_date, study_time=header.study_time,
            study_at=local_to_utc(header.study_date, header.study_time, zone),
            accession_number=header.accession_number, study_id=header.study_id,
            study_description=header.study_description,
            referring_physician_name=header.referring_physician_name,
            referring_physician_key=pn_key(header.referring_physician_name),
            created_at=now, updated_at=now,
        ).returning(Study.id)
    ).scalar_one()  # fmt: skip
    reconcile_study(db, int(study_id), header, calling_ae)
    return int(study_id), True


def _patient_for(db: Session, header: Header) -> int:
    patient_id = db.scalar(
        select(ArchivePatient.id).where(
            ArchivePatient.patient_id == header.patient_id,
            ArchivePatient.issuer_of_patient_id == header.issuer_of_patient_id,
        )
    )
    if patient_id is not None:
        return int(patient_id)
    now = utcnow()
    return int(
        db.execute(
            insert(ArchivePatient).values(
                patient_id=header.patient_id, issuer_of_patient_id=header.issuer_of_patient_id,
                patient_name=header.patient_name, patient_name_key=pn_key(header.patient_name),
                patient_birth_date=header.patient_birth_date, patient_sex=header.patient_sex,
                created_at=now, updated_at=now,
            ).returning(ArchivePatient.id)
        ).scalar_one()
    )  # fmt: skip


# ------------------------------------------------------------------------- reconciliation


def matching_exam(
    db: Session, study_instance_uid: str, accession_number: str
) -> tuple[int, int] | None:
    """(exam id, RIS patient id) of the exam a study belongs to: its pre-assigned Study
    Instance UID first, else its accession number."""
    base = select(RequestedProcedure.id, Order.patient_id).join(
        Order, RequestedProcedure.order_id == Order.id
    )
    row = db.execute(
        base.where(RequestedProcedure.study_instance_uid == study_instance_uid)
    ).first()
    if row is None and accession_number:
        row = db.execute(
            base.where(RequestedProcedure.accession_number == accession_number)
        ).first()
    return (int(row[0]), int(row[1])) if row else None


def reconcile_study(db: Session, study_id: int, header: Header, calling_ae: str) -> bool:
    """Link a new study to its exam and patient when the RIS knows it; True when linked."""
    match = matching_exam(db, header.study_instance_uid, header.accession_number)
    if match is None:
        logger.info("Study %s (accession %r) matches no exam: unmatched",
                    header.study_instance_uid, header.accession_number)  # fmt: skip
        return False
    exam_id, patient_id = match
    now = utcnow()
    db.execute(
        update(Study).where(Study.id == study_id).values(
            procedure_id=exam_id, ris_patient_id=patient_id, images_received_at=now,
            linked_at=now, linked_by=f"ae:{calling_ae}"[:128],
        )
    )  # fmt: skip
    logger.info("Study %s linked to exam %s", header.study_instance_uid, exam_id)
    return True


def store_instance(
    db: Session, root: Path, received: Received, *, zone: ZoneInfo,
    duplicates: Duplicates = Duplicates.KEEP,
) -> StoreResult:  # fmt: skip
    """Validate, write durably and index one instance, in the caller's transaction.

    After committing, the caller removes ``obsolete_path`` when set; when the commit fails,
    it calls :func:`discard_file` for ``written_path`` (unless a committed row uses it)."""
    header = read_index_header(received)
    sha1 = dataset_sha1(received)
    received = replace(received, sha1=sha1)  # hashed once: write_file takes it from here
    relative = relative_path(header, sha1)
    present = find_instance(db, header.sop_instance_uid)
    if present is not None and (duplicates is Duplicates.KEEP or present[1] == relative):
        # Kept, or the very same bytes again: nothing to write.
        return StoreResult(Outcome.ALREADY_PRESENT, present[0], _study_of(db, present[0]), False)
    stored = write_file(root, received, header)
    try:
        result = index_instance(
            db, header, stored, transfer_syntax_uid=received.transfer_syntax_uid,
            calling_ae=received.calling_ae, zone=zone, duplicates=duplicates,
        )  # fmt: skip
    except Exception:
        discard_file(root, stored.path)
        raise
    if result.outcome is Outcome.ALREADY_PRESENT:  # a committed row may share the file
        return result
    return replace(result, written_path=stored.path)


def _study_of(db: Session, instance_id: int) -> int:
    study_id = db.scalar(
        select(Series.study_fk).join(Instance, Instance.series_fk == Series.id)
        .where(Instance.id == instance_id)
    )  # fmt: skip
    return int(study_id or 0)
