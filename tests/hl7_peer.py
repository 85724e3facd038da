"""A test MLLP peer (the HIS Placa sends to): records what arrives, answers AA, AE or AR.

``HL7Peer(port)`` listens on 127.0.0.1 in a thread once started; ``stop()`` closes it, so
the port refuses connections (the peer is "down") until ``start()`` again. ``answer`` picks
the MSA-1 of the next acknowledgements; ``"silent"`` reads the message and never answers.
It is written from the MLLP framing rules alone, not from Placa's listener.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass, field

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def control_id(message: str) -> str:
    msh = message.split("\r", 1)[0]
    fields = msh.split(msh[3])
    return fields[9] if len(fields) > 9 else ""


def ack_for(message: str, code: str, text: str = "") -> str:
    msh = message.split("\r", 1)[0].split("|")
    sender, facility = (msh[2], msh[3]) if len(msh) > 3 else ("", "")
    segments = [
        f"MSH|^~\\&|HIS|HOSP|{sender}|{facility}|20260101000000||ACK^S12^ACK|A{control_id(message)}"
        "|P|2.5.1",
        f"MSA|{code}|{control_id(message)}" + (f"|{text}" if text else ""),
    ]
    if code != "AA":
        segments.append(f"ERR||PID^1^3|101^Required field missing^HL70357|E||||{text}")
    return "\r".join(segments) + "\r"


@dataclass
class HL7Peer:
    port: int
    answer: str = "AA"  # AA, AE, AR or silent
    text: str = "Refused by the test peer"
    messages: list[str] = field(default_factory=list)
    connections: int = 0
    _server: socketserver.ThreadingTCPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> HL7Peer:
        peer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                peer._serve(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler,
                                                 bind_and_activate=False)  # fmt: skip
        server.allow_reuse_address = True
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def control_ids(self) -> list[str]:
        with self._lock:
            return [control_id(m) for m in self.messages]

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        sock.settimeout(5)
        buffer = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while FS + CR in buffer:
                frame, buffer = buffer.split(FS + CR, 1)
                message = frame[frame.find(VT) + 1 :].decode("utf-8")
                with self._lock:
                    self.messages.append(message)
                    answer, text = self.answer, self.text
                if answer == "silent":
                    continue
                reply = ack_for(message, answer, "" if answer == "AA" else text)
                sock.sendall(VT + reply.encode("utf-8") + FS + CR)
