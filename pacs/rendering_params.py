"""The query parameters of a rendered resource (PS3.18 8.3.5.1; WADO-URI's region, 9.5.1.2.5)
read into :class:`pacs.rendering.RenderOptions`; malformed values raise
:class:`pacs.rendering.InvalidRenderParameter` (400) with the reason."""

from __future__ import annotations

import math
from collections.abc import Mapping

from pacs.rendering import (
    DEFAULT_QUALITY,
    FUNCTIONS,
    MAX_VIEWPORT,
    InvalidRenderParameter,
    RenderOptions,
    Viewport,
    Window,
)


def parse_quality(text: str | None) -> int:
    """``quality=1..100``; the default when absent."""
    if text is None or text == "":
        return DEFAULT_QUALITY
    if not text.strip().isdigit() or not 1 <= int(text) <= 100:
        raise InvalidRenderParameter("quality must be an integer from 1 to 100")
    return int(text)


def parse_window(text: str | None) -> Window | None:
    """``window=center,width[,function]``; function linear, linear-exact or sigmoid."""
    if text is None or text == "":
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3):
        raise InvalidRenderParameter("window must be center,width[,function]")
    center, width = _number(parts[0], "window center"), _number(parts[1], "window width")
    function = (parts[2] if len(parts) == 3 and parts[2] else "linear").upper()
    function = function.replace("-", "_")
    if function not in FUNCTIONS:
        raise InvalidRenderParameter("window function must be linear, linear-exact or sigmoid")
    if width < (1 if function == "LINEAR" else 0) or width == 0:
        raise InvalidRenderParameter(f"window width {parts[1]} is too small for {function}")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> Viewport | None:
    """``viewport=vw,vh`` or ``viewport=vw,vh,sx,sy,sw,sh``; vw or vh may be left empty."""
    if text is None or text == "":
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 6):
        raise InvalidRenderParameter("viewport must be vw,vh or vw,vh,sx,sy,sw,sh")
    width, height = (
        _optional_size(part, name) for part, name in zip(parts[:2], ("vw", "vh"), strict=True)
    )
    if width is None and height is None:
        raise InvalidRenderParameter("viewport needs vw or vh")
    if len(parts) == 2:
        return Viewport(width, height)
    sx, sy = (_integer(part, name, 0) for part, name in zip(parts[2:4], ("sx", "sy"), strict=True))
    sw, sh = (
        _optional_integer(part, name) for part, name in zip(parts[4:], ("sw", "sh"), strict=True)
    )
    if sx < 0 or sy < 0 or sw == 0 or sh == 0:
        raise InvalidRenderParameter("viewport: sx, sy must be >= 0 and sw, sh non-zero")
    return Viewport(width, height, sx, sy, sw, sh)


def parse_region(text: str | None) -> tuple[float, float, float, float] | None:
    """WADO-URI ``region=xmin,ymin,xmax,ymax``, fractions from 0.0 to 1.0 (PS3.18 9.5.1.2.5)."""
    if text is None or text == "":
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise InvalidRenderParameter("region must be xmin,ymin,xmax,ymax")
    xmin, ymin, xmax, ymax = (_number(part.strip(), "region") for part in parts)
    if not (0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1):
        raise InvalidRenderParameter("region must hold fractions with xmin < xmax, ymin < ymax")
    return xmin, ymin, xmax, ymax


def parse_options(media_type: str, query: Mapping[str, str]) -> RenderOptions:
    """RenderOptions from a request's query parameters (``annotation`` is ignored)."""
    return RenderOptions(
        media_type=media_type,
        window=parse_window(query.get("window")),
        viewport=parse_viewport(query.get("viewport")),
        quality=parse_quality(query.get("quality")),
    )


def _number(text: str, name: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise InvalidRenderParameter(f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(number):
        raise InvalidRenderParameter(f"{name} must be a finite number")
    return number


def _integer(text: str, name: str, default: int) -> int:
    value = _optional_integer(text, name)
    return default if value is None else value


def _optional_integer(text: str, name: str) -> int | None:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidRenderParameter(f"viewport {name} must be an integer") from None


def _optional_size(text: str, name: str) -> int | None:
    value = _optional_integer(text, name)
    if value is not None and not 1 <= value <= MAX_VIEWPORT:
        raise InvalidRenderParameter(f"viewport {name} must be from 1 to {MAX_VIEWPORT}")
    return value
