"""ris.dicom_encode and ris.dimse_stream: the bytes decode with pydicom and pynetdicom to
what the pydicom path gives, for many items, both character sets and both little endian
transfer syntaxes; messages are cut to the peer's maximum PDU length as PS3.8 E.1 says."""

from __future__ import annotations

import random
import struct
from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import PersonName
from pynetdicom.dimse_messages import C_FIND_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from ris.dicom_encode import Element, EncodeError, encode_dataset, to_dataset
from ris.dimse_stream import find_response_command, message_pdvs

WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
NAMES = ["Peña Núñez^José María", "Dupont-Lefèvre^Hélène", "Doe^John", "Ñ^Ö", "A", "",
         "Müller-Lüdenscheidt^Jürgen^^Dr.", "Çelik^Ayşe", "O'Brien^Seán"]  # fmt: skip
TEXTS = ["CT exam 74177", "Tórax sin contraste", "é", "ab", "abc", "", "Écho cœur", "x" * 63]


def normalized(dataset: Dataset) -> list[tuple[int, Any]]:
    """A dataset's content, comparable whatever path and VR encoding it came by."""
    return [(int(element.tag), _value(element.value)) for element in dataset]


def _value(value: Any) -> Any:
    if isinstance(value, DicomSequence | list) and value and isinstance(value[0], Dataset):
        return [normalized(item) for item in value]
    if isinstance(value, MultiValue | list | tuple):
        return tuple(_value(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    return "" if value is None else value


def decoded(data: bytes, explicit_vr: bool, charset: str) -> Dataset:
    dataset = read_dataset(BytesIO(data), not explicit_vr, True)
    dataset.decode()  # text read with the dataset's Specific Character Set
    assert dataset.SpecificCharacterSet == charset
    return dataset


def through_pydicom(elements: list[Element], explicit_vr: bool) -> Dataset:
    """The pydicom path: the same elements as a Dataset, encoded as pynetdicom encodes a
    response identifier, read back."""
    dataset = to_dataset(elements)
    data = encode(dataset, not explicit_vr, True)
    assert data
    return decoded(data, explicit_vr, dataset.SpecificCharacterSet)


def random_item(rng: random.Random, charset: str) -> list[Element]:
    """A worklist-like item: text of every VR Placa answers, values of odd and even
    length, empty keys, several values, US, and sequences (empty, one item, nested)."""
    names, texts = _fitting(NAMES, charset), _fitting(TEXTS, charset)

    def text() -> str:
        return rng.choice(texts)

    code = [Element(0x00080100, "SH", rng.choice(["74177", "7055", ""])),
            Element(0x00080102, "SH", "C4"), Element(0x00080104, "LO", text())]  # fmt: skip
    step = [
        Element(0x00080060, "CS", rng.choice(["CT", "MR", "US", "", "DX"])),
        Element(0x00400001, "AE", rng.choice(["CT1_AE", "MR12_AE", "", "X"])),
        Element(0x00400002, "DA", rng.choice(["20261201", None])),
        Element(0x00400003, "TM", rng.choice(["090000", "0930", None])),
        Element(0x00400006, "PN", rng.choice(names)),
        Element(0x00400007, "LO", text()),
        Element(0x00400008, "SQ", rng.choice([[], [code]])),
        Element(0x00400009, "SH", f"SPS{rng.randrange(10**6)}"),
        Element(0x00400010, "SH", rng.choice(["CT1", "Salle écho", ""])),
        Element(0x00400020, "CS", rng.choice(["SCHEDULED", "ARRIVED"])),
    ]
    elements = [
        Element(0x00100010, "PN", rng.choice(names)),
        Element(0x00100020, "LO", str(rng.randrange(10**9))),
        Element(0x00100030, "DA", rng.choice(["19800517", "", None])),
        Element(0x00100040, "CS", rng.choice(["M", "F", "O", None])),
        Element(0x00102000, "LO", rng.sample(texts[:5], rng.randrange(4))),  # Medical Alerts
        Element(0x001021C0, "US", rng.choice([None, 1, 2, 4])),  # Pregnancy Status
        Element(0x00101030, "DS", None),  # a key Placa knows nothing about: empty
        Element(0x00080050, "SH", f"A{rng.randrange(10**7)}"),
        Element(0x0020000D, "UI", f"1.2.826.0.1.3680043.10.{rng.randrange(10**12)}"),
        Element(0x00321060, "LO", text()),
        Element(0x00321064, "SQ", [code]),
        Element(0x00081110, "SQ", []),
        Element(0x00401400, "LT", text()),  # Requested Procedure Comments
        Element(0x00400100, "SQ", [step]),
        Element(0x00080005, "CS", charset),
    ]
    rng.shuffle(elements)  # the encoder orders the tags
    return elements


def _fitting(values: list[str], charset: str) -> list[str]:
    """The values a character set can carry (Placa sends Latin-1 only when they fit)."""
    if charset != "ISO_IR 100":
        return values
    return [v for v in values if v == v.encode("latin-1", "ignore").decode("latin-1")]


@pytest.mark.parametrize("explicit_vr", [False, True], ids=["implicit", "explicit"])
@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100"])
def test_encoded_items_decode_to_what_the_pydicom_path_gives(explicit_vr, charset) -> None:
    rng = random.Random(f"{charset}{explicit_vr}")
    for _ in range(300):
        elements = random_item(rng, charset)
        data = encode_dataset(elements, explicit_vr=explicit_vr, charset=charset)
        ours = decoded(data, explicit_vr, charset)
        assert normalized(ours) == normalized(through_pydicom(elements, explicit_vr))
        assert [int(e.tag) for e in ours] == sorted(int(e.tag) for e in ours)


def test_values_are_padded_to_even_lengths_with_the_right_byte() -> None:
    uid = encode_dataset([Element(0x0020000D, "UI", "1.2.3")], explicit_vr=True, charset="")
    assert uid == struct.pack("<HH", 0x0020, 0x000D) + b"UI" + struct.pack("<H", 6) + b"1.2.3\0"
    name = encode_dataset([Element(0x00100010, "PN", "Peña")], explicit_vr=False,
                          charset="ISO_IR 192")  # fmt: skip
    assert name == struct.pack("<HHI", 0x0010, 0x0010, 6) + "Peña".encode() + b" "
    latin1 = encode_dataset([Element(0x00100010, "PN", "Peña")], explicit_vr=False,
                            charset="ISO_IR 100")  # fmt: skip
    assert latin1 == struct.pack("<HHI", 0x0010, 0x0010, 4) + "Peña".encode("latin-1")
    empty = encode_dataset([Element(0x00100030, "DA", None)], explicit_vr=True, charset="")
    assert empty == struct.pack("<HH", 0x0010, 0x0030) + b"DA\0\0"


def test_sequences_have_explicit_lengths_and_long_vrs_four_byte_lengths() -> None:
    item = [Element(0x00080100, "SH", "1")]
    data = encode_dataset([Element(0x00321064, "SQ", [item, []])], explicit_vr=True, charset="")
    inner = struct.pack("<HH", 0x0008, 0x0100) + b"SH" + struct.pack("<H", 2) + b"1 "
    length = struct.pack("<I", 8 + len(inner) + 8)
    assert data == (struct.pack("<HH", 0x0032, 0x1064) + b"SQ\0\0" + length
                    + b"\xfe\xff\x00\xe0" + struct.pack("<I", len(inner)) + inner
                    + b"\xfe\xff\x00\xe0" + struct.pack("<I", 0))  # fmt: skip
    text = encode_dataset([Element(0x00400280, "ST", None), Element(0x00189999, "UT", "ab")],
                          explicit_vr=True, charset="")  # fmt: skip
    assert text == (struct.pack("<HH", 0x0018, 0x9999) + b"UT\0\0" + struct.pack("<I", 2) + b"ab"
                    + struct.pack("<HH", 0x0040, 0x0280) + b"ST\0\0")  # in tag order  # fmt: skip


def test_what_it_does_not_encode_is_refused_not_garbled() -> None:
    with pytest.raises(EncodeError):
        encode_dataset([Element(0x7FE00010, "OB", b"\0\1")], explicit_vr=True, charset="")
    with pytest.raises(EncodeError):
        encode_dataset([Element(0x00100010, "PN", "A")], explicit_vr=True, charset="GB18030")
    with pytest.raises(UnicodeEncodeError):  # the caller chose Latin-1 for text that is not
        encode_dataset([Element(0x00100010, "PN", "Wałęsa")], explicit_vr=True,
                       charset="ISO_IR 100")  # fmt: skip


def reassembled(pdata_lists: list[list[Any]]) -> DIMSEMessage:
    """What pynetdicom's receiver makes of the P-DATAs, each through a real P-DATA-TF."""
    message = DIMSEMessage()
    complete = False
    for pdvs in pdata_lists:
        assert not complete  # nothing after the message's last fragment
        primitive = P_DATA()
        primitive.presentation_data_value_list = pdvs
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        encoded = pdu.encode()
        received = P_DATA_TF()
        received.decode(encoded)
        complete = message.decode_msg(received.to_primitive())
    assert complete
    return message


@pytest.mark.parametrize("max_length", [0, 16382, 4096, 1000, 257, 256, 9])
def test_messages_are_cut_to_the_peers_maximum_pdu_length(max_length: int) -> None:
    rng = random.Random(max_length)
    command = find_response_command(WORKLIST_FIND, 7, 0xFF01)
    for _ in range(20):
        item = random_item(rng, "ISO_IR 192")
        item.append(Element(0x00401400, "LT", "é" * rng.randrange(3000)))  # long ones too
        data_set = encode_dataset(item, explicit_vr=True, charset="ISO_IR 192")
        pdata_lists = message_pdvs(3, command, data_set, max_length)
        for pdvs in pdata_lists:
            length = sum(6 + len(pdv[1]) - 1 for pdv in pdvs)  # the P-DATA-TF's PDU length
            assert not max_length or length <= max_length
            assert all(pdv[0] == 3 and len(pdv[1]) % 2 == 1 for pdv in pdvs)  # even fragments
        message = reassembled(pdata_lists)
        assert message.context_id == 3
        assert message.data_set.getvalue() == data_set
        cs = message.command_set
        assert (cs.CommandField, cs.MessageIDBeingRespondedTo, cs.Status) == (0x8020, 7, 0xFF01)
        assert cs.AffectedSOPClassUID == WORKLIST_FIND and cs.CommandDataSetType != 0x0101
        assert cs.CommandGroupLength == len(command) - 12
        if max_length == 0 or len(command) + len(data_set) + 12 <= max_length:
            assert len(pdata_lists) == 1  # command and data set in one P-DATA


def test_a_maximum_too_small_for_any_fragment_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no fragment"):
        message_pdvs(1, b"\0\0", b"\0\0", 7)


@pytest.mark.parametrize("status", [0xFF00, 0xFF01])
def test_the_command_set_is_the_one_pynetdicom_would_send(status: int) -> None:
    response = C_FIND()
    response.MessageIDBeingRespondedTo = 65535
    response.AffectedSOPClassUID = WORKLIST_FIND
    response.Status = status
    response.Identifier = BytesIO(b"\x08\x00\x05\x00\x00\x00\x00\x00")
    message = C_FIND_RSP()
    message.primitive_to_message(response)
    assert find_response_command(WORKLIST_FIND, 65535, status) == encode(
        message.command_set, True, True
    )
