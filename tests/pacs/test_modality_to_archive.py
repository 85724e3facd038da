"""The scheduled workflow end to end over DICOM: a (simulated) modality takes its worklist
item, sends MPPS and its images to Placa's own door, and the archive links the study to the
exam (IHE RAD-8 with the RIS's pre-assigned Study Instance UID and accession number)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from pacs import reconciliation
from pacs.models import ArchivePatient, Series, Study
from ris.db import transaction
from ris.dicom_door import DicomDoor
from ris.models import ExamStatus, RequestedProcedure
from tests.conftest import build_app, free_port
from tests.factories import FrontDesk, at, next_weekday


@pytest.fixture
def department(tmp_path: Path, database_url: str) -> Iterator[tuple[Flask, DicomDoor, int]]:
    app = build_app(tmp_path, database_url, DICOM_HOST="127.0.0.1", DICOM_PORT=free_port(),
                    TIMEZONE="Europe/Madrid")  # fmt: skip
    desk = FrontDesk(app)
    with transaction(app) as db:
        room = desk.room(db, "CT1", "CT")
        code = desk.code(db, "74177", "CT", minutes=20)
        patient = desk.patient(db, "Peña", "José")
        exam_id = desk.booked(db, room, code, at(next_weekday(), 10), patient=patient).id
    door = DicomDoor(app)
    yield app, door, exam_id
    door.stop()
    app.extensions["placa.engine"].dispose()


def test_images_from_the_modality_arrive_linked_to_their_exam(department) -> None:  # noqa: ANN001
    app, door, exam_id = department
    host, port = door.address
    with transaction(app) as db:
        day = (
            db.get(RequestedProcedure, exam_id)
            .steps[0]
            .start_at.astimezone(ZoneInfo("Europe/Madrid"))
            .date()
        )
    result = app.test_cli_runner().invoke(args=[
        "simulate-modality", "--ae", "CT1_AE", "--host", host, "--port", str(port),
        "--date", day.isoformat(), "--series", "2", "--images", "3",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    with transaction(app) as db:
        exam = db.get(RequestedProcedure, exam_id)
        study = db.scalar(select(Study))
        assert study.study_instance_uid == exam.study_instance_uid
        assert study.accession_number == exam.accession_number
        assert (study.procedure_id, study.ris_patient_id) == (exam.id, exam.order.patient_id)
        assert study.number_of_study_related_series == 2
        assert study.number_of_study_related_instances == 6
        assert study.modalities_in_study == "CT"
        assert sorted(db.scalars(select(Series.number_of_series_related_instances))) == [3, 3]
        patient = db.scalar(select(ArchivePatient))
        assert patient.patient_id == exam.order.patient.mrn
        assert patient.patient_name_key == "pena^jose"
        assert reconciliation.images_received_at(db, exam) is not None
        assert reconciliation.unmatched_studies(db) == []
        assert exam.status is ExamStatus.COMPLETED  # MPPS, through the status ladder
