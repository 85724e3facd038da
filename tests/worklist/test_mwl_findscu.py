"""The Modality Worklist over the network: DCMTK's findscu -W (and pynetdicom for C-CANCEL)
against a running DICOM door, on SQLite and PostgreSQL. Responses are read back from the
files findscu extracts (-X), with pydicom."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

import worklist.mwl
from ris.dicom_door import DicomDoor
from tests.conftest import build_app, free_port, require_tool
from tests.worklist.test_mwl import ACTIVE, PENA, Department, build_department

RETURN_KEYS = [
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "MedicalAlerts", "Allergies", "PregnancyStatus", "AccessionNumber", "RequestedProcedureID",
    "RequestedProcedureDescription", "StudyInstanceUID", "ReferringPhysicianName",
    "RequestedProcedurePriority", "RequestedProcedureCodeSequence",
]  # fmt: skip
STEP_KEYS = [
    "Modality", "ScheduledStationAETitle", "ScheduledStationName",
    "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepID",
    "ScheduledProcedureStepDescription", "ScheduledProtocolCodeSequence",
    "ScheduledProcedureStepStatus",
]  # fmt: skip
SPS = "ScheduledProcedureStepSequence[0]"


class Worklist:
    """A running DICOM door on a department's data, and findscu to ask it."""

    def __init__(self, app: Flask, department: Department, door: DicomDoor, folder: Path) -> None:
        self.app, self.dept, self.door, self.folder = app, department, door, folder
        self.findscu = require_tool("findscu")
        self.runs = 0

    def query(
        self, keys: dict[str, str] | None = None, *, aet: str = "MODALITY",
        charset: str | None = None, encoding: str = "utf-8",
    ) -> tuple[list[Dataset], str]:  # fmt: skip
        """Run findscu -W; the response identifiers (in order) and what findscu printed."""
        self.runs += 1
        out = self.folder / f"run{self.runs}"
        out.mkdir()
        args: list[str | bytes] = [self.findscu, "-W", "-v", "-aet", aet, "-aec", "PLACA",
                                   "-X", "-od", str(out)]  # fmt: skip
        wanted = {key: "" for key in RETURN_KEYS} | {f"{SPS}.{k}": "" for k in STEP_KEYS}
        if charset:
            wanted["SpecificCharacterSet"] = charset
        for key, value in (wanted | (keys or {})).items():
            args += ["-k", f"{key}={value}".encode(encoding)]
        host, port = self.door.address
        args += ["127.0.0.1", str(port)]
        run = subprocess.run(args, capture_output=True, timeout=60, check=False)
        printed = (run.stdout + run.stderr).decode("latin-1")
        return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))], printed

    def names(self, keys: dict[str, str] | None = None, **options: Any) -> list[str]:
        return [str(item.PatientName) for item in self.query(keys, **options)[0]]


@pytest.fixture
def open_worklist(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Worklist]]:
    """Factory: the department, and a DICOM door with the given settings on its database."""
    started: list[tuple[Flask, DicomDoor]] = []
    department: list[Department] = []

    def start(**settings: object) -> Worklist:
        folder = tmp_path / f"door{len(started)}"
        folder.mkdir()
        app = build_app(folder, database_url, DICOM_HOST="127.0.0.1", DICOM_PORT=free_port(),
                        TIMEZONE="Europe/Madrid", **settings)  # fmt: skip
        if not department:
            department.append(build_department(app))
        door = DicomDoor(app)
        started.append((app, door))
        return Worklist(app, department[0], door, folder)

    yield start
    for app, door in started:
        door.stop()
        app.extensions["placa.engine"].dispose()


@pytest.fixture
def mwl(open_worklist: Callable[..., Worklist]) -> Worklist:
    return open_worklist()


def test_an_item_arrives_complete_with_accents_in_utf8(mwl: Worklist) -> None:
    items, _printed = mwl.query()
    assert [str(item.PatientName) for item in items] == ACTIVE
    pena = items[0]
    exam = mwl.dept.exams["pena"]
    assert pena.SpecificCharacterSet == "ISO_IR 192"
    assert pena["PatientName"].value == PENA
    assert (pena.PatientID, pena.IssuerOfPatientID) == (exam.order.patient.mrn, "PLACA")
    assert (pena.PatientBirthDate, pena.PatientSex) == ("19800517", "M")
    assert list(pena.MedicalAlerts) == ["Diabetic", "Pacemaker"]
    assert list(pena.Allergies) == ["CONTRAST MEDIA", "Penicillin"]
    assert pena.AccessionNumber == exam.accession_number
    assert pena.RequestedProcedureID == exam.requested_procedure_id
    assert pena.StudyInstanceUID == exam.study_instance_uid
    assert pena.RequestedProcedureDescription == "CT exam 74177"
    assert pena.RequestedProcedureCodeSequence[0].CodingSchemeDesignator == "C4"
    assert str(pena.ReferringPhysicianName) == "Wilson^James"
    assert pena.RequestedProcedurePriority == "ROUTINE"
    step = pena.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledStationName) == (
        "CT", "CT1_AE", "CT1")  # fmt: skip
    assert step.ScheduledProcedureStepStartDate == mwl.dept.day.strftime("%Y%m%d")
    assert step.ScheduledProcedureStepStartTime == "090000"  # Europe/Madrid, stored in UTC
    assert step.ScheduledProcedureStepID == exam.steps[-1].step_id
    assert step.ScheduledProtocolCodeSequence[0].CodeValue == "74177"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    dupont = items[1]
    assert dupont.PregnancyStatus == 2
    assert str(dupont.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName) == (
        "Martín^Lucía"
    )
    assert dupont.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "ARRIVED"
    raw = (mwl.folder / "run1" / "rsp0001.dcm").read_bytes()
    assert "Peña Núñez^José María".encode() in raw  # UTF-8 on the wire


def test_latin1_query_gets_latin1_answers_with_accents_intact(mwl: Worklist) -> None:
    keys = {"PatientName": "peña núñez^josé*"}
    items, _printed = mwl.query(keys, charset="ISO_IR 100", encoding="latin-1")
    [pena] = items
    assert pena.SpecificCharacterSet == "ISO_IR 100"
    assert str(pena.PatientName) == PENA
    raw = sorted((mwl.folder / "run1").glob("rsp*.dcm"))[0].read_bytes()
    assert PENA.encode("latin-1") in raw
    keys = {"PatientName": "*hélène"}
    [dupont] = mwl.query(keys, charset="ISO_IR 100", encoding="latin-1")[0]
    assert str(dupont.PatientName) == "Dupont-Lefèvre^Hélène"


def test_accented_queries_without_a_character_set_are_read_as_utf8_or_latin1(
    mwl: Worklist,
) -> None:
    # No Specific Character Set in either query; the answer comes in the one guessed.
    for encoding, charset in (("utf-8", "ISO_IR 192"), ("latin-1", "ISO_IR 100")):
        [item] = mwl.query({"PatientName": "*núñez*"}, encoding=encoding)[0]
        assert str(item.PatientName) == PENA
        assert item.SpecificCharacterSet == charset


def test_matching_rules_over_the_network(mwl: Worklist) -> None:
    dept = mwl.dept
    day, next_day = dept.day.strftime("%Y%m%d"), dept.next_day.strftime("%Y%m%d")
    pena, doe = dept.exams["pena"], dept.exams["doe"]
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"PatientName": "PEÑA*"}, [PENA]),
        ({"PatientName": "doe^j*"}, ["Doe^John"]),
        ({"PatientName": "D?E"}, ["Doe^John"]),
        ({"PatientID": pena.order.patient.mrn}, [PENA]),
        ({"AccessionNumber": doe.accession_number}, ["Doe^John"]),
        ({"StudyInstanceUID": f"{pena.study_instance_uid}\\{doe.study_instance_uid}"},
         [PENA, "Doe^John"]),
        ({"PatientBirthDate": "-19691231"}, ["García^Ana"]),
        ({f"{SPS}.Modality": "MR"}, ["Dupont-Lefèvre^Hélène"]),
        ({f"{SPS}.ScheduledStationAETitle": "CT1_AE", f"{SPS}.ScheduledProcedureStepStartDate":
          next_day}, ["García^Ana"]),
        ({f"{SPS}.ScheduledProcedureStepStartDate": day},
         [PENA, "Dupont-Lefèvre^Hélène", "Doe^John", "Again^Cy"]),
        ({f"{SPS}.ScheduledProcedureStepStartDate": f"{day}-{next_day}",
          f"{SPS}.ScheduledProcedureStepStartTime": "1500-0830"}, ["Again^Cy", "García^Ana"]),
        ({f"{SPS}.ScheduledProcedureStepStartDate": f"-{day}",
          f"{SPS}.ScheduledProcedureStepStartTime": "-0930"}, [PENA]),  # until day 09:30
        ({f"{SPS}.ScheduledPerformingPhysicianName": "MARTÍN*"}, ["Dupont-Lefèvre^Hélène"]),
        ({f"{SPS}.Modality": "*", "PatientName": "*"}, ACTIVE),
    ]  # fmt: skip
    for keys, expected in cases:
        assert mwl.names(keys) == expected, keys


def test_cancelled_completed_and_no_show_exams_never_appear(mwl: Worklist) -> None:
    for key in ("cancelled", "completed", "no_show"):
        exam = mwl.dept.exams[key]
        assert mwl.query({"AccessionNumber": exam.accession_number})[0] == []
    assert mwl.names() == ACTIVE


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # pydicom warns, Placa refuses
def test_a_malformed_key_is_refused_with_a_reason(mwl: Worklist) -> None:
    keys = {f"{SPS}.ScheduledProcedureStepStartDate": "20261345"}
    items, printed = mwl.query(keys)
    assert items == []
    assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in printed  # 0xA900
    # The same with pynetdicom, to read the Error Comment and the Offending Element.
    request = Dataset()
    request.PatientName = ""
    item = Dataset()
    item.ScheduledProcedureStepStartDate = "20261345"
    request.ScheduledProcedureStepSequence = [item]
    [(status, identifier)] = _pynetdicom_find(mwl, request)
    assert status.Status == 0xA900 and identifier is None
    assert "ScheduledProcedureStepStartDate" in status.ErrorComment
    assert status.OffendingElement == 0x00400002


def test_the_answer_limit_stops_with_success(open_worklist: Callable[..., Worklist]) -> None:
    mwl = open_worklist(MWL_MAX_ANSWERS=2)
    items, printed = mwl.query()
    assert [str(item.PatientName) for item in items] == ACTIVE[:2]
    assert "Success" in printed


def test_station_routing(open_worklist: Callable[..., Worklist]) -> None:
    mwl = open_worklist(MWL_STATION_ROUTING=True)
    assert mwl.names(aet="MR1_AE") == ["Dupont-Lefèvre^Hélène"]
    assert mwl.names(aet="CT1_AE") == [PENA, "Doe^John", "Again^Cy", "García^Ana"]
    assert mwl.names(aet="READING_WS") == ACTIVE  # not a room's device: everything
    plain = open_worklist()
    assert plain.names(aet="MR1_AE") == ACTIVE  # routing off (the default)


def test_c_cancel_stops_the_answers(mwl: Worklist, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = worklist.mwl.answer

    def slow_answer(*args: Any) -> Dataset:
        time.sleep(0.2)  # so that the C-CANCEL arrives while items remain
        return answer(*args)

    monkeypatch.setattr(worklist.mwl, "answer", slow_answer)
    scu = AE(ae_title="MODALITY")
    scu.add_requested_context(ModalityWorklistInformationFind)
    assoc = scu.associate(*mwl.door.address, ae_title="PLACA")
    assert assoc.is_established
    request = Dataset()
    request.PatientName = ""
    request.ScheduledProcedureStepSequence = []
    statuses, names = [], []
    for status, identifier in assoc.send_c_find(request, ModalityWorklistInformationFind,
                                                msg_id=7):  # fmt: skip
        statuses.append(status.Status)
        if identifier is not None:
            names.append(str(identifier.PatientName))
            if len(names) == 1:
                assoc.send_c_cancel(7, query_model=ModalityWorklistInformationFind)
    assoc.release()
    assert statuses[-1] == 0xFE00
    assert 1 <= len(names) < len(ACTIVE) and names[0] == PENA


def _pynetdicom_find(mwl: Worklist, request: Dataset) -> list[tuple[Dataset, Dataset | None]]:
    scu = AE(ae_title="MODALITY")
    scu.add_requested_context(ModalityWorklistInformationFind)
    assoc = scu.associate(*mwl.door.address, ae_title="PLACA")
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(request, ModalityWorklistInformationFind))
    finally:
        assoc.release()
