"""handle_message: parsing, dispatch and ACK building, directly and through real MLLP peers."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import hl7
import pytest
from hl7.client import MLLPClient
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy.orm import Session

from ris import hl7 as ris_hl7
from ris.audit import Actor
from ris.errors import Invalid, NotFound
from ris.hl7 import (
    Context,
    HL7ApplicationError,
    HL7RejectError,
    fields,
    handle_message,
    reject_oversize,
)
from ris.hl7.inbound import sender_of
from ris.hl7.message import Message
from ris.hl7.message import parse as parse_message_segments
from ris.hl7.wire import Header, find_header, split_segments
from ris.mllp import MLLPServer
from ris.site import Site

ADT_A01_251 = (
    "MSH|^~\\&|HIS|HOSP^1.2.3^ISO|PLACA|PLACA|20240101120000||ADT^A01^ADT_A01|ADT0001|P|2.5.1\r"
    "EVN|A01|20240101120000\r"
    "PID|1||12345^^^HOSP^MR||DOE^JOHN||19700101|M\r"
    "PV1|1|I|RAD^101^1\r"
)
ORM_O01_231 = (
    "MSH|^~\\&|RIS|CLINIC|PLACA|PLACA|20240101120000||ORM^O01|ORM0001|T|2.3.1\r"
    "PID|1||555^^^CLINIC^MR||ROE^JANE||19800202|F\r"
    "PV1|1|O\r"
    "ORC|NW|ORD1\r"
    "OBR|1|ORD1||CT-HEAD^CT head^L\r"
)


@contextmanager
def _detached(header: Header) -> Iterator[Context]:
    """A route context without a database: these routes only record what they get."""
    sender = sender_of(header)
    yield Context(db=cast(Session, None), actor=Actor.hl7(sender, "10.0.0.1:5000"), site=Site(),
                  sender=sender, version=header.version)  # fmt: skip


def _handle(raw: bytes, peer: str) -> bytes:
    return handle_message(raw, sender=peer, context=_detached)


def _ack(raw: str | bytes, **kwargs: str) -> hl7.Message:
    data = raw.encode() if isinstance(raw, str) else raw
    reply = handle_message(data, sender="10.0.0.1:5000", context=_detached, **kwargs)
    return hl7.parse(reply.decode("latin-1"))


def _with(message: str, **fields: str) -> str:
    """Replace MSH fields, e.g. ``_with(ADT_A01_251, msh_12="2.4")``."""
    segments = message.split("\r")
    msh = segments[0].split("|")
    for name, value in fields.items():
        index = int(name.removeprefix("msh_")) - 1
        msh += [""] * (index + 1 - len(msh))
        msh[index] = value
    return "\r".join(["|".join(msh), *segments[1:]])


def _field(ack: hl7.Message, segment: str, number: int) -> str:
    fields = ack.segment(segment)
    return str(fields[number]) if number < len(fields) else ""  # trailing empty fields are omitted


def _segment_ids(ack: hl7.Message) -> list[str]:
    return [str(segment[0]) for segment in ack]


@pytest.fixture(autouse=True)
def no_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message type unsupported, unless a test routes one."""
    for name in list(ris_hl7.ROUTES):
        monkeypatch.delitem(ris_hl7.ROUTES, name)


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Context]]:
    """Route ADT^A01 to a recorder of the contexts it runs in."""
    seen: list[Context] = []

    def record(ctx: Context, message: Message) -> int:
        seen.append(ctx)
        return 7

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", record)
    yield seen


@pytest.fixture
def route(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Message]]:
    """Route ADT^A01 to a recorder; the list receives the parsed messages."""
    received: list[Message] = []

    def record(ctx: Context, message: Message) -> None:
        received.append(message)

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", record)
    yield received


# --- unsupported message types --------------------------------------------------------


def test_unsupported_type_v251_gets_ar_with_err_segment() -> None:
    ack = _ack(ADT_A01_251)
    assert _field(ack, "MSA", 1) == "AR"
    assert _field(ack, "MSA", 2) == "ADT0001"
    assert _field(ack, "ERR", 2) == "MSH^1^9"
    assert _field(ack, "ERR", 3) == "200^Unsupported message type^HL70357"
    assert _field(ack, "ERR", 4) == "E"
    assert _field(ack, "ERR", 8) == "Message type ADT\\S\\A01 is not supported"


def test_ack_header() -> None:
    ack = _ack(ADT_A01_251, application="PLACA_RIS", facility="RAD")
    assert _field(ack, "MSH", 3) == "PLACA_RIS"
    assert _field(ack, "MSH", 4) == "RAD"
    assert _field(ack, "MSH", 5) == "HIS"
    assert _field(ack, "MSH", 6) == "HOSP^1.2.3^ISO"
    assert _field(ack, "MSH", 9) == "ACK^A01^ACK"
    assert _field(ack, "MSH", 11) == "P"
    assert _field(ack, "MSH", 12) == "2.5.1"
    sent = datetime.strptime(_field(ack, "MSH", 7), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - sent) < timedelta(seconds=5)
    control_ids = {_field(_ack(ADT_A01_251), "MSH", 10) for _ in range(20)}
    assert len(control_ids) == 20
    assert all(0 < len(control_id) <= 20 for control_id in control_ids)


def test_unsupported_type_v231_uses_err1() -> None:
    ack = _ack(ORM_O01_231)
    assert _field(ack, "MSH", 9) == "ACK^O01^ACK"
    assert _field(ack, "MSH", 11) == "T"
    assert _field(ack, "MSH", 12) == "2.3.1"
    assert _field(ack, "MSA", 1) == "AR"
    assert _field(ack, "MSA", 2) == "ORM0001"
    assert _field(ack, "MSA", 3) == "Message type ORM\\S\\O01 is not supported"
    assert str(ack.segment("ERR")) == "ERR|MSH^1^9^200&Unsupported message type&HL70357"


def test_ack_parses_with_hl7apy() -> None:
    raw = handle_message(ORM_O01_231.encode(), sender="peer").decode().rstrip("\r")
    ack = parse_message(raw, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    assert ack.msa.msa_1.value == "AR"
    assert ack.msa.msa_2.value == "ORM0001"
    assert ack.err.err_1.to_er7() == "MSH^1^9^200&Unsupported message type&HL70357"


@pytest.mark.parametrize(
    ("version", "ack_version", "err_field"),
    [
        ("2.3", "2.3", 1),
        ("2.4", "2.4", 1),
        ("2.5", "2.5", 3),
        ("2.6", "2.6", 3),
        ("2.9", "2.5.1", 3),
        ("", "2.5.1", 3),
    ],
)
def test_other_versions_are_tolerated(version: str, ack_version: str, err_field: int) -> None:
    ack = _ack(_with(ADT_A01_251, msh_12=version))
    assert _field(ack, "MSH", 12) == ack_version
    assert _field(ack, "MSA", 2) == "ADT0001"
    assert "200" in _field(ack, "ERR", err_field)


def test_v23_ack_message_type_has_two_components() -> None:
    assert _field(_ack(_with(ADT_A01_251, msh_12="2.3")), "MSH", 9) == "ACK^A01"


# --- routing --------------------------------------------------------------------------


def test_routed_message_gets_aa_and_the_route_gets_the_parsed_message(route: list[Message]) -> None:
    ack = _ack(ADT_A01_251)
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AA", "ADT0001")
    assert _segment_ids(ack) == ["MSH", "MSA"]
    (message,) = route
    assert fields.field(fields.segment(message, "MSH"), "MSH-10") == "ADT0001"
    assert _raw(message, "PID", 5) == "DOE^JOHN"


def test_route_gets_the_context_of_the_message(contexts: list[Context]) -> None:
    assert _field(_ack(ADT_A01_251), "MSA", 1) == "AA"
    assert _field(_ack(_with(ADT_A01_251, msh_12="2.3.1")), "MSA", 1) == "AA"
    assert [(c.sender, c.version) for c in contexts] == [
        ("HIS^HOSP", "2.5.1"),
        ("HIS^HOSP", "2.3.1"),
    ]
    assert contexts[0].actor == Actor("hl7", "HIS^HOSP", None, "10.0.0.1:5000")


def test_sender_uses_the_namespace_or_the_universal_id() -> None:
    assert sender_of(Header(sending_application="HIS", sending_facility="HOSP^1.2.3^ISO")) == (
        "HIS^HOSP"
    )
    assert sender_of(Header(sending_application="^1.2.9^ISO")) == "1.2.9^"


def test_without_a_database_a_routed_message_is_rejected(route: list[Message]) -> None:
    reply = handle_message(ADT_A01_251.encode(), sender="peer")
    ack = hl7.parse(reply.decode())
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AR", "ADT0001")
    assert _field(ack, "ERR", 3).startswith("207^")
    assert route == []


@pytest.mark.parametrize(
    ("error", "code"),
    [(NotFound("No such order."), "204"), (Invalid("The family name is required."), "207")],
)
def test_service_error_gives_ae_with_its_message(
    monkeypatch: pytest.MonkeyPatch, error: Exception, code: str
) -> None:
    def refuse(ctx: Context, message: Message) -> None:
        raise error

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", refuse)
    ack = _ack(ADT_A01_251)
    assert _field(ack, "MSA", 1) == "AE"
    assert _field(ack, "ERR", 3).startswith(f"{code}^")
    assert _field(ack, "ERR", 8) == str(error)


def test_route_is_found_for_a_message_type_without_structure(route: list[Message]) -> None:
    assert _field(_ack(_with(ADT_A01_251, msh_9="adt^a01")), "MSA", 1) == "AA"


@pytest.mark.parametrize("separator", ["\n", "\r\n"])
def test_newline_segment_separators_are_accepted(route: list[Message], separator: str) -> None:
    ack = _ack(ADT_A01_251.replace("\r", separator))
    assert _field(ack, "MSA", 1) == "AA"
    assert [segment.name for segment in route[0].children] == ["MSH", "EVN", "PID", "PV1"]


def test_application_error_gives_ae_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown_patient(ctx: Context, message: Message) -> None:
        raise HL7ApplicationError("PID-3", "Unknown patient identifier", code="204")

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", unknown_patient)
    ack = _ack(ADT_A01_251)
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AE", "ADT0001")
    assert _field(ack, "ERR", 2) == "PID^1^3"
    assert _field(ack, "ERR", 3) == "204^Unknown key identifier^HL70357"
    assert _field(ack, "ERR", 8) == "PID-3: Unknown patient identifier"

    ack = _ack(_with(ADT_A01_251, msh_12="2.3.1"))
    assert _field(ack, "MSA", 1) == "AE"
    assert _field(ack, "MSA", 3) == "PID-3: Unknown patient identifier"
    assert _field(ack, "ERR", 1) == "PID^1^3^204&Unknown key identifier&HL70357"


def test_application_error_default_code_and_component_location(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def bad(ctx: Context, message: Message) -> None:
        raise HL7ApplicationError("obr-4.1", "Unknown procedure code")

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", bad)
    ack = _ack(ADT_A01_251)
    assert _field(ack, "ERR", 2) == "OBR^1^4^1^1"
    assert _field(ack, "ERR", 3) == "207^Application internal error^HL70357"


def test_reject_error_gives_ar(monkeypatch: pytest.MonkeyPatch) -> None:
    def reject(ctx: Context, message: Message) -> None:
        raise HL7RejectError("MSH-11", "Test messages are not accepted", code="202")

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", reject)
    ack = _ack(ADT_A01_251)
    assert _field(ack, "MSA", 1) == "AR"
    assert _field(ack, "ERR", 2) == "MSH^1^11"
    assert _field(ack, "ERR", 3) == "202^Unsupported processing id^HL70357"


def test_route_crash_gives_ar_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def crash(ctx: Context, message: Message) -> None:
        raise RuntimeError("database is down")

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", crash)
    ack = _ack(ADT_A01_251)
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AR", "ADT0001")
    assert _field(ack, "ERR", 3) == "207^Application internal error^HL70357"
    assert "database" not in str(ack)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None


# --- tolerant decoding ----------------------------------------------------------------


def test_utf8_is_decoded(route: list[Message]) -> None:
    _ack(ADT_A01_251.replace("DOE^JOHN", "MÜLLER^JÖRG"))
    assert _raw(route[0], "PID", 5) == "MÜLLER^JÖRG"


def test_latin1_falls_back_without_msh18(route: list[Message]) -> None:
    _ack(ADT_A01_251.replace("DOE^JOHN", "MÜLLER^JÖRG").encode("latin-1"))
    assert _raw(route[0], "PID", 5) == "MÜLLER^JÖRG"


def test_msh18_charset_is_honoured(route: list[Message]) -> None:
    # 0xA4 is the euro sign in 8859/15 and a generic currency sign in latin-1.
    text = _with(ADT_A01_251, msh_18="8859/15").replace("DOE^JOHN", "DOE€^JOHN")
    reply = handle_message(text.encode("iso8859_15"), sender="peer", context=_detached)
    assert _raw(route[0], "PID", 5) == "DOE€^JOHN"
    assert _field(hl7.parse(reply.decode("iso8859_15")), "MSH", 18) == "8859/15"


# --- messages that cannot be parsed ---------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"hello, world", b"\x00\xff\xfe garbage", b"PID|1||123\rPV1|1"]
)
def test_no_msh_gives_ar_segment_sequence_error(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    ack = _ack(raw)
    assert _field(ack, "MSH", 9) == "ACK"
    assert _field(ack, "MSH", 12) == "2.5.1"
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AR", "")
    assert _field(ack, "ERR", 3) == "100^Segment sequence error^HL70357"
    assert any(r.levelno == logging.WARNING and r.name == "ris.hl7" for r in caplog.records)


def test_msh_not_first_salvages_the_control_id() -> None:
    ack = _ack("PID|1||123\r" + ADT_A01_251)
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AR", "ADT0001")
    assert _field(ack, "ERR", 3).startswith("100^")


def test_unknown_segment_is_a_segment_sequence_error(caplog: pytest.LogCaptureFixture) -> None:
    ack = _ack(ADT_A01_251 + "FOO|1|2\r")
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AR", "ADT0001")
    assert _field(ack, "ERR", 3).startswith("100^")
    assert "FOO" in _field(ack, "ERR", 8)
    assert any(
        "cannot parse" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )


def test_bad_encoding_characters_are_a_data_type_error() -> None:
    ack = _ack(_with(ADT_A01_251, msh_2="^~"))
    assert _field(ack, "MSA", 1) == "AR"
    assert _field(ack, "ERR", 2) == "MSH^1^2"
    assert _field(ack, "ERR", 3).startswith("102^")


def test_missing_message_type_is_a_required_field_error() -> None:
    ack = _ack(_with(ADT_A01_251, msh_9=""))
    assert _field(ack, "MSH", 9) == "ACK"
    assert _field(ack, "ERR", 2) == "MSH^1^9"
    assert _field(ack, "ERR", 3).startswith("101^")


def test_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ris.hl7")
    _ack(ADT_A01_251)
    messages = [
        r.getMessage() for r in caplog.records if r.name == "ris.hl7" and r.levelno == logging.INFO
    ]
    assert any("ADT^A01" in m and "ADT0001" in m and "10.0.0.1:5000" in m for m in messages)
    assert any("AR 200" in m for m in messages)


def test_reject_oversize_uses_the_complete_header() -> None:
    head = ADT_A01_251.encode() + b"OBX|1|TX|||" + b"x" * 100
    ack = hl7.parse(reject_oversize(head, sender="peer").decode())
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AR", "ADT0001")
    assert _field(ack, "MSH", 5) == "HIS"
    assert "maximum accepted size" in _field(ack, "ERR", 8)
    truncated = hl7.parse(
        reject_oversize(b"MSH|^~\\&|HIS|HOSP|||2024||ADT^A01|AD", sender="peer").decode()
    )
    assert _field(truncated, "MSA", 2) == ""


# --- through the MLLP listener with real clients --------------------------------------


@pytest.fixture
def server() -> Iterator[MLLPServer]:
    server = MLLPServer(
        "127.0.0.1",
        0,
        _handle,
        on_oversize=lambda head, peer: reject_oversize(head, sender=peer),
    )
    server.start()
    yield server
    server.shutdown()


def _unframe(reply: bytes) -> hl7.Message:
    assert reply.startswith(b"\x0b") and reply.endswith(b"\x1c\r"), reply
    return hl7.parse(reply[1:-2].decode())


@pytest.mark.parametrize(
    ("message", "control_id", "event"),
    [(ADT_A01_251, "ADT0001", "A01"), (ORM_O01_231, "ORM0001", "O01")],
)
def test_mllp_client_gets_ar(server: MLLPServer, message: str, control_id: str, event: str) -> None:
    with MLLPClient(*server.address) as client:
        ack = _unframe(client.send_message(message))
    assert _field(ack, "MSH", 9) == f"ACK^{event}^ACK"
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AR", control_id)
    assert "200" in str(ack.segment("ERR"))


def test_mllp_client_gets_aa_for_a_routed_message(server: MLLPServer, route: list[Message]) -> None:
    with MLLPClient(*server.address) as client:
        ack = _unframe(client.send_message(ADT_A01_251))
    assert (_field(ack, "MSA", 1), _field(ack, "MSA", 2)) == ("AA", "ADT0001")
    assert _raw(route[0], "PID", 3) == "12345^^^HOSP^MR"


def test_mllp_client_ae_from_route(server: MLLPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def reject(ctx: Context, message: Message) -> None:
        raise HL7ApplicationError("PV1-3", "Unknown location")

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", reject)
    with MLLPClient(*server.address) as client:
        ack = _unframe(client.send_message(ADT_A01_251))
    assert _field(ack, "MSA", 1) == "AE"
    assert _field(ack, "ERR", 2) == "PV1^1^3"


def test_mllp_send_console_script(server: MLLPServer, tmp_path: Path) -> None:
    mllp_send = Path(sys.executable).with_name("mllp_send")
    if not mllp_send.exists():
        pytest.skip("mllp_send console script not installed")
    # --loose: a plain file, segments on \r\n lines, as an operator would paste it.
    source = tmp_path / "messages.hl7"
    source.write_bytes((ADT_A01_251 + ORM_O01_231).replace("\r", "\r\n").encode())
    host, port = server.address
    result = subprocess.run(
        [str(mllp_send), "--loose", "-f", str(source), "-p", str(port), host],
        capture_output=True,
        timeout=15,
        check=True,
    )
    replies = [chunk.strip(b"\x0b\r\n") for chunk in result.stdout.split(b"\x1c") if chunk.strip()]
    acks = [hl7.parse(reply.decode()) for reply in replies]
    assert [(_field(ack, "MSA", 1), _field(ack, "MSA", 2)) for ack in acks] == [
        ("AR", "ADT0001"),
        ("AR", "ORM0001"),
    ]
    assert [_field(ack, "MSH", 12) for ack in acks] == ["2.5.1", "2.3.1"]


# --- reading fields -------------------------------------------------------------------


def _raw(message: Message, name: str, number: int) -> str:
    """A field as it was sent (still escaped)."""
    found = fields.segment(message, name)
    return found.fields[number] if found is not None else ""


def _parsed(text: str) -> Message:
    segments = split_segments(text)
    return parse_message_segments(segments, find_header(segments)[0].version)


def test_fields_are_read_tolerantly_and_unescaped() -> None:
    message = _parsed(
        ADT_A01_251.replace("DOE^JOHN", "O\\T\\BRIEN\\S\\X^JOHN~ALIAS^JO^^^^^A")
        .replace("12345^^^HOSP^MR", "12345^^^HOSP&1.2.3&ISO^MR~999^^^SSA^SS")
        .rstrip("\r")
    )
    msh, pid = fields.segment(message, "MSH"), fields.segment(message, "PID")
    assert fields.field(msh, "MSH-2") == "^~\\&"
    assert (fields.field(msh, "MSH-4"), fields.field(msh, "MSH-4.2")) == ("HOSP^1.2.3^ISO", "1.2.3")
    assert fields.field(msh, "MSH-9.2") == "A01"
    assert fields.field(pid, "PID-5.1") == "O&BRIEN^X"
    assert fields.field(pid, "PID-5.2", repetition=1) == "JO"
    assert fields.field(pid, "PID-3.4.2") == "1.2.3"
    assert [cx.component(5) for cx in fields.repetitions(pid, "PID-3")] == ["MR", "SS"]
    assert fields.field(pid, "PID-40") == "" and fields.repetitions(pid, "PID-40") == []
    assert fields.segment(message, "OBR") is None and fields.field(None, "OBR-4") == ""
    assert fields.unescape("a\\F\\b\\X41\\c\\.br\\d\\H\\e") == "a|bAc\nde"


def test_timestamps_are_site_time_unless_they_carry_an_offset() -> None:
    madrid = ZoneInfo("Europe/Madrid")
    assert fields.timestamp_value("202407011230", "ORC-7", madrid) == datetime(
        2024, 7, 1, 10, 30, tzinfo=UTC
    )
    assert fields.timestamp_value("20240701123000.5-0500", "ORC-7", madrid) == datetime(
        2024, 7, 1, 17, 30, 0, 500000, tzinfo=UTC
    )
    assert fields.timestamp_value("", "ORC-7", madrid) is None
    assert fields.date_value("19700102", "PID-7") == date(1970, 1, 2)
    for bad in ("2024-07-01", "20241301", "1970"):
        with pytest.raises(HL7ApplicationError) as caught:
            fields.date_value(bad, "PID-7")
        assert (caught.value.field, caught.value.code) == ("PID-7", "102")
