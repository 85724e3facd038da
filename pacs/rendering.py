"""Rendered images of stored instances: what WADO-RS ``/rendered`` and ``/thumbnail`` and
WADO-URI ``contentType=image/jpeg`` answer (PS3.18 8.3.5, 9.5; PS3.4 N.2).

One frame is decoded at a time (pydicom reads only that frame from the file), put through
the grayscale pipeline of PS3.4 N.2 — Modality LUT (Rescale Slope/Intercept or the Modality
LUT Sequence), VOI LUT (a ``window`` asked for, else the file's first Window Center/Width,
else its VOI LUT Sequence, else the frame's own range), MONOCHROME1 inverted — or, for
colour, converted to 8-bit RGB (YBR converted by pydicom, palettes applied). Then the
source region is cut, the result scaled to fit the viewport keeping its aspect ratio, and
encoded as JPEG, PNG or GIF with Pillow.

Nothing here knows HTTP: errors are :class:`RenderError` subclasses carrying the HTTP
status a door should answer with and a reason for machines. The query parameters that
name a rendering are read by :mod:`pacs.rendering_params`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array

logger = logging.getLogger(__name__)

JPEG, PNG, GIF = "image/jpeg", "image/png", "image/gif"
MEDIA_TYPES = (JPEG, PNG, GIF)  # the first is the default (PS3.18 8.7.4: JPEG for images)
PILLOW_FORMATS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}
DEFAULT_QUALITY = 90
THUMBNAIL_SIZE = 128  # the box a thumbnail fits in when no viewport is asked for
FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")  # VOI LUT Function (PS3.3 C.11.2.1.3)
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
MAX_VIEWPORT = 8192  # larger viewports are refused: a rendering is for a screen


class RenderError(Exception):
    """A rendering that cannot be made; ``status`` is the HTTP status a door answers."""

    status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidRenderParameter(RenderError):
    """A query parameter that is malformed or out of range (PS3.18 8.3.5: 400)."""

    status = 400


class FrameNotFound(RenderError):
    """A frame number the instance does not have."""

    status = 404


class NotRenderable(RenderError):
    """An instance without image pixels (an SR, a KO...) or with a photometric
    interpretation Placa does not render: no rendered media type is acceptable for it."""

    status = 406


class DecodeFailed(RenderError):
    """Pixel data that the installed decoders cannot decode (or a damaged file)."""

    status = 500


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): centre, width and the function applied."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True)
class Viewport:
    """The rendered size (``vw``, ``vh``; either may be None) and an optional source region
    (``sx``, ``sy`` its top left corner, ``sw``, ``sh`` its size; negative flips)."""

    width: int | None
    height: int | None
    sx: int = 0
    sy: int = 0
    sw: int | None = None
    sh: int | None = None


@dataclass(frozen=True)
class RenderOptions:
    """How to render: media type, window, viewport and JPEG quality (1..100).

    ``region`` is WADO-URI's (PS3.18 9.5.1.2.5): xmin, ymin, xmax, ymax as fractions of
    the image, cut before the viewport; WADO-RS names its region in the viewport."""

    media_type: str = JPEG
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY
    region: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class RenderedImage:
    """An encoded rendering and its media type."""

    data: bytes
    media_type: str


def render_instance(
    path: Path, frame: int = 1, options: RenderOptions | None = None
) -> RenderedImage:
    """Render frame ``frame`` (1-based) of the Part 10 file at ``path``.

    Raises :class:`FrameNotFound`, :class:`NotRenderable` or :class:`DecodeFailed`."""
    options = options or RenderOptions()
    if options.media_type not in PILLOW_FORMATS:
        raise NotRenderable(f"media type {options.media_type} is not rendered")
    header = read_image_header(path)
    check_frame(header, frame)
    pixels = decode_frame(path, frame)
    image = to_image(pixels, frame_header(header, frame), options.window)
    image = fit_viewport(fractional_region(image, options.region), options.viewport)
    return RenderedImage(encode(image, options), options.media_type)


def thumbnail_options(options: RenderOptions | None = None) -> RenderOptions:
    """``options`` for a thumbnail: fitted into THUMBNAIL_SIZE square without a viewport."""
    options = options or RenderOptions()
    if options.viewport is None:
        return replace(options, viewport=Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    return options


def number_of_frames(header: Dataset) -> int:
    """Number of Frames (0028,0008); 1 when absent or malformed."""
    try:
        return max(1, int(header.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


# --- Reading ----------------------------------------------------------------------------


def read_image_header(path: Path) -> Dataset:
    """The dataset up to its Pixel Data, refusing files that carry no image."""
    try:
        header = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise DecodeFailed(f"the stored file cannot be read: {error}") from error
    if "Rows" not in header or "Columns" not in header or "BitsAllocated" not in header:
        raise NotRenderable("the instance has no image pixel data")
    photometric = str(header.get("PhotometricInterpretation", ""))
    if photometric not in GRAYSCALE + COLOUR:
        raise NotRenderable(f"photometric interpretation {photometric!r} is not rendered")
    return header


def check_frame(header: Dataset, frame: int) -> None:
    frames = number_of_frames(header)
    if not 1 <= frame <= frames:
        raise FrameNotFound(f"frame {frame} does not exist: the instance has {frames}")


def decode_frame(path: Path, frame: int) -> np.ndarray:
    """Frame ``frame`` decoded, YBR converted to RGB; only that frame is read."""
    try:
        return pixel_array(str(path), index=frame - 1)
    except (NotImplementedError, RuntimeError) as error:
        raise DecodeFailed(f"the pixel data cannot be decoded: {error}") from error
    except (ValueError, AttributeError, KeyError, OSError, EOFError) as error:
        raise DecodeFailed(f"the pixel data is damaged or incomplete: {error}") from error


def frame_header(header: Dataset, frame: int) -> Dataset:
    """``header`` with frame ``frame``'s rescale and window from the functional groups of an
    enhanced multi-frame instance (PS3.3 C.7.6.16) copied to the top level."""
    groups = [header.get("SharedFunctionalGroupsSequence")]
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) >= frame:
        groups.append(per_frame[frame - 1 : frame])  # per-frame values win over shared
    found = Dataset()
    for sequence in groups:
        for item in sequence or []:
            for macro in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
                for values in item.get(macro) or []:
                    found.update(values)
    if not len(found):
        return header
    merged = Dataset(header)  # shallow: the file's own header stays untouched
    merged.update(found)
    return merged


# --- The pixel pipeline (PS3.4 N.2) -----------------------------------------------------


def to_image(pixels: np.ndarray, header: Dataset, window: Window | None) -> Image.Image:
    """An 8-bit Pillow image of one decoded frame."""
    photometric = str(header.PhotometricInterpretation)
    if photometric in GRAYSCALE:
        shown = grayscale(pixels, header, window)
        if photometric == "MONOCHROME1":
            shown = 255 - shown  # MONOCHROME1: the lowest value is white
        return Image.fromarray(shown, mode="L")
    return Image.fromarray(colour(pixels, header), mode="RGB")


def grayscale(pixels: np.ndarray, header: Dataset, window: Window | None) -> np.ndarray:
    """Modality LUT then VOI LUT, to 0..255 (uint8)."""
    if pixels.ndim != 2:
        raise NotRenderable("a grayscale frame with more than one sample per pixel")
    values = modality_values(pixels, header)
    window = window or file_window(header)
    if window is not None:
        return to_uint8(apply_window(values, window))
    if "VOILUTSequence" in header:
        return voi_lut_values(values, header)
    return to_uint8(apply_window(values, frame_range_window(values, pixels, header)))


def modality_values(pixels: np.ndarray, header: Dataset) -> np.ndarray:
    """Stored values to modality values (float32 for a rescale, keeping memory low)."""
    if "ModalityLUTSequence" in header:
        return np.asarray(apply_modality_lut(pixels, header), dtype=np.float32)
    slope = float(header.get("RescaleSlope") or 1)
    intercept = float(header.get("RescaleIntercept") or 0)
    values = pixels.astype(np.float32)
    if slope != 1 or intercept != 0:
        values = values * np.float32(slope) + np.float32(intercept)
    return values


def file_window(header: Dataset) -> Window | None:
    """The file's first Window Center/Width pair and its VOI LUT Function, if valid."""
    center, width = first_value(header.get("WindowCenter")), first_value(header.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(header.get("VOILUTFunction") or "LINEAR").upper()
    if function not in FUNCTIONS:
        function = "LINEAR"
    minimum = 1 if function == "LINEAR" else 0
    if width < minimum or (function != "LINEAR" and width == 0):
        logger.info("Ignored the file's window: width %s with %s", width, function)
        return None
    return Window(center, width, function)


def first_value(value: object) -> float | None:
    """The first value of a DS/IS element that may be multi-valued, or None."""
    if value is None:
        return None
    if not isinstance(value, str | bytes) and hasattr(value, "__getitem__"):
        if not len(value):  # type: ignore[arg-type]
            return None
        value = value[0]  # type: ignore[index]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def frame_range_window(values: np.ndarray, pixels: np.ndarray, header: Dataset) -> Window:
    """A linear window over the frame's own range, for files that carry none; padding
    (Pixel Padding Value, up to its Range Limit: PS3.3 C.7.5.1.1.2) is left out."""
    padding = padding_mask(pixels, header)
    if padding is not None and not padding.all():
        values = values[~padding]
    low, high = float(values.min()), float(values.max())
    width = max(high - low, 0) + 1
    return Window(low + width / 2, width, "LINEAR")


def padding_mask(pixels: np.ndarray, header: Dataset) -> np.ndarray | None:
    """Where the stored values are padding, or None when the file declares none."""
    first = first_value(header.get("PixelPaddingValue"))
    if first is None:
        return None
    limit = first_value(header.get("PixelPaddingRangeLimit"))
    if limit is None:
        return pixels == first
    return (pixels >= min(first, limit)) & (pixels <= max(first, limit))


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Window ``values`` to 0..1 with LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.2)."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        return 1 / (1 + np.exp(-4 * (values - c) / w))
    if window.function == "LINEAR_EXACT":
        return np.clip((values - c) / w + 0.5, 0, 1)
    if w <= 1:  # a width of 1 is a threshold at c - 0.5
        return (values > c - 0.5).astype(np.float32)
    return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0, 1)


def voi_lut_values(values: np.ndarray, header: Dataset) -> np.ndarray:
    """The first VOI LUT of the file applied, scaled from its output bits to 0..255."""
    lut = header.VOILUTSequence[0]
    bits = int(lut.LUTDescriptor[2]) if "LUTDescriptor" in lut else 16
    mapped = apply_voi(np.rint(values).astype(np.int64), header, index=0)
    return to_uint8(np.asarray(mapped, dtype=np.float32) / float(2**bits - 1))


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """0..1 floats to 0..255 bytes."""
    return np.rint(np.clip(unit, 0, 1) * 255).astype(np.uint8)


def colour(pixels: np.ndarray, header: Dataset) -> np.ndarray:
    """RGB bytes of one colour frame (palette applied, wider samples scaled to 8 bits)."""
    if str(header.PhotometricInterpretation) == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, header)
        bits = 16 if pixels.dtype.itemsize > 1 else 8
    else:
        bits = int(header.get("BitsStored") or header.BitsAllocated)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise NotRenderable("a colour frame without three samples per pixel")
    if bits > 8:
        return (pixels.astype(np.uint32) >> (bits - 8)).astype(np.uint8)
    return pixels.astype(np.uint8)


# --- Region, viewport and encoding ------------------------------------------------------


def fractional_region(
    image: Image.Image, region: tuple[float, float, float, float] | None
) -> Image.Image:
    """The WADO-URI region (fractions xmin, ymin, xmax, ymax) of ``image``."""
    if region is None:
        return image
    columns, rows = image.size
    xmin, ymin, xmax, ymax = region
    box = (math.floor(xmin * columns), math.floor(ymin * rows),
           math.ceil(xmax * columns), math.ceil(ymax * rows))  # fmt: skip
    if box[2] <= box[0] or box[3] <= box[1]:
        raise InvalidRenderParameter("region: the region holds no pixel")
    return image.crop(box)


def fit_viewport(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """Cut the source region, then scale to fit the viewport keeping the aspect ratio."""
    if viewport is None:
        return image
    image = source_region(image, viewport)
    size = fitted_size(image.size, viewport.width, viewport.height)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def source_region(image: Image.Image, viewport: Viewport) -> Image.Image:
    """The region ``sx, sy, |sw|, |sh|`` of ``image`` (clipped to it); a negative sw or sh
    flips the region horizontally or vertically."""
    columns, rows = image.size
    sw = columns - viewport.sx if viewport.sw is None else viewport.sw
    sh = rows - viewport.sy if viewport.sh is None else viewport.sh
    left, top = viewport.sx, viewport.sy
    right, bottom = min(left + abs(sw), columns), min(top + abs(sh), rows)
    if right <= left or bottom <= top:
        raise InvalidRenderParameter("viewport: the source region lies outside the image")
    if (left, top, right, bottom) != (0, 0, columns, rows):
        image = image.crop((left, top, right, bottom))
    if sw < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def fitted_size(size: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """``size`` scaled to fit ``width`` x ``height`` (either may be None) keeping aspect."""
    columns, rows = size
    scales = [width / columns if width else None, height / rows if height else None]
    known = [scale for scale in scales if scale is not None]
    if not known:
        return size
    scale = min(known)
    return max(1, round(columns * scale)), max(1, round(rows * scale))


def encode(image: Image.Image, options: RenderOptions) -> bytes:
    """``image`` encoded in the options' media type."""
    buffer = BytesIO()
    if options.media_type == JPEG:
        image.save(buffer, "JPEG", quality=options.quality)
    else:
        image.save(buffer, PILLOW_FORMATS[options.media_type])
    return buffer.getvalue()
