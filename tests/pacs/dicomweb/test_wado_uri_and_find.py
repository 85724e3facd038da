"""WADO-URI for older viewers (the file, or a JPEG by pacs.rendering; its errors), and a
study stored by STOW-RS found by DCMTK findscu at the DICOM door: one archive, two doors."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian

from tests.conftest import require_tool
from tests.pacs.dicom_data import make_dataset, new_uid
from tests.pacs.dicomweb.placa_server import Placa, start, with_meta


@pytest.fixture
def placa(tmp_path: Path, database_url: str) -> Iterator[Placa]:
    yield from start(tmp_path, database_url, dicom=True)


@pytest.fixture
def stored(placa: Placa) -> dict[str, str]:
    ds = with_meta(make_dataset(rows=32, WindowCenter="2048", WindowWidth="4096"))
    placa.client("technologist").store_instances([ds])
    return {"studyUID": str(ds.StudyInstanceUID), "seriesUID": str(ds.SeriesInstanceUID),
            "objectUID": str(ds.SOPInstanceUID)}  # fmt: skip


def wado(placa: Placa, **params: str):  # noqa: ANN201
    return placa.session("radiologist").get(f"{placa.base}/wado",
                                            params={"requestType": "WADO", **params})  # fmt: skip


def test_wado_uri_answers_the_file(placa: Placa, stored: dict[str, str], tmp_path: Path) -> None:
    response = wado(placa, **stored, contentType="application/dicom")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/dicom"
    (tmp_path / "got.dcm").write_bytes(response.content)
    assert str(dcmread(tmp_path / "got.dcm").SOPInstanceUID) == stored["objectUID"]
    converted = wado(placa, **stored, contentType="application/dicom",
                     transferSyntax=ImplicitVRLittleEndian)  # fmt: skip
    (tmp_path / "implicit.dcm").write_bytes(converted.content)
    assert dcmread(tmp_path / "implicit.dcm").file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    refused = wado(placa, **stored, contentType="application/dicom",
                   transferSyntax="1.2.840.10008.1.2.4.50")  # fmt: skip
    assert refused.status_code == 406


def test_wado_uri_renders_jpeg_by_default(placa: Placa, stored: dict[str, str]) -> None:
    response = wado(placa, **stored)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert Image.open(BytesIO(response.content)).size == (32, 32)
    smaller = wado(placa, **stored, contentType="image/png", rows="16", columns="16")
    assert Image.open(BytesIO(smaller.content)).format == "PNG"
    assert Image.open(BytesIO(smaller.content)).size == (16, 16)


def test_wado_uri_errors(placa: Placa, stored: dict[str, str]) -> None:
    assert wado(placa, **{**stored, "objectUID": new_uid()}).status_code == 404
    missing = wado(placa, studyUID=stored["studyUID"], seriesUID=stored["seriesUID"])
    assert missing.status_code == 400 and "objectUID" in missing.json()["error"]
    assert wado(placa, **stored, contentType="text/html").status_code == 406
    assert wado(placa, **stored, windowCenter="40").status_code == 400
    not_wado = placa.session("radiologist").get(f"{placa.base}/wado", params={**stored,
                                                "requestType": "RSS"})  # fmt: skip
    assert not_wado.status_code == 400
    assert placa.session("referrer").get(f"{placa.base}/wado", params=stored).status_code == 403


def test_a_study_stored_by_stow_rs_is_found_by_findscu(placa: Placa, tmp_path: Path) -> None:
    study = new_uid()
    datasets = [with_meta(make_dataset(study=study, series=new_uid(), number=n,
                                       name="STOW^PATIENT", patient_id="STOW01",
                                       accession="STOW0001")) for n in (1, 2)]  # fmt: skip
    answer = placa.client("technologist").store_instances(datasets)
    assert len(answer.ReferencedSOPSequence) == 2
    assert placa.dicom is not None
    host, port = placa.dicom.address
    out = tmp_path / "answers"
    out.mkdir()
    done = subprocess.run(
        [require_tool("findscu"), "-S", "-aec", "PLACA", "-k", "QueryRetrieveLevel=STUDY",
         "-k", "AccessionNumber=STOW0001", "-k", "StudyInstanceUID", "-k", "PatientName",
         "-k", "NumberOfStudyRelatedInstances", "-k", "NumberOfStudyRelatedSeries",
         "-X", "-od", str(out), host, str(port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [found] = [dcmread(path) for path in sorted(out.iterdir())]
    assert found.StudyInstanceUID == study and str(found.PatientName) == "STOW^PATIENT"
    assert int(found.NumberOfStudyRelatedInstances) == 2
    assert int(found.NumberOfStudyRelatedSeries) == 2
