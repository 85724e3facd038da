"""DICOM JSON (PS3.18 Annex F) of datasets: every rule the encoder follows, checked value by
value, including where pydicom's own to_json_dict fails (empty PN among several values)."""

from __future__ import annotations

import base64
import json

from pydicom import Dataset
from pydicom.sequence import Sequence

from pacs.dicomweb.dicom_json import dataset_to_json


def encoded(ds: Dataset, **options: object) -> dict:
    out = dataset_to_json(ds, **options)  # type: ignore[arg-type]
    return json.loads(json.dumps(out))  # what goes on the wire is plain JSON


def test_person_names_are_objects_of_their_component_groups() -> None:
    ds = Dataset()
    ds.add_new(0x00100010, "PN", "Yamada^Tarou=山田^太郎=やまだ^たろう")
    ds.add_new(0x00081070, "PN", ["A^B", "", "C"])
    ds.add_new(0x00081060, "PN", "")
    out = encoded(ds)
    assert out["00100010"] == {
        "vr": "PN",
        "Value": [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ],
    }
    assert out["00081070"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "A^B"}, None, {"Alphabetic": "C"}],
    }
    assert out["00081060"] == {"vr": "PN"}


def test_numbers_strings_and_empty_values() -> None:
    ds = Dataset()
    ds.add_new(0x00180050, "DS", "1.50")
    ds.add_new(0x00280030, "DS", ["0.5", ""])
    ds.add_new(0x00200013, "IS", "7")
    ds.add_new(0x00280010, "US", 512)
    ds.add_new(0x00189219, "FD", 2.5)
    ds.add_new(0x00081090, "LO", ["A", "", "B"])
    ds.add_new(0x00100020, "LO", "")
    ds.add_new(0x00280009, "AT", [0x00181063, 0x00209153])
    ds.add_new(0x00280106, "US or SS", 3)
    out = encoded(ds)
    assert out["00180050"] == {"vr": "DS", "Value": [1.5]}
    assert out["00280030"] == {"vr": "DS", "Value": [0.5, None]}
    assert out["00200013"] == {"vr": "IS", "Value": [7]}
    assert out["00280010"] == {"vr": "US", "Value": [512]}
    assert out["00189219"] == {"vr": "FD", "Value": [2.5]}
    assert out["00081090"] == {"vr": "LO", "Value": ["A", None, "B"]}
    assert out["00100020"] == {"vr": "LO"}
    assert out["00280009"] == {"vr": "AT", "Value": ["00181063", "00209153"]}
    assert out["00280106"]["vr"] in ("US", "SS")


def test_binary_values_inline_or_as_bulk_data_uris_also_inside_sequences() -> None:
    ds = Dataset()
    ds.add_new(0x00091010, "OB", b"\x01\x02\x03")
    ds.add_new(0x7FE00010, "OW", b"\x00" * 4096)
    item = Dataset()
    item.add_new(0x00081155, "UI", "1.2.3")
    item.add_new(0x00880200 + 0x10, "OB", b"\x09" * 2000)  # a large binary value in an item
    ds.add_new(0x00081140, "SQ", Sequence([item, Dataset()]))
    ds.add_new(0x00081115, "SQ", Sequence([]))
    ds.add_new(0x00000000, "UL", 10)  # group lengths are left out
    out = encoded(ds, bulk_data_uri=lambda path: f"https://x/bulkdata/{path}")
    assert out["00091010"] == {
        "vr": "OB",
        "InlineBinary": base64.b64encode(b"\x01\x02\x03").decode(),
    }
    assert out["7FE00010"] == {"vr": "OW", "BulkDataURI": "https://x/bulkdata/7FE00010"}
    first, empty = out["00081140"]["Value"]
    assert first["00081155"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert first["00880210"] == {
        "vr": "OB",
        "BulkDataURI": "https://x/bulkdata/00081140/0/00880210",
    }
    assert empty == {}
    assert out["00081115"] == {"vr": "SQ"}
    assert "00000000" not in out
    inline = encoded(ds)  # without a URI builder everything is inline
    assert base64.b64decode(inline["7FE00010"]["InlineBinary"]) == b"\x00" * 4096
