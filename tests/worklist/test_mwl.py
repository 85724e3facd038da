"""The Modality Worklist service: each matching rule of PS3.4 C.2.2.2, what an item says,
which exams appear, the answer limit and station routing, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from flask import Flask
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from ris import scheduling, status
from ris.db import sessions
from ris.dicom_match import MatchError
from ris.models import (
    ExamStatus,
    PregnancyStatus,
    ProcedureCode,
    RequestedProcedure,
    Room,
    Sex,
)
from tests.factories import ACTOR, SITE, FrontDesk, at, next_weekday
from worklist.mwl import WorklistOptions, find_worklist_items, plan_worklist_query

PENA = "Peña Núñez^José María"


@dataclass
class Department:
    """A day of the test department: who is booked where, and the exams that must not show."""

    day: date
    next_day: date
    exams: dict[str, RequestedProcedure]
    ct_room_id: int
    mr_room_id: int


def build_department(app: Flask) -> Department:
    """Rooms, codes and exams in every status, made through the front-desk services."""
    desk = FrontDesk(app)
    day = next_weekday()
    next_day = next_weekday(day)
    with sessions(app)() as db:
        ct, mr = desk.room(db, "CT1", "CT"), desk.room(db, "MR1", "MR")
        ct_code = desk.code(db, "74177", "CT", minutes=20, rooms=["CT1"])
        mr_code = desk.code(db, "70551", "MR", minutes=30, rooms=["MR1"])
        exams: dict[str, RequestedProcedure] = {}

        def book(key: str, family: str, given: str, room: Any, code: Any, when: Any,
                 **extra: Any) -> RequestedProcedure:  # fmt: skip
            patient = desk.patient(db, family, given, **extra)
            exams[key] = desk.booked(db, room, code, when, patient=patient)
            return exams[key]

        book("pena", "Peña Núñez", "José María", ct, ct_code, at(day, 9),
             birth_date=date(1980, 5, 17), medical_alerts="Diabetic\nPacemaker",
             allergies="Penicillin", contrast_allergy=True)  # fmt: skip
        dupont = book("dupont", "Dupont-Lefèvre", "Hélène", mr, mr_code, at(day, 10),
                      birth_date=date(1992, 3, 2), sex=Sex.FEMALE,
                      pregnancy_status=PregnancyStatus.POSSIBLY_PREGNANT)  # fmt: skip
        scheduling.check_in(db, ACTOR, dupont)
        dupont.steps[-1].performing_physician = "Martín^Lucía"  # no front-desk screen sets it yet
        book("doe", "Doe", "John", ct, ct_code, at(day, 14), birth_date=date(1970, 1, 1))
        book("garcia", "García", "Ana", ct, ct_code, at(next_day, 8), birth_date=date(1965, 7, 7))
        cancelled = book("cancelled", "Cancel", "Me", ct, ct_code, at(day, 11))
        scheduling.cancel(db, ACTOR, cancelled, "patient called")
        done = book("completed", "Done", "Al", ct, ct_code, at(day, 12))
        for target in (ExamStatus.ARRIVED, ExamStatus.IN_PROGRESS, ExamStatus.COMPLETED):
            status.change_status(db, ACTOR, done, target)
        absent = book("no_show", "Absent", "Bo", ct, ct_code, at(day, 13))
        scheduling.no_show(db, ACTOR, absent)
        again = book("again", "Again", "Cy", ct, ct_code, at(day, 15))
        scheduling.no_show(db, ACTOR, again)
        scheduling.book(db, ACTOR, SITE, again, ct, at(day, 16))  # a new step; the 15:00 one is old
        db.commit()
        return Department(day, next_day, exams, ct.id, mr.id)


@pytest.fixture
def dept(app: Flask) -> Department:
    return build_department(app)


def identifier(sps: dict[str, str] | None = None, **keys: object) -> Dataset:
    """A worklist request: the usual return keys, with the given keys' values."""
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"):
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    item = Dataset()
    for keyword in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID"):  # fmt: skip
        setattr(item, keyword, "")
    for keyword, value in (sps or {}).items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def find(db: Session, request: Dataset, **options: Any) -> list[Dataset]:
    query = plan_worklist_query(request, WorklistOptions(zone=SITE.zone, **options))
    return list(find_worklist_items(db, query))


def names(db: Session, request: Dataset, **options: Any) -> list[str]:
    return [str(item.PatientName) for item in find(db, request, **options)]


ACTIVE = [PENA, "Dupont-Lefèvre^Hélène", "Doe^John", "Again^Cy", "García^Ana"]


def test_universal_matching_serves_scheduled_and_arrived_exams_only(db, dept) -> None:
    items = find(db, identifier())
    assert [str(i.PatientName) for i in items] == ACTIVE  # in start order; no cancelled,
    again = items[3]  # completed or no-show exam; the re-booked exam once, at its new time
    assert again.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "160000"
    assert [len(i) for i in find(db, Dataset())] == [1] * 5  # no keys: SpecificCharacterSet
    assert names(db, identifier(PatientName="*")) == ACTIVE


def test_the_served_statuses_are_configurable(db, dept) -> None:
    only_scheduled = frozenset({ExamStatus.SCHEDULED})
    assert "Dupont-Lefèvre^Hélène" not in names(db, identifier(), statuses=only_scheduled)
    with_started = frozenset({ExamStatus.SCHEDULED, ExamStatus.ARRIVED, ExamStatus.IN_PROGRESS})
    assert names(db, identifier(), statuses=with_started) == ACTIVE


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("peña*", [PENA]),  # case-insensitive, accented capitals included
        ("PEÑA NÚÑEZ^JOSÉ MARÍA", [PENA]),  # single value, whole name
        ("*maría*", [PENA]),  # anywhere in the name
        ("Doe^J*", ["Doe^John"]),  # per component: family DOE, given J...
        ("DOE", ["Doe^John"]),  # the components left out match anything
        ("D?E^JOHN", ["Doe^John"]),
        ("dupont-lef*", ["Dupont-Lefèvre^Hélène"]),
        ("*^hélène", ["Dupont-Lefèvre^Hélène"]),
        ("D_e*", []),  # SQL's metacharacters are literal
        ("D%", []),
        ("Smith", []),
    ],
)
def test_patient_name_matching(db, dept, pattern: str, expected: list[str]) -> None:
    assert names(db, identifier(PatientName=pattern)) == expected


def test_identifiers_single_value_wildcard_and_lists(db, dept) -> None:
    pena, doe = dept.exams["pena"], dept.exams["doe"]
    mrn = pena.order.patient.mrn
    assert names(db, identifier(PatientID=mrn)) == [PENA]
    assert names(db, identifier(PatientID=mrn, IssuerOfPatientID="PLACA")) == [PENA]
    assert names(db, identifier(PatientID=mrn, IssuerOfPatientID="OTHER")) == []
    assert names(db, identifier(AccessionNumber=doe.accession_number)) == ["Doe^John"]
    prefix = doe.accession_number[:4] + "*"
    assert len(names(db, identifier(AccessionNumber=prefix))) == len(ACTIVE)
    both = [pena.accession_number, doe.accession_number]
    assert names(db, identifier(AccessionNumber=both)) == [PENA, "Doe^John"]  # several values
    rp = identifier(RequestedProcedureID=doe.requested_procedure_id)
    assert names(db, rp) == ["Doe^John"]
    uids = identifier(StudyInstanceUID=[doe.study_instance_uid, pena.study_instance_uid])
    assert names(db, uids) == [PENA, "Doe^John"]  # list of UID matching
    cancelled = dept.exams["cancelled"]
    assert names(db, identifier(AccessionNumber=cancelled.accession_number)) == []


def test_demographics_and_physicians(db, dept) -> None:
    assert names(db, identifier(PatientSex="F")) == ["Dupont-Lefèvre^Hélène"]
    assert names(db, identifier(PatientBirthDate="19800517")) == [PENA]
    born = ["Doe^John", "Again^Cy"]  # 1970-01-01, like Peña's 1980 within the range
    assert names(db, identifier(PatientBirthDate="19700101-19801231")) == [PENA, *born]
    assert names(db, identifier(PatientBirthDate="-19691231")) == ["García^Ana"]
    assert names(db, identifier(PatientBirthDate="19900101-")) == ["Dupont-Lefèvre^Hélène"]
    assert names(db, identifier(ReferringPhysicianName="wilson^j*")) == ACTIVE
    assert names(db, identifier(ReferringPhysicianName="WILSON")) == ACTIVE
    assert names(db, identifier(ReferringPhysicianName="House*")) == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # "mr": what some devices send
def test_step_sequence_matching(db, dept) -> None:
    assert names(db, identifier({"Modality": "MR"})) == ["Dupont-Lefèvre^Hélène"]
    assert names(db, identifier({"Modality": "mr"})) == []  # CS is case-sensitive
    ct = names(db, identifier({"ScheduledStationAETitle": "CT1_AE"}))
    assert ct == [PENA, "Doe^John", "Again^Cy", "García^Ana"]
    assert names(db, identifier({"ScheduledStationName": "MR1"})) == ["Dupont-Lefèvre^Hélène"]
    doctor = identifier({"ScheduledPerformingPhysicianName": "martín*"})
    assert names(db, doctor) == ["Dupont-Lefèvre^Hélène"]
    step_id = dept.exams["doe"].steps[-1].step_id
    assert names(db, identifier({"ScheduledProcedureStepID": step_id})) == ["Doe^John"]
    arrived = identifier({"ScheduledProcedureStepStatus": "ARRIVED"})
    assert names(db, arrived) == ["Dupont-Lefèvre^Hélène"]
    assert names(db, identifier({"ScheduledProcedureStepStatus": "STARTED"})) == []


def test_date_and_time_ranges_in_the_site_zone(db, dept) -> None:
    day, next_day = dept.day.strftime("%Y%m%d"), dept.next_day.strftime("%Y%m%d")
    start = "ScheduledProcedureStepStartDate"
    time = "ScheduledProcedureStepStartTime"
    today = [PENA, "Dupont-Lefèvre^Hélène", "Doe^John", "Again^Cy"]
    assert names(db, identifier({start: day})) == today
    assert names(db, identifier({start: next_day})) == ["García^Ana"]
    assert names(db, identifier({start: f"{day}-{next_day}"})) == ACTIVE
    assert names(db, identifier({start: f"-{day}"})) == today
    assert names(db, identifier({start: f"{next_day}-"})) == ["García^Ana"]
    assert names(db, identifier({start: day, "Modality": "CT"})) == [PENA, "Doe^John", "Again^Cy"]
    # One date and a time range: that day between those times (local time, Europe/Madrid).
    assert names(db, identifier({start: day, time: "0830-1000"})) == [PENA, "Dupont-Lefèvre^Hélène"]
    assert names(db, identifier({start: day, time: "09"})) == [PENA]  # precision: 09:00-09:59
    # A date range and a time range are one range: day 15:00 to next day 08:30.
    combined = identifier({start: f"{day}-{next_day}", time: "1500-0830"})
    assert names(db, combined) == ["Again^Cy", "García^Ana"]
    # The time alone: that local time of day on any date.
    assert names(db, identifier({time: "0730-0900"})) == [PENA, "García^Ana"]
    assert names(db, identifier({time: "1400-"})) == ["Doe^John", "Again^Cy"]
    assert names(db, identifier({time: "1500-0830"})) == ["Again^Cy", "García^Ana"]  # the night


@pytest.mark.parametrize(
    ("keys", "sps", "attribute"),
    [
        ({"PatientBirthDate": "2026-13-45"}, None, "PatientBirthDate"),
        ({"PatientBirthDate": "20261345"}, None, "PatientBirthDate"),
        ({}, {"ScheduledProcedureStepStartDate": "20261301"}, "ScheduledProcedureStepStartDate"),
        ({}, {"ScheduledProcedureStepStartTime": "2561"}, "ScheduledProcedureStepStartTime"),
        ({}, {"ScheduledProcedureStepStartDate": "20261202-20261201"},
         "ScheduledProcedureStepStartDate"),
        ({}, {"ScheduledProcedureStepStartDate": "20261201-20261202-20261203"},
         "ScheduledProcedureStepStartDate"),
        ({"StudyInstanceUID": "1.2.abc"}, None, "StudyInstanceUID"),
    ],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom warns, Placa refuses
def test_malformed_values_are_refused_naming_the_attribute(
    db, dept, keys: dict[str, str], sps: dict[str, str] | None, attribute: str
) -> None:
    with pytest.raises(MatchError) as refused:
        find(db, identifier(sps, **keys))
    assert refused.value.keyword == attribute
    assert refused.value.status == 0xA900
    assert attribute in refused.value.comment


def test_keys_placa_does_not_match_on_are_ignored_and_reported(db, dept) -> None:
    request = identifier(PatientWeight="70", AdmissionID="V123")
    query = plan_worklist_query(request, WorklistOptions(zone=SITE.zone))
    assert set(query.ignored) == {"PatientWeight", "AdmissionID"}
    items = list(find_worklist_items(db, query))
    assert [str(i.PatientName) for i in items] == ACTIVE
    assert items[0].PatientWeight is None and items[0].AdmissionID is None  # answered, empty
    assert plan_worklist_query(identifier(), WorklistOptions()).ignored == ()


def full_request(charset: str | None = None) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                    "PatientSex", "MedicalAlerts", "Allergies", "PregnancyStatus",
                    "PatientWeight", "AccessionNumber", "RequestedProcedureID",
                    "RequestedProcedureDescription", "StudyInstanceUID", "ReferringPhysicianName",
                    "RequestedProcedurePriority", "RequestingPhysician"):  # fmt: skip
        setattr(ds, keyword, None)
    ds.RequestedProcedureCodeSequence = []
    ds.ReferencedStudySequence = []
    ds.ScheduledProcedureStepSequence = []  # zero length: the whole item
    return ds


def test_an_item_answers_every_requested_key_with_what_modalities_need(db, dept) -> None:
    pena = dept.exams["pena"]
    request = full_request()
    request.AccessionNumber = pena.accession_number
    [item] = find(db, request)
    assert item.SpecificCharacterSet == "ISO_IR 192"
    assert str(item.PatientName) == PENA
    assert item.PatientID == pena.order.patient.mrn and item.IssuerOfPatientID == "PLACA"
    assert (item.PatientBirthDate, item.PatientSex) == ("19800517", "M")
    assert list(item.MedicalAlerts) == ["Diabetic", "Pacemaker"]
    assert list(item.Allergies) == ["CONTRAST MEDIA", "Penicillin"]
    assert item.PregnancyStatus is None and item.PatientWeight is None  # unknown: empty
    assert item.AccessionNumber == pena.accession_number
    assert item.RequestedProcedureID == pena.requested_procedure_id
    assert item.RequestedProcedureDescription == "CT exam 74177"
    [code] = item.RequestedProcedureCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "74177", "C4", "CT exam 74177")  # fmt: skip
    assert item.StudyInstanceUID == pena.study_instance_uid  # the pre-assigned one
    assert str(item.ReferringPhysicianName) == "Wilson^James"
    assert str(item.RequestingPhysician) == "House^Gregory"
    assert item.RequestedProcedurePriority == "ROUTINE"
    assert item.ReferencedStudySequence == []
    [step] = item.ScheduledProcedureStepSequence
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledStationName) == (
        "CT", "CT1_AE", "CT1")  # fmt: skip
    assert step.ScheduledProcedureStepStartDate == dept.day.strftime("%Y%m%d")
    assert step.ScheduledProcedureStepStartTime == "090000"  # site local time
    assert step.ScheduledProcedureStepEndTime == "092000"
    assert step.ScheduledProcedureStepID == pena.steps[-1].step_id
    assert step.ScheduledProcedureStepDescription == "CT exam 74177"
    assert step.ScheduledProtocolCodeSequence[0].CodeValue == "74177"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert step.ScheduledProcedureStepLocation == "CT1"
    assert step.ScheduledPerformingPhysicianName is None


def test_requested_item_keys_are_answered_exactly(db, dept) -> None:
    request = identifier({"Modality": "MR", "ScheduledPerformingPhysicianName": ""},
                         PregnancyStatus=None)  # fmt: skip
    code = Dataset()
    code.CodeValue = ""
    request.RequestedProcedureCodeSequence = [code]
    [item] = find(db, request)
    assert item.PregnancyStatus == 2
    assert [e.keyword for e in item.RequestedProcedureCodeSequence[0]] == ["CodeValue"]
    step = item.ScheduledProcedureStepSequence[0]
    assert str(step.ScheduledPerformingPhysicianName) == "Martín^Lucía"
    assert "ScheduledProcedureStepStatus" not in step  # not asked for, not answered
    assert item.ScheduledProcedureStepSequence[0].Modality == "MR"


def test_character_set_follows_the_request_when_the_text_fits(app, db, dept) -> None:
    assert find(db, full_request("ISO_IR 100"))[0].SpecificCharacterSet == "ISO_IR 100"
    assert find(db, full_request("ISO_IR 6"))[0].SpecificCharacterSet == "ISO_IR 192"
    desk = FrontDesk(app)
    room = db.get(Room, dept.ct_room_id)
    code = db.get(ProcedureCode, dept.exams["pena"].procedure_code_id)
    polish = desk.patient(db, "Wałęsa", "Lech")
    exam = desk.booked(db, room, code, at(dept.day, 17), patient=polish)
    db.commit()
    request = full_request("ISO_IR 100")
    request.AccessionNumber = exam.accession_number
    [item] = find(db, request)
    assert item.SpecificCharacterSet == "ISO_IR 192"  # Ł does not fit Latin-1
    assert str(item.PatientName) == "Wałęsa^Lech"


def test_the_answer_limit_and_station_routing(db, dept) -> None:
    request = identifier()
    query = plan_worklist_query(request, WorklistOptions(zone=SITE.zone, max_answers=2))
    items = find_worklist_items(db, query)
    assert [str(i.PatientName) for i in items] == ACTIVE[:2]
    assert items.truncated
    query = plan_worklist_query(request, WorklistOptions(zone=SITE.zone, max_answers=5))
    items = find_worklist_items(db, query)
    assert len(list(items)) == 5 and not items.truncated
    assert names(db, request, room_id=dept.mr_room_id) == ["Dupont-Lefèvre^Hélène"]
