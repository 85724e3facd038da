"""ADT over the real HL7 door: a python-hl7 MLLP client against HL7Door, on both databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import hl7
import pytest
from flask import Flask
from hl7.client import MLLPClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris.db import read_only, transaction
from ris.hl7_door import HL7Door
from ris.models import AuditEvent, InboundMessage, Order, Patient, Sex
from tests.conftest import free_port
from tests.factories import FrontDesk

PID_FULL = (
    "PID|1||12345^^^HOSP^MR~99-12^^^SSA^SS||DOE^JOHN^Quincy^JR^DR^^L~JD^^^^^^A||19700102|M|||"
    "Calle Mayor 1^2B^Madrid^^28001^ESP^H||555-1234^PRN^PH~^NET^Internet^john@example.org"
)


def adt(event: str, control_id: str, *segments: str, version: str = "2.5.1",
        facility: str = "HOSP") -> str:  # fmt: skip
    structure = {"A01": "ADT_A01", "A04": "ADT_A01", "A05": "ADT_A05", "A08": "ADT_A01",
                 "A40": "ADT_A39", "A47": "ADT_A30"}[event]  # fmt: skip
    kind = f"ADT^{event}" if version == "2.3.1" else f"ADT^{event}^{structure}"
    lines = [
        f"MSH|^~\\&|HIS|{facility}|PLACA|RAD|20240101120000||{kind}|{control_id}|P|{version}",
        f"EVN|{event}|20240101120000",
        *segments,
    ]
    return "\r".join(lines) + "\r"


def pid(mrn: str, name: str = "DOE^JOHN", issuer: str = "HOSP", rest: str = "") -> str:
    return f"PID|1||{mrn}^^^{issuer}^MR||{name}{rest}"


@pytest.fixture
def door(app: Flask) -> Iterator[HL7Door]:
    app.config.update(HL7_HOST="127.0.0.1", HL7_PORT=free_port())
    door = HL7Door(app)
    yield door
    door.stop()


Send = Callable[..., hl7.Message]


@pytest.fixture
def send(door: HL7Door) -> Send:
    """Send one message on a fresh connection; the parsed ACK."""

    def send_one(message: str) -> hl7.Message:
        with MLLPClient(*door.address) as client:
            return unframe(client.send_message(message))

    return send_one


def unframe(reply: bytes) -> hl7.Message:
    assert reply.startswith(b"\x0b") and reply.endswith(b"\x1c\r"), reply
    return hl7.parse(reply[1:-2].decode())


def _field(ack: hl7.Message, segment: str, number: int) -> str:
    fields = ack.segment(segment)
    return str(fields[number]) if number < len(fields) else ""  # trailing empties are omitted


def msa(ack: hl7.Message) -> tuple[str, str]:
    return _field(ack, "MSA", 1), _field(ack, "MSA", 2)


def err(ack: hl7.Message, number: int) -> str:
    return _field(ack, "ERR", number)


def read(app: Flask, query: Callable[[Session], Any]) -> Any:
    with read_only(app) as db:
        result = query(db)
        db.expunge_all()  # keep what was loaded: the session's rollback would expire it
        return result


def patient(app: Flask, mrn: str, issuer: str = "HOSP") -> Patient | None:
    query = select(Patient).where(Patient.mrn == mrn, Patient.mrn_issuer == issuer)
    return read(app, lambda db: db.scalars(query).first())


def log_row(app: Flask, control_id: str) -> InboundMessage:
    return read(app, lambda db: db.scalars(
        select(InboundMessage).where(InboundMessage.control_id == control_id)).one())  # fmt: skip


# --- A01, A04, A05: register ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.3.1", "2.5.1"])
def test_a01_registers_the_patient(app: Flask, send: Send, version: str) -> None:
    ack = send(adt("A01", "A01-1", PID_FULL, "PV1|1|I", version=version))
    assert msa(ack) == ("AA", "A01-1")
    assert str(ack.segment("MSH")[12]) == version
    found = patient(app, "12345")
    assert found is not None
    assert (found.family_name, found.given_name, found.middle_name) == ("DOE", "JOHN", "Quincy")
    assert (found.name_suffix, found.name_prefix) == ("JR", "DR")  # XPN: suffix^prefix
    assert found.dicom_name == "DOE^JOHN^Quincy^DR^JR"  # DICOM PN: prefix^suffix
    assert found.birth_date == date(1970, 1, 2)
    assert found.sex == Sex.MALE
    assert (found.street, found.city, found.postal_code, found.country) == (
        "Calle Mayor 1, 2B", "Madrid", "28001", "ESP",
    )  # fmt: skip
    assert (found.phone, found.email) == ("555-1234", "john@example.org")
    events = read(app, lambda db: db.scalars(
        select(AuditEvent).where(AuditEvent.patient_id == found.id)).all())  # fmt: skip
    assert [(e.action, e.actor_kind, e.actor) for e in events] == [
        ("patient.create", "hl7", "HIS^HOSP")
    ]
    row = log_row(app, "A01-1")
    assert (row.status, row.ack_code, row.patient_id, row.deliveries) == (
        "applied", "AA", found.id, 1,
    )  # fmt: skip
    assert (row.sender, row.message_type, row.version) == ("HIS^HOSP", "ADT^A01", version)
    assert row.raw.startswith("MSH|") and "\rPID|" in row.raw
    assert "MSA|AA|A01-1" in row.ack


@pytest.mark.parametrize("event", ["A04", "A05"])
def test_a04_and_a05_register_then_update(app: Flask, send: Send, event: str) -> None:
    assert msa(send(adt(event, "R1", pid("777", "ROE^JANE", rest="||19800202|F"))))[0] == "AA"
    assert msa(send(adt(event, "R2", pid("777", "ROE-SMITH^JANE"))))[0] == "AA"
    found = patient(app, "777")
    assert found is not None
    assert (found.family_name, found.birth_date, found.sex) == (
        "ROE-SMITH", date(1980, 2, 2), Sex.FEMALE,
    )  # fmt: skip
    assert read(app, lambda db: len(db.scalars(select(Patient)).all())) == 1


def test_issuer_is_the_sending_facility_when_the_cx_has_none(app: Flask, send: Send) -> None:
    ack = send(adt("A01", "ISS1", "PID|1||4242^^^^MR||DOE^JANE", facility="CLINIC^1.2.3^ISO"))
    assert msa(ack)[0] == "AA"
    assert patient(app, "4242", "CLINIC") is not None


def test_pid_without_family_name_is_ae_101(app: Flask, send: Send) -> None:
    ack = send(adt("A01", "NONAME", "PID|1||555^^^HOSP^MR||^JOHN"))
    assert msa(ack) == ("AE", "NONAME")
    assert err(ack, 2) == "PID^1^5"
    assert err(ack, 3).startswith("101^")
    assert patient(app, "555") is None
    assert log_row(app, "NONAME").status == "error"


def test_invalid_birth_date_is_ae_102_naming_pid7(app: Flask, send: Send) -> None:
    ack = send(adt("A01", "BADDATE", pid("556", rest="||19701399")))
    assert msa(ack)[0] == "AE"
    assert err(ack, 2) == "PID^1^7"
    assert err(ack, 3).startswith("102^")


def test_missing_patient_identifier_is_ae_101(app: Flask, send: Send) -> None:
    ack = send(adt("A01", "NOID", "PID|1||||DOE^JOHN"))
    assert msa(ack)[0] == "AE"
    assert err(ack, 2) == "PID^1^3"


# --- A08: update ----------------------------------------------------------------------------


def test_a08_updates_and_keeps_what_it_does_not_send(app: Flask, send: Send) -> None:
    send(adt("A01", "U1", PID_FULL))
    # A new name and birth date; no address (kept); phone erased with HL7's null "".
    ack = send(adt("A08", "U2", 'PID|1||12345^^^HOSP^MR||DOE^JONATHAN||19700103||||||""'))
    assert msa(ack) == ("AA", "U2")
    found = patient(app, "12345")
    assert found is not None
    assert (found.given_name, found.middle_name, found.birth_date) == (
        "JONATHAN", "", date(1970, 1, 3),
    )  # fmt: skip
    assert found.sex == Sex.MALE and found.city == "Madrid"
    assert found.phone is None
    assert log_row(app, "U2").patient_id == found.id


def test_a08_of_an_unknown_patient_is_ae_204(app: Flask, send: Send) -> None:
    ack = send(adt("A08", "U404", pid("nobody")))
    assert msa(ack) == ("AE", "U404")
    assert err(ack, 2) == "PID^1^3"
    assert err(ack, 3) == "204^Unknown key identifier^HL70357"
    assert patient(app, "nobody") is None


# --- A40: merge -----------------------------------------------------------------------------


def test_a40_merges_and_the_orders_move(app: Flask, send: Send) -> None:
    send(adt("A01", "M1", pid("KEEP", "DOE^JOHN")))
    send(adt("A01", "M2", pid("GONE", "DOE^JON")))
    desk = FrontDesk(app)
    with transaction(app) as db:
        code = desk.code(db)
        gone = db.scalars(select(Patient).where(Patient.mrn == "GONE")).one()
        order_id = desk.order(db, gone, code).id
    ack = send(adt("A40", "M3", pid("KEEP", "DOE^JOHN^Q"), "MRG|GONE^^^HOSP^MR"))
    assert msa(ack) == ("AA", "M3")
    keep, gone = patient(app, "KEEP"), patient(app, "GONE")
    assert keep is not None and gone is not None
    assert gone.merged_into_id == keep.id
    assert keep.middle_name == "Q"
    assert read(app, lambda db: db.get(Order, order_id).patient_id) == keep.id
    assert log_row(app, "M3").patient_id == keep.id
    # A second A40 for the same pair (another control id) changes nothing and is accepted.
    assert msa(send(adt("A40", "M4", pid("KEEP"), "MRG|GONE^^^HOSP^MR")))[0] == "AA"


@pytest.mark.parametrize("version", ["2.3.1", "2.5.1"])
def test_a40_with_unknown_identifiers_is_ae_naming_mrg1(
    app: Flask, send: Send, version: str
) -> None:
    ack = send(adt("A40", "M404", pid("X1"), "MRG|X2^^^HOSP^MR", version=version))
    assert msa(ack) == ("AE", "M404")
    if version == "2.3.1":
        assert err(ack, 1) == "MRG^1^1^204&Unknown key identifier&HL70357"
        assert str(ack.segment("MSA")[3]).startswith("MRG-1: Unknown patient identifier X2")
    else:
        assert err(ack, 2) == "MRG^1^1"
        assert err(ack, 3) == "204^Unknown key identifier^HL70357"


def test_a40_with_an_unknown_surviving_patient_names_pid3(app: Flask, send: Send) -> None:
    send(adt("A01", "S1", pid("OLD")))
    ack = send(adt("A40", "S2", pid("NEW"), "MRG|OLD^^^HOSP^MR"))
    assert msa(ack)[0] == "AE"
    assert err(ack, 2) == "PID^1^3"
    old = patient(app, "OLD")
    assert old is not None and old.merged_into_id is None


def test_a40_without_mrg_is_ae_101(app: Flask, send: Send) -> None:
    ack = send(adt("A40", "NOMRG", pid("A")))
    assert msa(ack)[0] == "AE"
    assert err(ack, 2) == "MRG^1"
    assert err(ack, 3).startswith("101^")


# --- A47: identifier change -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.3.1", "2.5.1"])
def test_a47_changes_the_mrn(app: Flask, send: Send, version: str) -> None:
    send(adt("A01", "I1", pid("TEMP-1")))
    before = patient(app, "TEMP-1")
    ack = send(adt("A47", "I2", pid("M-100", issuer="HIS2"), "MRG|TEMP-1^^^HOSP^MR",
                   version=version))  # fmt: skip
    assert msa(ack) == ("AA", "I2")
    after = patient(app, "M-100", "HIS2")
    assert before is not None and after is not None and after.id == before.id
    assert patient(app, "TEMP-1") is None
    change = read(app, lambda db: db.scalars(select(AuditEvent).where(
        AuditEvent.action == "patient.identifier_change")).one())  # fmt: skip
    assert change.patient_id == after.id and "TEMP-1" in (change.detail or "")


def test_a47_of_an_unknown_or_to_a_taken_identifier_is_ae(app: Flask, send: Send) -> None:
    ack = send(adt("A47", "T1", pid("NEW"), "MRG|MISSING^^^HOSP^MR"))
    assert msa(ack)[0] == "AE" and err(ack, 2) == "MRG^1^1" and err(ack, 3).startswith("204^")
    send(adt("A01", "T2", pid("ONE")))
    send(adt("A01", "T3", pid("TWO")))
    ack = send(adt("A47", "T4", pid("TWO"), "MRG|ONE^^^HOSP^MR"))
    assert msa(ack)[0] == "AE" and err(ack, 2) == "PID^1^3" and err(ack, 3).startswith("205^")
    assert patient(app, "ONE") is not None
