"""The archive's C-FIND SCP against real peers: DCMTK findscu -P and -S at every level, and
pynetdicom, on SQLite and PostgreSQL.

The archive is filled through the real store path (pacs.ingest): Spanish and French names in
ISO_IR 192 and ISO_IR 100, several studies per patient, several series per study. Answers
are read back from the files findscu extracts (-X) with pydicom, and checked value by value.
"""

from __future__ import annotations

import logging
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    BasicTextSRStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import insert, select

import pacs.query
from pacs.ingest import ingest
from pacs.models import ArchivePatient, Study
from ris.db import transaction
from ris.dicom_door import DicomDoor
from tests.conftest import build_app, free_port, require_tool
from tests.pacs.dicom_data import ROOT, make_dataset, new_uid, received

PENA = "Peña Núñez^José María"
DUPONT = "Dupont^Hélène"
STUDY_KEYS = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "ReferringPhysicianName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "SOPClassesInStudy", "NumberOfPatientRelatedStudies",
    "InstanceAvailability", "RetrieveAETitle", "PatientAge", "OtherPatientIDsSequence",
]  # fmt: skip


@dataclass
class Archive:
    """A running DICOM door on an archive holding a few patients' studies."""

    app: Flask
    door: DicomDoor
    folder: Path
    uids: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[str]] = field(default_factory=dict)
    instances: dict[str, list[str]] = field(default_factory=dict)
    runs: int = 0

    def store(self, study: str, series: str, count: int, **attributes: object) -> None:
        """``count`` instances of one series of one study, through the real store path."""
        study_uid = self.uids.setdefault(study, new_uid())
        series_uid = new_uid()
        self.series.setdefault(study, []).append(series_uid)
        for number in range(1, count + 1):
            ds = make_dataset(study=study_uid, series=series_uid, number=number, **attributes)
            self.instances.setdefault(series_uid, []).append(str(ds.SOPInstanceUID))
            ingest(self.app, received(ds))

    def findscu(
        self, model: str, keys: dict[str, str], *, encoding: str = "utf-8",
        extra: tuple[str, ...] = (),
    ) -> tuple[list[Dataset], str]:  # fmt: skip
        """Run findscu -P or -S; the answers (in order) and what findscu printed."""
        self.runs += 1
        out = self.folder / f"run{self.runs}"
        out.mkdir()
        args: list[str | bytes] = [require_tool("findscu"), model, "-v", "-aet", "FINDSCU",
                                   "-aec", "PLACA", "-X", "-od", str(out), *extra]  # fmt: skip
        for key, value in keys.items():
            args += ["-k", f"{key}={value}".encode(encoding)]
        args += ["127.0.0.1", str(self.door.address[1])]
        run = subprocess.run(args, capture_output=True, timeout=60, check=False)
        printed = (run.stdout + run.stderr).decode("latin-1")
        return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))], printed

    def study_root(self, keys: dict[str, str], **options: object) -> list[Dataset]:
        wanted = {key: "" for key in STUDY_KEYS} | {"QueryRetrieveLevel": "STUDY"}
        return self.findscu("-S", wanted | keys, **options)[0]  # type: ignore[arg-type]

    def names(self, keys: dict[str, str], **options: object) -> list[str]:
        answers = self.study_root(keys, **options)
        answers = sorted(answers, key=lambda item: str(item.AccessionNumber))
        return [f"{item.PatientName}|{item.AccessionNumber}" for item in answers]


@pytest.fixture
def archive(tmp_path: Path, database_url: str) -> Iterator[Archive]:
    app = build_app(tmp_path / "placa", database_url, DICOM_HOST="127.0.0.1",
                    DICOM_PORT=free_port(), TIMEZONE="Europe/Madrid")  # fmt: skip
    door = DicomDoor(app)
    archive = Archive(app, door, tmp_path)
    pena = dict(patient_id="P1", name=PENA, charset="ISO_IR 192", PatientSex="M",
                PatientBirthDate="19800517")  # fmt: skip
    archive.store("pena", "ct", 3, accession="A1", modality="CT", **pena)
    archive.store("pena", "sr", 1, accession="A1", modality="SR", sop_class=BasicTextSRStorage,
                  **pena)  # fmt: skip
    archive.store("dupont", "mr", 2, patient_id="P2", name=DUPONT, charset="ISO_IR 100",
                  accession="A2", modality="MR", sop_class=MRImageStorage,
                  StudyDate="20261115", StudyTime="231500", PatientSex="F")  # fmt: skip
    archive.store("doe-old", "ct", 1, patient_id="P3", accession="B3", modality="CT",
                  StudyDate="20250101", StudyTime="080000")  # fmt: skip
    archive.store("doe-new", "cr", 2, patient_id="P3", accession="B4", modality="CR",
                  StudyDate="20261201", StudyTime="090000")  # fmt: skip
    yield archive
    door.stop()
    app.extensions["placa.engine"].dispose()


def test_a_study_level_answer_holds_every_requested_key(archive: Archive) -> None:
    answers = archive.study_root({"PatientID": "P1"})
    assert len(answers) == 1
    study = answers[0]
    assert study.SpecificCharacterSet == "ISO_IR 192"
    assert study.QueryRetrieveLevel == "STUDY"
    assert str(study.PatientName) == PENA
    assert (study.PatientID, study.PatientSex, study.PatientBirthDate) == ("P1", "M", "19800517")
    assert study.StudyInstanceUID == archive.uids["pena"]
    assert (study.StudyDate, study.StudyTime) == ("20261130", "101500")  # as stored
    assert (study.AccessionNumber, study.StudyID) == ("A1", "1")
    assert study.StudyDescription == "CT ABDOMEN"
    assert str(study.ReferringPhysicianName) == "WILSON^JAMES"
    assert list(study.ModalitiesInStudy) == ["CT", "SR"]
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (2, 4)
    assert sorted(study.SOPClassesInStudy) == sorted(["1.2.840.10008.5.1.4.1.1.2",
                                                      BasicTextSRStorage])  # fmt: skip
    assert study.NumberOfPatientRelatedStudies == 1
    assert (study.InstanceAvailability, study.RetrieveAETitle) == ("ONLINE", "PLACA")
    # Keys the index does not hold are answered, empty.
    assert "PatientAge" in study and study.PatientAge in ("", None)
    assert "OtherPatientIDsSequence" in study and len(study.OtherPatientIDsSequence) == 0
    raw = (archive.folder / f"run{archive.runs}" / "rsp0001.dcm").read_bytes()
    assert PENA.encode() in raw  # UTF-8 on the wire


def test_patient_root_at_every_level(archive: Archive) -> None:
    patients, _ = archive.findscu("-P", {
        "QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": "", "PatientSex": "",
        "NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedSeries": "",
        "NumberOfPatientRelatedInstances": "", "StudyInstanceUID": "",
    })  # fmt: skip
    found = {p.PatientID: p for p in patients}
    assert sorted(found) == ["P1", "P2", "P3"]
    doe = found["P3"]
    assert str(doe.PatientName) == "DOE^JOHN" and doe.QueryRetrieveLevel == "PATIENT"
    assert (doe.NumberOfPatientRelatedStudies, doe.NumberOfPatientRelatedSeries,
            doe.NumberOfPatientRelatedInstances) == (2, 2, 3)  # fmt: skip
    assert (found["P1"].NumberOfPatientRelatedSeries, found["P1"].NumberOfPatientRelatedInstances
            ) == (2, 4)  # fmt: skip
    assert doe.StudyInstanceUID in ("", None)  # a key of a lower level: empty

    studies, _ = archive.findscu("-P", {
        "QueryRetrieveLevel": "STUDY", "PatientID": "P3", "StudyInstanceUID": "",
        "AccessionNumber": "", "StudyDate": "", "ModalitiesInStudy": "",
    })  # fmt: skip
    assert sorted((s.AccessionNumber, s.StudyDate, s.ModalitiesInStudy) for s in studies) == [
        ("B3", "20250101", "CT"), ("B4", "20261201", "CR")]  # fmt: skip

    study_uid = archive.uids["pena"]
    series, _ = archive.findscu("-P", {
        "QueryRetrieveLevel": "SERIES", "PatientID": "P1", "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": "", "Modality": "", "SeriesNumber": "", "SeriesDescription": "",
        "NumberOfSeriesRelatedInstances": "", "BodyPartExamined": "",
    })  # fmt: skip
    assert sorted((s.SeriesInstanceUID, s.Modality, s.NumberOfSeriesRelatedInstances)
                  for s in series) == sorted(zip(archive.series["pena"], ["CT", "SR"], [3, 1],
                                                 strict=True))  # fmt: skip
    assert {(s.SeriesNumber, s.SeriesDescription, s.BodyPartExamined) for s in series} == {
        (1, "AXIAL", "ABDOMEN")}  # fmt: skip

    ct = archive.series["pena"][0]
    images, _ = archive.findscu("-P", {
        "QueryRetrieveLevel": "IMAGE", "PatientID": "P1", "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": ct, "SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": "",
    })  # fmt: skip
    assert [(i.SOPInstanceUID, i.InstanceNumber) for i in images] == list(
        zip(archive.instances[ct], [1, 2, 3], strict=True)
    )
    assert {i.SOPClassUID for i in images} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert {i.QueryRetrieveLevel for i in images} == {"IMAGE"}


def test_study_root_series_and_image_levels(archive: Archive) -> None:
    study_uid = archive.uids["dupont"]
    series, _ = archive.findscu("-S", {
        "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study_uid, "SeriesInstanceUID": "",
        "Modality": "", "NumberOfSeriesRelatedInstances": "", "PatientName": "",
    })  # fmt: skip
    assert [(s.Modality, s.NumberOfSeriesRelatedInstances) for s in series] == [("MR", 2)]
    assert str(series[0].PatientName) == DUPONT  # an attribute of a level above, answered
    mr = archive.series["dupont"][0]
    images, _ = archive.findscu("-S", {
        "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study_uid, "SeriesInstanceUID": mr,
        "SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": "2",
    })  # fmt: skip
    assert [(i.SOPInstanceUID, i.SOPClassUID) for i in images] == [
        (archive.instances[mr][1], MRImageStorage)]  # fmt: skip


def test_wildcards_date_ranges_and_uid_lists(archive: Archive) -> None:
    assert archive.names({"AccessionNumber": "A?"}) == [f"{PENA}|A1", f"{DUPONT}|A2"]
    assert archive.names({"AccessionNumber": "B*"}) == ["DOE^JOHN|B3", "DOE^JOHN|B4"]
    assert archive.names({"StudyDescription": "*ABDO*", "PatientID": "P2"}) == [f"{DUPONT}|A2"]
    assert archive.names({"StudyDate": "20261101-20261130"}) == [f"{PENA}|A1", f"{DUPONT}|A2"]
    assert archive.names({"StudyDate": "-20251231"}) == ["DOE^JOHN|B3"]
    assert archive.names({"StudyDate": "20261201-"}) == ["DOE^JOHN|B4"]
    # Date and time together: one range, from 15 Nov 23:00 to 30 Nov 10:00 (site time).
    both = {"StudyDate": "20261115-20261130", "StudyTime": "2300-1000"}
    assert archive.names(both) == [f"{DUPONT}|A2"]
    uids = "\\".join([archive.uids["pena"], archive.uids["doe-new"]])
    assert archive.names({"StudyInstanceUID": uids}) == [f"{PENA}|A1", "DOE^JOHN|B4"]


def test_modalities_in_study_matches_any_series(archive: Archive) -> None:
    assert archive.names({"ModalitiesInStudy": "SR"}) == [f"{PENA}|A1"]
    assert archive.names({"ModalitiesInStudy": "MR\\CR"}) == [f"{DUPONT}|A2", "DOE^JOHN|B4"]
    answer = archive.study_root({"ModalitiesInStudy": "SR"})[0]
    assert list(answer.ModalitiesInStudy) == ["CT", "SR"]  # the study's, not the key's


def test_names_ignore_case_and_accents(archive: Archive) -> None:
    assert archive.names({"PatientName": "pena nunez*"}) == [f"{PENA}|A1"]
    assert archive.names({"PatientName": "PEÑA NÚÑEZ^JOSÉ MARÍA"}) == [f"{PENA}|A1"]
    assert archive.names({"PatientName": "dupont^helene"}) == [f"{DUPONT}|A2"]
    assert archive.names({"PatientName": "DUPONT"}) == [f"{DUPONT}|A2"]  # other parts: any
    assert archive.names({"PatientName": "*^JOS*"}) == [f"{PENA}|A1"]
    assert archive.names({"PatientName": "*ÈLÈ*"}) == [f"{DUPONT}|A2"]
    assert archive.names({"ReferringPhysicianName": "wilson^j*", "PatientID": "P2"}) == [
        f"{DUPONT}|A2"]  # fmt: skip
    assert archive.names({"PatientName": "Smith*"}) == []


def test_a_latin1_query_gets_latin1_answers(archive: Archive) -> None:
    keys = {"PatientName": "HÉLÈNE*", "SpecificCharacterSet": "ISO_IR 100"}
    assert archive.names(keys, encoding="latin-1") == []  # family name first: no match
    keys = {"PatientName": "dupont^hélène", "SpecificCharacterSet": "ISO_IR 100"}
    answers = archive.study_root(keys, encoding="latin-1")
    assert [str(a.PatientName) for a in answers] == [DUPONT]
    assert answers[0].SpecificCharacterSet == "ISO_IR 100"
    raw = (archive.folder / f"run{archive.runs}" / "rsp0001.dcm").read_bytes()
    assert DUPONT.encode("latin-1") in raw
    # A name Latin-1 cannot hold is still answered, in UTF-8.
    keys = {"PatientID": "P1", "SpecificCharacterSet": "ISO_IR 100"}
    assert archive.study_root(keys)[0].SpecificCharacterSet in ("ISO_IR 100", "ISO_IR 192")


def test_refusals_name_the_key(archive: Archive) -> None:
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}
    answers, printed = archive.findscu("-S", keys, extra=("-d",))
    assert answers == []
    assert "0xa900" in printed.lower()
    assert "QueryRetrieveLevel: not one of STUDY, SERIES, IMAGE" in printed  # Error Comment
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": archive.uids["pena"]}
    answers, printed = archive.findscu("-P", keys, extra=("-d",))
    assert answers == []
    assert "0xa900" in printed.lower()
    assert "PatientID: required at SERIES level (hierarchical)" in printed


def _pynetdicom_find(
    archive: Archive, sop_class: str, identifier: Dataset, syntax: str | None = None
) -> list:
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(sop_class, [syntax] if syntax else DEFAULT_TRANSFER_SYNTAXES)
    assoc = ae.associate("127.0.0.1", archive.door.address[1], ae_title="PLACA")
    assert assoc.is_established
    try:
        responses = assoc.send_c_find(identifier, sop_class)
        return [(status.Status, status, ds) for status, ds in responses]
    finally:
        assoc.release()


def _identifier(**keys: str) -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():  # a malformed value on purpose
        warnings.simplefilter("ignore")
        for key, value in keys.items():
            setattr(ds, key, value)
    return ds


def test_pynetdicom_gets_failure_statuses_with_an_error_comment(archive: Archive) -> None:
    cases = [
        (StudyRootQueryRetrieveInformationModelFind, _identifier(PatientID="")),
        (StudyRootQueryRetrieveInformationModelFind, _identifier(QueryRetrieveLevel="PATIENT")),
        (StudyRootQueryRetrieveInformationModelFind,
         _identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID=archive.uids["pena"])),
        (PatientRootQueryRetrieveInformationModelFind,
         _identifier(QueryRetrieveLevel="STUDY", PatientID="P*")),
        (StudyRootQueryRetrieveInformationModelFind,
         _identifier(QueryRetrieveLevel="STUDY", StudyDate="20261345")),
    ]  # fmt: skip
    comments = []
    for sop_class, identifier in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            responses = _pynetdicom_find(archive, sop_class, identifier)
        assert [code for code, _status, _ds in responses] == [0xA900]
        comments.append(str(responses[0][1].ErrorComment))
    assert comments[0].startswith("QueryRetrieveLevel") and "missing" in comments[0]
    assert comments[1].startswith("QueryRetrieveLevel")
    assert comments[2].startswith("SeriesInstanceUID")
    assert comments[3].startswith("PatientID")
    assert comments[4].startswith("StudyDate")


def test_pynetdicom_study_root_with_a_key_placa_does_not_match(archive: Archive) -> None:
    identifier = _identifier(QueryRetrieveLevel="STUDY", PatientID="P3", PatientAge="045Y",
                             AccessionNumber="", NumberOfStudyRelatedInstances="")  # fmt: skip
    responses = _pynetdicom_find(archive, StudyRootQueryRetrieveInformationModelFind, identifier)
    assert [code for code, _s, _ds in responses] == [0xFF01, 0xFF01, 0x0000]
    answers = sorted((ds.AccessionNumber, ds.NumberOfStudyRelatedInstances)
                     for _c, _s, ds in responses[:2])  # fmt: skip
    assert answers == [("B3", 1), ("B4", 2)]


def test_the_answer_limit(tmp_path: Path, database_url: str) -> None:
    app = build_app(tmp_path / "placa", database_url, DICOM_HOST="127.0.0.1",
                    DICOM_PORT=free_port(), QR_MAX_ANSWERS=3)  # fmt: skip
    door = DicomDoor(app)
    try:
        archive = Archive(app, door, tmp_path)
        for n in range(5):
            archive.store(f"s{n}", "ct", 1, patient_id=f"Q{n}", accession=f"C{n}")
        answers, printed = archive.findscu("-S", {"QueryRetrieveLevel": "STUDY",
                                                  "AccessionNumber": ""})  # fmt: skip
        assert sorted(a.AccessionNumber for a in answers) == ["C0", "C1", "C2"]
        assert "Final Find Response (Success)" in printed
    finally:
        door.stop()
        app.extensions["placa.engine"].dispose()


def test_c_cancel_stops_the_answers(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand studies (index rows only: the protocol is under test), cancelled by findscu
    after the first answer: the SCP stops and answers Cancel."""
    now = datetime.now(UTC)
    with transaction(archive.app) as db:
        patient = db.scalar(select(ArchivePatient.id).where(ArchivePatient.patient_id == "P3"))
        db.execute(insert(Study), [
            {"study_instance_uid": f"{ROOT}7.{n}", "patient_fk": patient, "study_date": "20260101",
             "accession_number": f"X{n}", "created_at": now, "updated_at": now}
            for n in range(1000)
        ])  # fmt: skip
    answer_of = pacs.query.answer_of

    def slow_answer(*args: Any) -> Any:
        time.sleep(0.002)  # 2 s for all: the C-CANCEL arrives well before the last
        return answer_of(*args)

    monkeypatch.setattr(pacs.query, "answer_of", slow_answer)
    keys = {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "X*", "PatientName": ""}
    answers, printed = archive.findscu("-S", keys, extra=("--cancel", "1"))
    assert 1 <= len(answers) < 1000
    assert "Cancel" in printed


@pytest.mark.parametrize(("syntax", "path"), [
    (ImplicitVRLittleEndian, "streamed"),
    (ExplicitVRLittleEndian, "streamed"),
    (ExplicitVRBigEndian, f"through pydicom ({ExplicitVRBigEndian})"),
    (DeflatedExplicitVRLittleEndian, f"through pydicom ({DeflatedExplicitVRLittleEndian})"),
])  # fmt: skip
def test_every_uncompressed_transfer_syntax(
    archive: Archive, syntax: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Little endian answers are streamed as bytes; big endian and deflated ones go through
    pydicom: the same answers either way."""
    identifier = _identifier(QueryRetrieveLevel="STUDY", PatientID="P1", PatientName="",
                             ModalitiesInStudy="", NumberOfStudyRelatedInstances="")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pacs.find_scp"):
        responses = _pynetdicom_find(archive, StudyRootQueryRetrieveInformationModelFind,
                                     identifier, syntax)  # fmt: skip
    assert [code for code, _status, _ds in responses] == [0xFF00, 0x0000]
    study = responses[0][2]
    assert str(study.PatientName) == PENA and list(study.ModalitiesInStudy) == ["CT", "SR"]
    assert study.NumberOfStudyRelatedInstances == 4
    assert any(path in record.getMessage() for record in caplog.records)


def _relational_find(
    archive: Archive, sop_class: str, identifier: Dataset, proposed: bytes = b"\x01"
) -> tuple[bytes, list]:
    """C-FIND on an association whose requestor proposed ``proposed`` in the SOP Class
    Extended Negotiation (PS3.4 C.5.1.1); Placa's answer and the responses."""
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

    ae = AE(ae_title="RELATIONAL")
    ae.add_requested_context(sop_class)
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = sop_class
    item.service_class_application_information = proposed
    assoc = ae.associate("127.0.0.1", archive.door.address[1], ae_title="PLACA",
                         ext_neg=[item])  # fmt: skip
    assert assoc.is_established
    try:
        answered = assoc.acceptor.sop_class_extended.get(sop_class, b"")
        responses = [(status.Status, ds) for status, ds in assoc.send_c_find(identifier, sop_class)]
        return bytes(answered), responses
    finally:
        assoc.release()


def test_relational_queries_when_negotiated(archive: Archive) -> None:
    """Series of every study by modality, images of a patient by name: no unique key of the
    levels above, once the requestor asked for relational queries (PS3.4 C.4.1.2.2)."""
    series = _identifier(QueryRetrieveLevel="SERIES", Modality="CT", SeriesInstanceUID="",
                         StudyInstanceUID="")  # fmt: skip
    answered, responses = _relational_find(archive, StudyRootQueryRetrieveInformationModelFind,
                                           series, proposed=b"\x01\x01\x01\x01")  # fmt: skip
    assert answered == b"\x01\x01\x01\x00"  # relational, combined date-time, fuzzy names; no tz
    assert [code for code, _ds in responses][-1] == 0x0000
    found = sorted(str(ds.StudyInstanceUID) for code, ds in responses if code == 0xFF00)
    assert found == sorted([archive.uids["pena"], archive.uids["doe-old"]])
    images = _identifier(QueryRetrieveLevel="IMAGE", PatientName="peña*", SOPInstanceUID="",
                         Modality="")  # fmt: skip
    _, responses = _relational_find(archive, PatientRootQueryRetrieveInformationModelFind, images)
    modalities = sorted(str(ds.Modality) for code, ds in responses if code == 0xFF00)
    assert modalities == ["CT", "CT", "CT", "SR"]


def test_without_the_negotiation_queries_stay_hierarchical(archive: Archive) -> None:
    series = _identifier(QueryRetrieveLevel="SERIES", Modality="CT", SeriesInstanceUID="")
    answered, responses = _relational_find(archive, StudyRootQueryRetrieveInformationModelFind,
                                           series, proposed=b"\x00")  # fmt: skip
    assert answered == b"\x00"
    assert [code for code, _ds in responses] == [0xA900]
    plain = _pynetdicom_find(archive, StudyRootQueryRetrieveInformationModelFind, series)
    assert [code for code, _status, _ds in plain] == [0xA900]


def test_date_and_time_are_one_range_only_when_negotiated(archive: Archive) -> None:
    """PS3.4 C.2.2.2.5: without combined date-time matching negotiated (findscu proposes
    none) the date and the time are matched each on its own: 08:00-10:00 on any day from
    15 Nov to 1 Dec; with it, one range from 15 Nov 08:00 to 1 Dec 10:00."""
    keys = {"StudyDate": "20261115-20261201", "StudyTime": "0800-1000"}
    assert archive.names(keys) == ["DOE^JOHN|B4"]  # 1 Dec 09:00 only
    study = _identifier(QueryRetrieveLevel="STUDY", AccessionNumber="", **keys)
    answered, responses = _relational_find(archive, StudyRootQueryRetrieveInformationModelFind,
                                           study, proposed=b"\x00\x01")  # fmt: skip
    assert answered == b"\x00\x01"
    found = sorted(str(ds.AccessionNumber) for code, ds in responses if code == 0xFF00)
    assert found == ["A1", "A2", "B4"]  # 30 Nov 10:15 and 15 Nov 23:15 are inside too
