"""MLLPServer against real TCP peers: python-hl7's MLLPClient and raw sockets."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from itertools import pairwise

import hl7
import pytest
from hl7.client import MLLPClient

from ris.hl7 import handle_message, reject_oversize
from ris.mllp import MLLPServer

SB, EB, CR = b"\x0b", b"\x1c", b"\r"


def _message(control_id: str, *, version: str = "2.5.1", padding: int = 0) -> str:
    return (
        f"MSH|^~\\&|HIS|HOSP|PLACA|PLACA|20240101120000||ADT^A01^ADT_A01|{control_id}|P|{version}\r"
        "EVN|A01|20240101120000\r"
        f"PID|1||12345^^^HOSP^MR||DOE^JOHN||19700101|M|||{'X' * padding}\r"
        "PV1|1|I\r"
    )


def _frame(text: str) -> bytes:
    return SB + text.encode() + EB + CR


def _handler(raw: bytes, peer: str) -> bytes:
    return handle_message(raw, sender=peer)


def _oversize(head: bytes, peer: str) -> bytes:
    return reject_oversize(head, sender=peer)


@pytest.fixture
def make_server() -> Iterator[Callable[..., MLLPServer]]:
    servers: list[MLLPServer] = []

    def make(**kwargs: object) -> MLLPServer:
        handler = kwargs.pop("handler", _handler)
        kwargs.setdefault("on_oversize", _oversize)
        server = MLLPServer("127.0.0.1", 0, handler, **kwargs)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()


@pytest.fixture
def server(make_server: Callable[..., MLLPServer]) -> MLLPServer:
    return make_server()


def _client(server: MLLPServer) -> MLLPClient:
    host, port = server.address
    return MLLPClient(host, port)


def _unframe(reply: bytes) -> str:
    assert reply.startswith(SB) and reply.endswith(EB + CR), reply
    return reply[1:-2].decode()


def _read_frames(sock: socket.socket, count: int, timeout: float = 5.0) -> list[str]:
    sock.settimeout(timeout)
    buffer, frames = b"", []
    while len(frames) < count:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {len(frames)} of {count} replies"
        buffer += chunk
        while EB + CR in buffer:
            frame, buffer = buffer.split(EB + CR, 1)
            frames.append(_unframe(frame + EB + CR))
    return frames


def _msa(ack: str) -> tuple[str, str]:
    msa = hl7.parse(ack).segment("MSA")
    return str(msa[1]), str(msa[2]) if len(msa) > 2 else ""


def _assert_closed(sock: socket.socket, timeout: float = 3.0) -> None:
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return
    assert data == b""


def test_many_messages_on_one_connection_are_acked_in_order(server: MLLPServer) -> None:
    with _client(server) as client:
        acks = [_unframe(client.send_message(_message(f"SEQ{i}"))) for i in range(5)]
    assert [_msa(ack) for ack in acks] == [("AR", f"SEQ{i}") for i in range(5)]


def test_two_messages_in_one_send_get_two_replies_in_order(server: MLLPServer) -> None:
    with _client(server) as client:
        client.socket.sendall(_frame(_message("FIRST")) + _frame(_message("SECOND")))
        acks = _read_frames(client.socket, 2)
    assert [_msa(ack)[1] for ack in acks] == ["FIRST", "SECOND"]


def test_message_split_over_many_sends(
    server: MLLPServer, caplog: pytest.LogCaptureFixture
) -> None:
    data = _frame(_message("SPLIT"))
    # Cut inside the header, right after the start block and between FS and CR.
    cuts = [0, 1, 9, 40, 120, len(data) - 1, len(data)]
    with _client(server) as client:
        for start, end in pairwise(cuts):
            client.socket.sendall(data[start:end])
            time.sleep(0.05)
        assert _msa(_read_frames(client.socket, 1)[0]) == ("AR", "SPLIT")
        assert _msa(_unframe(client.send_message(_message("AFTER")))) == ("AR", "AFTER")
    assert not [r for r in caplog.records if r.name == "ris.mllp" and r.levelno >= logging.WARNING]


def test_garbage_before_a_frame_is_skipped_and_logged(
    server: MLLPServer, caplog: pytest.LogCaptureFixture
) -> None:
    with _client(server) as client:
        client.socket.sendall(b"GET / HTTP/1.0\r\n\r\n" + _frame(_message("AFTERJUNK")))
        assert _msa(_read_frames(client.socket, 1)[0]) == ("AR", "AFTERJUNK")
    assert any(
        "outside any frame" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_restarted_frame_drops_the_abandoned_part(server: MLLPServer) -> None:
    with _client(server) as client:
        client.socket.sendall(
            SB + b"MSH|^~\\&|HIS|HOSP|||2024||ADT^A01|LOST|P|2.5" + _frame(_message("KEPT"))
        )
        acks = _read_frames(client.socket, 1)
        client.socket.sendall(_frame(_message("NEXT")))
        acks += _read_frames(client.socket, 1)
    assert [_msa(ack)[1] for ack in acks] == ["KEPT", "NEXT"]


def test_non_hl7_frame_is_rejected(server: MLLPServer) -> None:
    with _client(server) as client:
        ack = hl7.parse(_unframe(client.send(SB + b"hello, world" + EB + CR)))
    assert _msa(str(ack)) == ("AR", "")
    assert str(ack.segment("ERR")[3]) == "100^Segment sequence error^HL70357"


def test_oversize_message_is_rejected_and_connection_closed(
    make_server: Callable[..., MLLPServer],
) -> None:
    server = make_server(max_message_bytes=2000)
    with _client(server) as client:
        client.socket.sendall(_frame(_message("HUGE", padding=50_000)))
        ack = hl7.parse(_read_frames(client.socket, 1)[0])
        _assert_closed(client.socket)
    assert _msa(str(ack)) == ("AR", "HUGE")
    assert str(ack.segment("ERR")[3]) == "207^Application internal error^HL70357"
    assert "maximum accepted size" in str(ack.segment("ERR")[8])
    with _client(server) as client:
        assert _msa(_unframe(client.send_message(_message("SMALL")))) == ("AR", "SMALL")


def test_frame_that_never_ends_is_bounded_by_max_size(
    make_server: Callable[..., MLLPServer],
) -> None:
    server = make_server(max_message_bytes=2000)
    with _client(server) as client:
        client.socket.sendall(SB + _message("ENDLESS").encode())
        for _ in range(10):
            client.socket.sendall(b"Z" * 500)
        assert _msa(_read_frames(client.socket, 1)[0]) == ("AR", "ENDLESS")
        _assert_closed(client.socket)


def test_oversize_without_rejection_handler_just_closes(
    make_server: Callable[..., MLLPServer],
) -> None:
    server = make_server(max_message_bytes=100, on_oversize=None)
    with _client(server) as client:
        client.socket.sendall(_frame(_message("BIG")))
        _assert_closed(client.socket)


def test_max_connections_is_enforced(
    make_server: Callable[..., MLLPServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(max_connections=2)
    with _client(server) as first, _client(server) as second:
        for client, control_id in ((first, "ONE"), (second, "TWO")):
            assert _msa(_unframe(client.send_message(_message(control_id))))[1] == control_id
        with _client(server) as extra:
            _assert_closed(extra.socket)
        assert any(
            "refused" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
        )
        assert _msa(_unframe(first.send_message(_message("STILL1"))))[1] == "STILL1"
        assert _msa(_unframe(second.send_message(_message("STILL2"))))[1] == "STILL2"
    # Slots are released once the connections close.
    assert _eventually_served(server, "AGAIN")


def _eventually_served(server: MLLPServer, control_id: str) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with _client(server) as client:
            try:
                client.socket.sendall(_frame(_message(control_id)))
                client.socket.settimeout(1)
                reply = client.socket.recv(4096)
            except OSError:  # refused while the old connections are still being released
                reply = b""
        if reply:
            return _msa(_unframe(reply))[1] == control_id
        time.sleep(0.1)
    return False


def test_silent_connection_does_not_block_another_client(server: MLLPServer) -> None:
    with _client(server) as silent, _client(server) as half_sent:
        half_sent.socket.sendall(SB + b"MSH|^~\\&|HIS")
        with _client(server) as busy:
            started = time.monotonic()
            assert _msa(_unframe(busy.send_message(_message("BUSY"))))[1] == "BUSY"
            assert time.monotonic() - started < 1.0
        silent.socket.sendall(_frame(_message("LATE")))
        assert _msa(_read_frames(silent.socket, 1)[0])[1] == "LATE"


def test_idle_connection_is_closed_after_timeout(make_server: Callable[..., MLLPServer]) -> None:
    server = make_server(idle_timeout=0.5)
    with _client(server) as client:
        started = time.monotonic()
        _assert_closed(client.socket)
        assert 0.4 < time.monotonic() - started < 2.5


def test_trickling_sender_is_closed_by_idle_timeout(make_server: Callable[..., MLLPServer]) -> None:
    server = make_server(idle_timeout=0.6)
    with _client(server) as client:
        started = time.monotonic()
        client.socket.sendall(SB)
        with pytest.raises(OSError):
            _trickle(client.socket, seconds=5)
        assert time.monotonic() - started < 3


def _trickle(sock: socket.socket, *, seconds: float) -> None:
    # A byte at a time, never completing a message: only the idle timeout stops it.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.sendall(b"M")
        time.sleep(0.05)


def test_shutdown_is_quick_with_idle_connections() -> None:
    server = MLLPServer("127.0.0.1", 0, _handler)
    server.start()
    host, port = server.address
    clients = [MLLPClient(host, port) for _ in range(3)]
    try:
        clients[0].socket.sendall(SB + b"MSH|partial")
        assert _msa(_unframe(clients[1].send_message(_message("UP"))))[1] == "UP"
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < 3
        for client in clients:
            _assert_closed(client.socket)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=1)
    finally:
        for client in clients:
            client.close()


def test_handler_exception_is_logged_and_server_keeps_serving(
    make_server: Callable[..., MLLPServer], caplog: pytest.LogCaptureFixture
) -> None:
    def flaky(raw: bytes, peer: str) -> bytes:
        if b"BOOM" in raw:
            raise RuntimeError("handler bug")
        return handle_message(raw, sender=peer)

    server = make_server(handler=flaky)
    with _client(server) as client:
        client.socket.sendall(_frame(_message("BOOM")))
        _assert_closed(client.socket)
    failures = [r for r in caplog.records if r.name == "ris.mllp" and r.levelno == logging.ERROR]
    assert failures and failures[0].exc_info is not None
    with _client(server) as client:
        assert _msa(_unframe(client.send_message(_message("FINE"))))[1] == "FINE"


def test_socket_options(server: MLLPServer) -> None:
    with _client(server) as client:
        client.send_message(_message("OPTS"))
        # White-box: the options live on server-side sockets only.
        listener = server._listener
        assert listener is not None
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        accepted = list(server._connections)
        assert accepted
        assert all(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for conn in accepted)


def test_address_reports_the_ephemeral_port(server: MLLPServer) -> None:
    host, port = server.address
    assert host == "127.0.0.1"
    assert port > 0
