"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4, 8.3.5).

``/rendered`` of an instance answers one image (its first frame); of frames, one image, or a
multipart of images when several frames are asked for; of a series or a study, a
``multipart/related`` stream with one rendering (the first frame) of every instance that has
pixels, in series and instance number order. ``/thumbnail`` answers one small image of a
representative instance: the middle instance of the series (of the study's first series
that renders). The media type is chosen by the ``accept`` query parameter or the ``Accept``
header (JPEG for ``*/*``); the pixels are made by :mod:`pacs.rendering`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from flask import Response, request

from pacs import rendering, rendering_params
from pacs.dicomweb import blueprint
from pacs.dicomweb.common import (
    MULTIPART,
    DicomWebError,
    InstanceRow,
    audit_retrieval,
    file_of,
    instances_of,
    parse_accept,
)
from pacs.rendering import MEDIA_TYPES, RenderError, RenderOptions
from ris.auth import IMAGE_READERS, roles
from ris.db import get_db

logger = logging.getLogger(__name__)

MAX_FRAMES_ASKED = 1000  # a frame list longer than this is refused (400)
Part = tuple[Path, int]  # a file and the frame of it to render

STUDY = "/studies/<study>"
SERIES = STUDY + "/series/<series>"
INSTANCE = SERIES + "/instances/<instance>"
FRAMES = INSTANCE + "/frames/<frames>"


@blueprint.get(STUDY + "/rendered", endpoint="study_rendered")
@blueprint.get(SERIES + "/rendered", endpoint="series_rendered")
@blueprint.get(INSTANCE + "/rendered", endpoint="instance_rendered")
@blueprint.get(FRAMES + "/rendered", endpoint="frames_rendered")
@roles(*IMAGE_READERS)
def rendered(
    study: str, series: str | None = None, instance: str | None = None, frames: str | None = None
) -> Response:
    """Retrieve Rendered (PS3.18 10.4.1.1.3): one image, or a multipart of images."""
    options, frame_list = _options(), parse_frames(frames)
    rows = instances_of(get_db(), study, series, instance)
    if instance is None:  # a file found missing is left out of the stream, and logged
        parts = [(file_of(row), 1) for row in rows]
    elif len(frame_list) > 1:
        parts = _frames(_file(rows[0]), frame_list)
    else:
        image = _render(_file(rows[0]), frame_list[0] if frame_list else 1, options)
        audit_retrieval(get_db(), rows, "rendered")
        return Response(image.data, mimetype=image.media_type)
    answer = multipart(parts, options)
    audit_retrieval(get_db(), rows, "rendered")
    return answer


@blueprint.get(STUDY + "/thumbnail", endpoint="study_thumbnail")
@blueprint.get(SERIES + "/thumbnail", endpoint="series_thumbnail")
@blueprint.get(INSTANCE + "/thumbnail", endpoint="instance_thumbnail")
@blueprint.get(FRAMES + "/thumbnail", endpoint="frames_thumbnail")
@roles(*IMAGE_READERS)
def thumbnail(
    study: str, series: str | None = None, instance: str | None = None, frames: str | None = None
) -> Response:
    """Retrieve Thumbnail (PS3.18 10.4.1.1.4): one small image of the resource."""
    options, frame_list = rendering.thumbnail_options(_options()), parse_frames(frames)
    candidates = thumbnail_candidates(instances_of(get_db(), study, series, instance))
    frame = frame_list[0] if frame_list else 1
    row, image = first_rendering(candidates, frame, options)
    audit_retrieval(get_db(), [row], "thumbnail")
    return Response(image.data, mimetype=image.media_type)


def _options() -> RenderOptions:
    media_type = negotiate(request.args.get("accept"), request.headers.get("Accept"))
    try:
        return rendering_params.parse_options(media_type, request.args)
    except RenderError as error:
        raise DicomWebError(error.status, error.reason) from error


def _render(path: Path, frame: int, options: RenderOptions) -> rendering.RenderedImage:
    try:
        return rendering.render_instance(path, frame, options)
    except RenderError as error:
        raise DicomWebError(error.status, error.reason) from error


def _file(row: InstanceRow) -> Path:
    path = file_of(row)
    if not path.is_file():
        raise DicomWebError(404, "the instance's file is missing from the archive")
    return path


def _frames(path: Path, frames: Sequence[int]) -> list[Part]:
    """Every frame asked for must exist before the stream starts (404 otherwise)."""
    try:
        header = rendering.read_image_header(path)
        for frame in frames:
            rendering.check_frame(header, frame)
    except RenderError as error:
        raise DicomWebError(error.status, error.reason) from error
    return [(path, frame) for frame in frames]


# --- Content negotiation (PS3.18 8.3.3) ----------------------------------------------------


def negotiate(accept_parameter: str | None, accept_header: str | None) -> str:
    """The rendered media type to answer with: the ``accept`` query parameter wins over the
    header; ``*/*`` and ``image/*`` get JPEG; ``multipart/related; type=...`` names the
    type of its parts. 406 when none is acceptable."""
    asked = accept_parameter or accept_header or "*/*"
    for media_range in parse_accept(asked):  # best first
        mime = media_range.mime
        if mime == MULTIPART:
            mime = (media_range.related_type or rendering.JPEG).lower()
        if mime in ("*/*", "image/*"):
            return rendering.JPEG
        if mime in MEDIA_TYPES:
            return mime
    raise DicomWebError(
        406, f"no acceptable rendered media type in {asked!r}; Placa renders "
        + ", ".join(MEDIA_TYPES),
    )  # fmt: skip


def parse_frames(text: str | None) -> tuple[int, ...]:
    """A frame list ``1`` or ``1,3,5`` (1-based); 400 when malformed."""
    if text is None:
        return ()
    parts = text.split(",")
    if len(parts) > MAX_FRAMES_ASKED or not all(part.strip().isdigit() for part in parts):
        raise DicomWebError(400, f"frames must be a list of frame numbers, not {text[:70]!r}")
    frames = tuple(int(part) for part in parts)
    if min(frames) < 1:
        raise DicomWebError(400, "frame numbers start at 1")
    return frames


# --- Thumbnails ----------------------------------------------------------------------------


def thumbnail_candidates(rows: list[InstanceRow]) -> list[InstanceRow]:
    """The instances a thumbnail may show, best first: the middle instance of each series,
    in series order (so a study's first series without pixels, an SR, is passed over)."""
    by_series: dict[str, list[InstanceRow]] = {}
    for row in rows:
        by_series.setdefault(row.series_uid, []).append(row)
    return [series[(len(series) - 1) // 2] for series in by_series.values()]


def first_rendering(
    candidates: Sequence[InstanceRow], frame: int, options: RenderOptions
) -> tuple[InstanceRow, rendering.RenderedImage]:
    """The first candidate that renders; when none does, the first one's error."""
    first_error: RenderError | None = None
    for row in candidates:
        try:
            return row, rendering.render_instance(_file(row), frame, options)
        except (rendering.NotRenderable, rendering.DecodeFailed) as error:
            first_error = first_error or error
    if first_error is None:  # never: instances_of answered 404 for an empty list
        raise DicomWebError(404, "nothing to render")
    raise DicomWebError(first_error.status, first_error.reason)


# --- The multipart answer ------------------------------------------------------------------


def multipart(parts: Sequence[Part], options: RenderOptions) -> Response:
    """``multipart/related`` of renderings, streamed one image at a time.

    The first image is made before answering, so that a series with nothing renderable is
    refused with its reason; later instances that cannot be rendered are left out."""
    errors: list[RenderError] = []
    renderings = _renderings(parts, options, errors)
    first = next(renderings, None)
    if first is None:  # parts is never empty: instances_of answered 404 before
        raise DicomWebError(errors[0].status, errors[0].reason)
    boundary = uuid.uuid4().hex
    content_type = f'{MULTIPART}; type="{options.media_type}"; boundary={boundary}'
    body = _multipart_body(first, renderings, options.media_type, boundary)
    return Response(body, content_type=content_type)


def _renderings(
    parts: Sequence[Part], options: RenderOptions, errors: list[RenderError]
) -> Iterator[bytes]:
    """Each part rendered in turn; those that cannot be are left out, their errors kept."""
    for path, frame in parts:
        try:
            yield rendering.render_instance(path, frame, options).data
        except RenderError as error:
            errors.append(error)
            level = logging.INFO if isinstance(error, rendering.NotRenderable) else logging.WARNING
            logger.log(level, "Left %s frame %d out of a rendered answer: %s", path.name, frame,
                       error.reason)  # fmt: skip


def _multipart_body(
    first: bytes, rest: Iterator[bytes], media_type: str, boundary: str
) -> Iterator[bytes]:
    head = f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode()
    yield head + first + b"\r\n"
    for data in rest:
        yield head + data + b"\r\n"
    yield f"--{boundary}--\r\n".encode()
