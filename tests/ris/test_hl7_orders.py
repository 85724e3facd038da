"""ORM^O01 (2.3.1) and OMI^O23 (2.5.1) through the real HL7 door, with a real MLLP client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

import hl7
import pytest
from flask import Flask
from hl7.client import MLLPClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import scheduling, status
from ris.db import read_only
from ris.hl7_door import HL7Door
from ris.models import (
    ExamStatus,
    InboundMessage,
    Order,
    Patient,
    PatientClass,
    Priority,
    ProcedureCode,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
    StatusChange,
)
from tests.factories import ACTOR, SITE, FrontDesk, at, next_weekday

SENDER = "HIS^HOSP"


@pytest.fixture
def door(app: Flask) -> Iterator[HL7Door]:
    app.config.update(HL7_HOST="127.0.0.1", HL7_PORT=0, TIMEZONE="Europe/Madrid")
    door = HL7Door(app)
    yield door
    door.stop()


@pytest.fixture
def desk(app: Flask, db: Session) -> FrontDesk:
    """A CT room that is the default for CT, a second CT room and a catalog CT code."""
    front = FrontDesk(app)
    front.room(db, "CT1", "CT").default_for_modality = True
    front.room(db, "CT2", "CT")
    front.code(db, "74177", "CT", minutes=20)
    db.commit()
    return front


def send(door: HL7Door, db: Session, message: str) -> hl7.Message:
    db.commit()  # the test's session must not hold SQLite's write lock while the door writes
    with MLLPClient(*door.address) as client:
        reply = client.send_message(message)
    assert reply.startswith(b"\x0b") and reply.endswith(b"\x1c\r"), reply
    return hl7.parse(reply[1:-2].decode())


def ack_field(ack: hl7.Message, segment: str, number: int) -> str:
    fields = ack.segment(segment)
    return str(fields[number]) if number < len(fields) else ""


def ts(day: date, hour: int, minute: int = 0) -> str:
    return f"{day:%Y%m%d}{hour:02d}{minute:02d}"


def seg(name: str, **fields: str) -> str:
    """A segment from its fields by number: ``seg("OBR", f4="74177^CT^CPT", f18="ACC1")``."""
    numbered = {int(key[1:]): text for key, text in fields.items()}
    return "|".join([name, *(numbered.get(n, "") for n in range(1, max(numbered) + 1))])


def obr(placer: str = "PO1", code: str = "74177^CT abdomen^CPT", n: int = 1,
        **fields: str) -> str:  # fmt: skip
    """An OBR; the ordering provider (OBR-16) is House unless ``f16`` says otherwise."""
    return seg("OBR", f1=str(n), f2=placer, f4=code, **{"f16": "H1^HOUSE^GREGORY", **fields})


def orm(control: str = "NW", *segments: str, placer: str = "PO1", control_id: str = "M1",
        version: str = "2.3.1", pv1: str = "I", **orc: str) -> str:  # fmt: skip
    """An IHE ORM^O01 (v2.3.1 unless told): PID, PV1, ORC, then ``segments`` (an OBR if none)."""
    return "\r".join([
        f"MSH|^~\\&|HIS|HOSP|PLACA|RAD|20261120090000||ORM^O01|{control_id}|P|{version}",
        "PID|1||MRN77^^^HOSP^MR||ROE^JANE^Ann||19800202|F",
        seg("PV1", f1="1", f2=pv1, f8="D42^WILSON^JAMES"),
        seg("ORC", f1=control, f2=f"{placer}^HIS", **orc),
        *(segments or [obr(placer)]),
    ]) + "\r"  # fmt: skip


def omi(*, control_id: str = "O1", placer: str = "PO9", tq1: dict[str, str] | None = None,
        **ipc: str) -> str:  # fmt: skip
    """An IHE OMI^O23 v2.5.1: PID, PV1, ORC, TQ1, OBR, IPC."""
    return "\r".join([
        f"MSH|^~\\&|HIS|HOSP|PLACA|RAD|20261120090000||OMI^O23^OMI_O23|{control_id}|P|2.5.1",
        "PID|1||MRN88^^^HOSP^MR||DOE^JOHN||19700101|M",
        "PV1|1|E",
        seg("ORC", f1="NW", f2=f"{placer}^HIS"),
        seg("TQ1", f1="1", **(tq1 or {})),
        obr(placer),
        seg("IPC", **ipc),
    ]) + "\r"  # fmt: skip


def exams(app: Flask) -> list[RequestedProcedure]:
    with read_only(app) as db:
        found = list(db.scalars(select(RequestedProcedure).order_by(RequestedProcedure.id)))
        for exam in found:  # load what the assertions read, then leave the session
            _ = (exam.order.patient, exam.steps, exam.procedure_code)
        db.expunge_all()
        return found


def last_change(app: Flask) -> StatusChange:
    with read_only(app) as db:
        change = db.scalars(select(StatusChange).order_by(StatusChange.id.desc())).first()
        db.expunge_all()
        return change


def accepted(ack: hl7.Message) -> None:
    assert ack_field(ack, "MSA", 1) == "AA", str(ack)


def room(db: Session, code: str) -> Room:
    return db.scalar(select(Room).where(Room.code == code))


# --- NW: new orders -------------------------------------------------------------------


def test_orm_nw_keeps_the_identifiers_sent_and_registers_the_patient(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    message = orm(
        "NW",
        obr(f5="R", f13="cough", f18="ACC123", f19="RP123", f24="CT", f27="^^^^^S",
            f31="^Suspected pneumonia"),
        "ZDS|1.2.826.0.1.99.7^HIS^Application^DICOM",
        "DG1|1|I10|J18.9^Pneumonia^I10",
        "DG1|2||R05^Cough^I10",
    )  # fmt: skip
    ack = send(door, db, message)
    accepted(ack)
    assert ack_field(ack, "MSA", 2) == "M1"
    (exam,) = exams(app)
    assert (exam.accession_number, exam.requested_procedure_id, exam.study_instance_uid) == (
        "ACC123", "RP123", "1.2.826.0.1.99.7")  # fmt: skip
    assert exam.status is ExamStatus.ORDERED and exam.steps == []
    order, patient = exam.order, exam.order.patient
    assert (patient.mrn, patient.family_name, patient.given_name) == ("MRN77", "ROE", "JANE")
    assert patient.birth_date == date(1980, 2, 2)
    assert (order.placer_order_number, order.placer_issuer) == ("PO1", "HIS")
    assert order.ordering_physician == "HOUSE^GREGORY"
    assert order.referring_physician == "WILSON^JAMES"
    assert order.reason == "Suspected pneumonia; cough"
    assert order.icd10_codes == "J18.9,R05"
    assert order.priority is Priority.STAT  # OBR-27.6 wins over OBR-5
    assert order.patient_class is PatientClass.INPATIENT
    assert order.created_by == SENDER


def test_orm_nw_issues_what_is_not_sent_and_defaults(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    accepted(send(door, db, orm(pv1="")))
    (exam,) = exams(app)
    assert exam.accession_number and exam.requested_procedure_id.startswith("RP")
    assert exam.study_instance_uid
    assert exam.order.priority is Priority.ROUTINE
    assert exam.order.patient_class is PatientClass.OUTPATIENT


def test_orm_nw_with_a_start_time_is_booked_in_the_default_room(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = next_weekday()
    message = orm("NW", obr(f18="ACC5", f19="RP5", f20="SPS5", f24="CT"), f7=f"^^^{ts(day, 10)}")
    accepted(send(door, db, message))
    (exam,) = exams(app)
    assert exam.status is ExamStatus.SCHEDULED
    (step,) = exam.steps
    assert step.station_ae_title == "CT1_AE"  # what the worklist serves to CT1
    assert (step.start_at, step.modality) == (at(day, 10), "CT")


def test_obr27_carries_the_start_time_when_orc7_does_not(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = next_weekday()
    accepted(send(door, db, orm("NW", obr(f27=f"^^^{ts(day, 8, 30)}^^A"))))
    (exam,) = exams(app)
    assert exam.steps[0].start_at == at(day, 8, 30)
    assert exam.order.priority is Priority.HIGH


def test_omi_o23_is_booked_in_the_station_ipc9_names(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = next_weekday()
    message = omi(tq1={"f7": ts(day, 11, 30), "f9": "A^ASAP^HL70485"}, f1="ACC9^HIS", f2="RP9",
                  f3="1.2.826.0.1.99.9", f4="SPS9", f5="CT", f7="CT2", f9="CT2_AE")  # fmt: skip
    accepted(send(door, db, message))
    (exam,) = exams(app)
    assert (exam.accession_number, exam.requested_procedure_id, exam.study_instance_uid) == (
        "ACC9", "RP9", "1.2.826.0.1.99.9")  # fmt: skip
    assert exam.status is ExamStatus.SCHEDULED
    (step,) = exam.steps
    assert (step.room.code, step.station_ae_title, step.step_id) == ("CT2", "CT2_AE", "SPS9")
    assert step.start_at == at(day, 11, 30)
    assert exam.order.priority is Priority.HIGH
    assert exam.order.patient_class is PatientClass.EMERGENCY
    assert exam.order.ordering_physician == "HOUSE^GREGORY"


def test_a_step_id_already_taken_is_replaced_with_a_warning(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = next_weekday()
    accepted(send(door, db, omi(tq1={"f7": ts(day, 9)}, f4="SPS9", control_id="O1")))
    ack = send(door, db, omi(tq1={"f7": ts(day, 10)}, f4="SPS9", control_id="O2", placer="PO8"))
    accepted(ack)
    first, second = exams(app)
    assert first.steps[0].step_id == "SPS9"
    assert second.status is ExamStatus.SCHEDULED
    assert second.steps[0].step_id not in ("SPS9", "") and second.steps[0].step_id
    with read_only(app) as db2:
        row = db2.scalar(select(InboundMessage).where(InboundMessage.control_id == "O2"))
        assert row is not None and "IPC-4" in (row.error or "")


def test_an_order_starting_in_the_past_is_still_booked(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = date.today() - timedelta(days=1)
    while day.isoweekday() > 5:
        day -= timedelta(days=1)
    accepted(send(door, db, omi(tq1={"f7": ts(day, 9)}, f1="ACC1")))
    (exam,) = exams(app)
    assert exam.status is ExamStatus.SCHEDULED
    assert exam.steps[0].start_at == at(day, 9)


def test_a_start_time_with_an_offset_is_read_as_such(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = next_weekday()
    accepted(send(door, db, omi(tq1={"f7": f"{ts(day, 12)}+0200"}, f1="ACC1")))
    (exam,) = exams(app)
    assert exam.steps[0].start_at == datetime.combine(day, time(10), UTC)


def test_a_booking_that_fails_keeps_the_order_with_a_warning(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk, caplog: pytest.LogCaptureFixture
) -> None:
    day = next_weekday()
    code = db.scalar(select(ProcedureCode).where(ProcedureCode.code == "74177"))
    desk.booked(db, room(db, "CT1"), code, at(day, 10))  # CT1 is taken at 10:00
    caplog.set_level(logging.WARNING, logger="ris.hl7.orders")
    accepted(send(door, db, omi(tq1={"f7": ts(day, 10)}, f1="ACC7")))
    exam = next(e for e in exams(app) if e.accession_number == "ACC7")
    assert exam.status is ExamStatus.ORDERED and exam.steps == []
    assert any("ACC7 not booked in CT1" in r.getMessage() for r in caplog.records)
    with read_only(app) as check:  # the message log shows why
        logged = check.scalar(select(InboundMessage).where(InboundMessage.control_id == "O1"))
        assert logged.status == "applied" and "ACC7 not booked in CT1" in logged.error


def test_a_start_time_without_a_default_room_keeps_the_order(
    app: Flask, db: Session, door: HL7Door, caplog: pytest.LogCaptureFixture
) -> None:
    FrontDesk(app).code(db, "76700", "US")
    caplog.set_level(logging.WARNING, logger="ris.hl7.orders")
    message = orm("NW", obr(code="76700^US abdomen^CPT"), f7=f"^^^{ts(next_weekday(), 10)}")
    accepted(send(door, db, message))
    (exam,) = exams(app)
    assert exam.status is ExamStatus.ORDERED
    assert any("no default room for US" in r.getMessage() for r in caplog.records)


def test_an_unknown_procedure_code_is_accepted_and_flagged(
    app: Flask, db: Session, door: HL7Door
) -> None:
    unknown = obr(code="XR77^Hand two views^HOSPLOC", f24="CR")
    accepted(send(door, db, orm("NW", unknown)))
    (exam,) = exams(app)
    code = exam.procedure_code
    assert (code.code_system, code.code, code.description) == ("HOSPLOC", "XR77", "Hand two views")
    assert code.needs_mapping and code.active and code.modality == "CR"
    assert exam.description == "Hand two views"
    # A second order for the same code uses the entry the first one created.
    accepted(send(door, db, orm("NW", obr("PO2", code="XR77^^HOSPLOC"), placer="PO2",
                                control_id="M2")))  # fmt: skip
    with read_only(app) as check:
        assert len(list(check.scalars(select(ProcedureCode)))) == 1


def test_several_obr_are_several_exams_of_one_order(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    message = orm(
        "NW",
        obr(f18="ACC1"), "ZDS|1.2.826.0.1.99.1",
        obr(code="70450^CT head^CPT", n=2, f18="ACC2"), "ZDS|1.2.826.0.1.99.2",
    )  # fmt: skip
    accepted(send(door, db, message))
    first, second = exams(app)
    assert first.order_id == second.order_id
    assert [(e.accession_number, e.study_instance_uid) for e in (first, second)] == [
        ("ACC1", "1.2.826.0.1.99.1"), ("ACC2", "1.2.826.0.1.99.2")]  # fmt: skip
    assert second.procedure_code.needs_mapping  # 70450 is not in this catalog


@pytest.mark.parametrize(
    ("segments", "location"),
    [
        ((obr(f18="ACC1"), "ZDS|not-a-uid"), "ZDS^1^1^102"),
        ((obr(code="^^"),), "OBR^1^4^101"),
        ((obr(f16=""),), "OBR^1^16^101"),
        ((obr(f18="ACC_IS_FAR_TOO_LONG"),), "OBR^1^18^102"),
        ((), "PID^1^^101"),
    ],
)
def test_a_new_order_with_a_bad_field_gets_ae_naming_it(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk, segments: tuple[str, ...],
    location: str,
) -> None:  # fmt: skip
    message = orm("NW", *segments) if segments else orm().replace("PID|", "NTE|")
    ack = send(door, db, message)
    assert ack_field(ack, "MSA", 1) == "AE", str(ack)
    assert ack_field(ack, "ERR", 1).startswith(location)  # 2.3.1: ERR-1 location ^ code
    assert exams(app) == []


def test_a_placer_number_already_used_gets_ae_205(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    accepted(send(door, db, orm()))
    ack = send(door, db, orm(control_id="M2"))
    assert ack_field(ack, "MSA", 1) == "AE"
    assert ack_field(ack, "ERR", 1).startswith("ORC^1^2^205")
    assert len(exams(app)) == 1


def test_an_accession_number_already_used_gets_ae_205(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    accepted(send(door, db, omi(f1="ACC1")))
    ack = send(door, db, omi(control_id="O2", placer="PO10", f1="ACC1"))
    assert ack_field(ack, "MSA", 1) == "AE"
    assert ack_field(ack, "ERR", 2) == "IPC^1^1"
    assert ack_field(ack, "ERR", 3).startswith("205^")


# --- CA, XO, DC, SC: orders that exist ------------------------------------------------


def booked_order(door: HL7Door, db: Session, day: date, hour: int = 10) -> None:
    accepted(send(door, db, orm("NW", obr(f18="ACC1"), f7=f"^^^{ts(day, hour)}^^R")))


def scheduled_accessions(app: Flask) -> list[str]:
    """What the worklist serves: exams still scheduled, with their step."""
    with read_only(app) as check:
        query = (select(RequestedProcedure.accession_number).join(ScheduledProcedureStep)
                 .where(RequestedProcedure.status == ExamStatus.SCHEDULED))  # fmt: skip
        return list(check.scalars(query))


def test_ca_cancels_the_order_and_it_leaves_the_schedule(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    booked_order(door, db, next_weekday())
    assert scheduled_accessions(app) == ["ACC1"]
    accepted(send(door, db, orm("CA", control_id="M2")))
    (exam,) = exams(app)
    assert exam.status is ExamStatus.CANCELLED
    assert scheduled_accessions(app) == []
    change = last_change(app)
    assert (change.to_status, change.reason) == (ExamStatus.CANCELLED, "Cancelled by HIS^HOSP")
    # Cancelled twice: nothing left to do, still AA.
    accepted(send(door, db, orm("CA", control_id="M3")))


def test_ca_takes_the_reason_sent_in_orc16(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    booked_order(door, db, next_weekday())
    accepted(send(door, db, orm("CA", control_id="M2", f16="^Patient declined")))
    assert last_change(app).reason == "Patient declined"


@pytest.mark.parametrize("version", ["2.3.1", "2.5.1"])
def test_ca_for_an_unknown_order_gets_ae_204_naming_orc2(
    app: Flask, db: Session, door: HL7Door, version: str
) -> None:
    ack = send(door, db, orm("CA", placer="NOPE", version=version))
    assert ack_field(ack, "MSA", 1) == "AE"
    if version == "2.3.1":
        assert ack_field(ack, "ERR", 1).startswith("ORC^1^2^204")
    else:
        assert ack_field(ack, "ERR", 2) == "ORC^1^2"
        assert ack_field(ack, "ERR", 3) == "204^Unknown key identifier^HL70357"


def test_ca_of_an_exam_in_progress_gets_ae(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    booked_order(door, db, next_weekday())
    status.change_status(db, ACTOR, db.scalar(select(RequestedProcedure)), ExamStatus.IN_PROGRESS)
    ack = send(door, db, orm("CA", control_id="M2"))
    assert ack_field(ack, "MSA", 1) == "AE"
    assert "In progress" in ack_field(ack, "MSA", 3)
    assert exams(app)[0].status is ExamStatus.IN_PROGRESS


def test_xo_changes_priority_and_physician_and_reschedules(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = next_weekday()
    booked_order(door, db, day)
    change = obr(f16="H2^CUDDY^LISA", f18="ACC1", f31="^New reason")
    accepted(send(door, db, orm("XO", change, control_id="M2", f7=f"^^^{ts(day, 15)}^^S")))
    (exam,) = exams(app)
    assert exam.order.priority is Priority.STAT
    assert exam.order.ordering_physician == "CUDDY^LISA"
    assert exam.order.reason == "New reason"
    assert exam.status is ExamStatus.SCHEDULED
    (step,) = exam.steps  # the same step (the same SPS ID), moved
    assert (step.start_at, step.room.code) == (at(day, 15), "CT1")


def test_xo_books_an_order_that_waited_and_refuses_a_closed_room(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    accepted(send(door, db, orm()))
    day = next_weekday()
    ack = send(door, db, orm("XO", control_id="M2", f7=f"^^^{ts(day, 22)}"))
    assert ack_field(ack, "MSA", 1) == "AE"  # CT1 closes at 20:00
    assert ack_field(ack, "ERR", 1).startswith("ORC^1^7^")
    assert exams(app)[0].status is ExamStatus.ORDERED
    accepted(send(door, db, orm("XO", control_id="M3", f7=f"^^^{ts(day, 9)}")))
    assert exams(app)[0].steps[0].start_at == at(day, 9)


def test_xo_for_an_unknown_order_gets_ae_204(app: Flask, db: Session, door: HL7Door) -> None:
    ack = send(door, db, orm("XO", placer="NOPE"))
    assert ack_field(ack, "ERR", 1).startswith("ORC^1^2^204")


def test_dc_discontinues_what_started_and_cancels_the_rest(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = next_weekday()
    accepted(send(door, db, orm("NW", obr(f18="ACC1"), obr(n=2, f18="ACC2"))))
    first = db.scalar(
        select(RequestedProcedure).where(RequestedProcedure.accession_number == "ACC1")
    )
    scheduling.book(db, ACTOR, SITE, first, room(db, "CT1"), at(day, 10))
    status.change_status(db, ACTOR, first, ExamStatus.IN_PROGRESS)
    accepted(send(door, db, orm("DC", control_id="M2")))
    assert [e.status for e in exams(app)] == [ExamStatus.DISCONTINUED, ExamStatus.CANCELLED]


def test_sc_moves_along_the_ladder_only(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    booked_order(door, db, next_weekday())
    accepted(send(door, db, orm("SC", control_id="M2", f5="IP")))
    assert exams(app)[0].status is ExamStatus.IN_PROGRESS
    ack = send(door, db, orm("SC", control_id="M3", f5="CA"))
    assert ack_field(ack, "MSA", 1) == "AE"
    assert exams(app)[0].status is ExamStatus.IN_PROGRESS
    accepted(send(door, db, orm("SC", control_id="M4", f5="CM")))
    assert exams(app)[0].status is ExamStatus.COMPLETED


def test_an_unsupported_order_control_gets_ae_103(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    ack = send(door, db, orm("HD"))
    assert ack_field(ack, "ERR", 1).startswith("ORC^1^1^103")


def test_a_later_order_updates_the_patient_it_names(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    accepted(send(door, db, orm()))
    later = orm(placer="PO2", control_id="M2").replace("ROE^JANE^Ann", "ROE-SMITH^JANE")
    accepted(send(door, db, later))
    with read_only(app) as check:
        (patient,) = check.scalars(select(Patient))
        assert patient.family_name == "ROE-SMITH"
        assert len(list(check.scalars(select(Order)))) == 2


def test_an_unknown_station_falls_back_to_the_default_room(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ris.hl7.orders")
    day = next_weekday()
    accepted(send(door, db, omi(tq1={"f7": ts(day, 9)}, f1="ACC1", f9="NOSUCH_AE")))
    assert exams(app)[0].steps[0].station_ae_title == "CT1_AE"
    assert any("IPC-9 NOSUCH_AE" in r.getMessage() for r in caplog.records)


def test_a_start_date_without_a_time_waits_for_the_front_desk(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    accepted(send(door, db, omi(tq1={"f7": f"{next_weekday():%Y%m%d}"}, f1="ACC1")))
    assert exams(app)[0].status is ExamStatus.ORDERED


def test_a_malformed_start_time_gets_ae_102_naming_it(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    ack = send(door, db, omi(tq1={"f7": "2026-11-24 10:00"}, f1="ACC1"))
    assert ack_field(ack, "MSA", 1) == "AE"
    assert (ack_field(ack, "ERR", 2), ack_field(ack, "ERR", 3)[:4]) == ("TQ1^1^7^1^1", "102^")
    assert exams(app) == []


def test_diagnoses_that_are_not_icd10_are_left_out(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    message = orm("NW", obr(), "DG1|1||486^Pneumonia^I9", "DG1|2||J18.9^Pneumonia^I10")
    accepted(send(door, db, message))
    assert exams(app)[0].order.icd10_codes == "J18.9"


def test_the_alternate_code_finds_the_catalog_entry(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    message = orm("NW", obr(code="X1^Abdomen CT^HOSPLOC^74177^CT abdomen^CPT"))
    accepted(send(door, db, message))
    code = exams(app)[0].procedure_code
    assert (code.code_system, code.code, code.needs_mapping) == ("CPT", "74177", False)


def test_xo_with_a_station_moves_the_exam_there(
    app: Flask, db: Session, door: HL7Door, desk: FrontDesk
) -> None:
    day = next_weekday()
    accepted(send(door, db, omi(tq1={"f7": ts(day, 9)}, f1="ACC1")))
    change = omi(control_id="O2", tq1={"f7": ts(day, 9)}, f1="ACC1", f9="CT2_AE")
    accepted(send(door, db, change.replace("ORC|NW|", "ORC|XO|")))
    (step,) = exams(app)[0].steps
    assert (step.room.code, step.start_at) == ("CT2", at(day, 9))
