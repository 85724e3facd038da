"""WADO-RS rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4, 8.3.5).

``/rendered`` of an instance answers one image (its first frame); of frames, one image, or a
multipart of images when several frames are asked for; of a series or a study, a
``multipart/related`` stream with one rendering (the first frame) of every instance that has
pixels, in series and instance number order. ``/thumbnail`` answers one small image of a
representative instance: the middle instance of the series (of the study's first series
that renders).
The media type is chosen by the ``accept`` query parameter or the ``Accept`` header (JPEG
for ``*/*``); the pixels are made by :mod:`pacs.rendering`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from flask import Response, current_app, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacs import rendering, rendering_params
from pacs.dicomweb import blueprint
from pacs.models import Instance, Series, Study
from pacs.rendering import MEDIA_TYPES, RenderError, RenderOptions
from pacs.storage import archive_root, valid_uid
from ris import audit
from ris.auth import IMAGE_READERS, current_actor, roles
from ris.db import get_db
from ris.errors import error_response

logger = logging.getLogger(__name__)

MAX_FRAMES_ASKED = 1000  # a frame list longer than this is refused (400)


class RenderRequestError(Exception):
    """A request answered with ``status`` and a reason before any image is made."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Target:
    """What a request names: the study, and the series, instance and frames if given."""

    study: str
    series: str | None = None
    instance: str | None = None
    frames: tuple[int, ...] = ()


# --- Routes --------------------------------------------------------------------------------

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
) -> Response | tuple[Response, int]:
    """Retrieve Rendered (PS3.18 10.4.1.1.3): one image, or a multipart of images."""
    return _answer(study, series, instance, frames, thumbnail=False)


@blueprint.get(STUDY + "/thumbnail", endpoint="study_thumbnail")
@blueprint.get(SERIES + "/thumbnail", endpoint="series_thumbnail")
@blueprint.get(INSTANCE + "/thumbnail", endpoint="instance_thumbnail")
@blueprint.get(FRAMES + "/thumbnail", endpoint="frames_thumbnail")
@roles(*IMAGE_READERS)
def thumbnail(
    study: str, series: str | None = None, instance: str | None = None, frames: str | None = None
) -> Response | tuple[Response, int]:
    """Retrieve Thumbnail (PS3.18 10.4.1.1.4): one small image of the resource."""
    return _answer(study, series, instance, frames, thumbnail=True)


def _answer(
    study: str, series: str | None, instance: str | None, frames: str | None, *, thumbnail: bool
) -> Response | tuple[Response, int]:
    try:
        media_type = negotiate(request.args.get("accept"), request.headers.get("Accept"))
        options = rendering_params.parse_options(media_type, request.args)
        target = Target(study, series, instance, parse_frames(frames))
        check_uids(target)
        if thumbnail:
            return _thumbnail(get_db(), target, rendering.thumbnail_options(options))
        return _rendered(get_db(), target, options)
    except RenderRequestError as error:
        return _refused(error.status, error.reason)
    except RenderError as error:
        return _refused(error.status, error.reason)


def _refused(status: int, reason: str) -> tuple[Response, int]:
    logger.info("Refused %s %s: %s %s", request.method, request.path, status, reason)
    return error_response(status, reason)


def _thumbnail(db: Session, target: Target, options: RenderOptions) -> Response:
    study, candidates = thumbnail_candidates(db, target)
    frame = target.frames[0] if target.frames else 1
    image = first_rendering([(stored_path(found), frame) for found in candidates], options)
    _audit(db, "thumbnail", study, target, 1)
    return Response(image.data, mimetype=image.media_type)


def first_rendering(
    candidates: Sequence[tuple[Path, int]], options: RenderOptions
) -> rendering.RenderedImage:
    """The first candidate that renders; when none does, the first one's error."""
    first_error: RenderError | None = None
    for path, frame in candidates:
        try:
            return rendering.render_instance(path, frame, options)
        except (rendering.NotRenderable, rendering.DecodeFailed) as error:
            first_error = first_error or error
    raise first_error or RenderRequestError(404, "nothing to render")


def _rendered(db: Session, target: Target, options: RenderOptions) -> Response:
    study, instances = instances_of(db, target)
    if target.instance is not None:
        frames = target.frames or (1,)
        if len(frames) == 1:
            image = rendering.render_instance(stored_path(instances[0]), frames[0], options)
            _audit(db, "rendered", study, target, 1)
            return Response(image.data, mimetype=image.media_type)
        header = rendering.read_image_header(stored_path(instances[0]))
        for frame in frames:  # every frame asked for must exist before the stream starts
            rendering.check_frame(header, frame)
        parts = [(stored_path(instances[0]), frame) for frame in frames]
    else:
        parts = [(stored_path(found), 1) for found in instances]
    stream = multipart(parts, options)
    _audit(db, "rendered", study, target, len(parts))
    return stream


def _audit(db: Session, what: str, study: Study, target: Target, images: int) -> None:
    """One event per request, as every DICOMweb retrieval records: who saw which study."""
    detail = {key: value for key, value in {
        "what": what, "path": request.path, "series": target.series,
        "instance": target.instance, "frames": list(target.frames) or None, "images": images,
    }.items() if value is not None}  # fmt: skip
    audit.record(db, current_actor(), "dicomweb.retrieve", object_type="study",
                 object_id=study.study_instance_uid, patient_id=study.ris_patient_id,
                 detail=detail)  # fmt: skip
    db.commit()


# --- Content negotiation (PS3.18 8.3.3) ----------------------------------------------------


def negotiate(accept_parameter: str | None, accept_header: str | None) -> str:
    """The rendered media type to answer with: the ``accept`` query parameter wins over the
    header; ``*/*`` and ``image/*`` get JPEG; ``multipart/related; type=...`` names the
    type of its parts. Raises :class:`RenderRequestError` 406 when none is acceptable."""
    asked = accept_parameter or accept_header or "*/*"
    ranked: list[tuple[float, int, str]] = []
    for position, media_range in enumerate(asked.split(",")):
        media_type, params = _media_range(media_range)
        if media_type == "multipart/related":
            media_type = params.get("type", "image/jpeg").lower()
        quality = _quality(params.get("q"))
        chosen = _supported(media_type)
        if chosen is not None and quality > 0:
            ranked.append((-quality, position, chosen))
    if not ranked:
        raise RenderRequestError(
            406, f"no acceptable rendered media type in {asked!r}; Placa renders "
            + ", ".join(MEDIA_TYPES),
        )  # fmt: skip
    return min(ranked)[2]


def _media_range(text: str) -> tuple[str, dict[str, str]]:
    media_type, *rest = text.split(";")
    params = {}
    for param in rest:
        name, _, value = param.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return media_type.strip().lower(), params


def _quality(text: str | None) -> float:
    try:
        return float(text) if text is not None else 1.0
    except ValueError:
        return 0.0


def _supported(media_type: str) -> str | None:
    if media_type in ("*/*", "image/*", ""):
        return rendering.JPEG
    return media_type if media_type in MEDIA_TYPES else None


def parse_frames(text: str | None) -> tuple[int, ...]:
    """A frame list ``1`` or ``1,3,5`` (1-based); 400 when malformed."""
    if text is None:
        return ()
    parts = text.split(",")
    if len(parts) > MAX_FRAMES_ASKED or not all(part.strip().isdigit() for part in parts):
        raise RenderRequestError(400, f"frames must be a list of frame numbers, not {text!r}")
    frames = tuple(int(part) for part in parts)
    if min(frames) < 1:
        raise RenderRequestError(400, "frame numbers start at 1")
    return frames


# --- What the request names ----------------------------------------------------------------


def check_uids(target: Target) -> None:
    """400 for a path segment that is not a UID (PS3.5 9.1), before any query."""
    named = (("Study", target.study), ("Series", target.series), ("SOP", target.instance))
    for level, uid in named:
        if uid is not None and not valid_uid(uid):
            raise RenderRequestError(400, f"{level} Instance UID {uid[:70]!r} is not a valid UID")


def find_study(db: Session, study_uid: str) -> Study:
    study = db.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    if study is None:
        raise RenderRequestError(404, f"study {study_uid} is not in the archive")
    return study


def instances_of(db: Session, target: Target) -> tuple[Study, list[Instance]]:
    """The study and its instances the target names, in series then instance number order."""
    study = find_study(db, target.study)
    query = (
        select(Instance).join(Series, Instance.series_fk == Series.id)
        .where(Series.study_fk == study.id)
        .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    )  # fmt: skip
    if target.series is not None:
        query = query.where(Series.series_instance_uid == target.series)
    if target.instance is not None:
        query = query.where(Instance.sop_instance_uid == target.instance)
    found = list(db.scalars(query))
    if not found:
        raise RenderRequestError(404, f"{_named(target)} is not in the archive")
    return study, found


def thumbnail_candidates(db: Session, target: Target) -> tuple[Study, list[Instance]]:
    """The instances a thumbnail may show, best first: the one named, else the middle
    instance of each series in series order (a study's SR or KO series is passed over)."""
    study, found = instances_of(db, target)
    by_series: dict[int, list[Instance]] = {}
    for instance in found:
        by_series.setdefault(instance.series_fk, []).append(instance)
    return study, [series[(len(series) - 1) // 2] for series in by_series.values()]


def _named(target: Target) -> str:
    if target.instance is not None:
        return f"instance {target.instance} of series {target.series} of study {target.study}"
    if target.series is not None:
        return f"series {target.series} of study {target.study}"
    return f"study {target.study}"


def stored_path(instance: Instance) -> Path:
    """The instance's file; the indexed path must stay inside the archive."""
    root = archive_root(current_app.config["DATA_DIR"]).resolve()
    path = (root / instance.path).resolve()
    if not path.is_relative_to(root):
        logger.error("Instance %s has a path outside the archive", instance.sop_instance_uid)
        raise RenderRequestError(500, "the stored instance cannot be read")
    return path


# --- The multipart answer ------------------------------------------------------------------


def multipart(parts: Sequence[tuple[Path, int]], options: RenderOptions) -> Response:
    """``multipart/related`` of renderings, streamed one image at a time.

    The first image is made before answering, so that a series with nothing renderable is
    refused with its reason; later instances that cannot be rendered are left out."""
    errors: list[RenderError] = []
    renderings = _renderings(parts, options, errors)
    first = next(renderings, None)
    if first is None:
        raise errors[0]  # parts is never empty: a 404 came before
    boundary = uuid.uuid4().hex
    content_type = f'multipart/related; type="{options.media_type}"; boundary={boundary}'
    body = _multipart_body(first, renderings, options.media_type, boundary)
    return Response(body, content_type=content_type)


def _renderings(
    parts: Sequence[tuple[Path, int]], options: RenderOptions, errors: list[RenderError]
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
