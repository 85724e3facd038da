"""One process, four doors: `flask --app wsgi serve` as `make run` starts it, with real peers."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, PostgresServer, require_python_tool, require_tool
from tests.serve_process import ServeProcess

ADT = (
    "MSH|^~\\&|HIS|HOSPITAL|PLACA|RADIOLOGY|20261123101500||ADT^A01^ADT_A01|MSG00042|P|2.5.1\r"
    "EVN|A01|20261123101500\r"
    "PID|1||MRN12345^^^HOSPITAL^MR||PEÑA^JOSÉ^^^^^L||19700101|M\r"
)


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("serve")
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'placa.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        name = f"placa_s_{uuid.uuid4().hex[:12]}"
        url, drop = server.create(name), lambda: server.drop(name)
    serve = ServeProcess(data_dir, url)
    assert serve.flask("db", "upgrade").returncode == 0
    bootstrap = serve.flask("users", "bootstrap-admin")
    assert "First administrator account created" in bootstrap.stdout
    serve.start()
    serve.health = serve.wait_ready()
    yield serve
    if serve.process and serve.process.poll() is None:
        serve.stop()
    if drop:
        drop()


def test_all_four_doors_are_up(served: ServeProcess) -> None:
    assert served.health["ready"] is True and served.health["database"] is True
    assert served.health["doors"] == {"web": "up", "dicom": "up", "hl7": "up", "scheduler": "up"}


def test_sign_in_page_is_served_by_waitress(served: ServeProcess) -> None:
    with urllib.request.urlopen(served.base_url + "/") as response:
        assert response.headers["Server"] == "Placa"
        assert "Sign in to Placa" in response.read().decode()


def test_dcmtk_echoscu_gets_success(served: ServeProcess) -> None:
    echoscu = require_tool("echoscu")
    result = subprocess.run(
        [echoscu, "-v", "-aet", "TESTSCU", "-aec", "PLACA", "127.0.0.1", str(served.dicom_port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Received Echo Response (Success)" in result.stdout + result.stderr


def test_dcmtk_echoscu_to_the_wrong_called_ae_is_rejected(served: ServeProcess) -> None:
    echoscu = require_tool("echoscu")
    result = subprocess.run(
        [echoscu, "-v", "-aec", "NOT_PLACA", "127.0.0.1", str(served.dicom_port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr


def test_mllp_send_gets_an_ack(served: ServeProcess, tmp_path: Path) -> None:
    mllp_send = require_python_tool("mllp_send")
    message = tmp_path / "adt.hl7"
    unsupported = ADT.replace("ADT^A01^ADT_A01|MSG00042", "MFN^M01^MFN_M01|MSG00043")
    framed = [b"\x0b" + text.encode("utf-8") + b"\x1c\x0d" for text in (ADT, unsupported)]
    message.write_bytes(b"".join(framed))  # an MLLP-framed file of two messages
    result = subprocess.run(
        [mllp_send, "--port", str(served.hl7_port), "--file", str(message), "127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # mllp_send prints the framed ACK; text mode has turned its CRs into newlines.
    lines = [line.strip("\x0b\x1c") for line in result.stdout.splitlines()]
    acks = [line.split("|") for line in lines if line.startswith("MSA")]
    assert [ack[1:3] for ack in acks] == [["AA", "MSG00042"], ["AR", "MSG00043"]]
    errors = [line for line in lines if line.startswith("ERR")]
    assert len(errors) == 1 and "200" in errors[0]  # unsupported message type


def test_sigterm_stops_every_door_within_seconds(served: ServeProcess) -> None:
    code, seconds, output = served.stop(signal.SIGTERM)
    assert code == 0, output
    assert seconds < 8, output
    assert "Placa stopped" in output
    for port in (served.http_port, served.dicom_port, served.hl7_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_sigint_and_only_open_just_the_selected_doors(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, f"sqlite:///{tmp_path / 'placa.db'}", only=("web", "hl7"))
    assert serve.flask("db", "upgrade").returncode == 0
    serve.start()
    try:
        health = serve.wait_ready()
        assert health["doors"] == {"web": "up", "hl7": "up"}
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", serve.dicom_port)) != 0
    finally:
        code, seconds, output = serve.stop(signal.SIGINT)
    assert code == 0 and seconds < 8, output


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, f"sqlite:///{tmp_path / 'placa.db'}", only=("web",))
    result = serve.flask("serve", "--only", "web")
    assert result.returncode != 0
    assert "db upgrade" in result.stderr


def test_serve_explains_a_port_already_taken(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, f"sqlite:///{tmp_path / 'placa.db'}")
    assert serve.flask("db", "upgrade").returncode == 0
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", serve.hl7_port))
        squatter.listen()
        result = serve.flask("serve", "--only", "hl7")
    assert result.returncode != 0
    assert "could not open" in result.stderr
