"""A small DICOM dataset encoder for answers Placa builds itself (PS3.5 7).

pydicom's writer is general and slow for the many small identifiers a C-FIND answers
(about 0.4 ms an item, most of a worklist answer's time). Answers are built here as plain
:class:`Element` rows instead, turned into bytes for the two uncompressed little endian
transfer syntaxes every SCU proposes (implicit and explicit VR), or into a pydicom
Dataset (:func:`to_dataset`) for any other one and for callers that want one.

What an element's value may be: None or ``""`` (zero length), a str, an int or a float
(binary VRs, IS, DS), a list of those (several values), or for SQ a list of items, each a
list of elements. Elements are written in ascending tag order (PS3.5 7.1), values padded
to an even length (UI with NUL, other text with a space), sequences with explicit lengths.
Text is encoded with the Specific Character Set given (it applies to SH, LO, ST, LT, UC,
UT and PN, PS3.5 6.1.2.3; the other text VRs hold the default repertoire, the same bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset


class Element(NamedTuple):
    """One attribute of an answer: its tag, its VR and its value (see the module doc)."""

    tag: int
    vr: str
    value: Any


Item = Sequence[Element]

# Python codecs of the Specific Character Sets answers are sent in (single-byte or UTF-8:
# no code extensions, so a value is encoded as a whole).
CODECS = {"ISO_IR 192": "utf-8", "ISO_IR 100": "latin-1", "": "ascii", "ISO_IR 6": "ascii"}
# VRs whose text the Specific Character Set applies to (PS3.5 6.1.2.3).
CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR", *CHARSET_VRS})
# VRs not split on backslashes: one value only (PS3.5 6.2).
SINGLE_VALUE_VRS = frozenset({"LT", "ST", "UT", "UR"})
BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d",
                  "SV": "q", "UV": "Q"}  # fmt: skip
# Explicit VR: these have two reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT",
                             "SV", "UV"})  # fmt: skip
ITEM, ITEM_TAG = 0xFFFEE000, b"\xfe\xff\x00\xe0"


class EncodeError(ValueError):
    """A value this encoder does not write (the caller falls back to pydicom)."""


def encode_dataset(elements: Iterable[Element], *, explicit_vr: bool, charset: str) -> bytes:
    """The elements as a little endian dataset, implicit or explicit VR."""
    try:
        codec = CODECS[charset]
    except KeyError as error:
        raise EncodeError(f"no codec for Specific Character Set {charset!r}") from error
    return b"".join(_encode_items(elements, explicit_vr, codec))


def _encode_items(elements: Iterable[Element], explicit_vr: bool, codec: str) -> list[bytes]:
    parts: list[bytes] = []
    for tag, vr, value in sorted(elements, key=_TAG):
        if vr == "SQ":
            body = b"".join(_item_bytes(item, explicit_vr, codec) for item in value or ())
        elif type(value) is str and value and vr in TEXT_VRS:  # the common case, inline
            body = value.encode(codec)
            if len(body) & 1:
                body += b"\x00" if vr == "UI" else b" "
        else:
            body = _value_bytes(vr, value, codec)
        prefix, pack_length = _prefix(tag, vr, explicit_vr)
        try:
            parts.append(prefix + pack_length(len(body)))
        except struct.error as error:  # over 64 KiB in a 2-byte length
            raise EncodeError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}: too long") from error
        parts.append(body)
    return parts


_TAG = itemgetter(0)  # Element.tag; tags are unique within a dataset
_SHORT_LENGTH, _LONG_LENGTH = struct.Struct("<H").pack, struct.Struct("<I").pack


def _item_bytes(item: Item, explicit_vr: bool, codec: str) -> bytes:
    content = b"".join(_encode_items(item, explicit_vr, codec))
    return ITEM_TAG + struct.pack("<I", len(content)) + content


@lru_cache(maxsize=4096)
def _prefix(tag: int, vr: str, explicit_vr: bool) -> tuple[bytes, Callable[[int], bytes]]:
    """An element's header before its length, and how its length is packed (PS3.5 7.1)."""
    group_element = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit_vr:
        return group_element, _LONG_LENGTH
    if vr in LONG_LENGTH_VRS:
        return group_element + vr.encode("ascii") + b"\x00\x00", _LONG_LENGTH
    return group_element + vr.encode("ascii"), _SHORT_LENGTH


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _value_bytes(vr: str, value: Any, codec: str) -> bytes:
    values = _values(value)
    if not values:
        return b""
    if vr in BINARY_FORMATS:
        return struct.pack(f"<{len(values)}{BINARY_FORMATS[vr]}", *values)
    if vr not in TEXT_VRS:
        raise EncodeError(f"VR {vr} with a value")
    if vr in SINGLE_VALUE_VRS and len(values) > 1:
        raise EncodeError(f"VR {vr} takes one value")
    # Other text VRs are of the default repertoire: the same bytes in any codec used here.
    data = "\\".join(str(v) for v in values).encode(codec)
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def to_dataset(elements: Iterable[Element]) -> Dataset:
    """The same answer as a pydicom Dataset (values as given: they are Placa's, valid)."""
    dataset = Dataset()
    for tag, vr, value in elements:
        if vr == "SQ":
            value = [to_dataset(item) for item in value or ()]
        dataset.add(DataElement(tag, vr, value, validation_mode=config.IGNORE))
    return dataset
