"""MPPS SCP: a modality (pynetdicom as SCU) reports through the running DICOM door.

Every transition (IN PROGRESS scheduled and unscheduled, updates, COMPLETED, DISCONTINUED)
and every refusal, checked in the database rows and on the front desk's screens, on both
backends; and the technologist's reconciliation of unscheduled steps.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, date

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ris import orders
from ris.audit import Actor
from ris.db import read_only, transaction
from ris.dicom_door import DicomDoor
from ris.errors import Conflict
from ris.models import AuditEvent, ExamStatus, ProcedureCode, RequestedProcedure, Room, StatusChange
from tests.conftest import free_port, sign_in
from tests.factories import FrontDesk, at, next_weekday
from worklist import mpps
from worklist.models import PerformedProcedureStep, PerformedSeries, PerformedStepStatus

MODALITY_AE = "CT1_AE"
TECH = Actor.system("tech-test")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def desk(app: Flask) -> FrontDesk:
    app.config["TIMEZONE"] = "Europe/Madrid"  # the factories' site
    return FrontDesk(app)


@pytest.fixture
def door(app: Flask, desk: FrontDesk) -> Iterator[DicomDoor]:
    app.config.update(DICOM_HOST="127.0.0.1", DICOM_PORT=free_port())
    door = DicomDoor(app)
    yield door
    door.stop()


@pytest.fixture
def modality(door: DicomDoor) -> Iterator[Association]:
    scu = AE(ae_title=MODALITY_AE)
    scu.add_requested_context(MPPS)
    assoc = scu.associate(*door.address, ae_title="PLACA")
    assert assoc.is_established
    yield assoc
    if assoc.is_established:
        assoc.release()


@pytest.fixture
def ct(db: Session, desk: FrontDesk) -> tuple[Room, ProcedureCode]:
    room = desk.room(db, "CT1", "CT")
    code = desk.code(db, "74177", "CT", minutes=20)
    db.commit()
    return room, code


@pytest.fixture
def day() -> date:
    return next_weekday()


@pytest.fixture
def exam(db: Session, desk: FrontDesk, ct, day: date) -> RequestedProcedure:
    room, code = ct
    patient = desk.patient(db, "Peña", "José")
    booked = desk.booked(db, room, code, at(day, 9), patient=patient)
    # Loaded now: a lazy load later would open a transaction that holds SQLite's write lock.
    assert booked.steps[0].step_id and booked.order.patient.mrn
    db.commit()
    return booked


@pytest.fixture
def clerk(app: Flask, make_user) -> FlaskClient:
    client = app.test_client()
    sign_in(client, make_user("front_desk"))
    return client


# ---------------------------------------------------------------------------- helpers


def create_attributes(
    exam: RequestedProcedure | None, day: date, *, status: str = "IN PROGRESS",
    start_time: str = "093000",
) -> Dataset:  # fmt: skip
    """An N-CREATE attribute list as a CT sends it (PS3.4 Table F.7.2-1)."""
    item = Dataset()
    item.StudyInstanceUID = exam.study_instance_uid if exam else generate_uid()
    item.ReferencedStudySequence = []
    item.AccessionNumber = exam.accession_number if exam else ""
    item.RequestedProcedureID = exam.requested_procedure_id if exam else ""
    item.RequestedProcedureDescription = exam.description if exam else ""
    item.ScheduledProcedureStepID = exam.steps[0].step_id if exam else ""
    item.ScheduledProcedureStepDescription = exam.description if exam else ""
    item.ScheduledProtocolCodeSequence = []
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = "Peña^José"
    ds.PatientID = exam.order.patient.mrn if exam else "WALKIN1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = "PPS0001"
    ds.PerformedStationAETitle = MODALITY_AE
    ds.PerformedStationName = "CT1"
    ds.PerformedLocation = "CT1"
    ds.PerformedProcedureStepStartDate = day.strftime("%Y%m%d")
    ds.PerformedProcedureStepStartTime = start_time
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepDescription = "CT abdomen y pelvis"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


def series_item(images: int, description: str = "Abdomen 5mm") -> Dataset:
    item = Dataset()
    item.PerformingPhysicianName = "Ruiz^Ana"
    item.ProtocolName = "ABD_PELVIS"
    item.OperatorsName = "Técnico^Luis"
    item.SeriesInstanceUID = generate_uid()
    item.SeriesDescription = description
    item.RetrieveAETitle = "PLACA"
    references = []
    for _ in range(images):
        image = Dataset()
        image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        image.ReferencedSOPInstanceUID = generate_uid()
        references.append(image)
    item.ReferencedImageSequence = references
    item.ReferencedNonImageCompositeSOPInstanceSequence = []
    return item


def final_attributes(status: str, day: date, series: list[Dataset]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = day.strftime("%Y%m%d")
    ds.PerformedProcedureStepEndTime = "094500"
    ds.PerformedSeriesSequence = series
    return ds


def invalid(ds: Dataset, keyword: str, value: str) -> None:
    """Set a value pydicom would refuse to write, as a faulty modality sends it."""
    if keyword in ds:
        delattr(ds, keyword)
    with config.disable_value_validation():
        setattr(ds, keyword, value)


def create(assoc: Association, ds: Dataset, uid: str | None = None) -> tuple[int, str]:
    uid = uid or generate_uid()
    status, _ = assoc.send_n_create(ds, MPPS, uid)
    return status.Status, uid


def n_set(assoc: Association, ds: Dataset, uid: str) -> Dataset:
    status, _ = assoc.send_n_set(ds, MPPS, uid)
    return status


def step_row(app: Flask, uid: str) -> PerformedProcedureStep | None:
    with read_only(app) as db:
        row = db.scalar(
            select(PerformedProcedureStep).where(PerformedProcedureStep.sop_instance_uid == uid)
        )
        if row is not None:
            db.expunge(row)  # keep its loaded values past the session's rollback
        return row


def exam_status(app: Flask, exam: RequestedProcedure) -> ExamStatus:
    with read_only(app) as db:
        return db.get_one(RequestedProcedure, exam.id).status


def count(app: Flask, model: type) -> int:
    with read_only(app) as db:
        return db.scalar(select(func.count()).select_from(model)) or 0


def exam_page_status(clerk: FlaskClient, exam: RequestedProcedure) -> str:
    """The status the front desk sees on the exam page's title."""
    html = clerk.get(f"/exams/{exam.id}").get_data(as_text=True)
    match = re.search(r'<h1>.*?<span class="status status-([a-z_]+)">', html, re.S)
    assert match, html[:500]
    return match.group(1)


def board_status(clerk: FlaskClient, exam: RequestedProcedure, day: date) -> str:
    """The status on the exam's line of the day board."""
    html = clerk.get(f"/board?date={day.isoformat()}").get_data(as_text=True)
    for row in re.findall(r"<tr data-href.*?</tr>", html, re.S):
        if exam.accession_number in row:
            return re.search(r'class="status status-([a-z_]+)"', row).group(1)
    raise AssertionError(f"{exam.accession_number} is not on the board")


# ---------------------------------------------------------------------------- transitions


def test_scheduled_exam_starts_updates_and_completes(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date, clerk: FlaskClient
) -> None:
    code, uid = create(modality, create_attributes(exam, day))
    assert code == 0x0000
    row = step_row(app, uid)
    assert row.status is PerformedStepStatus.IN_PROGRESS
    assert row.procedure_id == exam.id and row.scheduled_step_id == exam.steps[0].id
    assert (row.patient_name, row.patient_id_sent) == ("Peña^José", exam.order.patient.mrn)
    assert (row.accession_number_sent, row.study_instance_uid) == (
        exam.accession_number, exam.study_instance_uid)  # fmt: skip
    assert (row.modality, row.station_ae_title, row.station_name) == ("CT", "CT1_AE", "CT1")
    assert row.calling_ae == MODALITY_AE and row.description == "CT abdomen y pelvis"
    # 09:30 in Madrid in winter is 08:30 UTC; in summer 07:30.
    assert row.started_at == at(day, 9, 30).astimezone(UTC)
    assert exam_status(app, exam) is ExamStatus.IN_PROGRESS
    assert exam_page_status(clerk, exam) == "in_progress"
    assert board_status(clerk, exam, day) == "in_progress"

    update = Dataset()
    update.PerformedSeriesSequence = [series_item(2, "Topogram")]
    update.PerformedProcedureStepDescription = "CT abdomen"
    assert n_set(modality, update, uid).Status == 0x0000
    row = step_row(app, uid)
    assert row.status is PerformedStepStatus.IN_PROGRESS and row.description == "CT abdomen"
    assert [(s.description, s.number_of_images) for s in row.series] == [("Topogram", 2)]
    assert exam_status(app, exam) is ExamStatus.IN_PROGRESS

    first, second = series_item(2, "Topogram"), series_item(120)
    done = final_attributes("COMPLETED", day, [first, second])
    done.TotalTimeOfFluoroscopy = 0
    done.EntranceDoseInmGy = "12.5"
    done.CTDIvol = 8.25
    done.CommentsOnRadiationDose = "DLP 410 mGy·cm"
    assert n_set(modality, done, uid).Status == 0x0000
    row = step_row(app, uid)
    assert row.status is PerformedStepStatus.COMPLETED
    assert row.ended_at == at(day, 9, 45).astimezone(UTC)
    assert row.number_of_images == 122
    assert [(s.series_instance_uid, s.description, s.modality, s.number_of_images,
             s.retrieve_ae_title, s.operator_name) for s in row.series] == [
        (first.SeriesInstanceUID, "Topogram", "CT", 2, "PLACA", "Técnico^Luis"),
        (second.SeriesInstanceUID, "Abdomen 5mm", "CT", 120, "PLACA", "Técnico^Luis"),
    ]  # fmt: skip
    assert row.dose == {"TotalTimeOfFluoroscopy": 0, "EntranceDoseInmGy": 12.5,
                        "CTDIvol": 8.25, "CommentsOnRadiationDose": "DLP 410 mGy·cm"}  # fmt: skip
    assert count(app, PerformedSeries) == 2  # the N-SET's sequence replaced the first one
    assert exam_status(app, exam) is ExamStatus.COMPLETED
    assert exam_page_status(clerk, exam) == "completed"
    assert board_status(clerk, exam, day) == "completed"
    with read_only(app) as db:
        ladder = db.execute(
            select(StatusChange.to_status, StatusChange.actor)
            .where(StatusChange.procedure_id == exam.id).order_by(StatusChange.id)
        ).all()  # fmt: skip
        actions = db.scalars(select(AuditEvent.action).where(AuditEvent.object_type == "mpps"))
        assert sorted(actions) == ["mpps.completed", "mpps.in_progress", "mpps.update"]
    assert ladder[-2:] == [(ExamStatus.IN_PROGRESS, MODALITY_AE),
                           (ExamStatus.COMPLETED, MODALITY_AE)]  # fmt: skip


def test_discontinued_step_records_the_reason_and_returns_the_exam_to_the_desk(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date, clerk: FlaskClient
) -> None:
    _, uid = create(modality, create_attributes(exam, day))
    stop = final_attributes("DISCONTINUED", day, [])
    reason = Dataset()
    reason.CodeValue, reason.CodingSchemeDesignator = "110526", "DCM"
    reason.CodeMeaning = "Resource failure"
    stop.PerformedProcedureStepDiscontinuationReasonCodeSequence = [reason]
    assert n_set(modality, stop, uid).Status == 0x0000
    row = step_row(app, uid)
    assert row.status is PerformedStepStatus.DISCONTINUED
    assert row.discontinuation_reason == "Resource failure (DCM 110526)"
    assert row.ended_at == at(day, 9, 45).astimezone(UTC)
    assert exam_status(app, exam) is ExamStatus.DISCONTINUED
    assert exam_page_status(clerk, exam) == "discontinued"
    assert board_status(clerk, exam, day) == "discontinued"
    with read_only(app) as db:
        last = db.scalars(select(StatusChange).where(StatusChange.procedure_id == exam.id)
                          .order_by(StatusChange.id.desc())).first()  # fmt: skip
        assert last.reason == "Resource failure (DCM 110526)"


def test_unscheduled_step_waits_for_reconciliation(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date, clerk: FlaskClient
) -> None:
    code, uid = create(modality, create_attributes(None, day))
    assert code == 0x0000
    row = step_row(app, uid)
    assert row.procedure_id is None and row.status is PerformedStepStatus.IN_PROGRESS
    assert row.patient_id_sent == "WALKIN1" and row.accession_number_sent == ""
    assert exam_status(app, exam) is ExamStatus.SCHEDULED  # nothing guessed
    with read_only(app) as db:
        assert [s.sop_instance_uid for s in mpps.unscheduled_steps(db)] == [uid]

    with transaction(app) as db:
        pps = mpps.find_performed_step(db, uid)
        mpps.reconcile_performed_step(db, TECH, pps, orders.get_exam(db, exam.id))
    row = step_row(app, uid)
    assert row.procedure_id == exam.id and row.reconciled_by == "tech-test"
    assert row.scheduled_step_id == exam.steps[0].id
    assert exam_status(app, exam) is ExamStatus.IN_PROGRESS
    assert exam_page_status(clerk, exam) == "in_progress"
    with read_only(app) as db:
        assert mpps.unscheduled_steps(db) == []
        audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "mpps.reconcile")).one()
        assert audit.patient_id == exam.order.patient_id and audit.actor == "tech-test"

    # Linked now: the modality's COMPLETED reaches the exam.
    assert n_set(modality, final_attributes("COMPLETED", day, [series_item(3)]), uid).Status == 0
    assert exam_status(app, exam) is ExamStatus.COMPLETED
    assert board_status(clerk, exam, day) == "completed"


def test_reconciling_a_completed_step_completes_the_exam(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date
) -> None:
    _, uid = create(modality, create_attributes(None, day))
    n_set(modality, final_attributes("COMPLETED", day, [series_item(1)]), uid)
    assert exam_status(app, exam) is ExamStatus.SCHEDULED
    with transaction(app) as db:
        mpps.reconcile_performed_step(db, TECH, mpps.find_performed_step(db, uid),
                                      orders.get_exam(db, exam.id))  # fmt: skip
    assert exam_status(app, exam) is ExamStatus.COMPLETED
    with transaction(app) as db, pytest.raises(Conflict):  # already linked
        mpps.reconcile_performed_step(db, TECH, mpps.find_performed_step(db, uid),
                                      orders.get_exam(db, exam.id))  # fmt: skip


def test_reconciling_with_a_cancelled_exam_is_refused(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date, db: Session
) -> None:
    from ris import scheduling

    scheduling.cancel(db, TECH, orders.get_exam(db, exam.id), "patient declined")
    db.commit()
    _, uid = create(modality, create_attributes(None, day))
    with pytest.raises(Conflict, match="book it again"), transaction(app) as session:
        mpps.reconcile_performed_step(session, TECH, mpps.find_performed_step(session, uid),
                                      orders.get_exam(session, exam.id))  # fmt: skip
    assert step_row(app, uid).procedure_id is None


def test_identifiers_naming_different_exams_are_not_guessed(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date, db: Session,
    desk: FrontDesk, ct,
) -> None:  # fmt: skip
    room, code = ct
    other = desk.booked(db, room, code, at(day, 11))
    db.commit()
    attributes = create_attributes(exam, day)
    attributes.ScheduledStepAttributesSequence[0].AccessionNumber = other.accession_number
    code_, uid = create(modality, attributes)
    assert code_ == 0x0000 and step_row(app, uid).procedure_id is None
    assert exam_status(app, exam) is exam_status(app, other) is ExamStatus.SCHEDULED


def test_an_exam_with_two_steps_completes_when_the_last_one_does(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date
) -> None:
    _, first = create(modality, create_attributes(exam, day))
    _, second = create(modality, create_attributes(exam, day, start_time="093500"))
    n_set(modality, final_attributes("COMPLETED", day, [series_item(1)]), first)
    assert exam_status(app, exam) is ExamStatus.IN_PROGRESS  # the second is still running
    n_set(modality, final_attributes("COMPLETED", day, [series_item(1)]), second)
    assert exam_status(app, exam) is ExamStatus.COMPLETED


def test_the_scp_names_a_step_the_modality_did_not(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date
) -> None:
    status, attributes = modality.send_n_create(create_attributes(exam, day), MPPS, None)
    assert status.Status == 0x0000
    with read_only(app) as db:
        row = db.scalars(select(PerformedProcedureStep)).one()
        assert UID(row.sop_instance_uid).is_valid and row.procedure_id == exam.id


# ---------------------------------------------------------------------------- refusals


def test_n_set_after_completed_or_discontinued_is_refused(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date
) -> None:
    _, done = create(modality, create_attributes(exam, day))
    n_set(modality, final_attributes("COMPLETED", day, [series_item(1)]), done)
    late = Dataset()
    late.PerformedProcedureStepDescription = "changed afterwards"
    status = n_set(modality, late, done)
    assert status.Status == 0x0110 and "COMPLETED" in status.ErrorComment
    assert step_row(app, done).description == "CT abdomen y pelvis"

    _, stopped = create(modality, create_attributes(None, day))
    n_set(modality, final_attributes("DISCONTINUED", day, []), stopped)
    again = final_attributes("COMPLETED", day, [series_item(1)])
    assert n_set(modality, again, stopped).Status == 0x0110
    assert step_row(app, stopped).status is PerformedStepStatus.DISCONTINUED
    assert exam_status(app, exam) is ExamStatus.COMPLETED


def test_duplicate_n_create_is_refused(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date
) -> None:
    _, uid = create(modality, create_attributes(exam, day))
    assert create(modality, create_attributes(exam, day, start_time="100000"), uid)[0] == 0x0111
    assert count(app, PerformedProcedureStep) == 1
    assert step_row(app, uid).started_at == at(day, 9, 30).astimezone(UTC)


def test_n_set_of_an_unknown_step_is_refused(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date
) -> None:
    status = n_set(modality, final_attributes("COMPLETED", day, [series_item(1)]), generate_uid())
    assert status.Status == 0x0112
    assert count(app, PerformedProcedureStep) == 0


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("PerformedProcedureStepStatus", "COMPLETED"),  # a new step must be IN PROGRESS
        ("PerformedProcedureStepStatus", "FINISHED"),
        ("PerformedProcedureStepStartDate", "20261341"),
        ("PerformedProcedureStepStartTime", "2560"),
        ("PatientBirthDate", "1970-01-01"),
    ],
)
def test_n_create_with_an_invalid_value_is_refused(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date, change: str,
    value: str,
) -> None:  # fmt: skip
    attributes = create_attributes(exam, day)
    invalid(attributes, change, value)
    code, _ = create(modality, attributes)
    assert code == 0x0106
    assert count(app, PerformedProcedureStep) == 0
    assert exam_status(app, exam) is ExamStatus.SCHEDULED


@pytest.mark.parametrize(
    "missing",
    ["PerformedProcedureStepStartDate", "ScheduledStepAttributesSequence",
     "PerformedProcedureStepStatus", "Modality"],
)  # fmt: skip
def test_n_create_without_a_required_attribute_is_refused(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date, missing: str
) -> None:
    attributes = create_attributes(exam, day)
    delattr(attributes, missing)
    code, _ = create(modality, attributes)
    assert code == 0x0120
    assert count(app, PerformedProcedureStep) == 0
    assert exam_status(app, exam) is ExamStatus.SCHEDULED


def test_n_create_with_an_empty_required_value_is_refused(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date
) -> None:
    attributes = create_attributes(exam, day)
    attributes.PerformedProcedureStepStartTime = ""
    assert create(modality, attributes)[0] == 0x0121
    assert count(app, PerformedProcedureStep) == 0


def test_refused_n_set_changes_nothing(
    app: Flask, modality: Association, exam: RequestedProcedure, day: date, clerk: FlaskClient
) -> None:
    _, uid = create(modality, create_attributes(exam, day))
    unknown = Dataset()
    unknown.PerformedProcedureStepStatus = "FINISHED"
    unknown.PerformedProcedureStepDescription = "should not stay"
    assert n_set(modality, unknown, uid).Status == 0x0106
    bad_end = final_attributes("COMPLETED", day, [series_item(4)])
    invalid(bad_end, "PerformedProcedureStepEndTime", "99")
    assert n_set(modality, bad_end, uid).Status == 0x0106
    # COMPLETED without its performed series: refused as a whole, description included.
    no_series = final_attributes("COMPLETED", day, [])
    no_series.PerformedProcedureStepDescription = "should not stay"
    assert n_set(modality, no_series, uid).Status == 0x0121
    row = step_row(app, uid)
    assert row.status is PerformedStepStatus.IN_PROGRESS
    assert row.description == "CT abdomen y pelvis" and row.series == [] and row.ended_at is None
    assert exam_status(app, exam) is ExamStatus.IN_PROGRESS
    assert exam_page_status(clerk, exam) == "in_progress"


def test_the_same_n_create_on_two_associations_at_once_creates_one_step(
    app: Flask, door: DicomDoor, exam: RequestedProcedure, day: date
) -> None:
    uid, statuses = generate_uid(), []

    def send() -> None:
        scu = AE(ae_title=MODALITY_AE)
        scu.add_requested_context(MPPS)
        assoc = scu.associate(*door.address, ae_title="PLACA")
        statuses.append(create(assoc, create_attributes(exam, day), uid)[0])
        assoc.release()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [0x0000, 0x0111]
    assert count(app, PerformedProcedureStep) == 1
    assert exam_status(app, exam) is ExamStatus.IN_PROGRESS


def test_two_steps_of_one_exam_completing_at_once_complete_the_exam(
    app: Flask, door: DicomDoor, modality: Association, exam: RequestedProcedure, day: date
) -> None:
    uids = [create(modality, create_attributes(exam, day, start_time=t))[1]
            for t in ("093000", "093500")]  # fmt: skip
    statuses: list[int] = []

    def complete(uid: str) -> None:
        scu = AE(ae_title=MODALITY_AE)
        scu.add_requested_context(MPPS)
        assoc = scu.associate(*door.address, ae_title="PLACA")
        statuses.append(n_set(assoc, final_attributes("COMPLETED", day, [series_item(1)]), uid)
                        .Status)  # fmt: skip
        assoc.release()

    threads = [threading.Thread(target=complete, args=(uid,)) for uid in uids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [0x0000, 0x0000]
    assert exam_status(app, exam) is ExamStatus.COMPLETED
