"""The DICOM door in two processes (PLACA_DICOM_PROCESSES), and its prebuilt C-STORE answers."""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import create_engine, func, select

from pacs.models import Instance
from ris.dicom_door import _Contexts, store_success_command, store_success_pdu
from tests.conftest import BACKENDS, PostgresServer
from tests.pacs.dicom_data import make_dataset, new_uid
from tests.serve_process import ServeProcess


def test_the_prebuilt_success_is_pynetdicoms_command_set_byte_for_byte() -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = "1.2.3.45"  # odd length: padded with NUL
    primitive.Status = 0x0000
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = list(message.encode_msg(1, 16384))
    ((context_id, fragment),) = pdata.presentation_data_value_list
    assert context_id == 1
    assert fragment[:1] == b"\x03"  # command, last fragment
    command = store_success_command(CTImageStorage, 7, "1.2.3.45")
    assert command == fragment[1:]
    pdu = P_DATA_TF()
    pdu.from_primitive(pdata)
    assert store_success_pdu(1, command) == pdu.encode()


def test_each_association_negotiates_on_its_own_copy_of_the_contexts() -> None:
    contexts = _Contexts([build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    (copied,) = copy.deepcopy(contexts)
    (original,) = contexts
    assert copied is not original and copied.transfer_syntax == original.transfer_syntax
    copied.result, copied.transfer_syntax[0] = 0x00, "1.2.840.10008.1.2"
    assert original.result is None and original.transfer_syntax == [ExplicitVRLittleEndian]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _associate(port: int, title: str):  # noqa: ANN202 (pynetdicom's Association)
    scu = AE(ae_title=title)
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    scu.add_requested_context(Verification)
    return scu.associate("127.0.0.1", port, ae_title="PLACA",
                         evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])  # fmt: skip


def _nodelay(event: evt.Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@pytest.fixture(params=BACKENDS)
def serve(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServeProcess]:
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'placa.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        name = f"placa_p_{uuid.uuid4().hex[:12]}"
        url, drop = server.create(name), lambda: server.drop(name)
    settings = {"PLACA_DICOM_PROCESSES": "2", "PLACA_LOG_LEVEL": "INFO"}
    serve = ServeProcess(tmp_path, url, only=("dicom", "web"), env_extra=settings)
    assert serve.flask("db", "upgrade").returncode == 0
    serve.start()
    serve.wait_ready(timeout=90)  # the web door opens once the DICOM helper is up
    yield serve
    if serve.process and serve.process.poll() is None:
        serve.stop()
    if drop:
        drop()


def test_concurrent_associations_are_shared_between_the_processes(serve: ServeProcess) -> None:
    assert serve.process is not None
    (helper,) = _children(serve.process.pid)
    study, series = new_uid(), new_uid()
    first, second = _associate(serve.dicom_port, "FIRST"), _associate(serve.dicom_port, "SECOND")
    assert first.is_established and second.is_established
    stored = []
    for _ in range(6):  # interleaved: both associations open throughout
        for assoc in (first, second):
            ds = make_dataset(study=study, series=series, number=len(stored) + 1, rows=8)
            assert assoc.send_c_store(ds).Status == 0x0000
            stored.append(ds.SOPInstanceUID)
    first.release()
    second.release()
    processes = dict(re.findall(r"Association accepted from (\w+) .* in process (\d+)",
                                _wait_for_log(serve, "SECOND")))  # fmt: skip
    assert {int(processes["FIRST"]), int(processes["SECOND"])} == {serve.process.pid, helper}
    engine = create_engine(serve.database_url)
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(Instance)).scalar_one()
    engine.dispose()
    assert count == len(stored) == 12
    code, _seconds, output = serve.stop()
    assert code == 0
    assert "the listening process is gone, stopping" in output
    assert not Path(f"/proc/{helper}").exists() or _is_zombie(helper)


def test_the_helper_stops_when_the_listening_process_is_killed(serve: ServeProcess) -> None:
    assert serve.process is not None
    (helper,) = _children(serve.process.pid)
    os.kill(serve.process.pid, signal.SIGKILL)
    serve.process.wait(timeout=10)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{helper}").exists() and not _is_zombie(helper):
        assert time.monotonic() < deadline, "the helper outlived the listening process"
        time.sleep(0.1)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_for_log(serve: ServeProcess, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while text not in serve.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    return serve.output()
