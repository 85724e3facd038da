"""A small MLLP client: one connection, one message at a time, each answered by one reply.

Used by the outbox sender (:mod:`ris.hl7.outbound`). Every blocking call has a deadline, so a
peer that accepts and then says nothing costs ``read_timeout`` seconds, never a stuck thread.
Nagle is off (``TCP_NODELAY``): each message is one small write waiting for its ACK.
"""

from __future__ import annotations

import logging
import socket
import time
from types import TracebackType

logger = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
MAX_REPLY_BYTES = 1024 * 1024  # an ACK is a few hundred bytes
_RECV_BYTES = 65536


class MLLPClientError(OSError):
    """The peer could not be reached, did not answer in time, or answered something unframed."""


def frame(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK + CARRIAGE_RETURN


class MLLPClient:
    """``with MLLPClient(host, port) as link: reply = link.exchange(message)``."""

    def __init__(
        self, host: str, port: int, *, connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT, max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_reply_bytes = max_reply_bytes
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def __enter__(self) -> MLLPClient:
        self.connect()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise MLLPClientError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._buffer.clear()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def exchange(self, message: bytes) -> bytes:
        """Send one message and return the peer's reply, both without framing.

        Any failure closes the connection: after a timeout the stream may still carry a late
        reply, which must never be taken for the answer to the next message.
        """
        if self._sock is None:
            self.connect()
        try:
            return self._exchange(message)
        except MLLPClientError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise MLLPClientError(f"{self.host}:{self.port}: {exc}") from exc

    def _exchange(self, message: bytes) -> bytes:
        assert self._sock is not None
        self._sock.settimeout(self.read_timeout)
        self._sock.sendall(frame(message))
        deadline = time.monotonic() + self.read_timeout
        while True:
            reply = self._take_frame()
            if reply is not None:
                return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MLLPClientError(f"no reply from {self.host}:{self.port} in time")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(_RECV_BYTES)
            except TimeoutError:
                raise MLLPClientError(
                    f"no reply from {self.host}:{self.port} within {self.read_timeout:g} s"
                ) from None
            if not data:
                raise MLLPClientError(f"{self.host}:{self.port} closed the connection")
            self._buffer += data
            if len(self._buffer) > self.max_reply_bytes:
                raise MLLPClientError(f"reply from {self.host}:{self.port} is too large")

    def _take_frame(self) -> bytes | None:
        """The first complete frame in the buffer (bytes before its start are noise)."""
        start = self._buffer.find(START_BLOCK)
        if start < 0:
            self._buffer.clear()
            return None
        end = self._buffer.find(END_BLOCK + CARRIAGE_RETURN, start + 1)
        if end < 0:
            return None
        reply = bytes(self._buffer[start + 1 : end])
        del self._buffer[: end + 2]
        return reply
