"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data of a study, series or
instance.

Instances are streamed as ``multipart/related; type="application/dicom"`` straight from the
archive's files, without parsing them: one query lists the files, and the body is a file laid
over them (:class:`MultipartFile`) that the WSGI server sends itself (``wsgi.file_wrapper``),
each file read when reached (constant memory, whatever the study's size). Instances are answered in
their stored transfer syntax (when Accept names none, or ``*``, or the stored one); a request
for another uncompressed syntax is converted with pydicom; any other is refused (406).

Metadata is the DICOM JSON (Annex F) of every instance, bulk data (pixel data, binary values
over 1 KiB) as ``BulkDataURI``s that this module also serves. Frames are the native frame
bytes (``application/octet-stream``) or, for a compressed stored syntax, the frame's
compressed bitstream (``image/jpeg``, ``image/jls``, ``image/jp2``... or octet-stream with
``transfer-syntax=*``); compressed frames asked for as plain octet-stream are decoded.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from flask import Response, json, request
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from werkzeug.wsgi import wrap_file

from pacs.dicomweb import blueprint
from pacs.dicomweb.common import (
    CHUNK,
    CONVERTIBLE,
    DEFLATED_LE,
    DICOM,
    DICOM_JSON,
    EXPLICIT_LE,
    MULTIPART,
    OCTET_STREAM,
    UNCOMPRESSED,
    DicomWebError,
    InstanceRow,
    MediaRange,
    audit_retrieval,
    base_url,
    error_json,
    file_of,
    instance_url,
    instances_of,
    parse_accept,
)
from pacs.dicomweb.dicom_json import dataset_to_json
from ris.auth import IMAGE_READERS, roles
from ris.db import get_db

logger = logging.getLogger(__name__)

STUDY = "/studies/<study>"
SERIES = STUDY + "/series/<series>"
INSTANCE = SERIES + "/instances/<instance>"
PIXEL_DATA = 0x7FE00010
BULK_THRESHOLD = 1024
MAX_FRAMES_ASKED = 10000
# Compressed transfer syntaxes and the media type of their frames (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}  # fmt: skip
# Other names clients use for the same media types.
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": ("image/dicom-rle",), "image/jls": ("image/x-jls",)}
NATIVE_FRAME_SYNTAXES = UNCOMPRESSED | {DEFLATED_LE}  # deflate inflates to native


@blueprint.errorhandler(DicomWebError)
def _dicomweb_error(exc: DicomWebError) -> Response:
    logger.info("DICOMweb %s %s: %d %s", request.method, request.path, exc.status, exc.reason)
    return error_json(exc.status, exc.reason)


# --- Instances -------------------------------------------------------------------------------


@blueprint.get(STUDY)
@roles(*IMAGE_READERS)
def wado_study(study: str) -> Response:
    return _retrieve(instances_of(get_db(), study), "study")


@blueprint.get(SERIES)
@roles(*IMAGE_READERS)
def wado_series(study: str, series: str) -> Response:
    return _retrieve(instances_of(get_db(), study, series), "series")


@blueprint.get(INSTANCE)
@roles(*IMAGE_READERS)
def wado_instance(study: str, series: str, instance: str) -> Response:
    return _retrieve(instances_of(get_db(), study, series, instance), "instance")


def _retrieve(rows: list[InstanceRow], level: str) -> Response:
    ranges = parse_accept(request.headers.get("Accept"))
    if level == "instance" and _wants_single_part(ranges):
        return _single_instance(rows[0], ranges)
    plan = [(row, _output_syntax(row.transfer_syntax_uid, ranges)) for row in rows]
    refused = sorted({row.transfer_syntax_uid for row, syntax in plan if syntax is None})
    if refused:
        raise DicomWebError(
            406, f"cannot answer the Accept header for instances stored in {', '.join(refused)}"
        )
    present = [
        (row, syntax, path) for row, syntax in plan if (path := existing_file(row)) is not None
    ]
    if not present:
        raise DicomWebError(404, "the instances' files are missing from the archive")
    audit_retrieval(get_db(), rows, f"{level} instances")
    boundary = uuid.uuid4().hex
    content_type = f'{MULTIPART}; type="{DICOM}"; boundary={boundary}'
    if all(syntax == row.transfer_syntax_uid for row, syntax, _ in present):
        # All sent as stored: a file over the files, for the server's file wrapper; its known
        # length also spares the server chunked encoding.
        body = MultipartFile.of_files(boundary, [(syntax, path) for _, syntax, path in present])
        headers = {"Content-Type": content_type, "Content-Length": str(body.size)}
        return Response(wrap_file(request.environ, body, CHUNK), headers=headers,
                        direct_passthrough=True)  # fmt: skip
    parts = ((_part_head(syntax, _size_as_stored(row, syntax, path)),
              dicom_bytes(path, row.transfer_syntax_uid, syntax))
             for row, syntax, path in present)  # fmt: skip
    return Response(_multipart(boundary, parts), headers={"Content-Type": content_type},
                    direct_passthrough=True)  # fmt: skip


def _wants_single_part(ranges: list[MediaRange]) -> bool:
    """Accept names ``application/dicom`` itself (not inside multipart) before any multipart."""
    for media in ranges:
        if media.mime == DICOM:
            return True
        if media.mime in (MULTIPART, "*/*", "multipart/*"):
            return False
    return False


def _single_instance(row: InstanceRow, ranges: list[MediaRange]) -> Response:
    media = next(m for m in ranges if m.mime == DICOM)
    syntax = _syntax_for(row.transfer_syntax_uid, media.transfer_syntax)
    path = existing_file(row)
    if syntax is None:
        raise DicomWebError(
            406,
            f"cannot send an instance stored in {row.transfer_syntax_uid} as asked",
        )
    if path is None:
        raise DicomWebError(404, "the instance's file is missing from the archive")
    audit_retrieval(get_db(), [row], "instance")
    headers = {"Content-Type": f"{DICOM}; transfer-syntax={syntax}"}
    return Response(dicom_bytes(path, row.transfer_syntax_uid, syntax), headers=headers,
                    direct_passthrough=True)  # fmt: skip


def _output_syntax(stored: str, ranges: list[MediaRange]) -> str | None:
    """The transfer syntax to send an instance stored in ``stored`` in, or None (406)."""
    for media in ranges:
        if media.mime in ("*/*", "multipart/*"):
            return stored
        if media.mime == MULTIPART and media.related_type in (None, DICOM, "application/*", "*/*"):
            syntax = _syntax_for(stored, media.transfer_syntax)
            if syntax is not None:
                return syntax
    return None


def _syntax_for(stored: str, asked: str | None) -> str | None:
    if asked in (None, "", "*") or asked == stored:
        return stored  # as stored: no transfer syntax named means "as stored" here
    if asked in CONVERTIBLE and stored in CONVERTIBLE:
        return asked
    return None


def existing_file(row: InstanceRow) -> Path | None:
    path = file_of(row)
    if not path.is_file():
        logger.error("Instance %s: file %s is missing", row.sop_instance_uid, path)
        return None
    return path


def _part_head(syntax: str, size: int | None) -> bytes:
    """A part's headers; with Content-Length when the size is known (sent as stored)."""
    header = f"Content-Type: {DICOM}; transfer-syntax={syntax}\r\n"
    if size is not None:
        header += f"Content-Length: {size}\r\n"
    return header.encode("ascii")


def _size_as_stored(row: InstanceRow, syntax: str, path: Path) -> int | None:
    return os.path.getsize(path) if syntax == row.transfer_syntax_uid else None


class MultipartFile:
    """A multipart/related body over archive files, as a read-only seekable file.

    Given to the WSGI server's ``wsgi.file_wrapper``, waitress sends it from its I/O thread,
    a socket buffer at a time, and frees the worker thread at once. Sent through an iterator
    instead, every chunk went through the worker's output buffer (spilled to a temporary file
    past 1 MB) and each of the 8 worker threads kept some 20 MB of malloc arena afterwards
    (bench/README.md, "WADO-RS memory on a 2 GB study"). Only the part headers are held; a
    file is opened when its bytes are first read and closed when the next file is reached.
    """

    def __init__(self, segments: list[bytes | tuple[Path, int]]) -> None:
        self.segments = segments
        self.starts: list[int] = []
        offset = 0
        for segment in segments:
            self.starts.append(offset)
            offset += len(segment) if isinstance(segment, bytes) else segment[1]
        self.size = offset
        self.position = 0
        self._open: tuple[int, int] | None = None  # (segment index, file descriptor)
        # waitress reads on its I/O thread and may close from another (a client gone): a
        # descriptor closed twice would close whatever file or socket got its number since.
        self._closing = threading.Lock()

    @classmethod
    def of_files(cls, boundary: str, parts: list[tuple[str, Path]]) -> MultipartFile:
        """The body :func:`_multipart` would write for these (syntax, file) sent as stored."""
        segments: list[bytes | tuple[Path, int]] = []
        for number, (syntax, path) in enumerate(parts):
            lead = f"--{boundary}\r\n" if number == 0 else f"\r\n--{boundary}\r\n"
            size = os.path.getsize(path)
            segments += [lead.encode("ascii") + _part_head(syntax, size) + b"\r\n", (path, size)]
        closing = f"\r\n--{boundary}--\r\n" if parts else f"--{boundary}--\r\n"
        return cls([*segments, closing.encode("ascii")])

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        pieces = []
        while self.position < end:
            index = bisect_right(self.starts, self.position) - 1
            piece = self._piece(index, self.position - self.starts[index], end - self.position)
            pieces.append(piece)
            self.position += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _piece(self, index: int, offset: int, wanted: int) -> bytes:
        segment = self.segments[index]
        if isinstance(segment, bytes):
            return segment[offset : offset + wanted]
        path, size = segment
        with self._closing:
            if self._open is None or self._open[0] != index:
                self._close_open()
                self._open = (index, os.open(path, os.O_RDONLY))
            piece = os.pread(self._open[1], min(wanted, size - offset), offset)
        if not piece:  # archive files never change; this one did: the length sent is wrong
            raise OSError(f"{path} is shorter than when the answer began")
        return piece

    def close(self) -> None:
        with self._closing:
            self._close_open()

    def _close_open(self) -> None:
        if self._open is not None:
            fd, self._open = self._open[1], None
            os.close(fd)


def dicom_bytes(path: Path, stored: str, syntax: str) -> Iterator[bytes]:
    if syntax == stored:
        yield from _file_chunks(path)
        return
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    yield buffer.getvalue()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _multipart(boundary: str, parts: Iterable[tuple[bytes, Iterable[bytes]]]) -> Iterator[bytes]:
    """A multipart/related body: each part's headers, then its bytes, then the closing line.

    A part's headers go out with its first chunk (the whole of a typical instance file), so
    the server writes once per instance rather than twice."""
    opening = f"--{boundary}\r\n".encode("ascii")
    separator = f"\r\n--{boundary}\r\n".encode("ascii")
    first = True
    for headers, chunks in parts:
        data = iter(chunks)
        yield (opening if first else separator) + headers + b"\r\n" + next(data, b"")
        first = False
        yield from data
    yield (f"\r\n--{boundary}--\r\n" if not first else f"--{boundary}--\r\n").encode("ascii")


# --- Metadata --------------------------------------------------------------------------------


@blueprint.get(STUDY + "/metadata")
@roles(*IMAGE_READERS)
def metadata_study(study: str) -> Response:
    return _metadata(instances_of(get_db(), study), "study metadata")


@blueprint.get(SERIES + "/metadata")
@roles(*IMAGE_READERS)
def metadata_series(study: str, series: str) -> Response:
    return _metadata(instances_of(get_db(), study, series), "series metadata")


@blueprint.get(INSTANCE + "/metadata")
@roles(*IMAGE_READERS)
def metadata_instance(study: str, series: str, instance: str) -> Response:
    return _metadata(instances_of(get_db(), study, series, instance), "instance metadata")


def _metadata(rows: list[InstanceRow], what: str) -> Response:
    ranges = parse_accept(request.headers.get("Accept"))
    acceptable = (DICOM_JSON, "application/json", "application/*", "*/*")
    if not any(media.mime in acceptable for media in ranges):
        raise DicomWebError(406, f"metadata is available as {DICOM_JSON} only")
    present = [(row, path) for row in rows if (path := existing_file(row)) is not None]
    audit_retrieval(get_db(), rows, what)
    return Response(_json_array(present, base_url()), headers={"Content-Type": DICOM_JSON},
                    direct_passthrough=True)  # fmt: skip


def _json_array(present: list[tuple[InstanceRow, Path]], base: str) -> Iterator[bytes]:
    separator = b"["
    for row, path in present:
        bulk = _bulk_uri_builder(row, base)
        try:
            item = _instance_json(path, row.transfer_syntax_uid, bulk)
        except Exception:  # one damaged file: the others' metadata is still answered
            logger.exception("Metadata of %s unreadable", row.sop_instance_uid)
            continue
        yield separator + json.dumps(item, ensure_ascii=False).encode("utf-8")
        separator = b","
    yield b"]" if separator == b"," else b"[]"


def read_deferred(path: Path, stored: str) -> Dataset:
    """The file's dataset with its large values left on disk (offsets kept, read on use);
    a deflated file is read whole, since offsets into its inflated stream cannot be seeked."""
    return dcmread(path, defer_size=None if stored == DEFLATED_LE else BULK_THRESHOLD)


def _instance_json(path: Path, stored: str, bulk: Callable[[str], str]) -> dict[str, object]:
    if stored in NATIVE_FRAME_SYNTAXES:  # large values deferred: their offsets, not their bytes
        return dataset_to_json(read_deferred(path, stored), bulk, BULK_THRESHOLD)
    with open(path, "rb") as handle:  # encapsulated pixel data would be read: stop before it
        item = dataset_to_json(dcmread(handle, stop_before_pixels=True, defer_size=BULK_THRESHOLD),
                               bulk, BULK_THRESHOLD)  # fmt: skip
        if pixel_data_position(handle) is not None:
            item[f"{PIXEL_DATA:08X}"] = {"vr": "OB", "BulkDataURI": bulk(f"{PIXEL_DATA:08X}")}
    return item


def _bulk_uri_builder(row: InstanceRow, base: str) -> Callable[[str], str]:
    url = instance_url(row.study_uid, row.series_uid, row.sop_instance_uid, base)
    return lambda path: f"{url}/bulkdata/{path}"


# --- Frames ----------------------------------------------------------------------------------


@blueprint.get(INSTANCE + "/frames/<frames>")
@roles(*IMAGE_READERS)
def wado_frames(study: str, series: str, instance: str, frames: str) -> Response:
    numbers = _frame_numbers(frames)
    row = instances_of(get_db(), study, series, instance)[0]
    path = existing_file(row)
    if path is None:
        raise DicomWebError(404, "the instance's file is missing from the archive")
    source = FrameSource(path, row.transfer_syntax_uid)
    for number in numbers:
        if number > source.number_of_frames:
            raise DicomWebError(
                404, f"frame {number} does not exist ({source.number_of_frames} frames)"
            )
    media, syntax = source.negotiate(parse_accept(request.headers.get("Accept")))
    audit_retrieval(get_db(), [row], f"frames {frames}")
    boundary = uuid.uuid4().hex
    part_type = f"{media}; transfer-syntax={syntax}".encode("ascii")
    parts = ((b"Content-Type: " + part_type + b"\r\n", source.frame(n, syntax)) for n in numbers)
    content_type = f'{MULTIPART}; type="{media}"; boundary={boundary}'
    return Response(_multipart(boundary, parts), headers={"Content-Type": content_type},
                    direct_passthrough=True)  # fmt: skip


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise DicomWebError(
            400, f"frame list {text[:40]!r} is not comma-separated numbers"
        ) from None
    if not numbers or min(numbers) < 1 or len(numbers) > MAX_FRAMES_ASKED:
        raise DicomWebError(400, "frame numbers start at 1")
    return numbers


def pixel_data_position(handle: BinaryIO) -> int | None:
    """Where the encapsulated Pixel Data value starts, ``handle`` being just past the dataset
    read by ``dcmread(stop_before_pixels=True)``; None when no pixel data follows."""
    header = handle.read(12)
    if len(header) < 12 or header[:4] != b"\xe0\x7f\x10\x00" or header[4:6] not in (b"OB", b"OW"):
        return None
    return handle.tell()


class FrameSource:
    """The frames of one archived file, read without loading its pixel data whole."""

    def __init__(self, path: Path, stored_syntax: str) -> None:
        self.path, self.stored = path, stored_syntax
        self.compressed = stored_syntax not in NATIVE_FRAME_SYNTAXES
        self.pixel_media = FRAME_MEDIA_TYPES.get(stored_syntax, OCTET_STREAM)
        self.value_tell: int | None = None
        if self.compressed:  # encapsulated: pydicom would read the whole value, so stop before
            with open(path, "rb") as handle:
                self.ds = dcmread(handle, stop_before_pixels=True)
                self.value_tell = pixel_data_position(handle)
            if self.value_tell is None:
                raise DicomWebError(400, "the instance has no pixel data (no frames)")
        else:  # native: the value is deferred (its offset kept), not read
            self.ds = read_deferred(path, stored_syntax)
            if PIXEL_DATA not in self.ds:
                raise DicomWebError(400, "the instance has no pixel data (no frames)")
            raw = self.ds.get_item(PIXEL_DATA)
            if isinstance(raw, RawDataElement) and raw.value is None:
                self.value_tell = raw.value_tell
        self.number_of_frames = int(self.ds.get("NumberOfFrames", 1) or 1)

    def negotiate(self, ranges: list[MediaRange]) -> tuple[str, str]:
        """(part media type, transfer syntax) answering Accept; DicomWebError(406) if none."""
        for media in ranges:
            choice = self._choice(media)
            if choice is not None:
                return choice
        raise DicomWebError(406, f"frames stored in {self.stored} cannot be sent as asked")

    def _choice(self, media: MediaRange) -> tuple[str, str] | None:
        as_stored = (
            (self.pixel_media, self.stored) if self.compressed else (OCTET_STREAM, EXPLICIT_LE)
        )
        if media.mime in ("*/*", "multipart/*"):
            return as_stored
        if media.mime != MULTIPART:
            return None
        kind, asked = media.related_type or OCTET_STREAM, media.transfer_syntax
        if kind == "*/*" and asked in (None, "", "*"):
            return as_stored
        if kind == OCTET_STREAM:
            return self._octet_stream(asked)
        names = {self.pixel_media, "image/*", *MEDIA_TYPE_ALIASES.get(self.pixel_media, ())}
        if self.compressed and kind in names and asked in (None, "", "*", self.stored):
            return kind if kind != "image/*" else self.pixel_media, self.stored
        return None

    def _octet_stream(self, asked: str | None) -> tuple[str, str] | None:
        if not self.compressed:
            return (OCTET_STREAM, EXPLICIT_LE) if asked in (None, "", "*", *UNCOMPRESSED) else None
        if asked in ("*", self.stored):
            return OCTET_STREAM, self.stored
        if asked in (None, "", EXPLICIT_LE):
            return OCTET_STREAM, EXPLICIT_LE  # decoded
        return None

    def pixel_bytes(self) -> tuple[int, Iterator[bytes]]:
        """The native pixel data value: its size and its bytes, read in chunks."""
        raw = self.ds.get_item(PIXEL_DATA)
        if self.value_tell is None or self.stored not in UNCOMPRESSED:
            data = bytes(self.ds.PixelData)
            return len(data), iter([data])
        length, start = int(raw.length), self.value_tell

        def chunks() -> Iterator[bytes]:
            with open(self.path, "rb") as handle:
                handle.seek(start)
                left = length
                while left > 0 and (chunk := handle.read(min(CHUNK, left))):
                    left -= len(chunk)
                    yield chunk

        return length, chunks()

    def frame(self, number: int, syntax: str) -> Iterator[bytes]:
        if not self.compressed:
            yield self._native_frame(number)
        elif syntax == self.stored:
            yield self._encapsulated_frame(number)
        else:
            yield self._decoded_frame(number)

    def _native_frame(self, number: int) -> bytes:
        ds = self.ds
        bits = int(ds.get("BitsAllocated", 16))
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
        if self.value_tell is None or self.stored not in UNCOMPRESSED:
            data = bytes(ds.PixelData)  # small enough to have been read, or deflated
            return data[(number - 1) * size : number * size]
        with open(self.path, "rb") as handle:
            handle.seek(self.value_tell + (number - 1) * size)
            return handle.read(size)

    def _encapsulated_frame(self, number: int) -> bytes:
        assert self.value_tell is not None
        with open(self.path, "rb") as handle:
            handle.seek(self.value_tell)
            return get_frame(handle, number - 1, number_of_frames=self.number_of_frames)

    def _decoded_frame(self, number: int) -> bytes:
        from pacs.rendering import decode_frame  # numpy and the decoders only when needed

        try:
            return decode_frame(self.path, number).tobytes()
        except Exception as exc:
            logger.warning("Frame %d of %s not decodable: %s", number, self.path, exc)
            return b""


# --- Bulk data -------------------------------------------------------------------------------


@blueprint.get(INSTANCE + "/bulkdata/<path:tag_path>")
@roles(*IMAGE_READERS)
def wado_bulkdata(study: str, series: str, instance: str, tag_path: str) -> Response:
    row = instances_of(get_db(), study, series, instance)[0]
    path = existing_file(row)
    if path is None:
        raise DicomWebError(404, "the instance's file is missing from the archive")
    if tag_path.upper() == f"{PIXEL_DATA:08X}":
        media, parts = _pixel_data_parts(path, row.transfer_syntax_uid)
    else:
        value = _bulk_value(read_deferred(path, row.transfer_syntax_uid), tag_path)
        media = OCTET_STREAM
        parts = [(f"Content-Type: {media}\r\nContent-Length: {len(value)}\r\n".encode(), [value])]
    audit_retrieval(get_db(), [row], f"bulk data {tag_path}")
    boundary = uuid.uuid4().hex
    content_type = f'{MULTIPART}; type="{media}"; boundary={boundary}'
    return Response(_multipart(boundary, parts), headers={"Content-Type": content_type},
                    direct_passthrough=True)  # fmt: skip


def _pixel_data_parts(path: Path, stored: str) -> tuple[str, list[tuple[bytes, Iterable[bytes]]]]:
    """Pixel data as bulk data: native, one part read from the file in chunks; encapsulated,
    one part per frame in the stored syntax's media type."""
    source = FrameSource(path, stored)
    if source.compressed:
        header = f"Content-Type: {source.pixel_media}; transfer-syntax={stored}\r\n".encode()
        frames = range(1, source.number_of_frames + 1)
        return source.pixel_media, [(header, source.frame(n, stored)) for n in frames]
    size, chunks = source.pixel_bytes()
    header = f"Content-Type: {OCTET_STREAM}\r\nContent-Length: {size}\r\n".encode()
    return OCTET_STREAM, [(header, chunks)]


def _bulk_value(ds: Dataset, tag_path: str) -> bytes:
    """The value at ``GGGGEEEE[/item/GGGGEEEE...]``; DicomWebError 404/400 otherwise."""
    parts = tag_path.split("/")
    if len(parts) % 2 == 0 or len(parts) > 15:
        raise DicomWebError(400, f"bulk data path {tag_path[:80]!r} is malformed")
    current: Dataset = ds
    try:
        for depth in range(0, len(parts) - 1, 2):
            current = current[int(parts[depth], 16)].value[int(parts[depth + 1])]
        element = current[int(parts[-1], 16)]
    except (ValueError, KeyError, IndexError, TypeError):
        raise DicomWebError(404, f"no bulk data at {tag_path[:80]!r}") from None
    if not isinstance(element.value, bytes | bytearray):
        raise DicomWebError(404, f"{tag_path[:80]!r} is not a binary value")
    return bytes(element.value)
