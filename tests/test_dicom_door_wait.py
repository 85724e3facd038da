"""The DICOM door's DUL waits in select() only when its state machine has nothing queued."""

from __future__ import annotations

import os
import queue
import socket
from types import SimpleNamespace

import pytest

from ris import dicom_door


@pytest.mark.parametrize("queued", [[], ["Evt6"]], ids=["nothing-queued", "event-queued"])
def test_the_dul_only_looks_at_its_socket_while_events_wait(
    monkeypatch: pytest.MonkeyPatch, queued: list[str]
) -> None:
    """A connection's Evt5 and the A-ASSOCIATE-RQ read right behind it (Evt6) are handled
    one per turn of the DUL loop, which asks the socket in between: waiting there, the
    second event waited out the interval and every association's acceptance took 50 ms."""
    events: queue.Queue[str] = queue.Queue()
    for event in queued:
        events.put(event)
    ours, peer = socket.socketpair()
    wake_read, wake_write = os.pipe()
    waits: list[float] = []
    real_select = dicom_door.select.select

    def recording_select(r, w, x, timeout):  # type: ignore[no-untyped-def]
        waits.append(timeout)
        return real_select(r, w, x, 0)

    monkeypatch.setattr(dicom_door.select, "select", recording_select)
    association = SimpleNamespace(dul=SimpleNamespace(event_queue=events))
    transport = object.__new__(dicom_door._WaitingSocket)
    transport.__dict__.update(socket=ours, _wake_read=wake_read, _is_connected=True,
                              _assoc=association)  # fmt: skip
    try:
        assert transport.ready is False  # nothing to read either way
        peer.send(b"\x01")
        assert transport.ready is True
    finally:
        for closing in (ours, peer):
            closing.close()
        os.close(wake_read), os.close(wake_write)
    expected = 0 if queued else dicom_door.WAKE_INTERVAL
    assert waits == [expected, expected]
