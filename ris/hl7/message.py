"""Inbound messages split into segments and fields, checked against hl7apy's definitions.

hl7apy builds a full element tree for every field of every segment: about 14 ms for a
five-segment ORM^O01 on this machine, which alone would cap the door near 70 messages a
second. Routes only read a few dozen fields as text (:mod:`ris.hl7.fields`), so the door
splits each segment once and checks what hl7apy's parser would refuse:

* the encoding characters of MSH-2 (four, distinct, none alphanumeric; five from 2.7);
* every segment name: ``[A-Z][A-Z0-9]{2}``, and defined for the message's version in
  hl7apy's reference library (Z-segments are local and always allowed).

Outbound messages (SIU, ORU, DFT) are still built and validated with hl7apy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from hl7apy import SUPPORTED_LIBRARIES, find_reference
from hl7apy.core import Segment as HL7apySegment
from hl7apy.exceptions import ChildNotFound

from ris.hl7.wire import DEFAULT_VERSION

_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_HEADER_SEGMENTS = frozenset({"MSH", "BHS", "FHS"})


class ParseError(Exception):
    """The message cannot be read: the ACK is an AR with this table 0357 code."""

    def __init__(self, code: str, text: str, location: str = "") -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location


@dataclass(frozen=True)
class Segment:
    """One segment, split into its fields (still escaped).

    ``fields[n]`` is SEG-n. For MSH (and BHS/FHS) ``fields[1]`` is the field separator
    and ``fields[2]`` the encoding characters, so the numbering is the standard's there too.
    """

    name: str
    fields: list[str]
    chars: Mapping[str, str]


@dataclass(frozen=True)
class Message:
    """The segments of one message, in order (no groups: routes walk ``children``)."""

    children: list[Segment] = field(default_factory=list)


def parse(segments: list[str], version: str) -> Message:
    """Split ``segments`` (the first being MSH) into a :class:`Message`; raise
    :class:`ParseError` for what hl7apy's parser would refuse."""
    msh = segments[0]
    chars = encoding_chars(msh, version)
    separator = chars["FIELD"]
    library = version if version in SUPPORTED_LIBRARIES else DEFAULT_VERSION
    children = []
    for text in segments:
        parts = text.split(separator)
        name = parts[0].strip().upper()
        _check_name(name, library)
        if name in _HEADER_SEGMENTS:
            parts = [name, separator, *parts[1:]]
        else:
            parts[0] = name
        children.append(Segment(name, parts, chars))
    return Message(children)


def encoding_chars(msh: str, version: str) -> dict[str, str]:
    """The delimiters MSH-1 and MSH-2 declare, checked as hl7apy checks them."""
    separator = msh[3:4]
    if not separator or separator.isalnum() or separator.isspace():
        raise ParseError("102", "Invalid field separator (MSH-1)", "MSH-1")
    declared = msh[4:].split(separator, 1)[0]
    if len(set(declared)) < len(declared):
        raise ParseError("102", "Found duplicate encoding chars", "MSH-2")
    allowed = (4, 5) if version >= "2.7" else (4,)
    if len(declared) not in allowed:
        raise ParseError("102", f"Found {len(declared)} encoding chars", "MSH-2")
    if any(char.isalnum() or char.isspace() or char == separator for char in declared):
        raise ParseError("102", "Invalid encoding chars", "MSH-2")
    component, repetition, escape, subcomponent = declared[:4]
    return {"FIELD": separator, "COMPONENT": component, "REPETITION": repetition,
            "ESCAPE": escape, "SUBCOMPONENT": subcomponent}  # fmt: skip


def _check_name(name: str, library: str) -> None:
    if not _SEGMENT_NAME.match(name):
        raise ParseError("100", f"Invalid name for Segment: {name[:10]!r}", name[:3])
    if not name.startswith("Z") and not _is_defined(name, library):
        raise ParseError("100", f"Invalid name for Segment: {name}", name)


@lru_cache(maxsize=512)
def _is_defined(name: str, version: str) -> bool:
    try:
        find_reference(name, (HL7apySegment,), version)
    except ChildNotFound:
        return False
    return True
