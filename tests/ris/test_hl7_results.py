"""ORU^R01 (report results) and DFT^P03 (charges): built with hl7apy, validated strictly, queued
in the caller's transaction for the destinations that take them, delivered to a real MLLP peer
by the sender job."""

from __future__ import annotations

import base64
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import orders, scheduling
from ris.db import transaction
from ris.errors import Invalid
from ris.hl7 import dft, oru, outbound
from ris.models import HL7Destination, OutboundMessage, RequestedProcedure
from ris.scheduler import JOBS, run_job
from tests.conftest import free_port
from tests.factories import ACTOR, SITE, FrontDesk, at, next_weekday
from tests.hl7_peer import HL7Peer

NASTY = "Densité 5 | 10 ^ cm & ~ bord \\ net; ñandú"
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
# A report of realistic size (150 KB): hl7apy's STRICT mode caps ED data at 199 characters,
# which HL7 does not, so the big one is read back in hl7apy's tolerant mode.
BIG_PDF = PDF + bytes(range(256)) * 600


@pytest.fixture
def exam(db: Session, desk: FrontDesk) -> RequestedProcedure:
    room = desk.room(db, "CT1", "CT")
    code = desk.code(db, "74177", "CT", minutes=20)
    patient = desk.patient(db, "Lefèvre", "Gaëlle", city="Lyon")
    data = orders.OrderData(
        ordering_physician="House^Gregory", referring_physician="Wilson^James",
        icd10_codes=["R10.9", "K35.80"], placer_order_number="HIS-77", placer_issuer="EPIC",
    )  # fmt: skip
    exam = orders.place_order(db, ACTOR, SITE, patient, data, [code]).procedures[0]
    scheduling.book(db, ACTOR, SITE, exam, room, at(next_weekday(), 9))
    db.commit()
    return exam


def _destination(
    db: Session, port: int, types: str, name: str = "HIS", pdf: bool = False
) -> HL7Destination:
    data = outbound.DestinationData(
        name=name, host="127.0.0.1", port=port, message_types=outbound.parse_message_types(types),
        receiving_application="HIS", receiving_facility="HOSP", include_pdf=pdf,
    )  # fmt: skip
    destination = outbound.save_destination(db, ACTOR, data)
    db.commit()
    return destination


def _result(exam: RequestedProcedure, status: oru.ResultStatus = oru.ResultStatus.FINAL,
            pdf: bytes | None = None) -> oru.ReportResult:  # fmt: skip
    start = exam.steps[0].start_at
    sections = (
        oru.ReportSection("Indication", "Douleur abdominale aiguë", "18785-6"),
        oru.ReportSection("Findings", f"Line one\r\n{NASTY}\n\nLine three", "18782-3"),
        oru.ReportSection("Impression", "Pas d'appendicite."),
        oru.ReportSection("Comparison", "   "),  # empty sections are left out
    )
    return oru.ReportResult(
        exam=exam, status=status, sections=sections, signer="Grey^Meredith",
        signer_id="RAD42", observed_at=start, reported_at=start + timedelta(hours=2), pdf=pdf,
    )  # fmt: skip


def _charge(exam: RequestedProcedure, transaction_id: str = "CH0001", **extra: object):  # noqa: ANN202
    values: dict[str, object] = {
        "exam": exam,
        "transaction_id": transaction_id,
        "service_date": date(2026, 11, 24),
        "code": "74177",
        "code_system": "CPT",
        "unit_amount": Decimal("120.50"),
        "modifiers": ("TC",),
        "currency": "EUR",
    }
    return dft.ChargeLine(**{**values, **extra})  # type: ignore[arg-type]


def _queued(app: Flask) -> list[OutboundMessage]:
    with transaction(app) as db:
        return list(db.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


def _strict(payload: str):  # noqa: ANN202
    """Parse as a receiver validating against the 2.5.1 structures would, then by segment."""
    message = parse_message(payload, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    return parse_message(payload, find_groups=False)


def _segments(payload: str, name: str) -> list[list[str]]:
    return [s.split("|") for s in payload.split("\r") if s.startswith(name + "|")]


# ORU^R01 ---------------------------------------------------------------------------------


def test_final_result_fields(app: Flask, db: Session, exam: RequestedProcedure) -> None:
    _destination(db, free_port(), "ORU")
    _destination(db, free_port(), "SIU,DFT", name="BILLING")  # takes no results
    before = len(_queued(app))
    [queued] = oru.enqueue_result(db, _result(exam))
    db.commit()
    assert len(_queued(app)) == before + 1
    assert (queued.message_type, queued.exam_id, queued.patient_id) == (
        "ORU^R01", exam.id, exam.order.patient_id)  # fmt: skip
    message = _strict(queued.payload)
    zone = outbound.identity_of(db).zone
    assert message.msh.msh_9.value == "ORU^R01^ORU_R01"
    assert message.msh.msh_10.value == queued.control_id
    assert message.pid.pid_5.value == "Lefèvre^Gaëlle^^^^^L"
    assert message.orc.orc_1.value == "RE"
    obr = message.obr
    assert obr.obr_2.value == "HIS-77^EPIC"
    assert obr.obr_3.value == f"{exam.accession_number}^PLACA"
    assert obr.obr_4.value == "74177^CT exam 74177^CPT"
    assert obr.obr_7.value == outbound.hl7_time(exam.steps[0].start_at, zone)
    assert obr.obr_18.value == exam.accession_number
    assert obr.obr_19.value == exam.requested_procedure_id
    assert obr.obr_20.value == exam.steps[0].step_id
    assert obr.obr_22.value == outbound.hl7_time(exam.steps[0].start_at + timedelta(hours=2),
                                                 zone)  # fmt: skip
    assert obr.obr_25.value == "F"
    assert obr.obr_32.value == "RAD42&Grey&Meredith"
    obx = _segments(queued.payload, "OBX")
    assert [o[2] for o in obx] == ["TX", "TX", "TX"]  # the blank section is left out
    assert [o[3] for o in obx] == ["18785-6^Indication^LN", "18782-3^Findings^LN",
                                   "SECTION3^Impression^L"]  # fmt: skip
    assert {o[11] for o in obx} == {"F"}
    # One repetition per line; the five delimiters escaped, accents as they are (UTF-8).
    escaped = "Densité 5 \\F\\ 10 \\S\\ cm \\T\\ \\R\\ bord \\E\\ net; ñandú"
    assert obx[1][5].split("~") == ["Line one", escaped, "", "Line three"]
    parsed_obx = [s for s in message.children if s.name == "OBX"]
    assert [f.value for f in parsed_obx[1].obx_5] == ["Line one", escaped, "", "Line three"]
    assert obx[0][16] == "RAD42^Grey^Meredith"
    assert "\n" not in queued.payload.rstrip("\r")


@pytest.mark.parametrize("status", list(oru.ResultStatus))
def test_result_status_in_obr_and_every_obx(
    db: Session, exam: RequestedProcedure, status: oru.ResultStatus
) -> None:
    _destination(db, free_port(), "ORU")
    [queued] = oru.enqueue_result(db, _result(exam, status))
    message = _strict(queued.payload)
    assert message.obr.obr_25.value == status.value
    assert {o[11] for o in _segments(queued.payload, "OBX")} == {status.value}


def test_pdf_only_for_destinations_that_ask(db: Session, exam: RequestedProcedure) -> None:
    _destination(db, free_port(), "ORU", name="EMR", pdf=True)
    _destination(db, free_port(), "ORU", name="HIS")
    with_pdf, without = oru.enqueue_result(db, _result(exam, pdf=PDF))
    assert (with_pdf.destination.name, without.destination.name) == ("EMR", "HIS")
    _strict(with_pdf.payload)
    ed = [o for o in _segments(with_pdf.payload, "OBX") if o[2] == "ED"]
    assert len(ed) == 1 and ed[0][3] == "18748-4^Diagnostic imaging study^LN"
    source, kind, subtype, encoding, data = ed[0][5].split("^")
    assert (source, kind, subtype, encoding) == ("", "application", "pdf", "Base64")
    assert base64.b64decode(data) == PDF
    assert ed[0][1] == "4" and ed[0][11] == "F"
    assert not [o for o in _segments(without.payload, "OBX") if o[2] == "ED"]
    # No PDF given: a destination that asks gets the text only.
    [text_only, _] = oru.enqueue_result(db, _result(exam))
    assert not [o for o in _segments(text_only.payload, "OBX") if o[2] == "ED"]


def test_a_result_without_text_or_signer_is_refused(db: Session, exam: RequestedProcedure) -> None:
    _destination(db, free_port(), "ORU")
    empty = oru.ReportResult(
        exam=exam, status=oru.ResultStatus.FINAL, sections=oru.sections_of([("Findings", " ")]),
        signer="Grey^Meredith", observed_at=exam.steps[0].start_at,
        reported_at=exam.steps[0].start_at,
    )  # fmt: skip
    with pytest.raises(Invalid):
        oru.enqueue_result(db, empty)
    unsigned = oru.ReportResult(
        exam=exam, status=oru.ResultStatus.FINAL, sections=oru.sections_of([("F", "text")]),
        signer=" ", observed_at=exam.steps[0].start_at, reported_at=exam.steps[0].start_at,
    )  # fmt: skip
    with pytest.raises(Invalid):
        oru.enqueue_result(db, unsigned)
    assert db.scalars(select(OutboundMessage).where(
        OutboundMessage.message_type == "ORU^R01")).first() is None  # fmt: skip


def test_a_rolled_back_result_leaves_no_message(app: Flask, db: Session,
                                                exam: RequestedProcedure) -> None:  # fmt: skip
    _destination(db, free_port(), "ORU")
    before = len(_queued(app))
    oru.enqueue_result(db, _result(exam))
    db.rollback()
    assert len(_queued(app)) == before


# DFT^P03 ---------------------------------------------------------------------------------


def test_charges_fields(db: Session, exam: RequestedProcedure) -> None:
    _destination(db, free_port(), "DFT")
    _destination(db, free_port(), "ORU", name="EMR")  # takes no charges
    posted = exam.steps[0].start_at + timedelta(days=1)
    lines = [
        _charge(exam, posted_at=posted, batch_id="B7"),
        _charge(exam, "CH0002", modifiers=("26",), unit_amount=Decimal("80"), quantity=2,
                performed_by="Grey^Meredith", performed_by_id="RAD42",
                diagnosis_codes=("K35.80",), description="CT abd/pelv 26 | prof"),
        _charge(exam, "CH0003", transaction_type=dft.TransactionType.CREDIT, currency=""),
    ]  # fmt: skip
    [queued] = dft.enqueue_charges(db, lines)
    assert (queued.message_type, queued.destination.name) == ("DFT^P03", "HIS")
    message = _strict(queued.payload)
    assert message.msh.msh_9.value == "DFT^P03^DFT_P03"
    assert message.evn.evn_2.value == queued.payload.split("|")[6]  # MSH-7
    assert message.pid.pid_3.value.startswith(exam.order.patient.mrn)
    ft1 = _segments(queued.payload, "FT1")
    assert [f[1] for f in ft1] == ["1", "2", "3"]
    first, second, credit = ft1
    assert (first[2], first[3], first[4]) == ("CH0001", "B7", "20261124")
    assert first[5] == outbound.hl7_time(posted, outbound.identity_of(db).zone)
    assert (first[6], credit[6], second[6]) == ("CG", "CD", "CG")
    assert first[7] == "74177^CT exam 74177^CPT" == first[25]
    assert (first[10], first[11], first[12]) == ("1", "120.50&EUR", "120.50&EUR")
    assert (second[10], second[11], second[12]) == ("2", "160.00&EUR", "80.00&EUR")
    assert credit[11] == "120.50"
    assert first[18] == "O"
    assert first[19] == "R10.9^^I10~K35.80^^I10"  # the order's diagnoses by default
    assert second[19] == "K35.80^^I10"
    assert second[7] == "74177^CT abd/pelv 26 \\F\\ prof^CPT"
    assert second[20] == "RAD42^Grey^Meredith" and first[20] == ""
    assert first[21] == "^House^Gregory"
    assert first[23] == f"{exam.accession_number}^PLACA"
    assert (first[26], second[26]) == ("TC", "26")


def test_one_message_per_order(db: Session, desk: FrontDesk, exam: RequestedProcedure) -> None:
    _destination(db, free_port(), "DFT")
    other = desk.exam(db, desk.patient(db, "Martin", "Léa"), exam.procedure_code)
    queued = dft.enqueue_charges(db, [_charge(exam), _charge(other, "CH0002"),
                                      _charge(exam, "CH0003")])  # fmt: skip
    assert [m.patient_id for m in queued] == [exam.order.patient_id, other.order.patient_id]
    assert [len(_segments(m.payload, "FT1")) for m in queued] == [2, 1]


def test_bad_charge_lines_are_refused(db: Session, exam: RequestedProcedure) -> None:
    _destination(db, free_port(), "DFT")
    for bad in (_charge(exam, "X" * 13), _charge(exam, " "), _charge(exam, quantity=0),
                _charge(exam, unit_amount=Decimal("-1")), _charge(exam, code="")):  # fmt: skip
        with pytest.raises(Invalid):
            dft.enqueue_charges(db, [bad])
    with pytest.raises(Invalid, match="same transaction ID"):
        dft.enqueue_charges(db, [_charge(exam), _charge(exam)])
    assert dft.enqueue_charges(db, []) == []


# Delivery ---------------------------------------------------------------------------------


def test_result_and_charges_reach_the_peer_through_the_sender_job(
    app: Flask, db: Session, exam: RequestedProcedure, peer: HL7Peer
) -> None:
    _destination(db, peer.port, "ORU,DFT", pdf=True)
    [result] = oru.enqueue_result(db, _result(exam, oru.ResultStatus.PRELIMINARY, pdf=BIG_PDF))
    [amended] = oru.enqueue_result(db, _result(exam, oru.ResultStatus.CORRECTED))
    [charges] = dft.enqueue_charges(db, [_charge(exam), _charge(exam, "CH0002")])
    db.commit()
    [job] = [job for job_id, job, _trigger in JOBS if job_id == "hl7-send"]
    run_job(app, "hl7-send", job)
    assert peer.control_ids == [result.control_id, amended.control_id, charges.control_id]
    assert [m.state for m in _queued(app)] == ["acknowledged"] * 3
    received_result, received_amended, received_charges = peer.messages
    assert received_result == result.payload  # byte for byte, UTF-8 accents included
    parsed = parse_message(received_result, find_groups=True)  # tolerant: see BIG_PDF
    assert parsed.validate()
    observations = parsed.oru_r01_patient_result.oru_r01_order_observation
    assert observations.obr.obr_25.value == "P"
    assert "Gaëlle" in parsed.oru_r01_patient_result.oru_r01_patient.pid.pid_5.value
    ed = observations.oru_r01_observation[3].obx
    assert (ed.obx_2.value, ed.obx_11.value) == ("ED", "P")
    assert base64.b64decode(ed.obx_5.value.split("^")[4]) == BIG_PDF
    assert _strict(received_amended).obr.obr_25.value == "C"
    assert [f[2] for f in _segments(received_charges, "FT1")] == ["CH0001", "CH0002"]
    _strict(received_charges)
