"""MLLP transport for inbound HL7 v2 feeds: framing, connections and timeouts.

A frame is ``<VT> message <FS><CR>`` (0x0B ... 0x1C 0x0D). This module knows
nothing about HL7 content: every complete message goes to a handler that
returns the (unframed) reply, so the acknowledgement logic lives in
:mod:`ris.hl7` and can be tested without sockets.

Concurrency model: one thread per connection, with a hard cap
(``max_connections``). Handlers do blocking work (database writes), so a
selector loop would still need a worker pool to keep one slow handler from
stalling every peer; hospital feeds are a handful of long-lived connections,
so bounded threads are both the simplest and the most robust choice. Every
blocking call uses a short timeout so threads notice shutdown and idle
deadlines promptly.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"

Handler = Callable[[bytes, str], bytes]
"""(message without framing, peer "host:port") -> reply without framing."""

OversizeHandler = Callable[[bytes, str], bytes]
"""(first bytes of the discarded message, peer) -> rejection without framing."""

_RECV_BYTES = 65536
# Upper bound on how long a blocked thread takes to notice shutdown or its idle deadline.
_POLL_SECONDS = 0.2
# A peer that stops reading must not pin a connection thread forever.
_SEND_TIMEOUT = 10.0
_SHUTDOWN_GRACE = 2.0
# Enough to hold the MSH segment, so the rejection can quote the control id.
_OVERSIZE_HEAD_BYTES = 4096
# After an oversize rejection, how long to swallow the rest of the upload so our
# close does not turn into a reset that destroys the rejection in flight.
_LINGER_SECONDS = 1.0
_JUNK_PREVIEW_BYTES = 20
_WHITESPACE = b" \t\r\n"


class _FrameDecoder:
    """Incremental MLLP de-framer that never holds more than ``max_bytes`` of a message."""

    def __init__(self, max_bytes: int, peer: str) -> None:
        self._max_bytes = max_bytes
        self._peer = peer
        self._frame = bytearray()
        self._in_frame = False
        self._junk_bytes = 0
        self._junk_preview = b""
        self.oversize_head: bytes | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._frame) if self._in_frame else 0

    def feed(self, data: bytes) -> list[bytes]:
        """Consume one read; return the messages it completed, in order.

        Stops at the first oversize frame (``oversize_head`` is then set),
        because nothing after it can be trusted to be framed correctly.
        """
        messages: list[bytes] = []
        pos = 0
        while pos < len(data) and self.oversize_head is None:
            if self._in_frame:
                pos = self._read_frame(data, pos, messages)
            else:
                pos = self._skip_to_start(data, pos)
        return messages

    def flush_junk_log(self) -> None:
        # Junk is reported once per gap, not once per read, so a peer streaming
        # rubbish cannot flood the log; the idle timeout bounds the gap itself.
        if self._junk_bytes:
            logger.warning(
                "MLLP %s: skipped %d bytes outside any frame (starting %r)",
                self._peer,
                self._junk_bytes,
                self._junk_preview,
            )
        self._junk_bytes = 0
        self._junk_preview = b""

    def _skip_to_start(self, data: bytes, pos: int) -> int:
        start = data.find(START_BLOCK, pos)
        stop = len(data) if start < 0 else start
        self._note_junk(data[pos:stop])
        if start < 0:
            return len(data)
        self.flush_junk_log()
        self._in_frame = True
        return start + 1

    def _note_junk(self, junk: bytes) -> None:
        # The CR that ends a frame may arrive in the next read, and sloppy peers
        # add newlines between frames: neither is worth a warning.
        if not junk.strip(_WHITESPACE):
            return
        if not self._junk_bytes:
            self._junk_preview = junk.lstrip(_WHITESPACE)[:_JUNK_PREVIEW_BYTES]
        self._junk_bytes += len(junk)

    def _read_frame(self, data: bytes, pos: int, messages: list[bytes]) -> int:
        end = data.find(END_BLOCK, pos)
        stop = len(data) if end < 0 else end
        restart = data.find(START_BLOCK, pos, stop)
        if restart >= 0:
            # A new start block inside a frame: the sender gave up on the
            # previous message, so resynchronise on the new one.
            logger.warning(
                "MLLP %s: unterminated frame (%d bytes) discarded",
                self._peer,
                len(self._frame) + restart - pos,
            )
            self._frame.clear()
            return restart + 1
        if len(self._frame) + stop - pos > self._max_bytes:
            self._overflow(data[pos:stop])
            return len(data)
        self._frame += data[pos:stop]
        if end < 0:
            return len(data)
        messages.append(bytes(self._frame))
        self._frame.clear()
        self._in_frame = False
        return end + 1

    def _overflow(self, chunk: bytes) -> None:
        missing = max(0, _OVERSIZE_HEAD_BYTES - len(self._frame))
        self.oversize_head = bytes(self._frame[:_OVERSIZE_HEAD_BYTES]) + chunk[:missing]
        self._frame.clear()
        self._in_frame = False


class MLLPServer:
    """Threaded MLLP listener: one reply per message, in order, per connection.

    ``handler`` is called from connection threads, concurrently for different
    peers, so it must be thread-safe. ``on_oversize`` builds the rejection for
    a message larger than ``max_message_bytes``; without it the connection is
    just closed. A handler that raises gets the connection closed (and the
    error logged): with no reply the sender retransmits, and the one reply per
    message ordering is never broken.
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        max_message_bytes: int = 10 * 1024 * 1024,
        max_connections: int = 50,
        idle_timeout: float = 300.0,
        on_oversize: OversizeHandler | None = None,
    ) -> None:
        if max_message_bytes < 1 or max_connections < 1 or idle_timeout <= 0:
            raise ValueError("max_message_bytes, max_connections and idle_timeout must be positive")
        self._host = host
        self._port = port
        self._handler = handler
        self._on_oversize = on_oversize
        self._max_message_bytes = max_message_bytes
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None

    def start(self) -> None:
        """Bind and listen, then serve from a background thread; returns at once."""
        if self._listener is not None:
            raise RuntimeError("MLLPServer already started")
        self._listener = self._bind()
        host, port = self._listener.getsockname()[:2]
        self._address = (host, port)
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(self._listener,),
            name=f"mllp-accept-{port}",
            daemon=True,
        )
        self._accept_thread.start()
        logger.info("MLLP listening on %s", _format_peer(self._address))

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); with port 0 this is the ephemeral port chosen."""
        if self._address is None:
            raise RuntimeError("MLLPServer not started")
        return self._address

    def shutdown(self) -> None:
        """Stop accepting, close every connection and wait (bounded) for the threads."""
        self._stopping.set()
        deadline = time.monotonic() + _SHUTDOWN_GRACE
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=_SHUTDOWN_GRACE)
        with self._lock:
            threads = list(self._connections.values())
            # Under the lock, so a connection thread cannot close (and the OS
            # reuse) the descriptor between our snapshot and the shutdown call.
            for conn in self._connections:
                _abort(conn)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = sum(thread.is_alive() for thread in threads)
        if stuck:
            logger.warning("MLLP shutdown: %d connection threads still running", stuck)
        logger.info("MLLP server stopped")

    def _bind(self) -> socket.socket:
        family, _, proto, _, sockaddr = socket.getaddrinfo(
            self._host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, socket.SOCK_STREAM, proto)
        try:
            # Restarting the service must not fail while old connections sit in TIME_WAIT.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen()
            listener.settimeout(_POLL_SECONDS)
        except OSError:
            listener.close()
            raise
        return listener

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    conn, addr = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    # e.g. out of file descriptors: back off rather than spin.
                    logger.exception("MLLP accept failed")
                    self._stopping.wait(_POLL_SECONDS)
                    continue
                self._admit(conn, _format_peer(addr))
        finally:
            listener.close()

    def _admit(self, conn: socket.socket, peer: str) -> None:
        with self._lock:
            full = len(self._connections) >= self._max_connections
            if not full:
                thread = threading.Thread(
                    target=self._serve, args=(conn, peer), name=f"mllp-{peer}", daemon=True
                )
                self._connections[conn] = thread
        if full:
            # Refuse before any thread exists, so a connection flood costs nothing.
            logger.warning(
                "MLLP %s: refused, %d connections already open", peer, self._max_connections
            )
            conn.close()
            return
        try:
            thread.start()
        except RuntimeError:
            logger.exception("MLLP %s: cannot start a connection thread", peer)
            self._forget(conn)

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.pop(conn, None)
            conn.close()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        logger.info("MLLP %s: connected", peer)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._converse(conn, peer)
        except OSError as exc:
            if not self._stopping.is_set():
                logger.info("MLLP %s: connection error: %s", peer, exc)
        except Exception:
            logger.exception("MLLP %s: unexpected error, closing connection", peer)
        finally:
            self._forget(conn)
            logger.info("MLLP %s: closed", peer)

    def _converse(self, conn: socket.socket, peer: str) -> None:
        decoder = _FrameDecoder(self._max_message_bytes, peer)
        deadline = time.monotonic() + self._idle_timeout
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.info(
                    "MLLP %s: no complete message for %.1f s, closing", peer, self._idle_timeout
                )
                break
            conn.settimeout(min(_POLL_SECONDS, remaining))
            try:
                data = conn.recv(_RECV_BYTES)
            except TimeoutError:
                continue
            if not data:
                break
            for message in decoder.feed(data):
                if not self._answer(conn, peer, message):
                    return
                deadline = time.monotonic() + self._idle_timeout
            if decoder.oversize_head is not None:
                self._reject_oversize(conn, peer, decoder.oversize_head)
                return
        decoder.flush_junk_log()
        if decoder.pending_bytes:
            logger.warning(
                "MLLP %s: closing with an unfinished message (%d bytes)",
                peer,
                decoder.pending_bytes,
            )

    def _answer(self, conn: socket.socket, peer: str, message: bytes) -> bool:
        try:
            frame = START_BLOCK + self._handler(message, peer) + END_BLOCK + CARRIAGE_RETURN
        except Exception:
            logger.exception("MLLP %s: handler failed; closing so the sender retransmits", peer)
            return False
        conn.settimeout(_SEND_TIMEOUT)
        conn.sendall(frame)
        return True

    def _reject_oversize(self, conn: socket.socket, peer: str, head: bytes) -> None:
        logger.warning(
            "MLLP %s: message larger than %d bytes discarded; closing",
            peer,
            self._max_message_bytes,
        )
        if self._on_oversize is None:
            return
        try:
            frame = START_BLOCK + self._on_oversize(head, peer) + END_BLOCK + CARRIAGE_RETURN
        except Exception:
            logger.exception("MLLP %s: oversize rejection handler failed", peer)
            return
        conn.settimeout(_SEND_TIMEOUT)
        conn.sendall(frame)
        self._linger(conn)

    def _linger(self, conn: socket.socket) -> None:
        # Closing while the peer's upload is still arriving makes the kernel
        # send a reset, which can destroy the rejection before it is read.
        # Half-close, then discard (never buffer) input for a bounded time.
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER_SECONDS
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            conn.settimeout(min(_POLL_SECONDS, remaining))
            try:
                if not conn.recv(_RECV_BYTES):
                    return
            except TimeoutError:
                continue


def _abort(conn: socket.socket) -> None:
    # shutdown() (unlike close()) wakes a thread blocked in recv/send on this socket.
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _format_peer(addr: tuple) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
