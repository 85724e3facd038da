"""STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]`` of multipart DICOM.

The body is read as a stream, one part at a time (only the part being stored is in memory),
and every part goes through the same store path as a C-STORE: :func:`pacs.storage.read_part10`
then :func:`pacs.ingest.ingest` (file durable, then index committed, then the answer). The
answer lists each instance in ReferencedSOPSequence (with its RetrieveURL) or in
FailedSOPSequence with a FailureReason (PS3.4 status codes: A700 out of resources, A900
does not match, C000 cannot understand...): 200 when all were stored, 202 when some failed,
409 when none was. Only ``multipart/related; type="application/dicom"`` is accepted (415).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from flask import Flask, Response, current_app, json, request
from werkzeug.http import parse_options_header

from pacs.dicomweb import blueprint
from pacs.dicomweb.common import (
    DICOM,
    DICOM_JSON,
    MULTIPART,
    DicomWebError,
    check_uid,
    instance_url,
    study_url,
)
from pacs.dicomweb.multipart import MalformedMultipart, MultipartReader, Part
from pacs.ingest import ingest
from pacs.storage import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    StoreRefused,
    clean_uid,
    read_index_header,
    read_part10,
)
from ris import audit
from ris.auth import IMAGE_WRITERS, current_actor, roles
from ris.db import get_db

logger = logging.getLogger(__name__)

STOW_AE = "STOW-RS"  # recorded as the calling AE of instances stored over DICOMweb
PROCESSING_FAILURE = 0x0110
# Parts being stored at once, by every STOW-RS request together, and by one request at most:
# a request alone keeps 8 going (their group commits share fsyncs: 4 stored less on one
# stream), four requests share 16 (4 each: 8 or 16 each, more threads waiting on fsyncs and
# on the GIL, stored more slowly and at more CPU per instance; bench/README.md, "STOW-RS:
# the copies and the parts in flight"), however many requests come at once.
IN_FLIGHT = 16
IN_FLIGHT_PER_REQUEST = 8
MAX_PART_BYTES = 4 << 30  # one instance; the body as a whole has no limit


@dataclass(frozen=True)
class StowResult:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str = ""
    series_uid: str = ""
    failure: int | None = None
    comment: str = ""


@blueprint.post("/studies")
@roles(*IMAGE_WRITERS)
def stow_studies() -> Response:
    return _stow(None)


@blueprint.post("/studies/<study>")
@roles(*IMAGE_WRITERS)
def stow_study(study: str) -> Response:
    return _stow(check_uid(study, "Study Instance UID"))


def _stow(expected_study: str | None) -> Response:
    boundary = _boundary()
    results = _store_all(_parts(boundary), expected_study)
    if not results:
        raise DicomWebError(400, "the request holds no DICOM instance")
    stored = [r for r in results if r.failure is None]
    _audit(results, expected_study)
    status = 200 if len(stored) == len(results) else 409 if not stored else 202
    body = json.dumps(_answer(results, expected_study), ensure_ascii=False)
    return Response(body, status=status, headers={"Content-Type": DICOM_JSON})


def _boundary() -> bytes:
    mime, params = parse_options_header(request.headers.get("Content-Type", ""))
    if mime != MULTIPART:
        raise DicomWebError(415, f'STOW-RS accepts {MULTIPART}; type="{DICOM}" only')
    kind = params.get("type", DICOM).strip().lower()
    if kind != DICOM:
        raise DicomWebError(415, f"parts of type {kind!r} are not accepted: {DICOM} only")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise DicomWebError(400, "the multipart/related Content-Type names no boundary")
    return boundary.encode("latin-1")


def _parts(boundary: bytes) -> Iterator[Part]:
    """The body's parts, read from the request stream a block at a time."""
    reader = MultipartReader(_body_reader(), boundary, MAX_PART_BYTES)
    try:
        yield from reader
    except MalformedMultipart as exc:
        raise DicomWebError(400, f"malformed multipart body: {exc}") from None


class _InputReader:
    """``read(size)`` of the WSGI input, never past Content-Length (PEP 3333).

    Werkzeug's ``request.stream`` reads through ``io.RawIOBase.read``: a new bytearray per
    block, then a copy of it into bytes (page faults and a memcpy of every byte of the
    body); the input's own ``read`` fills the bytes it returns directly."""

    def __init__(self, source: BinaryIO, length: int) -> None:
        self._source, self._left = source, length

    def read(self, size: int) -> bytes:
        if self._left <= 0:
            return b""
        data = self._source.read(min(size, self._left))
        self._left -= len(data)
        return data


def _body_reader() -> Callable[[int], bytes]:
    length = request.content_length
    if length is None:  # chunked, from a server that does not buffer: werkzeug finds the end
        return request.stream.read
    return _InputReader(request.environ["wsgi.input"], length).read


_STORERS = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="placa-stow")
_SLOTS = threading.BoundedSemaphore(IN_FLIGHT)  # a part holds one from submit to stored


def _store_all(parts: Iterator[Part], expected_study: str | None) -> list[StowResult]:
    """Store every part, a few at once: while one waits for its fsyncs and index commit the
    next is read and written (the index writer commits them together), as several C-STORE
    associations would. The answer still comes only after every one is durable."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    in_flight: deque[Future[StowResult]] = deque()
    results: list[StowResult] = []
    try:
        for part in parts:
            if len(in_flight) >= IN_FLIGHT_PER_REQUEST:  # bounds memory too
                results.append(in_flight.popleft().result())
            _SLOTS.acquire()  # released as soon as a part is stored, whoever sent it
            try:
                future = _STORERS.submit(_store_part, app, part, expected_study)
            except BaseException:
                _SLOTS.release()
                raise
            future.add_done_callback(_release_slot)
            in_flight.append(future)
    finally:  # a malformed body: what was already sent is still stored and answered
        results.extend(future.result() for future in in_flight)
    return results


def _release_slot(_future: Future[StowResult]) -> None:
    _SLOTS.release()


def _store_part(app: Flask, part: Part, expected_study: str | None) -> StowResult:
    mime = parse_options_header(part.headers.get("Content-Type", DICOM))[0] or DICOM
    if mime != DICOM:
        return StowResult("", "", failure=CANNOT_UNDERSTAND, comment=f"part of type {mime}")
    try:
        received = read_part10(_with_preamble(part.data), STOW_AE)
    except StoreRefused as refusal:
        return StowResult("", "", failure=refusal.status, comment=refusal.comment)
    uids = (clean_uid(received.sop_class_uid), clean_uid(received.sop_instance_uid))
    try:
        header = read_index_header(received)
        if expected_study is not None and header.study_instance_uid != expected_study:
            raise StoreRefused(DOES_NOT_MATCH_SOP_CLASS, "Study Instance UID differs from the URL")
        ingest(app, received, header)
    except StoreRefused as refusal:
        logger.warning("STOW-RS %s refused (0x%04X): %s", uids[1], refusal.status, refusal.comment)
        return StowResult(*uids, failure=refusal.status, comment=refusal.comment)
    except Exception:
        logger.exception("STOW-RS %s failed", uids[1])
        return StowResult(*uids, failure=PROCESSING_FAILURE, comment="processing failure")
    return StowResult(header.sop_class_uid, header.sop_instance_uid, header.study_instance_uid,
                      header.series_instance_uid)  # fmt: skip


def _with_preamble(data: bytes) -> bytes:
    """Part 10 bytes; a part that starts with its File Meta group but without the preamble
    and ``DICM`` (what pydicom writes by default) gets them."""
    if data[:2] == b"\x02\x00" and data[128:132] != b"DICM":
        return bytes(128) + b"DICM" + data
    return data


def _answer(results: list[StowResult], expected_study: str | None) -> dict[str, object]:
    """The Store Instances Response Module (PS3.18 10.5.3) as DICOM JSON."""
    studies = {r.study_uid for r in results if r.failure is None}
    study = expected_study or (next(iter(studies)) if len(studies) == 1 else None)
    answer: dict[str, object] = {}
    if study:
        answer["00081190"] = {"vr": "UR", "Value": [study_url(study)]}
    failed = [_failed_item(r) for r in results if r.failure is not None]
    referenced = [_referenced_item(r) for r in results if r.failure is None]
    answer["00081198"] = {"vr": "SQ", "Value": failed} if failed else {"vr": "SQ"}
    answer["00081199"] = {"vr": "SQ", "Value": referenced} if referenced else {"vr": "SQ"}
    return answer


def _uid_items(result: StowResult) -> dict[str, object]:
    item: dict[str, object] = {}
    for key, value in (("00081150", result.sop_class_uid), ("00081155", result.sop_instance_uid)):
        item[key] = {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}
    return item


def _referenced_item(result: StowResult) -> dict[str, object]:
    url = instance_url(result.study_uid, result.series_uid, result.sop_instance_uid)
    return {**_uid_items(result), "00081190": {"vr": "UR", "Value": [url]}}


def _failed_item(result: StowResult) -> dict[str, object]:
    return {**_uid_items(result), "00081197": {"vr": "US", "Value": [result.failure]}}


def _audit(results: list[StowResult], expected_study: str | None) -> None:
    db = get_db()
    stored = [r for r in results if r.failure is None]
    studies = sorted({r.study_uid for r in stored})
    failures = [f"{r.sop_instance_uid}: {r.comment}" for r in results if r.failure is not None]
    outcome = "success" if not failures else "failure" if not stored else "partial"
    detail = {"stored": len(stored), "failed": len(failures), "studies": studies[:20],
              "failures": failures[:20]}  # fmt: skip
    study = expected_study or (studies[0] if len(studies) == 1 else None)
    audit.record(db, current_actor(), "dicomweb.store", object_type="study", object_id=study,
                 outcome=outcome, detail=detail)  # fmt: skip
    db.commit()
