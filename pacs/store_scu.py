"""A Storage SCU on a plain blocking socket: sends stored files to another AE, as stored.

C-MOVE opens an association to the destination and sends every instance over it. Through
pynetdicom each instance costs two threads' hand-offs and the DUL's polling loop (a 1 ms
sleep while it waits for the answer): 150-180 instances a second of 0.5 MB CT into
storescp, against Orthanc's 900. This module speaks the few PDUs a Storage SCU needs
(PS3.8 9.3: A-ASSOCIATE, P-DATA-TF, A-RELEASE, A-ABORT) on the calling thread itself, and
sends each file's dataset bytes straight from the file, in P-DATA-TF PDUs as large as the
peer accepts; pynetdicom still encodes and decodes the association PDUs.

A peer that accepts an uncompressed instance only in another uncompressed transfer syntax
gets it converted (pydicom decodes and re-encodes it): the one case that is not "as stored".
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import dsutils
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

from pacs.storage import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

logger = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
CONVERTIBLE = frozenset(
    (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    )
)
MAX_CONTEXTS = 128  # odd context IDs 1..255 (PS3.8 9.3.2.2)
RECEIVE_MAX_PDU = 1 << 20  # what Placa accepts from the peer (only small answers come back)
UNLIMITED_CHUNK = 4 << 20  # a peer with no limit still gets the file in 4 MB PDUs
BLOCK = 4 << 20  # a file is read and sent in blocks of this size
IOV_MAX = 1024  # buffers one sendmsg() takes (Linux)
PDU_HEADER = struct.Struct(">BxI")  # type, reserved, length (PS3.8 9.3.1)
PDV_HEADER = struct.Struct(">BxIIBB")  # P-DATA-TF header and one PDV item's header
ELEMENT = struct.Struct("<HHI")  # implicit VR little endian: group, element, length
COMMAND_LAST, DATA, DATA_LAST = 0x03, 0x00, 0x02
A_ASSOCIATE_AC_TYPE, A_ASSOCIATE_RJ_TYPE, P_DATA_TF_TYPE = 0x02, 0x03, 0x04
A_RELEASE_RQ_TYPE, A_RELEASE_RP_TYPE, A_ABORT_TYPE = 0x05, 0x06, 0x07
C_STORE_RQ, C_STORE_RSP, C_CANCEL_RQ = 0x0001, 0x8001, 0x0FFF
ACCEPTANCE = 0x00


class PeerError(Exception):
    """The association could not be made or broke down; ``comment`` says why (for a status
    Error Comment, at most 64 characters)."""

    def __init__(self, comment: str) -> None:
        super().__init__(comment)
        self.comment = comment[:64]


@dataclass(frozen=True)
class Reply:
    """A C-STORE-RSP: its status and, when the peer gave one, its Error Comment."""

    status: int
    comment: str = ""


def proposals(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, tuple[str, ...]]]:
    """Presentation contexts for (SOP class, stored transfer syntax) pairs: one context per
    pair offering only the stored syntax, and, for each SOP class with uncompressed
    instances, one offering both little endian syntaxes (a fallback that needs conversion).
    """
    exact: list[tuple[str, tuple[str, ...]]] = []
    fallback: list[tuple[str, tuple[str, ...]]] = []
    for sop_class, syntax in dict.fromkeys(pairs):
        exact.append((sop_class, (syntax,)))
        if syntax in CONVERTIBLE and (sop_class, UNCOMPRESSED) not in fallback:
            fallback.append((sop_class, UNCOMPRESSED))
    return (exact + fallback)[:MAX_CONTEXTS]


class Wire:
    """Sends DIMSE messages as P-DATA-TF PDUs on a socket, with no DUL in between: a
    command (implicit VR little endian) and a data set read straight from a file.

    Whoever writes on a socket pynetdicom also owns must be its only writer meanwhile."""

    def __init__(self, sock: socket.socket, peer_max_pdu: int) -> None:
        self.sock = sock
        # A PDV item takes 6 bytes of the PDU's length beside its fragment (PS3.8 9.3.5).
        self.chunk = (peer_max_pdu - 6) if peer_max_pdu > 6 else UNLIMITED_CHUNK
        self._buffer = bytearray()

    def send_command(self, context: int, command: bytes) -> None:
        self._sendall(
            PDV_HEADER.pack(
                P_DATA_TF_TYPE, len(command) + 6, len(command) + 2, context, COMMAND_LAST
            )
            + command
        )

    def send_file(self, context: int, handle: io.BufferedReader, offset: int) -> None:
        """The dataset from ``offset`` to the end of the file, read in blocks of up to
        BLOCK bytes, each block's PDUs handed to the kernel in one sendmsg() call."""
        remaining = os.fstat(handle.fileno()).st_size - offset
        handle.seek(offset)
        if remaining <= 0:
            self._send_pdvs(context, memoryview(b""), last=True)
            return
        while remaining > 0:
            block = self._block(min(remaining, BLOCK))
            count = handle.readinto(block)
            if count <= 0:
                raise PeerError("the file ended early")
            remaining -= count
            self._send_pdvs(context, block[:count], last=remaining <= 0)

    def send_bytes(self, context: int, data: bytes) -> None:
        self._send_pdvs(context, memoryview(data), last=True)

    def _block(self, size: int) -> memoryview:
        """A reusable read buffer of ``size`` bytes (never shrinks)."""
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        return memoryview(self._buffer)[:size]

    def _send_pdvs(self, context: int, data: memoryview, *, last: bool) -> None:
        """``data`` as PDUs of at most ``chunk`` bytes; the final one marked last if ``last``."""
        buffers: list[bytes | memoryview] = []
        starts = range(0, max(len(data), 1), self.chunk)
        for start in starts:
            fragment = data[start : start + self.chunk]
            final = last and start == starts[-1]
            control = DATA_LAST if final else DATA
            length = len(fragment)
            buffers += (PDV_HEADER.pack(P_DATA_TF_TYPE, length + 6, length + 2, context, control),
                        fragment)  # fmt: skip
        try:
            _send_buffers(self.sock, buffers)
        except OSError as exc:
            raise PeerError(f"the peer closed the association: {exc}") from None

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise PeerError(f"the destination closed the association: {exc}") from None


class StoreAssociation:
    """An established association on which this side is the Storage SCU."""

    def __init__(
        self, sock: socket.socket, accepted: dict[int, tuple[str, str]], peer_max_pdu: int
    ) -> None:
        self.sock = sock
        self.wire = Wire(sock, peer_max_pdu)
        self.accepted = accepted  # context ID -> (SOP class, transfer syntax)
        self._by_pair = {pair: cx for cx, pair in accepted.items()}
        self.broken = False  # the association failed mid-way: only an abort is left

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        calling_ae: str,
        called_ae: str,
        contexts: Sequence[tuple[str, tuple[str, ...]]],
        timeout: float,
    ) -> StoreAssociation:
        """Connect and negotiate; PeerError when refused, rejected or unreachable."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise PeerError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see BASELINE.md
        try:
            sock.sendall(_associate_rq(calling_ae, called_ae, contexts))
            kind, body = _read_pdu(sock)
            if kind == A_ASSOCIATE_RJ_TYPE:
                reject = A_ASSOCIATE_RJ()
                reject.decode(PDU_HEADER.pack(kind, len(body)) + body)
                raise PeerError(f"association rejected by {called_ae}: {reject.reason_str}")
            if kind != A_ASSOCIATE_AC_TYPE:
                raise PeerError(f"association refused by {called_ae} (PDU 0x{kind:02X})")
            accept = A_ASSOCIATE_AC()
            accept.decode(PDU_HEADER.pack(kind, len(body)) + body)
            primitive = accept.to_primitive()
        except PeerError:
            _close(sock)
            raise
        except (OSError, ValueError, struct.error) as exc:
            _close(sock)
            raise PeerError(f"association with {called_ae} failed: {exc}") from None
        offered = {2 * index + 1: (sop, syntaxes) for index, (sop, syntaxes) in enumerate(contexts)}
        accepted: dict[int, tuple[str, str]] = {}
        for result in primitive.presentation_context_definition_results_list:
            if result.result == ACCEPTANCE and result.context_id in offered:
                accepted[result.context_id] = (
                    offered[result.context_id][0],
                    str(result.transfer_syntax[0]),
                )
        return cls(sock, accepted, int(primitive.maximum_length_received or 0))

    def context_for(self, sop_class: str, syntax: str) -> tuple[int, str] | None:
        """The accepted context to send an instance in: its own syntax, else a conversion."""
        exact = self._by_pair.get((sop_class, syntax))
        if exact is not None:
            return exact, syntax
        if syntax not in CONVERTIBLE:
            return None
        for target in UNCOMPRESSED:
            context = self._by_pair.get((sop_class, target))
            if context is not None:
                return context, target
        return None

    def store(
        self,
        path: Path,
        sop_class: str,
        sop_instance: str,
        syntax: str,
        *,
        message_id: int,
        originator_ae: str = "",
        originator_message_id: int | None = None,
    ) -> Reply:
        """Send one stored file (a C-STORE sub-operation) and wait for its answer.

        Raises OSError when the file cannot be read (nothing was sent), PeerError when
        no context fits or the association broke (it is then unusable)."""
        chosen = self.context_for(sop_class, syntax)
        if chosen is None:
            raise PeerError(f"the destination accepted no context for {sop_class} in {syntax}")
        context, target = chosen
        command = store_command(
            sop_class, sop_instance, message_id, originator_ae, originator_message_id
        )
        with open(path, "rb") as handle:  # an unreadable file fails before anything is sent
            offset = dataset_offset(handle)
            data = None if target == syntax else converted(path, target)
            try:
                self.wire.send_command(context, command)
                if data is None:
                    self.wire.send_file(context, handle, offset)
                else:
                    self.wire.send_bytes(context, data)
                return self._reply(message_id)
            except (OSError, PeerError) as exc:
                self.broken = True  # part of a message is out: the association is unusable
                comment = exc.comment if isinstance(exc, PeerError) else str(exc)
                raise PeerError(f"the association with the destination failed: {comment}") from None

    def release(self) -> None:
        """A-RELEASE (PS3.8 7.2); the socket is closed whatever the peer answers."""
        try:
            self.sock.sendall(PDU_HEADER.pack(A_RELEASE_RQ_TYPE, 4) + b"\x00" * 4)
            while True:
                kind, _body = _read_pdu(self.sock)
                if kind in (A_RELEASE_RP_TYPE, A_ABORT_TYPE):
                    break
        except (OSError, PeerError):
            pass
        finally:
            _close(self.sock)

    def abort(self) -> None:
        try:
            self.sock.sendall(PDU_HEADER.pack(A_ABORT_TYPE, 4) + b"\x00" * 4)
        except OSError:
            pass
        finally:
            _close(self.sock)

    def _reply(self, message_id: int) -> Reply:
        return read_store_reply(self.sock, message_id)


def _send_buffers(sock: socket.socket, buffers: list[bytes | memoryview]) -> None:
    """Send every buffer, in order, with as few system calls as the kernel allows."""
    index = 0
    while index < len(buffers):
        sent = sock.sendmsg(buffers[index : index + IOV_MAX])
        while index < len(buffers) and sent >= len(buffers[index]):
            sent -= len(buffers[index])
            index += 1
        if sent:
            buffers[index] = memoryview(buffers[index])[sent:]


def read_store_reply(
    sock: socket.socket, message_id: int, on_cancel: Callable[[int], None] | None = None
) -> Reply:
    """Read PDUs up to the C-STORE-RSP of ``message_id``. A C-CANCEL-RQ on the way (the
    peer cancelling the C-GET these C-STOREs serve) is passed to ``on_cancel`` with the
    Message ID it cancels; anything else ends the association (PeerError)."""
    command = bytearray()
    while True:
        kind, body = _read_pdu(sock)
        if kind == A_ABORT_TYPE:
            raise PeerError("the peer aborted the association")
        if kind == A_RELEASE_RQ_TYPE:
            raise PeerError("the peer released the association")
        if kind != P_DATA_TF_TYPE:
            raise PeerError(f"unexpected PDU 0x{kind:02X} from the peer")
        for control, fragment in _pdvs(body):
            if not control & 0x01:
                raise PeerError("a data set from the peer where a C-STORE-RSP was due")
            command += fragment
            if not control & 0x02:
                continue
            values = _command_values(bytes(command))
            command.clear()
            field = int.from_bytes(values.get(0x0100, b"\x00\x00"), "little")
            if field == C_CANCEL_RQ and on_cancel is not None:
                on_cancel(int.from_bytes(values.get(0x0120, b"\x00\x00"), "little"))
                continue
            return _store_reply(values, message_id)


def dataset_offset(handle: io.BufferedReader) -> int:
    """Where a Part 10 file's dataset starts: after the preamble, "DICM" and the File
    Meta Information group, read from its group length (Placa writes every file's)."""
    head = handle.read(144)
    if len(head) < 144 or head[128:132] != b"DICM":
        raise OSError("not a DICOM Part 10 file")
    if head[132:138] == b"\x02\x00\x00\x00UL":
        return 144 + int.from_bytes(head[140:144], "little")
    from pydicom.filereader import _read_file_meta_info

    handle.seek(132)
    _read_file_meta_info(handle)
    return int(handle.tell())


def converted(path: Path, target: str) -> bytes:
    """The file's dataset decoded and encoded again in ``target`` (uncompressed only)."""
    syntax = UID(target)
    try:
        data = dsutils.encode(dcmread(path), syntax.is_implicit_VR, syntax.is_little_endian)
    except OSError:
        raise
    except Exception as exc:  # pydicom raises many kinds for a malformed file
        raise PeerError(f"cannot convert the instance to {syntax.name}: {exc}") from None
    if data is None:
        raise PeerError(f"cannot convert the instance to {syntax.name}")
    return data


def _associate_rq(
    calling_ae: str, called_ae: str, contexts: Sequence[tuple[str, tuple[str, ...]]]
) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title = calling_ae
    primitive.called_ae_title = called_ae
    definitions = []
    for index, (sop_class, syntaxes) in enumerate(contexts):
        context = PresentationContext()
        context.context_id = 2 * index + 1
        context.abstract_syntax = UID(sop_class)
        context.transfer_syntax = [UID(syntax) for syntax in syntaxes]
        definitions.append(context)
    primitive.presentation_context_definition_list = definitions
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = RECEIVE_MAX_PDU
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    primitive.user_information = [maximum, implementation, version]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _read_exact(sock: socket.socket, length: int) -> bytes:
    data = bytearray(length)
    view = memoryview(data)
    got = 0
    while got < length:
        count = sock.recv_into(view[got:])
        if count == 0:
            raise PeerError("the destination closed the connection")
        got += count
    return bytes(data)


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    kind, length = PDU_HEADER.unpack(_read_exact(sock, 6))
    if length > RECEIVE_MAX_PDU + 6:
        raise PeerError(f"PDU of {length} bytes from the destination")
    return kind, _read_exact(sock, length)


def _pdvs(body: bytes) -> Iterable[tuple[int, bytes]]:
    """A P-DATA-TF's PDV items: (message control header, fragment)."""
    position = 0
    while position + 6 <= len(body):
        length = int.from_bytes(body[position : position + 4], "big")
        control = body[position + 5]
        yield control, body[position + 6 : position + 4 + length]
        position += 4 + length


def _element(element: int, value: bytes) -> bytes:
    return ELEMENT.pack(0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def store_command(
    sop_class: str,
    sop_instance: str,
    message_id: int,
    originator_ae: str,
    originator_message_id: int | None,
) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1), implicit VR little endian."""
    elements = [
        _element(0x0002, _uid(sop_class)),
        _element(0x0100, struct.pack("<H", C_STORE_RQ)),
        _element(0x0110, struct.pack("<H", message_id)),
        _element(0x0700, struct.pack("<H", 0x0002)),  # priority: low, as pynetdicom sends
        _element(0x0800, struct.pack("<H", 0x0000)),  # a data set follows
        _element(0x1000, _uid(sop_instance)),
    ]
    if originator_ae:
        title = originator_ae.encode("ascii", "replace")[:16]
        elements.append(_element(0x1030, title + b" " * (len(title) % 2)))
    if originator_message_id is not None:
        elements.append(_element(0x1031, struct.pack("<H", originator_message_id)))
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _command_values(command: bytes) -> dict[int, bytes]:
    """A command set's element values by element number (group 0000, implicit VR)."""
    values: dict[int, bytes] = {}
    position = 0
    while position + 8 <= len(command):
        _group, element, length = ELEMENT.unpack_from(command, position)
        values[element] = command[position + 8 : position + 8 + length]
        position += 8 + length
    return values


def _store_reply(values: dict[int, bytes], message_id: int) -> Reply:
    field = int.from_bytes(values.get(0x0100, b"\x00\x00"), "little")
    answered = int.from_bytes(values.get(0x0120, b"\x00\x00"), "little")
    if field != C_STORE_RSP or answered != message_id or 0x0900 not in values:
        raise PeerError("the peer's answer is not this C-STORE's")
    comment = values.get(0x0902, b"").decode("ascii", "replace").strip("\x00 ")
    return Reply(int.from_bytes(values[0x0900], "little"), comment)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


C_GET_RSP, C_MOVE_RSP = 0x8010, 0x8021
NO_DATA_SET = 0x0101


def retrieve_response(
    command_field: int,
    sop_class: str,
    message_id: int,
    status: int,
    remaining: int,
    completed: int,
    failed: int,
    warning: int,
) -> bytes:
    """A C-GET-RSP or C-MOVE-RSP command set without identifier (PS3.7 9.3.3.2, 9.3.4.2):
    what each Pending response is."""
    counts = (remaining, completed, failed, warning)
    elements = [
        _element(0x0002, _uid(sop_class)),
        _element(0x0100, struct.pack("<H", command_field)),
        _element(0x0120, struct.pack("<H", message_id)),
        _element(0x0800, struct.pack("<H", NO_DATA_SET)),
        _element(0x0900, struct.pack("<H", status)),
        *(_element(0x1020 + index, struct.pack("<H", count)) for index, count in enumerate(counts)),
    ]
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body
