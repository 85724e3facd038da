"""The index header scanner reads what pydicom reads, and gives up where it should."""

from __future__ import annotations

import struct
from dataclasses import replace
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs.header_scan import scan_elements
from pacs.storage import (
    CANNOT_UNDERSTAND,
    INDEX_TAGS,
    LAST_INDEX_TAG,
    StoreRefused,
    parse_header,
)
from tests.pacs.dicom_data import encode, make_dataset, received


def pydicom_raw(data: bytes, implicit: bool) -> dict[str, bytes]:
    """What pydicom's element generator yields for the index's tags (the reference)."""
    found = {}
    for element in data_element_generator(
        BytesIO(data), is_implicit_VR=implicit, is_little_endian=True,
        stop_when=lambda tag, vr, length: tag > LAST_INDEX_TAG,
    ):  # fmt: skip
        keyword = INDEX_TAGS.get(int(element.tag))
        if keyword is not None and isinstance(element.value, bytes):
            found[keyword] = element.value
    return found


def with_sequences(ds: Dataset) -> Dataset:
    """Sequences before, among and after the index's tags, nested two deep."""
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "74170", "CPT", "CT ABD"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.4"
    code.ReferencedImageSequence = Sequence([inner, inner])
    ds.ProcedureCodeSequence = Sequence([code])  # (0008,1032): among the index's tags
    ds.ReferencedStudySequence = Sequence([])  # (0008,1110): an empty sequence
    ds.RequestAttributesSequence = Sequence([code])  # (0040,0275): past the last tag
    for keyword in ("ProcedureCodeSequence", "RequestAttributesSequence"):
        ds[keyword].is_undefined_length = True  # as most modalities write them
    code.is_undefined_length_sequence_item = True
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(
    "dataset",
    [
        lambda: make_dataset(),
        lambda: with_sequences(make_dataset(name="Núñez^José", charset="ISO_IR 100")),
        lambda: with_sequences(make_dataset(name="Lefèvre^Chloé", charset="ISO_IR 192")),
        lambda: make_dataset(
            PerformedProcedureStepStartDate="20261130", PerformedProcedureStepStartTime="1015"
        ),
    ],
    ids=["plain", "sequences-latin1", "sequences-utf8", "pps"],
)
def test_the_scan_reads_what_pydicom_reads(syntax: str, dataset) -> None:
    data = encode(dataset(), syntax)
    implicit = syntax == ImplicitVRLittleEndian
    scanned = scan_elements(data, INDEX_TAGS, LAST_INDEX_TAG, explicit=not implicit)
    assert scanned == pydicom_raw(data, implicit)
    assert scanned["PatientID"] == b"PID001"


def _explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"SQ", b"UN", b"OB"):
        return (
            struct.pack("<HH", group, element)
            + vr
            + b"\0\0"
            + struct.pack("<L", len(value))
            + value
        )
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def test_sequences_of_defined_length_and_undefined_length_un_are_stepped_over() -> None:
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 10) + struct.pack("<HHL", 0x0008, 0x1155, 2) + b"1\0"
    defined_sq = _explicit(0x0008, 0x1032, b"SQ", item)
    # An undefined-length UN holds implicit VR content (PS3.5 6.2.2), items of undefined length.
    implicit_item = (
        struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + struct.pack("<HHL", 0x0008, 0x0100, 6) + b"74170 "
        + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    )  # fmt: skip
    un = (
        struct.pack("<HH", 0x0009, 0x1010) + b"UN\0\0" + struct.pack("<L", 0xFFFFFFFF)
        + implicit_item + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )  # fmt: skip
    data = (
        _explicit(0x0008, 0x0016, b"UI", b"1.2\0")
        + defined_sq
        + un
        + _explicit(0x0010, 0x0020, b"LO", b"PID9")
        + _explicit(0x7FE0, 0x0010, b"OB", b"\0\0")
    )  # fmt: skip
    scanned = scan_elements(data, INDEX_TAGS, LAST_INDEX_TAG, explicit=True)
    assert scanned == {"SOPClassUID": b"1.2\0", "PatientID": b"PID9"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:30],  # cut in the middle of the first value
        lambda data: data[:4] + b"\x01\x02" + data[6:],  # a VR that is no VR
    ],
    ids=["truncated", "bad-vr"],
)
def test_damaged_data_is_left_to_pydicom(damage) -> None:
    data = damage(encode(make_dataset(), ExplicitVRLittleEndian))
    assert scan_elements(data, INDEX_TAGS, LAST_INDEX_TAG, explicit=True) is None


def test_an_unterminated_sequence_is_refused_as_before() -> None:
    ds = with_sequences(make_dataset())
    data = encode(ds, ExplicitVRLittleEndian)
    cut = data[: data.index(b"\xfe\xff\xdd\xe0")]  # the first sequence delimiter, and after
    assert scan_elements(cut, INDEX_TAGS, LAST_INDEX_TAG, explicit=True) is None
    with pytest.raises(StoreRefused) as refused:
        parse_header(replace(received(ds), dataset=cut))
    assert refused.value.status == CANNOT_UNDERSTAND
