"""The modality emulator: the datasets it builds (unit level), then the whole flow against the
DICOM door, with images sent to a DCMTK storescp, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import io
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.dataset import Dataset, validate_file_meta
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, ModalityPerformedProcedureStep, Verification
from sqlalchemy import select

from ris.db import transaction
from ris.dicom_door import DicomDoor
from ris.models import ExamStatus, ProcedureCode, RequestedProcedure, Room, StatusChange
from tests.conftest import build_app, free_port, require_tool
from tests.factories import FrontDesk, at, next_weekday
from worklist.simulate import (
    Peer,
    Settings,
    SimulationError,
    associated,
    choose_steps,
    parse_peer,
    performed_step,
    series_plans,
    worklist_query,
)
from worklist.simulate_images import image_dataset
from worklist.simulate_mpps import (
    StoredSeries,
    discontinuation_reason,
    mpps_final,
    mpps_in_progress,
)

ZONE = ZoneInfo("Europe/Madrid")
PLACA = Peer("PLACA", "127.0.0.1", 11112)
ROOT = "1.2.826.0.1.3680043.10.543"


def worklist_item(modality: str = "CT", accession: str = "2026000042", start: str = "0900"
                  ) -> Dataset:  # fmt: skip
    """A worklist answer as an MWL SCP sends it, in Latin-1 (decoded as the emulator does)."""
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 100"
    item.PatientName, item.PatientID, item.IssuerOfPatientID = "Peña^José", "PL0000042", "PLACA"
    item.PatientBirthDate, item.PatientSex = "19700101", "M"
    item.AccessionNumber, item.RequestedProcedureID = accession, "RP00000042"
    item.StudyInstanceUID = "2.25.302603934405128049582049876349027331"
    item.RequestedProcedureDescription = "Abdomen y pelvis con contraste"
    item.ReferringPhysicianName = "Wilson^James"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "74177", "CPT", "CT abd/pel"
    item.RequestedProcedureCodeSequence = [code]
    step = Dataset()
    step.Modality, step.ScheduledStationAETitle, step.ScheduledStationName = modality, "CT1", "CT1"
    step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime = "20261201", start
    step.ScheduledProcedureStepID = "SPS00000042"
    step.ScheduledProcedureStepDescription = "Abdomen y pelvis con contraste"
    item.ScheduledProcedureStepSequence = [step]
    buffer = io.BytesIO()
    item.save_as(buffer, implicit_vr=False, little_endian=True)
    received = dcmread(io.BytesIO(buffer.getvalue()), force=True)
    received.decode()
    return received


def settings(**extra: object) -> Settings:
    values: dict = {"station_ae_title": "CT1", "placa": PLACA, "store_to": PLACA,
                    "day": date(2026, 12, 1), "zone": ZONE, "uid_root": ROOT, **extra}  # fmt: skip
    return Settings(**values)


def round_trip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


COMMON_REQUIRED = (
    "SOPClassUID", "SOPInstanceUID", "SpecificCharacterSet", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "Modality", "SeriesInstanceUID",
    "SeriesNumber", "Manufacturer", "InstanceNumber", "SamplesPerPixel",
    "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PixelData",
)  # fmt: skip
IOD_REQUIRED = {
    "CT": ("CT Image Storage", ("ImageType", "RescaleIntercept", "RescaleSlope", "KVP",
                                "AcquisitionNumber", "FrameOfReferenceUID", "PixelSpacing",
                                "ImageOrientationPatient", "ImagePositionPatient",
                                "SliceThickness", "PatientPosition", "PositionReferenceIndicator")),
    "MR": ("MR Image Storage", ("ImageType", "ScanningSequence", "SequenceVariant", "ScanOptions",
                                "MRAcquisitionType", "RepetitionTime", "EchoTime",
                                "EchoTrainLength", "FrameOfReferenceUID", "PixelSpacing",
                                "ImageOrientationPatient", "ImagePositionPatient",
                                "PatientPosition")),
    "US": ("Ultrasound Image Storage", ("ImageType", "PatientOrientation")),
    "CR": ("Computed Radiography Image Storage", ("BodyPartExamined", "ViewPosition")),
    "DX": ("Digital X-Ray Image Storage - For Presentation",
           ("ImageType", "PresentationIntentType", "PixelIntensityRelationship",
            "PixelIntensityRelationshipSign", "RescaleIntercept", "RescaleSlope", "RescaleType",
            "PresentationLUTShape", "LossyImageCompression", "BurnedInAnnotation",
            "ImageLaterality", "ImagerPixelSpacing", "DetectorType", "PatientOrientation",
            "AnatomicRegionSequence", "AcquisitionContextSequence")),
    "NM": ("Secondary Capture Image Storage", ("ConversionType", "PatientOrientation")),
}  # fmt: skip


@pytest.mark.parametrize("modality", sorted(IOD_REQUIRED))
def test_images_are_valid_and_carry_the_worklist_data(modality: str) -> None:
    item = worklist_item(modality)
    step = performed_step(settings(), item, modality)
    plan = series_plans(settings(), modality)[0]
    sent = [image_dataset(item, step, plan, n, f"{ROOT}.9.{n}", datetime.now(ZONE))
            for n in (1, 2)]  # fmt: skip
    sop_class, required = IOD_REQUIRED[modality]
    for number, original in enumerate(sent, 1):
        image = round_trip(original)
        validate_file_meta(image.file_meta)
        assert image.file_meta.MediaStorageSOPInstanceUID == image.SOPInstanceUID
        assert image.SOPClassUID.name == sop_class
        missing = [kw for kw in (*COMMON_REQUIRED, *required) if kw not in image]
        assert missing == []
        assert str(image.PatientName) == "Peña^José" and image.PatientID == "PL0000042"
        assert (image.PatientBirthDate, image.PatientSex) == ("19700101", "M")
        assert image.AccessionNumber == "2026000042"
        assert image.StudyInstanceUID == item.StudyInstanceUID
        assert image.Modality == modality and image.InstanceNumber == number
        request = image.RequestAttributesSequence[0]
        assert (request.RequestedProcedureID, request.ScheduledProcedureStepID) == (
            "RP00000042", "SPS00000042"
        )  # fmt: skip
        reference = image.ReferencedPerformedProcedureStepSequence[0]
        assert reference.ReferencedSOPClassUID == ModalityPerformedProcedureStep
        assert reference.ReferencedSOPInstanceUID == step.mpps_uid
        assert image.SeriesInstanceUID == plan.uid and UID(image.SOPInstanceUID).is_valid
        frame_bytes = image.Rows * image.Columns * image.BitsAllocated // 8
        assert len(image.PixelData) == frame_bytes
    assert sent[0].PixelData != sent[1].PixelData  # slices differ


def test_new_uids_use_the_organisation_root() -> None:
    step = performed_step(settings(), worklist_item(), "CT")
    plans = series_plans(settings(series=3, images=4), "CT")
    assert [plan.images for plan in plans] == [4, 4, 4]
    uids = [step.mpps_uid, *(plan.uid for plan in plans)]
    assert all(str(uid).startswith(f"{ROOT}.") and UID(str(uid)).is_valid for uid in uids)
    assert len(set(uids)) == 4
    without_root = series_plans(settings(uid_root=""), "MR")
    assert len(without_root) == 2 and without_root[0].uid.startswith("2.25.")  # pydicom's


def test_worklist_query_asks_for_the_station_day_and_modality() -> None:
    query = worklist_query("CT1", date(2026, 12, 1), "CT")
    step = query.ScheduledProcedureStepSequence[0]
    assert (step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate, step.Modality) == (
        "CT1", "20261201", "CT"
    )  # fmt: skip
    assert query["PatientName"].is_empty and query["PregnancyStatus"].is_empty  # universal
    assert "ScheduledProcedureStepID" in step and "AccessionNumber" in query
    assert query.SpecificCharacterSet == "ISO_IR 192"


def test_mpps_in_progress_carries_the_scheduled_step_and_patient() -> None:
    item = worklist_item()
    step = performed_step(settings(), item, "CT")
    create = round_trip_plain(mpps_in_progress(item, step))
    scheduled = create.ScheduledStepAttributesSequence[0]
    assert scheduled.AccessionNumber == "2026000042"
    assert scheduled.RequestedProcedureID == "RP00000042"
    assert scheduled.ScheduledProcedureStepID == "SPS00000042"
    assert scheduled.StudyInstanceUID == item.StudyInstanceUID
    assert str(create.PatientName) == "Peña^José" and create.PatientID == "PL0000042"
    assert create.PerformedProcedureStepStatus == "IN PROGRESS"
    assert create.PerformedStationAETitle == "CT1" and create.Modality == "CT"
    assert create.PerformedSeriesSequence == [] and create["PerformedProcedureStepEndDate"].is_empty


def round_trip_plain(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True)
    return dcmread(io.BytesIO(buffer.getvalue()), force=True)


def test_mpps_completed_lists_every_series_and_image() -> None:
    item = worklist_item()
    step = performed_step(settings(), item, "CT")
    stored = [StoredSeries(plan) for plan in series_plans(settings(series=2, images=2), "CT")]
    for number, series in enumerate(stored):
        series.instances += [("1.2.840.10008.5.1.4.1.1.2", f"{ROOT}.{number}.{n}") for n in (1, 2)]
    final = mpps_final(item, step, stored, "ARCHIVE", datetime.now(ZONE))
    assert final.PerformedProcedureStepStatus == "COMPLETED"
    assert final.PerformedProcedureStepEndDate and final.PerformedProcedureStepEndTime
    assert [s.SeriesInstanceUID for s in final.PerformedSeriesSequence] == [
        s.plan.uid for s in stored
    ]
    first = final.PerformedSeriesSequence[0]
    assert first.RetrieveAETitle == "ARCHIVE" and first.ProtocolName
    assert [r.ReferencedSOPInstanceUID for r in first.ReferencedImageSequence] == [
        f"{ROOT}.0.1", f"{ROOT}.0.2"
    ]  # fmt: skip
    assert final.TotalNumberOfExposures == 4 and "DLP" in final.CommentsOnRadiationDose


def test_discontinued_carries_a_cid_9301_reason() -> None:
    item = worklist_item()
    step = performed_step(settings(), item, "CT")
    final = mpps_final(item, step, [], "ARCHIVE", datetime.now(ZONE), "patient refused")
    reason = final.PerformedProcedureStepDiscontinuationReasonCodeSequence[0]
    assert (reason.CodeValue, reason.CodingSchemeDesignator) == ("110505", "DCM")
    assert final.PerformedProcedureStepStatus == "DISCONTINUED"
    assert discontinuation_reason("110501")[0].CodeMeaning == "Equipment failure"
    code, comment = discontinuation_reason("the injector broke down")
    assert (code.CodeValue, comment) == ("110513", "the injector broke down")


def test_steps_are_chosen_by_start_time_or_accession() -> None:
    late, early = worklist_item(accession="A2", start="1400"), worklist_item(accession="A1")
    assert [i.AccessionNumber for i in choose_steps([late, early], settings())] == ["A1"]
    everything = choose_steps([late, early], settings(every_step=True))
    assert [i.AccessionNumber for i in everything] == ["A1", "A2"]
    assert choose_steps([late, early], settings(accession="A2"))[0].AccessionNumber == "A2"
    with pytest.raises(SimulationError, match="no worklist item for CT1 on 2026-12-01"):
        choose_steps([late], settings(accession="NOPE"))


def test_store_to_is_parsed_as_ae_at_host_and_port() -> None:
    assert parse_peer("ARCHIVE@pacs.example.org:104") == Peer("ARCHIVE", "pacs.example.org", 104)
    assert parse_peer("A@[::1]:11112") == Peer("A", "::1", 11112)
    for bad in ("ARCHIVE", "A@host", "@host:104", "A@host:0", "AN_AE_TITLE_TOO_LONG@h:104"):
        with pytest.raises(ValueError):
            parse_peer(bad)


# ------------------------------------------------------------------- against the DICOM door


@dataclass
class Department:
    app: Flask
    door: DicomDoor
    exam_id: int
    day: date
    accession: str
    study_uid: str
    mrn: str


@pytest.fixture
def department(tmp_path: Path, database_url: str) -> Iterator[Department]:
    app = build_app(tmp_path, database_url, DICOM_HOST="127.0.0.1", DICOM_PORT=free_port(),
                    TIMEZONE="Europe/Madrid", UID_ROOT=ROOT)  # fmt: skip
    desk = FrontDesk(app)
    day = next_weekday()
    with transaction(app) as db:
        room = desk.room(db, "CT1", "CT")
        code = desk.code(db, "74177", "CT", minutes=20)
        patient = desk.patient(db, "Peña", "José")
        exam = desk.booked(db, room, code, at(day, 10), patient=patient)
        facts = (exam.id, exam.accession_number, exam.study_instance_uid, patient.mrn)
    door = DicomDoor(app)
    yield Department(app, door, facts[0], day, *facts[1:])
    door.stop()
    app.extensions["placa.engine"].dispose()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[Peer, Path]]:
    """DCMTK's storescp in a temporary folder: the archive the images are sent to."""
    tool = require_tool("storescp")
    folder = tmp_path / "received"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [tool, "--output-directory", str(folder), "--aetitle", "STORESCP", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_port(port)
    yield Peer("STORESCP", "127.0.0.1", port), folder
    process.terminate()
    process.wait(timeout=10)


def _wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def simulate(dept: Department, *args: str):  # noqa: ANN201
    host, port = dept.door.address
    runner = dept.app.test_cli_runner()
    where = ["--host", host, "--port", str(port), "--date", dept.day.isoformat()]
    return runner.invoke(args=["simulate-modality", "--ae", "CT1_AE", *where, *args])


def exam_ladder(dept: Department) -> tuple[ExamStatus, list[ExamStatus]]:
    with transaction(dept.app) as db:
        exam = db.get(RequestedProcedure, dept.exam_id)
        assert exam is not None
        ladder = db.scalars(select(StatusChange.to_status)
                            .where(StatusChange.procedure_id == dept.exam_id)
                            .order_by(StatusChange.id))  # fmt: skip
        return exam.status, list(ladder)


def received(folder: Path) -> list[Dataset]:
    return [dcmread(path) for path in sorted(folder.iterdir())]


def test_a_modality_performs_the_step_end_to_end(department: Department, storescp) -> None:
    store, folder = storescp
    result = simulate(department, "--store-to", str(store), "--series", "2", "--images", "3")
    assert result.exit_code == 0, result.output
    images = received(folder)
    assert len(images) == 6
    for image in images:
        assert str(image.PatientName) == "Peña^José" and image.PatientID == department.mrn
        assert image.AccessionNumber == department.accession
        assert image.StudyInstanceUID == department.study_uid
        assert image.SOPClassUID.name == "CT Image Storage"
        assert image.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
    assert len({image.SeriesInstanceUID for image in images}) == 2
    status, ladder = exam_ladder(department)
    assert status is ExamStatus.COMPLETED
    assert ladder[-2:] == [ExamStatus.IN_PROGRESS, ExamStatus.COMPLETED]
    assert "COMPLETED" in result.output and "6 image(s)" in result.output


def test_discontinue_ends_the_exam_as_discontinued(department: Department, storescp) -> None:
    store, folder = storescp
    result = simulate(department, "--store-to", str(store), "--images", "1", "--series", "1",
                      "--discontinue", "patient refused")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(received(folder)) == 1
    assert exam_ladder(department) == (
        ExamStatus.DISCONTINUED, [ExamStatus.ORDERED, ExamStatus.SCHEDULED,
                                  ExamStatus.IN_PROGRESS, ExamStatus.DISCONTINUED],
    )  # fmt: skip


def test_without_mpps_only_images_are_sent(department: Department, storescp) -> None:
    store, folder = storescp
    result = simulate(department, "--store-to", str(store), "--images", "2", "--no-mpps")
    assert result.exit_code == 0, result.output
    images = received(folder)
    assert len(images) == 4 and "ReferencedPerformedProcedureStepSequence" not in images[0]
    assert exam_ladder(department)[0] is ExamStatus.SCHEDULED


def test_no_worklist_item_is_an_error(department: Department, storescp) -> None:
    store, _ = storescp
    result = simulate(department, "--store-to", str(store), "--accession", "NOT-BOOKED")
    assert result.exit_code != 0
    assert "no worklist item for CT1_AE" in result.output


def test_a_refused_association_is_an_error(department: Department) -> None:
    result = simulate(department, "--called-ae", "NOT_PLACA")
    assert result.exit_code != 0
    assert "rejected the Modality Worklist association" in result.output
    assert "called ae title not recognised" in result.output.lower()


# pynetdicom 3.0.4 leaks the socket of a refused TCP connection (transport.py: shutdown() of
# an unconnected socket raises, so close() is never reached); collected here, ignored.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_unreachable_archive_stops_before_mpps(department: Department) -> None:
    result = simulate(department, "--store-to", f"NOBODY@127.0.0.1:{free_port()}")
    gc.collect()
    assert result.exit_code != 0
    assert "could not connect to NOBODY@127.0.0.1" in result.output
    assert exam_ladder(department)[0] is ExamStatus.SCHEDULED  # nothing was started


@pytest.fixture
def failing_archive() -> Iterator[Peer]:
    """A storage SCP that takes the first image and refuses the next (Out of Resources)."""
    received: list[str] = []

    def handle_store(event: evt.Event) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000 if len(received) == 1 else 0xA700

    ae = AE(ae_title="FULL_ARCHIVE")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, handle_store)])  # fmt: skip
    yield Peer("FULL_ARCHIVE", "127.0.0.1", port)
    server.shutdown()


def test_a_refused_image_discontinues_the_step(department: Department, failing_archive) -> None:
    result = simulate(department, "--store-to", str(failing_archive), "--series", "1",
                      "--images", "3")  # fmt: skip
    assert result.exit_code != 0
    assert "C-STORE of image 2 of series 1 refused by FULL_ARCHIVE" in result.output
    assert "0xA700" in result.output and "DISCONTINUED (equipment failure)" in result.output
    assert exam_ladder(department)[0] is ExamStatus.DISCONTINUED


def test_all_performs_every_step_of_the_day(department: Department, storescp) -> None:
    store, folder = storescp
    desk = FrontDesk(department.app)
    with transaction(department.app) as db:
        room = db.scalars(select(Room).where(Room.code == "CT1")).one()
        code = db.scalars(select(ProcedureCode)).first()
        assert code is not None
        second = desk.booked(db, room, code, at(department.day, 11)).id
    result = simulate(department, "--store-to", str(store), "--all", "--series", "1",
                      "--images", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Done: 2 step(s), 2 image(s)." in result.output
    with transaction(department.app) as db:
        statuses = {
            db.get(RequestedProcedure, exam).status for exam in (department.exam_id, second)
        }
    assert statuses == {ExamStatus.COMPLETED}
    assert len({image.AccessionNumber for image in received(folder)}) == 2


def test_a_peer_without_the_service_is_an_error() -> None:
    echo_only = AE(ae_title="ECHO_ONLY")
    echo_only.add_supported_context(Verification)
    port = free_port()
    server = echo_only.start_server(("127.0.0.1", port), block=False)
    try:
        with pytest.raises(SimulationError, match="accepted the association but not CT Image "
                           "Storage: it offers no storage service"):  # fmt: skip
            with associated("CT1", Peer("ECHO_ONLY", "127.0.0.1", port), [CTImageStorage],
                            "storage"):  # fmt: skip
                pass
    finally:
        server.shutdown()
