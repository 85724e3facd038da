"""C-MOVE and C-GET SCP (IHE RAD-16) against real peers, on both backends.

Instances are stored through the real store path (:func:`pacs.ingest.ingest`); DCMTK
`movescu` moves them into a DCMTK `storescp` the test starts (a registered remote AE),
DCMTK `getscu` gets them; every received file's dataset is byte-compared with what was
stored. pynetdicom, as C-MOVE and C-GET SCU, checks the Pending sub-operation counts.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

from pacs import remote_aes
from pacs.ingest import ingest
from pacs.models import Instance
from pacs.storage import Received, archive_root, read_part10
from ris.audit import Actor
from ris.db import transaction
from ris.dicom_door import DicomDoor, set_nodelay
from ris.models import AuditEvent
from tests.conftest import build_app, free_port, require_tool
from tests.pacs.dicom_data import (
    dataset_part,
    encode,
    make_dataset,
    new_uid,
    received,
    write_part10,
)

DESTINATION = "DEST"


@dataclass
class Archive:
    """The running DICOM door and what it holds: dataset bytes by SOP Instance UID."""

    door: DicomDoor
    app: Flask
    sent: dict[str, bytes] = field(default_factory=dict)
    studies: dict[str, list[str]] = field(default_factory=dict)  # study UID -> SOP UIDs
    series: dict[str, list[str]] = field(default_factory=dict)  # series UID -> SOP UIDs

    @property
    def address(self) -> tuple[str, int]:
        return self.door.address

    def store(self, ds: Dataset) -> str:
        ingest(self.app, received(ds))
        uid = str(ds.SOPInstanceUID)
        self.sent[uid] = encode(ds)
        self.studies.setdefault(str(ds.StudyInstanceUID), []).append(uid)
        self.series.setdefault(str(ds.SeriesInstanceUID), []).append(uid)
        return uid

    def register(self, ae_title: str, port: int) -> None:
        with transaction(self.app) as db:
            remote_aes.add_remote_ae(db, Actor.system("test"), ae_title, "127.0.0.1", port)


@pytest.fixture
def archive(tmp_path: Path, database_url: str) -> Iterator[Archive]:
    app = build_app(
        tmp_path / "placa", database_url, DICOM_HOST="127.0.0.1", DICOM_PORT=free_port()
    )
    door = DicomDoor(app)
    held = Archive(door, app)
    # Patient PID001: a CT study of two series (3 + 2 instances) and an MR study;
    # patient PID002: one CT study.
    ct_study, mr_study, other_study = new_uid(), new_uid(), new_uid()
    ct_series = [new_uid(), new_uid()]
    for index in range(5):
        held.store(
            make_dataset(
                study=ct_study,
                series=ct_series[index // 3],
                number=index + 1,
                rows=32,
                SeriesNumber=index // 3 + 1,
            )
        )
    mr_series = new_uid()
    for index in range(2):
        held.store(
            make_dataset(
                study=mr_study,
                series=mr_series,
                number=index + 1,
                modality="MR",
                sop_class=MRImageStorage,
                rows=16,
            )
        )
    held.store(make_dataset(study=other_study, patient_id="PID002", name="ROE^JANE", rows=16))
    yield held
    door.stop()
    app.extensions["placa.engine"].dispose()


@dataclass
class StoreSCP:
    """A DCMTK storescp writing what it receives into ``folder``."""

    process: subprocess.Popen[bytes]
    folder: Path
    port: int

    def received(self) -> dict[str, bytes]:
        files = {}
        for path in self.folder.iterdir():
            meta = dcmread(path, stop_before_pixels=True).file_meta
            files[str(meta.MediaStorageSOPInstanceUID)] = dataset_part(path)
        return files

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_storescp(
    folder: Path, ae_title: str = DESTINATION, options: tuple[str, ...] = ()
) -> StoreSCP:
    folder.mkdir(parents=True)
    port = free_port()
    process = subprocess.Popen(
        [require_tool("storescp"), *options, "-aet", ae_title, "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    _wait_listening(port)
    return StoreSCP(process, folder, port)


def _wait_listening(port: int) -> None:
    import socket
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"storescp did not listen on {port}")


@pytest.fixture
def storescp(archive: Archive, tmp_path: Path) -> Iterator[StoreSCP]:
    scp = start_storescp(tmp_path / "received")
    archive.register(DESTINATION, scp.port)
    yield scp
    scp.stop()


def movescu(
    archive: Archive, keys: dict[str, str], *, model: str = "-S", destination: str = DESTINATION
) -> subprocess.CompletedProcess[str]:
    host, port = archive.address
    options = [option for key, value in keys.items() for option in ("-k", f"{key}={value}")]
    return subprocess.run(
        [
            require_tool("movescu"),
            "-v",
            model,
            "-aet",
            "MOVESCU",
            "-aec",
            "PLACA",
            "-aem",
            destination,
            *options,
            host,
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )


def _study_of(archive: Archive) -> str:
    """The CT study of two series (5 instances) of patient PID001."""
    return next(iter(archive.studies))


def _study(item: Received) -> str:
    return str(dcmread(BytesIO(item.dataset), force=True).StudyInstanceUID)


def test_movescu_study_level_sends_every_file_as_stored(
    archive: Archive, storescp: StoreSCP
) -> None:
    study = _study_of(archive)
    result = movescu(archive, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
    assert result.returncode == 0, result.stdout + result.stderr
    got = storescp.received()
    assert set(got) == set(archive.studies[study])
    for uid, data in got.items():
        assert data == archive.sent[uid], uid


def final_counts(output: str) -> dict[str, int]:
    """The sub-operation counts of movescu's last response (its ``-d`` dump)."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        for name in ("Remaining", "Completed", "Failed", "Warning"):
            if f"{name} Suboperations" in line:
                if name == "Remaining":  # the first of each response's counts
                    counts = {}
                value = line.rsplit(":", 1)[1].strip()
                if value.isdigit():
                    counts[name] = int(value)
    return counts


def test_movescu_series_level_with_the_study_key(archive: Archive, storescp: StoreSCP) -> None:
    study = _study_of(archive)
    series = next(
        uid for uid, sops in archive.series.items() if set(sops) <= set(archive.studies[study])
    )
    result = movescu(
        archive,
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study, "SeriesInstanceUID": series},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = storescp.received()
    assert set(got) == set(archive.series[series])
    assert all(data == archive.sent[uid] for uid, data in got.items())


def test_movescu_image_level_with_a_uid_list(archive: Archive, storescp: StoreSCP) -> None:
    study = _study_of(archive)
    chosen = archive.studies[study][1:3]
    result = movescu(
        archive,
        {
            "QueryRetrieveLevel": "IMAGE",
            "PatientID": "PID001",
            "StudyInstanceUID": study,
            "SOPInstanceUID": "\\".join(chosen),
        },
        model="-P",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = storescp.received()
    assert set(got) == set(chosen)
    assert all(data == archive.sent[uid] for uid, data in got.items())


def test_movescu_patient_level_sends_all_the_patients_studies(
    archive: Archive, storescp: StoreSCP
) -> None:
    result = subprocess.run(
        [
            require_tool("movescu"),
            "-d",
            "-P",
            "-aet",
            "MOVESCU",
            "-aec",
            "PLACA",
            "-aem",
            DESTINATION,
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=PID001",
            *map(str, archive.address),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {uid for sops in list(archive.studies.values())[:2] for uid in sops}
    got = storescp.received()
    assert set(got) == expected and len(expected) == 7
    assert all(data == archive.sent[uid] for uid, data in got.items())
    assert final_counts(result.stdout + result.stderr) == {
        "Completed": 7,
        "Failed": 0,
        "Warning": 0,
    }


def test_an_unknown_destination_is_refused(archive: Archive, storescp: StoreSCP) -> None:
    study = _study_of(archive)
    result = movescu(
        archive, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}, destination="NOWHERE"
    )
    output = result.stdout + result.stderr
    assert "Final Move Response (Refused: MoveDestinationUnknown)" in output, output
    assert storescp.received() == {}


def test_an_identifier_without_its_unique_key_is_refused(
    archive: Archive, storescp: StoreSCP
) -> None:
    result = movescu(
        archive, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": _study_of(archive)}
    )
    output = result.stdout + result.stderr
    assert "Final Move Response (Error: DataSetDoesNotMatchSOPClass)" in output, output
    assert storescp.received() == {}


# ------------------------------------------------------------------------- pynetdicom


def _scu(*contexts: str) -> AE:
    scu = AE(ae_title="PYSCU")
    for context in contexts:
        scu.add_requested_context(context)
    return scu


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_pynetdicom_move_streams_pending_counts_and_is_audited(
    archive: Archive, storescp: StoreSCP
) -> None:
    study = _study_of(archive)
    scu = _scu(StudyRootQueryRetrieveInformationModelMove)
    assoc = scu.associate(
        *archive.address, ae_title="PLACA", evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)]
    )
    assert assoc.is_established
    responses = list(
        assoc.send_c_move(
            _identifier("STUDY", StudyInstanceUID=study),
            DESTINATION,
            StudyRootQueryRetrieveInformationModelMove,
        )
    )
    assoc.release()
    statuses = [int(status.Status) for status, _identifier_ in responses]
    assert statuses == [0xFF00] * 4 + [0x0000]
    remaining = [int(status.NumberOfRemainingSuboperations) for status, _ in responses[:-1]]
    completed = [int(status.NumberOfCompletedSuboperations) for status, _ in responses]
    assert remaining == [4, 3, 2, 1]
    assert completed == [1, 2, 3, 4, 5]
    final = responses[-1][0]
    assert (final.NumberOfFailedSuboperations, final.NumberOfWarningSuboperations) == (0, 0)
    assert set(storescp.received()) == set(archive.studies[study])
    with transaction(archive.app) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "dicom.c_move")).one()
        assert (event.actor_kind, event.actor, event.object_id) == ("ae", "PYSCU", study)
        assert json.loads(event.detail or "{}")["destination"] == DESTINATION


def test_a_missing_file_is_a_failed_sub_operation(archive: Archive, storescp: StoreSCP) -> None:
    study = _study_of(archive)
    lost = archive.studies[study][2]
    root = archive_root(archive.app.config["DATA_DIR"])
    with transaction(archive.app) as db:
        path = db.scalar(select(Instance.path).where(Instance.sop_instance_uid == lost))
    (root / str(path)).unlink()
    scu = _scu(StudyRootQueryRetrieveInformationModelMove)
    assoc = scu.associate(*archive.address, ae_title="PLACA")
    responses = list(
        assoc.send_c_move(
            _identifier("STUDY", StudyInstanceUID=study),
            DESTINATION,
            StudyRootQueryRetrieveInformationModelMove,
        )
    )
    assoc.release()
    final, identifier = responses[-1]
    assert int(final.Status) == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (4, 1)
    assert (
        list(identifier.FailedSOPInstanceUIDList) == [lost]
        or identifier.FailedSOPInstanceUIDList == lost
    )
    got = storescp.received()
    assert set(got) == set(archive.studies[study]) - {lost}


def test_a_destination_that_does_not_answer_fails_with_a_comment(archive: Archive) -> None:
    archive.register("CLOSED", free_port())  # nobody listens there
    scu = _scu(StudyRootQueryRetrieveInformationModelMove)
    assoc = scu.associate(*archive.address, ae_title="PLACA")
    responses = list(
        assoc.send_c_move(
            _identifier("STUDY", StudyInstanceUID=_study_of(archive)),
            "CLOSED",
            StudyRootQueryRetrieveInformationModelMove,
        )
    )
    assoc.release()
    [(final, _identifier_)] = responses
    assert int(final.Status) == 0xA801
    assert "cannot connect" in str(final.ErrorComment)


def _get_scu(received: dict[str, bytes], on_store: object = None) -> tuple[AE, list[object]]:
    scu = _scu(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class in (CTImageStorage, MRImageStorage):
        scu.add_requested_context(sop_class, ExplicitVRLittleEndian)
        roles.append(build_role(sop_class, scp_role=True))

    def handle_store(event: evt.Event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        if callable(on_store):
            on_store(event)
        return 0x0000

    return scu, [roles, [(evt.EVT_C_STORE, handle_store)]]


def test_pynetdicom_get_streams_pending_counts(archive: Archive) -> None:
    study = _study_of(archive)
    received_files: dict[str, bytes] = {}
    scu, (roles, handlers) = _get_scu(received_files)
    assoc = scu.associate(*archive.address, ae_title="PLACA", ext_neg=roles, evt_handlers=handlers)
    assert assoc.is_established
    responses = list(
        assoc.send_c_get(
            _identifier("STUDY", StudyInstanceUID=study), StudyRootQueryRetrieveInformationModelGet
        )
    )
    assoc.release()
    assert [int(status.Status) for status, _ in responses] == [0xFF00] * 4 + [0x0000]
    assert [int(s.NumberOfRemainingSuboperations) for s, _ in responses[:-1]] == [4, 3, 2, 1]
    assert int(responses[-1][0].NumberOfCompletedSuboperations) == 5
    assert received_files == {uid: archive.sent[uid] for uid in archive.studies[study]}


def test_a_get_is_cancelled_by_c_cancel(archive: Archive) -> None:
    study = _study_of(archive)
    received_files: dict[str, bytes] = {}

    def cancel_once(event: evt.Event) -> None:
        if len(received_files) == 1:
            event.assoc.send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelGet)

    scu, (roles, handlers) = _get_scu(received_files, cancel_once)
    assoc = scu.associate(*archive.address, ae_title="PLACA", ext_neg=roles, evt_handlers=handlers)
    responses = list(
        assoc.send_c_get(
            _identifier("STUDY", StudyInstanceUID=study),
            StudyRootQueryRetrieveInformationModelGet,
            msg_id=1,
        )
    )
    assoc.release()
    final = responses[-1][0]
    assert int(final.Status) == 0xFE00
    assert int(final.NumberOfCompletedSuboperations) == len(received_files) < 5
    assert int(final.NumberOfRemainingSuboperations) == 5 - len(received_files)


# ------------------------------------------------------------------------- getscu


def test_getscu_retrieves_a_study_as_stored(archive: Archive, tmp_path: Path) -> None:
    study = _study_of(archive)
    folder = tmp_path / "got"
    folder.mkdir()
    result = subprocess.run(
        [
            require_tool("getscu"),
            "-v",
            "-S",
            "-aet",
            "GETSCU",
            "-aec",
            "PLACA",
            "-od",
            str(folder),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            *map(str, archive.address),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = {}
    for path in folder.iterdir():
        meta = dcmread(path, stop_before_pixels=True).file_meta
        got[str(meta.MediaStorageSOPInstanceUID)] = dataset_part(path)
    assert got == {uid: archive.sent[uid] for uid in archive.studies[study]}


def test_an_instance_larger_than_a_read_block_arrives_whole(
    archive: Archive, storescp: StoreSCP
) -> None:
    big = make_dataset(study=new_uid(), patient_id="PID003", rows=1500)  # 4.5 MB > BLOCK
    uid = archive.store(big)
    result = movescu(
        archive,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": str(big.StudyInstanceUID),
            "SOPInstanceUID": uid,
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert storescp.received() == {uid: archive.sent[uid]}


def test_a_move_is_cancelled_by_c_cancel(archive: Archive) -> None:
    """A slow destination (pynetdicom, 0.2 s a C-STORE): the C-CANCEL sent after the first
    Pending response stops the move before the study is through."""
    stored: list[str] = []

    def slow_store(event: evt.Event) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        time.sleep(0.2)
        return 0x0000

    destination = AE(ae_title="SLOWDEST")
    destination.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = destination.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, slow_store)]
    )
    archive.register("SLOWDEST", port)
    try:
        scu = _scu(StudyRootQueryRetrieveInformationModelMove)
        assoc = scu.associate(*archive.address, ae_title="PLACA")
        identifier = _identifier("STUDY", StudyInstanceUID=_study_of(archive))
        responses = []
        for status, found in assoc.send_c_move(
            identifier, "SLOWDEST", StudyRootQueryRetrieveInformationModelMove, msg_id=7
        ):
            responses.append((status, found))
            if len(responses) == 1:
                assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelMove)
        assoc.release()
    finally:
        server.shutdown()
    final = responses[-1][0]
    assert int(final.Status) == 0xFE00
    assert int(final.NumberOfCompletedSuboperations) == len(stored) < 5
    assert int(final.NumberOfRemainingSuboperations) == 5 - len(stored)


def test_a_compressed_instance_is_moved_in_its_own_syntax(archive: Archive, tmp_path: Path) -> None:
    original, compressed = tmp_path / "original.dcm", tmp_path / "jpeg.dcm"
    write_part10(make_dataset(study=new_uid(), patient_id="PID004", rows=64), original)
    subprocess.run(
        [require_tool("dcmcjpeg"), str(original), str(compressed)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    item = read_part10(compressed.read_bytes())
    ingest(archive.app, item)
    scp = start_storescp(tmp_path / "received", options=("+xa",))
    archive.register(DESTINATION, scp.port)
    try:
        result = movescu(
            archive,
            {
                "QueryRetrieveLevel": "IMAGE",
                "SOPInstanceUID": item.sop_instance_uid,
                "StudyInstanceUID": _study(item),
            },
        )
        assert result.returncode == 0, result.stdout + result.stderr
        [path] = list(scp.folder.iterdir())
        assert dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEGLosslessSV1
        assert dataset_part(path) == item.dataset
    finally:
        scp.stop()


def test_a_destination_that_takes_implicit_vr_only_gets_a_conversion(
    archive: Archive, tmp_path: Path
) -> None:
    scp = start_storescp(tmp_path / "received", options=("+xi",))
    archive.register(DESTINATION, scp.port)
    study = _study_of(archive)
    try:
        result = movescu(archive, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
        assert result.returncode == 0, result.stdout + result.stderr
        got = scp.received()
    finally:
        scp.stop()
    assert set(got) == set(archive.studies[study])
    for path in scp.folder.iterdir():
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        uid = str(ds.SOPInstanceUID)
        assert encode(ds, ExplicitVRLittleEndian) == archive.sent[uid]


def test_a_get_is_audited(archive: Archive) -> None:
    study = _study_of(archive)
    scu, (roles, handlers) = _get_scu({})
    assoc = scu.associate(*archive.address, ae_title="PLACA", ext_neg=roles, evt_handlers=handlers)
    list(
        assoc.send_c_get(
            _identifier("STUDY", StudyInstanceUID=study), StudyRootQueryRetrieveInformationModelGet
        )
    )
    assoc.release()
    with transaction(archive.app) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "dicom.c_get")).one()
    assert (event.actor_kind, event.actor, event.object_id, event.outcome) == (
        "ae",
        "PYSCU",
        study,
        "success",
    )
    assert json.loads(event.detail or "{}")["completed"] == 5


@pytest.mark.parametrize(
    ("level", "keyword", "value", "comment"),
    [
        ("PATIENT", "PatientID", "PID001", "Study Root has no PATIENT level"),
        ("IMAGE", "SOPInstanceUID", "1.2.*", "may not be a wildcard"),
        ("STUDY", "StudyInstanceUID", "../../etc", "is not a UID"),
        ("FRAME", "StudyInstanceUID", "1.2.3", "unknown Query/Retrieve Level"),
    ],
)
def test_a_get_with_a_bad_identifier_is_refused_with_a_comment(
    archive: Archive, level: str, keyword: str, value: str, comment: str
) -> None:
    identifier = _identifier(level)
    # Sent as LO: pydicom would not make a malformed UI value (what a faulty SCU sends).
    identifier[keyword] = DataElement(keyword, "LO", value)
    scu, (roles, handlers) = _get_scu({})
    assoc = scu.associate(*archive.address, ae_title="PLACA", ext_neg=roles, evt_handlers=handlers)
    [(final, _found)] = list(
        assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
    )
    assoc.release()
    assert int(final.Status) == 0xA900
    assert comment in str(final.ErrorComment)


def test_a_get_matching_nothing_succeeds_with_no_sub_operations(archive: Archive) -> None:
    scu, (roles, handlers) = _get_scu({})
    assoc = scu.associate(*archive.address, ae_title="PLACA", ext_neg=roles, evt_handlers=handlers)
    identifier = _identifier("STUDY", StudyInstanceUID=new_uid())
    [(final, _found)] = list(
        assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
    )
    assoc.release()
    assert int(final.Status) == 0x0000
    assert int(final.NumberOfCompletedSuboperations) == 0


def test_a_destination_that_rejects_the_association_fails_with_its_reason(
    archive: Archive,
) -> None:
    picky = AE(ae_title="PICKY")
    picky.require_called_aet = True
    picky.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = picky.start_server(("127.0.0.1", port), block=False)
    archive.register("NOTPICKY", port)  # registered under a title the node does not answer to
    try:
        responses = _move(
            archive, _identifier("STUDY", StudyInstanceUID=_study_of(archive)), "NOTPICKY"
        )
    finally:
        server.shutdown()
    [(final, _identifier_)] = responses
    assert int(final.Status) == 0xA801
    assert "rejected" in str(final.ErrorComment)


def test_a_move_whose_files_are_all_missing_fails(archive: Archive, storescp: StoreSCP) -> None:
    study = _study_of(archive)
    root = archive_root(archive.app.config["DATA_DIR"])
    with transaction(archive.app) as db:
        paths = db.scalars(
            select(Instance.path).where(Instance.sop_instance_uid.in_(archive.studies[study]))
        ).all()
    for path in paths:
        (root / path).unlink()
    responses = _move(archive, _identifier("STUDY", StudyInstanceUID=study), DESTINATION)
    final, identifier = responses[-1]
    assert int(final.Status) == 0xA702
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 5)
    assert sorted(identifier.FailedSOPInstanceUIDList) == sorted(archive.studies[study])
    assert storescp.received() == {}
    with transaction(archive.app) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "dicom.c_move")).one()
    assert event.outcome == "failure"


def _move(archive: Archive, identifier: Dataset, destination: str) -> list[tuple[Dataset, Dataset]]:
    scu = _scu(StudyRootQueryRetrieveInformationModelMove)
    assoc = scu.associate(*archive.address, ae_title="PLACA")
    assert assoc.is_established
    responses = list(
        assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove)
    )
    assoc.release()
    return responses


def test_movescu_can_be_its_own_destination(archive: Archive, tmp_path: Path) -> None:
    """The usual workstation set-up: movescu listens (+P) and names itself as destination."""
    port = free_port()
    archive.register("MOVESCU", port)
    folder = tmp_path / "self"
    folder.mkdir()
    study = _study_of(archive)
    host, door_port = archive.address
    result = subprocess.run(
        [require_tool("movescu"), "-S", "+P", str(port), "-od", str(folder), "-aet", "MOVESCU",
         "-aec", "PLACA", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
         host, str(door_port)],
        capture_output=True, text=True, timeout=60, env={"TCP_NODELAY": "1", "PATH": "/usr/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    got = {}
    for path in folder.iterdir():
        meta = dcmread(path, stop_before_pixels=True).file_meta
        got[str(meta.MediaStorageSOPInstanceUID)] = dataset_part(path)
    assert got == {uid: archive.sent[uid] for uid in archive.studies[study]}


def test_relational_retrieval_is_negotiated_and_needs_no_keys_above(archive: Archive) -> None:
    """PS3.4 C.5.3.1: relational retrieval accepted (byte 1), image conversion not (byte 2);
    an IMAGE-level C-GET with only its SOP Instance UIDs gets them."""
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

    study = _study_of(archive)
    wanted = sorted(archive.studies[study])[:2]
    received_files: dict[str, bytes] = {}
    scu, (roles, handlers) = _get_scu(received_files)
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = StudyRootQueryRetrieveInformationModelGet
    item.service_class_application_information = b"\x01\x01"
    assoc = scu.associate(*archive.address, ae_title="PLACA", ext_neg=[*roles, item],
                          evt_handlers=handlers)  # fmt: skip
    assert assoc.is_established
    answered = assoc.acceptor.sop_class_extended[StudyRootQueryRetrieveInformationModelGet]
    identifier = _identifier("IMAGE", SOPInstanceUID=wanted)
    responses = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    assert bytes(answered) == b"\x01\x00"
    assert int(responses[-1][0].Status) == 0x0000
    assert received_files == {uid: archive.sent[uid] for uid in wanted}
