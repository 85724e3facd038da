"""The DICOM door: Verification on the configured AE title, Nagle off on every association."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from ris.dicom_door import DicomDoor, set_nodelay
from tests.conftest import build_app, free_port


@pytest.fixture
def door(tmp_path) -> Iterator[DicomDoor]:
    app: Flask = build_app(
        tmp_path, f"sqlite:///{tmp_path / 'x.db'}", DICOM_HOST="127.0.0.1", DICOM_PORT=free_port()
    )
    door = DicomDoor(app)
    yield door
    door.stop()
    app.extensions["placa.engine"].dispose()


def _nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_echo_succeeds_and_both_ends_disable_nagle(door: DicomDoor) -> None:
    scu = AE(ae_title="PYNETDICOM")
    scu.add_requested_context(Verification)
    assoc = scu.associate(
        *door.address, ae_title="PLACA", evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)]
    )
    assert assoc.is_established
    assert _nodelay(assoc.dul.socket.socket) == 1  # outgoing association
    accepted = door.server.active_associations
    assert accepted and _nodelay(accepted[0].dul.socket.socket) == 1  # accepted association
    status = assoc.send_c_echo()
    assert status.Status == 0x0000
    assoc.release()


def test_wrong_called_ae_title_is_rejected(door: DicomDoor) -> None:
    scu = AE(ae_title="PYNETDICOM")
    scu.add_requested_context(Verification)
    assoc = scu.associate(*door.address, ae_title="SOMEONE_ELSE")
    assert assoc.is_rejected


def test_stop_closes_the_port_quickly(door: DicomDoor) -> None:
    host, port = door.address
    started = time.monotonic()
    door.stop()
    assert time.monotonic() - started < 3
    with socket.socket() as probe:
        assert probe.connect_ex((host, port)) != 0
