"""Reading fields out of parsed messages, tolerantly: what is absent is empty, never an error.

Routes get :class:`ris.hl7.message.Message` objects, whose segments are split into
fields once. These helpers pick a field, repetition, component or subcomponent out of
them and return plain, unescaped strings::

    pid = segment(message, "PID")
    field(pid, "PID-3.1")        # first repetition, component 1
    field(pid, "PID-3.4.1")      # subcomponent 1 of component 4
    [rep.component(1) for rep in repetitions(pid, "PID-3")]
    timestamp(orc, "ORC-7", site.zone)   # aware UTC datetime or None

Locations read ``SEG-field[.component[.subcomponent]]``; the segment name in them is
only checked loosely (it is what error messages name).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from ris.hl7.errors import HL7ApplicationError
from ris.hl7.message import Message, Segment

NULL = '""'
"""HL7's explicit null: the sender asks to erase the value (empty means "not sent")."""

_LOCATION = re.compile(r"^(?:([A-Z][A-Z0-9]{2})[-.])?(\d+)(?:\.(\d+))?(?:\.(\d+))?$", re.I)
_TS = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?$"
)
_HEX_ESCAPE = re.compile(r"^X([0-9A-Fa-f]{2})+$")
_DEFAULT_CHARS = {"FIELD": "|", "COMPONENT": "^", "REPETITION": "~", "ESCAPE": "\\",
                  "SUBCOMPONENT": "&"}  # fmt: skip


@dataclass(frozen=True)
class Value:
    """One repetition of a field, split lazily into components and subcomponents."""

    raw: str  # still escaped
    chars: Mapping[str, str]

    def component(self, number: int = 1, sub: int = 1) -> str:
        """Component ``number`` (1-based), subcomponent ``sub``, unescaped and stripped."""
        parts = self.raw.split(self.chars["COMPONENT"])
        if number > len(parts):
            return ""
        subs = parts[number - 1].split(self.chars["SUBCOMPONENT"])
        return unescape(subs[sub - 1], self.chars).strip() if sub <= len(subs) else ""

    def whole_component(self, number: int) -> str:
        """Component ``number`` with its subcomponents, still escaped (for nested types)."""
        parts = self.raw.split(self.chars["COMPONENT"])
        return parts[number - 1] if number <= len(parts) else ""

    def __bool__(self) -> bool:
        return bool(self.raw.strip())


def segments(message: Message, name: str) -> list[Segment]:
    """Every segment called ``name``, in message order (Z-segments included)."""
    wanted = name.upper()
    return [child for child in message.children if child.name == wanted]


def segment(message: Message, name: str) -> Segment | None:
    """The first segment called ``name``, or None."""
    found = segments(message, name)
    return found[0] if found else None


def repetitions(seg: Segment | None, location: str) -> list[Value]:
    """The non-empty repetitions of a field."""
    if seg is None:
        return []
    number, _component, _sub = _parse_location(location)
    chars = seg.chars
    raw = _raw_field(seg, number)
    if raw is None:
        return []
    # MSH-2 holds the repetition character itself: never split it.
    reps = [raw] if _is_msh(seg) and number == 2 else raw.split(chars["REPETITION"])
    return [Value(rep, chars) for rep in reps if rep.strip()]


def field(seg: Segment | None, location: str, repetition: int = 0) -> str:
    """The unescaped text at ``location`` in repetition ``repetition`` (0-based); "" if absent.

    Without a component, the whole field (components still joined by ``^``) is returned,
    unescaped component by component.
    """
    if seg is None:
        return ""
    number, component, sub = _parse_location(location)
    chars = seg.chars
    raw = _raw_field(seg, number)
    if raw is None:
        return ""
    if _is_msh(seg) and number <= 2:
        return raw
    reps = raw.split(chars["REPETITION"])
    if repetition >= len(reps):
        return ""
    value = Value(reps[repetition], chars)
    if component:
        return value.component(component, sub or 1)
    return "^".join(unescape(part, chars) for part in value.raw.split(chars["COMPONENT"])).strip()


def is_null(text: str) -> bool:
    """Whether the sender sent HL7's explicit null (``""``): erase the stored value."""
    return text == NULL


def date_value(text: str, location: str) -> date | None:
    """A DT (or the date part of a TS/DTM); None if empty; AE 102 when malformed."""
    text = text.strip()
    if not text or is_null(text):
        return None
    match = _TS.match(text)
    if match is None or match[2] is None or match[3] is None:
        raise HL7ApplicationError(location, f"Invalid date {text!r} (expected YYYYMMDD)", "102")
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise HL7ApplicationError(location, f"Invalid date {text!r}", "102") from None


def timestamp_value(text: str, location: str, zone: ZoneInfo) -> datetime | None:
    """A TS/DTM ``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`` as an aware UTC datetime.

    Without an offset the time is the site's local time (``zone``); missing parts count
    as their start (a bare date is midnight). None if empty; AE 102 when malformed.
    """
    text = text.strip()
    if not text or is_null(text):
        return None
    match = _TS.match(text)
    if match is None:
        raise HL7ApplicationError(location, f"Invalid timestamp {text!r}", "102")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        local = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
            int(second or 0), int((fraction or "0").ljust(6, "0")[:6]),
        )  # fmt: skip
        if sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            aware = local.replace(tzinfo=timezone(-offset if sign == "-" else offset))
        else:
            aware = local.replace(tzinfo=zone)
    except ValueError:
        raise HL7ApplicationError(location, f"Invalid timestamp {text!r}", "102") from None
    return aware.astimezone(UTC)


def timestamp(seg: Segment | None, location: str, zone: ZoneInfo) -> datetime | None:
    """The TS at ``location`` (first component: 2.3.1's TS has a precision component)."""
    number, component, _sub = _parse_location(location)
    text = field(seg, f"{number}.{component or 1}")
    return timestamp_value(text, location, zone)


def unescape(text: str, chars: Mapping[str, str] | None = None) -> str:
    """Resolve escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\); drop the rest."""
    chars = chars or _DEFAULT_CHARS
    esc = chars["ESCAPE"]
    if not esc or esc not in text:
        return text
    known = {"F": chars["FIELD"], "S": chars["COMPONENT"], "T": chars["SUBCOMPONENT"],
             "R": chars["REPETITION"], "E": esc, ".br": "\n"}  # fmt: skip
    out: list[str] = []
    pos = 0
    while pos < len(text):
        start = text.find(esc, pos)
        end = text.find(esc, start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        code = text[start + 1 : end]
        if code in known:
            out.append(known[code])
        elif _HEX_ESCAPE.match(code):
            out.append(bytes.fromhex(code[1:]).decode("latin-1"))
        # Formatting (\H\, \N\, \.sp\...) and charset escapes carry no text: dropped.
        pos = end + 1
    return "".join(out)


def _parse_location(location: str) -> tuple[int, int, int]:
    match = _LOCATION.match(location.strip())
    if match is None:
        raise ValueError(f"not a field location: {location!r}")
    return int(match[2]), int(match[3] or 0), int(match[4] or 0)


def _is_msh(seg: Segment) -> bool:
    return seg.name in ("MSH", "BHS", "FHS")


def _raw_field(seg: Segment, number: int) -> str | None:
    return seg.fields[number] if 0 < number < len(seg.fields) else None
