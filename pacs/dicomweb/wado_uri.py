"""WADO-URI (PS3.18 9): ``GET /dicomweb/wado?requestType=WADO&studyUID=&seriesUID=&objectUID=``
for older viewers.

``contentType=application/dicom`` answers the instance's file (as stored, or converted to
another uncompressed ``transferSyntax``); ``image/jpeg`` (the default), ``image/png`` and
``image/gif`` a rendering by :mod:`pacs.rendering` (``frameNumber``, ``rows``/``columns``,
``windowCenter``/``windowWidth``, ``imageQuality``). Other types are refused with 406.
"""

from __future__ import annotations

import logging

from flask import Response, request

from pacs import rendering
from pacs.dicomweb import blueprint
from pacs.dicomweb.common import CONVERTIBLE, DICOM, DicomWebError, audit_retrieval, instances_of
from pacs.dicomweb.wado import dicom_bytes, existing_file
from ris.auth import IMAGE_READERS, roles
from ris.db import get_db

logger = logging.getLogger(__name__)


def _parameter(name: str, required: bool = True) -> str | None:
    value = request.args.get(name, "").strip()
    if required and not value:
        raise DicomWebError(400, f"the {name} parameter is required")
    return value or None


def _integer(name: str, low: int, high: int) -> int | None:
    value = _parameter(name, required=False)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise DicomWebError(400, f"{name} must be an integer") from None
    if not low <= number <= high:
        raise DicomWebError(400, f"{name} must be between {low} and {high}")
    return number


def _decimal(name: str) -> float | None:
    value = _parameter(name, required=False)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise DicomWebError(400, f"{name} must be a number") from None


@blueprint.get("/wado")
@roles(*IMAGE_READERS)
def wado_uri() -> Response:
    if _parameter("requestType") != "WADO":
        raise DicomWebError(400, "requestType must be WADO")
    study, series = _parameter("studyUID"), _parameter("seriesUID")
    instance = _parameter("objectUID")
    assert study and series and instance
    row = instances_of(get_db(), study, series, instance)[0]
    path = existing_file(row)
    if path is None:
        raise DicomWebError(404, "the instance's file is missing from the archive")
    media = _content_type()
    if media == DICOM:
        syntax = _parameter("transferSyntax", required=False) or row.transfer_syntax_uid
        if syntax != row.transfer_syntax_uid and not (
            syntax in CONVERTIBLE and row.transfer_syntax_uid in CONVERTIBLE
        ):
            raise DicomWebError(
                406, f"cannot send an instance stored in {row.transfer_syntax_uid} in {syntax}"
            )
        audit_retrieval(get_db(), [row], "wado-uri instance")
        return Response(dicom_bytes(path, row.transfer_syntax_uid, syntax),
                        headers={"Content-Type": DICOM}, direct_passthrough=True)  # fmt: skip
    options = _render_options(media)
    try:
        image = rendering.render_instance(path, _integer("frameNumber", 1, 1 << 30) or 1, options)
    except rendering.RenderError as exc:
        raise DicomWebError(exc.status, exc.reason) from None
    audit_retrieval(get_db(), [row], "wado-uri rendered")
    return Response(image.data, headers={"Content-Type": image.media_type})


def _content_type() -> str:
    """The first acceptable type of ``contentType`` (a list; default image/jpeg)."""
    listed = request.args.get("contentType") or rendering.JPEG
    asked = [part.split(";")[0].strip().lower() for part in listed.split(",")]
    for media in asked:
        if media == DICOM or media in rendering.MEDIA_TYPES:
            return media
        if media in ("*/*", "image/*"):
            return rendering.JPEG
    raise DicomWebError(406, f"contentType {', '.join(asked)[:80]} is not served")


def _render_options(media: str) -> rendering.RenderOptions:
    rows, columns = (
        _integer("rows", 1, rendering.MAX_VIEWPORT),
        _integer("columns", 1, rendering.MAX_VIEWPORT),
    )
    center, width = _decimal("windowCenter"), _decimal("windowWidth")
    if (center is None) != (width is None) or (width is not None and width <= 0):
        raise DicomWebError(400, "windowCenter and windowWidth go together, the width positive")
    window = rendering.Window(center, width) if center is not None and width is not None else None
    viewport = rendering.Viewport(columns, rows) if rows or columns else None
    quality = _integer("imageQuality", 1, 100) or rendering.DEFAULT_QUALITY
    return rendering.RenderOptions(media, window, viewport, quality)
