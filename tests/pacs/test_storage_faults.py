"""Storage under faults: disk full, database down, the process killed mid-ingest.

Each time, an instance is either acknowledged and durable (file and row), or refused with a
failure status and leaves neither a file nor a row.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from pacs import storage
from pacs.models import Instance, Study
from ris.db import transaction
from ris.dicom_door import DicomDoor, set_nodelay
from tests.conftest import build_app, free_port
from tests.pacs.dicom_data import dataset_part, make_dataset, new_uid
from tests.serve_process import ServeProcess


@pytest.fixture
def door_app(tmp_path: Path, database_url: str) -> Iterator[tuple[DicomDoor, Flask]]:
    app = build_app(tmp_path / "placa", database_url, DICOM_HOST="127.0.0.1",
                    DICOM_PORT=free_port())  # fmt: skip
    door = DicomDoor(app)
    yield door, app
    door.stop()
    app.extensions["placa.engine"].dispose()


def send(address: tuple[str, int], datasets: list[Dataset]) -> list[int]:
    """C-STORE each dataset on one association (pynetdicom SCU); the statuses answered."""
    scu = AE(ae_title="FAULTS")
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = scu.associate(
        *address, ae_title="PLACA", evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)]
    )
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    assoc.release()
    return statuses


def everything_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def rows(app: Flask) -> int:
    with transaction(app) as db:
        return db.scalar(select(func.count()).select_from(Instance)) or 0


def test_disk_full_answers_out_of_resources_and_leaves_nothing(
    door_app: tuple[DicomDoor, Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    door, app = door_app
    real_write = storage._write_all

    def full_disk(path: Path, chunks: object) -> None:
        with open(path, "wb") as handle:  # half a file, then the disk is full
            handle.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "_write_all", full_disk)
    statuses = send(door.address, [make_dataset()])
    assert statuses == [storage.OUT_OF_RESOURCES]
    root = storage.archive_root(app.config["DATA_DIR"])
    assert [p for p in everything_in(root)] == []  # no file, not even the temporary one
    assert rows(app) == 0
    monkeypatch.setattr(storage, "_write_all", real_write)  # space again: the next one is stored
    assert send(door.address, [make_dataset()]) == [0x0000]
    assert rows(app) == 1 and len(everything_in(root)) == 1


def test_database_down_answers_a_failure_and_leaves_no_file(
    door_app: tuple[DicomDoor, Flask],
) -> None:
    door, app = door_app
    # The database goes away: every session now connects to a port nothing listens on.
    dead = create_engine(f"postgresql+psycopg://placa@127.0.0.1:{free_port()}/gone",
                         connect_args={"connect_timeout": 2})  # fmt: skip
    healthy = app.extensions["placa.sessions"], app.extensions["placa.read_only_sessions"]
    app.extensions["placa.sessions"] = sessionmaker(dead)
    app.extensions["placa.read_only_sessions"] = sessionmaker(dead)
    try:
        statuses = send(door.address, [make_dataset(), make_dataset()])
    finally:
        app.extensions["placa.sessions"], app.extensions["placa.read_only_sessions"] = healthy
        dead.dispose()
    assert statuses == [storage.INDEX_UNAVAILABLE] * 2
    assert everything_in(storage.archive_root(app.config["DATA_DIR"])) == []
    assert rows(app) == 0
    assert send(door.address, [make_dataset()]) == [0x0000]  # back: stored again


def _listening(port: int) -> bool:
    """Whether something accepts connections on the port. A connection to oneself does not
    count: probing a free ephemeral port can connect a socket to itself (TCP simultaneous
    open), which would also keep the door from binding it."""
    try:
        probe = socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return False
    with probe:
        return probe.getsockname() != probe.getpeername()


def _wait_for_dicom(serve: ServeProcess, timeout: float = 60) -> None:
    """Until the door answers C-ECHO. The port is probed with a plain socket first: a
    pynetdicom association that cannot connect leaves its socket open."""
    port = serve.dicom_port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert serve.process is not None
        if serve.process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{serve.output()}")
        if _listening(port):
            break
        time.sleep(0.2)
    scu = AE(ae_title="PROBE")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", port, ae_title="PLACA")
    assert assoc.is_established, f"the DICOM door did not come up:\n{serve.output()}"
    assoc.release()


def test_a_killed_process_keeps_every_acknowledged_instance(
    tmp_path: Path, database_url: str
) -> None:
    serve = ServeProcess(tmp_path, database_url, only=("dicom",))
    serve.start()
    try:
        _wait_for_dicom(serve)
        study, series = new_uid(), new_uid()
        sent = {}
        for number in range(400):
            ds = make_dataset(study=study, series=series, number=number, rows=128)
            sent[ds.SOPInstanceUID] = ds
        acknowledged: list[str] = []

        def kill_after_some() -> None:
            deadline = time.monotonic() + 60
            while len(acknowledged) < 40 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert serve.process is not None
            os.kill(serve.process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_after_some)
        killer.start()
        scu = AE(ae_title="KILLTEST")
        scu.dimse_timeout = scu.network_timeout = scu.acse_timeout = 5
        scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = scu.associate("127.0.0.1", serve.dicom_port, ae_title="PLACA",
                              evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])  # fmt: skip
        assert assoc.is_established
        raw_socket = assoc.dul.socket.socket  # closed by hand below: the peer will die
        for uid, ds in sent.items():
            if not assoc.is_established:
                break
            status = assoc.send_c_store(ds)
            if status and int(status.Status) == 0x0000:
                acknowledged.append(uid)
        assoc.abort()
        if raw_socket is not None:  # the peer died: pynetdicom leaves the socket open
            raw_socket.close()
        killer.join(timeout=30)
        serve.process.wait(timeout=10)
        assert serve.process.returncode == -signal.SIGKILL
        assert 40 <= len(acknowledged) < len(sent)  # killed in the middle of the ingest
    finally:
        if serve.process and serve.process.poll() is None:
            serve.process.kill()
    # Restart: what was acknowledged is there, whole; nothing in the index is half-written.
    serve = ServeProcess(tmp_path, database_url, only=("dicom",))
    serve.start()
    try:
        _wait_for_dicom(serve)
        app = build_app(tmp_path, database_url)
        root = storage.archive_root(app.config["DATA_DIR"])
        with transaction(app) as db:
            columns = select(Instance.sop_instance_uid, Instance.path, Instance.sha1)
            indexed = {uid: (path, sha) for uid, path, sha in db.execute(columns)}
            study_row = db.scalar(select(Study))
            assert study_row.number_of_study_related_instances == len(indexed)
        assert set(acknowledged) <= set(indexed)
        for uid, (path, sha) in indexed.items():
            data = dataset_part(root / path)
            assert hashlib.sha1(data).hexdigest() == sha, uid  # complete, not truncated
        final_files = [p for p in everything_in(root) if p.suffix == ".dcm"]
        for path in final_files:  # a final name is given only after the last write
            uid = path.name.split(".dcm")[0].rsplit(".", 1)[0]
            assert hashlib.sha1(dataset_part(path)).hexdigest()[:16] == path.name.split(".")[-2]
            assert uid in sent
        app.extensions["placa.engine"].dispose()
    finally:
        serve.stop()
