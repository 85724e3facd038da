"""The raw values of chosen top-level elements of a little-endian dataset, read with
``struct`` alone.

Every C-STORE and STOW-RS part is read up to the last attribute the index keeps (some 80
elements of a CT header). pydicom's element generator builds a tag object, compares tags
and yields a raw element for each of them: a tenth of the door's CPU per instance. This
scanner walks the same bytes (PS3.5 7.1: tag, VR when explicit, length, value), steps over
sequences of undefined length with their items (PS3.5 7.5), and stops at the first
top-level tag past the last one wanted. It gives up (None) on anything it does not expect:
the caller then reads the dataset with pydicom, which also reports what is wrong with it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# VRs whose explicit encoding has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
MAX_NESTING = 16  # sequences within items within sequences: deeper is not a real header
_TAG = struct.Struct("<HH")
_IMPLICIT = struct.Struct("<HHL")
_SHORT_LENGTH = struct.Struct("<H")
_LONG_LENGTH = struct.Struct("<L")


class _GiveUp(Exception):
    """The bytes are not what a well-formed little-endian dataset holds here."""


def scan_elements(
    data: bytes | bytearray | memoryview, wanted: Mapping[int, str], last: int, *, explicit: bool
) -> dict[str, bytes] | None:
    """``{keyword: raw value}`` for the top-level tags of ``wanted`` present before the
    first tag greater than ``last``; None when the scan cannot be trusted."""
    view = memoryview(data)
    found: dict[str, bytes] = {}
    offset, end = 0, len(view)
    try:
        while offset + 8 <= end:
            tag, vr, length, start = _element_header(view, offset, explicit)
            if tag > last:
                break
            if length == UNDEFINED_LENGTH:
                offset = _skip_undefined(view, start, explicit and vr != b"UN", 0)
                continue
            stop = start + length
            if stop > end:
                raise _GiveUp
            keyword = wanted.get(tag)
            if keyword is not None and vr != b"SQ":
                found[keyword] = bytes(view[start:stop])
            offset = stop
    except (_GiveUp, struct.error):
        return None
    return found


def _element_header(
    view: memoryview, offset: int, explicit: bool
) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, value offset) of the element at ``offset``."""
    group, element = _TAG.unpack_from(view, offset)
    tag = group << 16 | element
    if not explicit or group == 0xFFFE:  # items and delimiters are never explicit
        (length,) = _LONG_LENGTH.unpack_from(view, offset + 4)
        return tag, None, length, offset + 8
    vr = bytes(view[offset + 4 : offset + 6])
    if vr in LONG_VRS:
        (length,) = _LONG_LENGTH.unpack_from(view, offset + 8)
        return tag, vr, length, offset + 12
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _GiveUp  # not a VR: implicit data announced as explicit, or garbage
    (length,) = _SHORT_LENGTH.unpack_from(view, offset + 6)
    return tag, vr, length, offset + 8


def _skip_undefined(view: memoryview, offset: int, explicit: bool, depth: int) -> int:
    """The offset after a value of undefined length starting at ``offset``: a sequence's
    items up to its delimiter (an undefined-length UN is read as such, PS3.5 6.2.2)."""
    if depth > MAX_NESTING:
        raise _GiveUp
    end = len(view)
    while offset + 8 <= end:
        tag, length = _implicit_item(view, offset)
        if tag == SEQUENCE_END:
            return offset + 8
        if tag != ITEM:
            raise _GiveUp
        if length != UNDEFINED_LENGTH:
            offset += 8 + length
            continue
        offset = _skip_item(view, offset + 8, explicit, depth + 1)
    raise _GiveUp


def _skip_item(view: memoryview, offset: int, explicit: bool, depth: int) -> int:
    """The offset after an item of undefined length: its elements up to its delimiter."""
    end = len(view)
    while offset + 8 <= end:
        tag, vr, length, start = _element_header(view, offset, explicit)
        if tag == ITEM_END:
            return start
        if length == UNDEFINED_LENGTH:
            offset = _skip_undefined(view, start, explicit and vr != b"UN", depth)
        else:
            offset = start + length
    raise _GiveUp


def _implicit_item(view: memoryview, offset: int) -> tuple[int, int]:
    group, element, length = _IMPLICIT.unpack_from(view, offset)
    return group << 16 | element, length
