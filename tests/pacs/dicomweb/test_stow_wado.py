"""STOW-RS and WADO-RS with a real client (dicomweb-client) against the web door, on both
backends: several instances stored (the index has them, the answer lists them), failures
with their reasons and statuses, retrieval of study/series/instance byte-identical to what
storescu sent, transfer syntax negotiation, metadata as Annex F JSON, frames and bulk data."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from sqlalchemy import func, select

from pacs.models import Instance, Study
from ris.db import transaction
from ris.models import AuditEvent
from tests.conftest import require_tool
from tests.pacs.dicom_data import dataset_part, make_dataset, new_uid
from tests.pacs.dicomweb.placa_server import (
    ORIGIN,
    Placa,
    multipart_body,
    multipart_parts,
    part10,
    start,
    with_meta,
)

DICOM_PART = 'multipart/related; type="application/dicom"'


@pytest.fixture
def placa(tmp_path: Path, database_url: str) -> Iterator[Placa]:
    yield from start(tmp_path, database_url)


@pytest.fixture
def placa_dicom(tmp_path: Path, database_url: str) -> Iterator[Placa]:
    """Placa with its DICOM door too (storescu, findscu)."""
    yield from start(tmp_path, database_url, dicom=True)


def study_of(count: int, study: str | None = None, **fields: object) -> list:
    study, series = study or new_uid(), new_uid()
    return [
        with_meta(make_dataset(study=study, series=series, number=n, **fields))
        for n in range(1, count + 1)
    ]


def indexed(placa: Placa, study: str) -> int:
    with transaction(placa.app) as db:
        return (
            db.scalar(
                select(Study.number_of_study_related_instances).where(
                    Study.study_instance_uid == study
                )
            )
            or 0
        )


def test_stow_of_several_instances_indexes_them(placa: Placa) -> None:
    datasets = study_of(5)
    study = str(datasets[0].StudyInstanceUID)
    answer = placa.client("technologist").store_instances(datasets)
    referenced = answer.ReferencedSOPSequence
    assert {str(item.ReferencedSOPInstanceUID) for item in referenced} == {
        str(ds.SOPInstanceUID) for ds in datasets
    }
    # (dicomweb-client sends Host without the port, so the URLs have none either)
    assert all(f"/dicomweb/studies/{study}/series/" in item.RetrieveURL for item in referenced)
    assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{study}")
    assert "FailedSOPSequence" not in answer or not answer.FailedSOPSequence
    assert indexed(placa, study) == 5
    with transaction(placa.app) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "dicomweb.store")).one()
        assert event.object_id == study and event.actor.startswith("technologist")


def test_stow_to_a_study_url_refuses_instances_of_another_study(
    placa: Placa, tmp_path: Path
) -> None:
    study = new_uid()
    good = study_of(2, study)
    stranger = study_of(1)[0]
    body, content_type = multipart_body(
        [part10(ds, tmp_path).read_bytes() for ds in [*good, stranger]]
    )
    session = placa.session("technologist")
    response = session.post(
        f"{placa.base}/studies/{study}",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
    )
    assert response.status_code == 202
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    answer = response.json()
    failed = answer["00081198"]["Value"]
    assert [item["00081155"]["Value"][0] for item in failed] == [str(stranger.SOPInstanceUID)]
    assert failed[0]["00081197"] == {"vr": "US", "Value": [0xA900]}
    assert len(answer["00081199"]["Value"]) == 2
    assert indexed(placa, study) == 2 and indexed(placa, str(stranger.StudyInstanceUID)) == 0


def test_stow_where_everything_fails_is_409_and_stores_nothing(placa: Placa) -> None:
    body, content_type = multipart_body([b"not dicom at all" * 20, b"\x00" * 200])
    response = placa.session("admin").post(
        f"{placa.base}/studies", data=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"][0] for item in failed] == [0xC000, 0xC000]
    with transaction(placa.app) as db:
        assert db.scalar(select(func.count()).select_from(Instance)) == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        'multipart/related; type="application/dicom+json"; boundary=x',
        "application/json",
    ],
)
def test_stow_of_another_media_type_is_415(placa: Placa, content_type: str) -> None:
    response = placa.session("technologist").post(
        f"{placa.base}/studies", data=b"--x--\r\n", headers={"Content-Type": content_type}
    )
    assert response.status_code == 415 and "application/dicom" in response.json()["error"]


def test_stow_of_a_truncated_body_is_400(placa: Placa, tmp_path: Path) -> None:
    body, content_type = multipart_body([part10(study_of(1)[0], tmp_path).read_bytes()])
    response = placa.session("technologist").post(
        f"{placa.base}/studies", data=body[:-40], headers={"Content-Type": content_type}
    )
    assert response.status_code == 400


def test_stow_is_not_for_readers(placa: Placa) -> None:
    body, content_type = multipart_body([b"x"])
    response = placa.session("radiologist").post(
        f"{placa.base}/studies", data=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 403


def storescu(placa: Placa, files: list[Path], *options: str) -> None:
    assert placa.dicom is not None
    host, port = placa.dicom.address
    command = [
        require_tool("storescu"),
        "-aec",
        "PLACA",
        *options,
        host,
        str(port),
        *map(str, files),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_what_storescu_sent_comes_back_byte_identical(placa_dicom: Placa, tmp_path: Path) -> None:
    placa = placa_dicom
    datasets = study_of(3)
    study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    files = [part10(ds, tmp_path / "sent", ImplicitVRLittleEndian) for ds in datasets]
    storescu(placa, files, "-xi")
    sent = {
        str(ds.SOPInstanceUID): dataset_part(path) for ds, path in zip(datasets, files, strict=True)
    }
    session = placa.session("radiologist", bearer=True)
    for url in (f"/studies/{study}", f"/studies/{study}/series/{series}"):
        response = session.get(
            placa.base + url, headers={"Accept": f"{DICOM_PART}; transfer-syntax=*"}
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith(DICOM_PART)
        parts = multipart_parts(response)
        assert [kind for kind, _ in parts] == [
            f"application/dicom; transfer-syntax={ImplicitVRLittleEndian}"
        ] * 3
        got = {}
        for number, (_kind, data) in enumerate(parts):
            path = tmp_path / f"got{number}.dcm"
            path.write_bytes(data)
            got[str(dcmread(path).SOPInstanceUID)] = dataset_part(path)
        assert got == sent  # the dataset exactly as sent, under a file meta Placa wrote
    # dicomweb-client reads them too; one audit event per request, not per instance
    client = placa.client("radiologist")
    assert {str(ds.SOPInstanceUID) for ds in client.retrieve_study(study)} == set(sent)
    with transaction(placa.app) as db:
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.action == "dicomweb.retrieve")
        ).all()
    assert len(events) == 3 and {e.object_id for e in events} == {study}


def test_a_stored_syntax_is_converted_only_between_uncompressed_ones(
    placa: Placa, tmp_path: Path
) -> None:
    ds = study_of(1)[0]
    placa.client("technologist").store_instances([ds])
    url = (f"{placa.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
    session = placa.session("technologist")
    implicit = session.get(
        url, headers={"Accept": f"{DICOM_PART}; transfer-syntax={ImplicitVRLittleEndian}"}
    )
    assert implicit.status_code == 200
    ((kind, data),) = multipart_parts(implicit)
    assert kind.endswith(ImplicitVRLittleEndian)
    (tmp_path / "i.dcm").write_bytes(data)
    converted = dcmread(tmp_path / "i.dcm")
    assert converted.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert converted.PixelData == ds.PixelData and converted.PatientName == ds.PatientName
    refused = session.get(url, headers={"Accept": f"{DICOM_PART}; transfer-syntax={RLELossless}"})
    assert refused.status_code == 406 and "error" in refused.json()
    assert session.get(url, headers={"Accept": "image/png"}).status_code == 406
    single = session.get(url, headers={"Accept": "application/dicom"})
    assert single.status_code == 200 and single.headers["Content-Type"].startswith(
        "application/dicom"
    )
    (tmp_path / "s.dcm").write_bytes(single.content)
    assert dcmread(tmp_path / "s.dcm").SOPInstanceUID == ds.SOPInstanceUID


def test_unknown_uids_are_404_and_bad_ones_400(placa: Placa) -> None:
    ds = study_of(1)[0]
    placa.client("technologist").store_instances([ds])
    session = placa.session("radiologist")
    for url in (
        f"/studies/{new_uid()}",
        f"/studies/{ds.StudyInstanceUID}/series/{new_uid()}",
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{new_uid()}/metadata",
    ):
        response = session.get(placa.base + url)
        assert response.status_code == 404 and response.json()["status"] == 404
    response = session.get(placa.base + "/studies/1.2.abc")
    assert response.status_code == 400 and "UID" in response.json()["error"]


def test_metadata_is_annex_f_json_with_bulk_data_uris(placa: Placa) -> None:
    datasets = study_of(
        2,
        PatientName="Yamada^Tarou=山田^太郎",
        SpecificCharacterSet=["", "ISO 2022 IR 87"],
        SliceThickness="1.50",
        PixelSpacing=["0.5", "0.5"],
        ImageComments="",
    )
    client = placa.client("technologist")
    client.store_instances(datasets)
    study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    metadata = client.retrieve_series_metadata(study, series)
    assert len(metadata) == 2
    first = metadata[0]
    assert all(
        len(key) == 8 and key == key.upper() and "vr" in value for key, value in first.items()
    )
    assert first["00100010"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
    }
    assert first["00180050"] == {"vr": "DS", "Value": [1.5]}
    assert first["00280030"] == {"vr": "DS", "Value": [0.5, 0.5]}
    assert first["00200013"]["vr"] == "IS" and first["00200013"]["Value"][0] in (1, 2)
    assert first["00204000"] == {"vr": "LT"}  # empty: no Value
    assert first["00280010"] == {"vr": "US", "Value": [16]}
    pixel = first["7FE00010"]
    assert pixel["vr"] == "OW" and "Value" not in pixel and "InlineBinary" not in pixel
    # dicomweb-client sends Host without the port, so the URI has none; fetch it at the door
    uri = pixel["BulkDataURI"]
    assert uri.startswith(f"http://127.0.0.1/dicomweb/studies/{study}/series/{series}/instances/")
    uri = uri.replace("http://127.0.0.1/dicomweb", placa.base)
    sop = first["00080018"]["Value"][0]
    by_sop = {str(ds.SOPInstanceUID): ds for ds in datasets}
    [bulk] = client.retrieve_bulkdata(uri)
    assert bulk == by_sop[sop].PixelData
    study_metadata = placa.session("radiologist").get(f"{placa.base}/studies/{study}/metadata")
    assert study_metadata.headers["Content-Type"].startswith("application/dicom+json")
    assert len(study_metadata.json()) == 2
    refused = placa.session("radiologist").get(
        f"{placa.base}/studies/{study}/metadata", headers={"Accept": "application/dicom+xml"}
    )
    assert refused.status_code == 406


def test_frames_of_native_and_compressed_instances(placa_dicom: Placa, tmp_path: Path) -> None:
    placa = placa_dicom
    frames = [bytes([n]) * (16 * 16 * 2) for n in (1, 2, 3)]
    ds = with_meta(make_dataset(NumberOfFrames=3, PixelData=b"".join(frames)))
    client = placa.client("technologist")
    client.store_instances([ds])
    uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    assert client.retrieve_instance_frames(*uids, frame_numbers=[3, 1]) == [frames[2], frames[0]]
    session = placa.session("radiologist")
    base = f"{placa.base}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    assert session.get(base + "/frames/4").status_code == 404
    assert session.get(base + "/frames/0").status_code == 400
    assert session.get(base + "/frames/a,b").status_code == 400
    # an RLE-compressed instance, made by DCMTK: its frames as stored, or decoded
    source = part10(make_dataset(), tmp_path)
    rle = tmp_path / "rle.dcm"
    subprocess.run(
        [require_tool("dcmcrle"), str(source), str(rle)], check=True, capture_output=True
    )
    compressed = dcmread(rle)
    storescu(placa, [rle], "-xr")
    base = (
        f"{placa.base}/studies/{compressed.StudyInstanceUID}/series/"
        f"{compressed.SeriesInstanceUID}/instances/{compressed.SOPInstanceUID}"
    )
    as_stored = session.get(
        base + "/frames/1", headers={"Accept": 'multipart/related; type="image/x-dicom-rle"'}
    )
    assert as_stored.status_code == 200
    ((kind, data),) = multipart_parts(as_stored)
    assert kind == f"image/x-dicom-rle; transfer-syntax={RLELossless}"
    from pydicom.encaps import generate_frames

    assert data == next(generate_frames(compressed.PixelData, number_of_frames=1))
    decoded = session.get(
        base + "/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'}
    )
    ((kind, data),) = multipart_parts(decoded)
    assert kind == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    assert data == dcmread(source).PixelData
    assert (
        session.get(
            base + "/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'}
        ).status_code
        == 406
    )
    # its metadata names the encapsulated pixel data by URI; the URI answers its frames
    [item] = session.get(base + "/metadata").json()
    assert item["7FE00010"]["vr"] == "OB" and "BulkDataURI" in item["7FE00010"]
    bulk = session.get(base + "/bulkdata/7FE00010")
    ((kind, data),) = multipart_parts(bulk)
    assert kind.startswith("image/x-dicom-rle")
    assert data == next(generate_frames(compressed.PixelData, number_of_frames=1))


def test_retrieval_needs_an_image_reading_role(placa: Placa) -> None:
    ds = study_of(1)[0]
    placa.client("technologist").store_instances([ds])
    for role, status in (("referrer", 403), ("billing", 403), ("front_desk", 200), ("admin", 200)):
        response = placa.session(role).get(f"{placa.base}/studies/{ds.StudyInstanceUID}/metadata")
        assert response.status_code == status, role
    assert requests.get(f"{placa.base}/studies/{ds.StudyInstanceUID}").status_code == 401


def test_requests_as_ohif_sends_them(placa: Placa) -> None:
    """OHIF (omitQuotationForMultipartRequest) leaves the type parameter unquoted and asks
    for frames in any transfer syntax, from its own origin."""
    ds = study_of(1)[0]
    placa.client("technologist").store_instances([ds])
    session = placa.session("radiologist", bearer=True)
    session.headers["Origin"] = ORIGIN
    base = (f"{placa.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    frames = session.get(base + "/frames/1", headers={"Accept": accept})
    assert frames.status_code == 200
    assert frames.headers["Access-Control-Allow-Origin"] == ORIGIN
    ((kind, data),) = multipart_parts(frames)
    assert kind.startswith("application/octet-stream") and data == ds.PixelData
    metadata = session.get(f"{placa.base}/studies/{ds.StudyInstanceUID}/series/"
                           f"{ds.SeriesInstanceUID}/metadata",
                           headers={"Accept": "application/json"})  # fmt: skip
    assert metadata.status_code == 200 and metadata.json()[0]["7FE00010"]["BulkDataURI"]


def test_a_large_binary_value_is_bulk_data_too(placa: Placa) -> None:
    ds = study_of(1)[0]
    ds.add_new(0x00090010, "LO", "PLACA TEST")
    ds.add_new(0x00091010, "OB", b"\x07" * 3000)
    placa.client("technologist").store_instances([ds])
    session = placa.session("radiologist")
    url = (f"{placa.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
    [item] = session.get(url + "/metadata").json()
    uri = item["00091010"]["BulkDataURI"]
    assert uri.endswith("/bulkdata/00091010") and item["00090010"]["Value"] == ["PLACA TEST"]
    ((kind, data),) = multipart_parts(session.get(uri))
    assert kind == "application/octet-stream" and data == b"\x07" * 3000
    assert session.get(url + "/bulkdata/00091011").status_code == 404
    assert session.get(url + "/bulkdata/0009").status_code == 404
    assert session.get(url + "/bulkdata/00091010/0").status_code == 400


def test_a_deflated_instance_is_read_whole_and_converted(
    placa_dicom: Placa, tmp_path: Path
) -> None:
    placa = placa_dicom
    frames = [bytes([n]) * (16 * 16 * 2) for n in (4, 5)]
    ds = make_dataset(NumberOfFrames=2, PixelData=b"".join(frames), ImageComments="x" * 2000)
    sent = part10(ds, tmp_path, DeflatedExplicitVRLittleEndian)
    storescu(placa, [sent], "-xd")
    with transaction(placa.app) as db:
        stored = db.scalar(select(Instance.transfer_syntax_uid))
    assert stored == DeflatedExplicitVRLittleEndian
    session = placa.session("radiologist")
    base = (f"{placa.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
    [item] = session.get(base + "/metadata").json()
    assert item["00204000"] == {"vr": "LT", "Value": ["x" * 2000]}
    ((_kind, data),) = multipart_parts(session.get(base + "/frames/2"))
    assert data == frames[1]
    accept = f"{DICOM_PART}; transfer-syntax={ExplicitVRLittleEndian}"
    ((kind, data),) = multipart_parts(session.get(base, headers={"Accept": accept}))
    assert kind.endswith(ExplicitVRLittleEndian)
    (tmp_path / "inflated.dcm").write_bytes(data)
    assert dcmread(tmp_path / "inflated.dcm").PixelData == b"".join(frames)
