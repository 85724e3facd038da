"""A pydicom Dataset as DICOM JSON (PS3.18 Annex F), the body of QIDO-RS and WADO-RS metadata.

pydicom's own ``to_json_dict`` is close but fails on empty values inside multi-valued PN and
cannot name a bulk data element inside a sequence, so the walk is done here, element by
element, following Annex F:

- keys are the tag in eight upper-case hex digits, each with its ``vr``;
- an empty element has no ``Value``; an empty value among several is ``null``;
- PN values are objects with ``Alphabetic``/``Ideographic``/``Phonetic`` (empty ones left out);
- IS and DS values are JSON numbers, AT values ``"GGGGEEEE"`` strings;
- binary values are ``InlineBinary`` (base64) up to a threshold, else ``BulkDataURI`` built by
  the caller from the element's path (``"7FE00010"``, ``"00880200/0/7FE00010"``);
- sequence items are nested objects (an empty item is ``{}``).

Large binary values are never read from disk to learn their size: the dataset is best read
with ``defer_size`` so raw elements keep only their length.
"""

from __future__ import annotations

import base64
import logging
import math
import struct
from collections.abc import Callable, Iterable
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
# Builds the BulkDataURI of the element at ``path`` (tags and item indexes joined by "/").
BulkDataURI = Callable[[str], str]

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
UNDEFINED_LENGTH = 0xFFFFFFFF
# Text VRs that are ASCII whatever the Specific Character Set (PS3.5 6.2).
ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
BINARY_NUMBERS = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4),
                  "FL": ("f", 4), "FD": ("d", 8), "UV": ("Q", 8), "SV": ("q", 8)}  # fmt: skip
DEFAULT_THRESHOLD = 1024  # bytes of binary value written inline; larger ones become URIs


def tag_key(tag: int) -> str:
    return f"{int(tag):08X}"


def dataset_to_json(
    ds: Dataset,
    bulk_data_uri: BulkDataURI | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    *,
    keep: Callable[[int], bool] | None = None,
) -> JSON:
    """Annex F JSON of ``ds``; ``keep`` chooses top-level tags (all when None).

    Group lengths and the file meta are left out. Without ``bulk_data_uri`` every binary
    value is inline, whatever its size.
    """
    return _dataset(ds, "", bulk_data_uri, threshold, keep)


def _dataset(
    ds: Dataset,
    prefix: str,
    bulk_data_uri: BulkDataURI | None,
    threshold: int,
    keep: Callable[[int], bool] | None,
) -> JSON:
    out: JSON = {}
    for raw in ds.elements():
        tag = int(raw.tag)
        if tag & 0xFFFF == 0 or tag >> 16 == 0x0002 or (keep is not None and not keep(tag)):
            continue
        key = tag_key(tag)
        try:
            out[key] = _element(ds, raw, prefix + key, bulk_data_uri, threshold)
        except Exception:  # one broken value must not lose the whole dataset
            logger.warning("Element %s not representable in DICOM JSON", key, exc_info=True)
            out[key] = {"vr": _guess_vr(raw)}
    return out


def _guess_vr(raw: RawDataElement | DataElement) -> str:
    if raw.VR:
        return str(raw.VR) if " or " not in str(raw.VR) else str(raw.VR)[:2]
    try:
        vr = dictionary_VR(raw.tag)
    except KeyError:
        return "UN"
    return vr[:2] if " or " in vr else vr


def _element(
    ds: Dataset,
    raw: RawDataElement | DataElement,
    path: str,
    bulk_data_uri: BulkDataURI | None,
    threshold: int,
) -> JSON:
    tag = int(raw.tag)
    if isinstance(raw, RawDataElement) and bulk_data_uri is not None:
        if tag in PIXEL_DATA_TAGS or _guess_vr(raw) in BINARY_VRS:
            if raw.length == UNDEFINED_LENGTH or raw.length > threshold or tag in PIXEL_DATA_TAGS:
                return {"vr": _binary_vr(ds, raw), "BulkDataURI": bulk_data_uri(path)}
    fast = _raw_json(raw) if isinstance(raw, RawDataElement) else None
    if fast is not None:
        return fast
    elem = ds[BaseTag(tag)]  # converts, reads deferred values, resolves ambiguous VRs
    vr = str(elem.VR)
    if " or " in vr:
        vr = _binary_vr(ds, elem) if tag in PIXEL_DATA_TAGS else vr[:2]
    if vr == "SQ":
        items = [_dataset(item, f"{path}/{i}/", bulk_data_uri, threshold, None)
                 for i, item in enumerate(elem.value or [])]  # fmt: skip
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if vr in BINARY_VRS:
        return _binary(elem.value, vr, path, bulk_data_uri, threshold, tag in PIXEL_DATA_TAGS)
    values = _values(elem.value)
    if not values or all(v is None or v == "" for v in values):
        return {"vr": vr}
    return {"vr": vr, "Value": [_value(v, vr) for v in values]}


def _raw_json(raw: RawDataElement) -> JSON | None:
    """The JSON of an explicit-VR element whose value needs no character set (ASCII text
    VRs, binary numbers), straight from its bytes: pydicom's conversion costs about ten
    times more, and metadata of a large series is thousands of them. None: not such a one."""
    vr, value = raw.VR, raw.value
    if not isinstance(value, bytes) or vr is None:
        return None
    if vr in ASCII_VRS:
        text = value.decode("ascii", "replace").rstrip("\x00 ")
        if not text.strip():
            return {"vr": vr}
        items = [item.strip() for item in text.split("\\")]
        if vr in ("IS", "DS"):
            return {"vr": vr, "Value": [_number(item) for item in items]}
        return {"vr": vr, "Value": [item or None for item in items]}
    layout = BINARY_NUMBERS.get(vr)
    if layout is None or len(value) % layout[1]:
        return None
    if not value:
        return {"vr": vr}
    order = "<" if raw.is_little_endian else ">"
    numbers = struct.unpack(f"{order}{len(value) // layout[1]}{layout[0]}", value)
    if vr in ("FL", "FD"):
        return {"vr": vr, "Value": [n if math.isfinite(n) else None for n in numbers]}
    return {"vr": vr, "Value": list(numbers)}


def _binary_vr(ds: Dataset, raw: RawDataElement | DataElement) -> str:
    vr = str(raw.VR or "")
    if vr in BINARY_VRS:
        return vr
    if getattr(raw, "length", 0) == UNDEFINED_LENGTH or getattr(raw, "is_undefined_length", False):
        return "OB"  # encapsulated pixel data
    return "OW" if int(ds.get("BitsAllocated", 16) or 16) > 8 else "OB"


def _binary(
    value: bytes | None,
    vr: str,
    path: str,
    bulk_data_uri: BulkDataURI | None,
    threshold: int,
    pixel_data: bool,
) -> JSON:
    if not value:
        return {"vr": vr}
    if bulk_data_uri is not None and (pixel_data or len(value) > threshold):
        return {"vr": vr, "BulkDataURI": bulk_data_uri(path)}
    return {"vr": vr, "InlineBinary": base64.b64encode(bytes(value)).decode("ascii")}


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    if isinstance(value, str | bytes) and value == "":
        return []
    return [value]


def _value(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None
    if vr == "PN":
        return _person_name(value)
    if vr == "AT":
        return tag_key(Tag(value))
    if vr in ("IS", "DS"):
        return _number(value)
    if vr in NUMBER_VRS:
        number = float(value) if vr in ("FL", "FD") else int(value)
        return number if not (isinstance(number, float) and not math.isfinite(number)) else None
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _number(value: Any) -> int | float | str | None:
    """IS/DS as a JSON number (an integral DS stays a float-looking integer only if exact)."""
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text  # not a number: keep what was sent rather than lose it
    if not math.isfinite(number):
        return None
    if number.is_integer() and "." not in text and "e" not in text.lower():
        return int(number)
    return number


def _person_name(value: Any) -> JSON | None:
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    groups = ("Alphabetic", "Ideographic", "Phonetic")
    out = {group: text for group, text in zip(groups, _components(name), strict=False) if text}
    return out or None


def _components(name: PersonName) -> Iterable[str]:
    try:
        return name.components
    except Exception:  # undecodable groups: fall back to the raw text split by "="
        return str(name).split("=")
