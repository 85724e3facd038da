"""The DICOM door's receive path: each P-DATA-TF PDU read into one buffer, its fragments
handed to DIMSE as views of it.

pynetdicom 3.0.4 reads a PDU 4,096 bytes at a time (a 0.5 MB CT slice in one PDU is 128
``recv`` calls, each result appended to a growing bytearray), copies it whole twice more
to decode it, builds an item object per fragment, queues an event for its state machine
and copies each fragment again before DIMSE appends it to the message: with four
associations ingesting, the PDU path was a third of the door's Python time. Here a P-DATA
PDU in the data transfer state is read with ``recv_into`` into a buffer of its announced
length and its presentation data values are passed to DIMSE as memoryviews: the bytes are
copied once, into the DIMSE message. What the state machine would do for it (Sta6 + Evt10,
action DT-2: hand the P-DATA indication to DIMSE, stay in Sta6) is done directly, on the
same DUL thread, and only when no other event is waiting for the state machine (so the
order of events is unchanged). While a data set is still arriving the next PDU is read at
once, without going back through the DUL loop; a peer silent in the middle of one is cut
off after the network timeout.

Each fragment of a C-STORE data set is also hashed (SHA-1) as it arrives, on this thread
(hashlib releases the GIL), so the store path has the file's hash without reading the data
set again before it answers (:func:`received_sha1`).

Everything else (other PDU types, other states, a PDU longer than Placa announced or
malformed, handlers bound to the PDU events) goes pynetdicom's way, with the same events.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import struct
from io import BytesIO
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

logger = logging.getLogger(__name__)

P_DATA_TF = 0x04
KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))
DATA_TRANSFER = "Sta6"
UNLIMITED_PDU = 16 * 1024 * 1024  # read at once when Placa announces no maximum
PROMPT_DELAY = 0.001  # pynetdicom's idle sleep of its DUL loop
_PDU_HEADER = struct.Struct(">BBL")
_PDV_LENGTH = struct.Struct(">L")


def receive_pdus_into_buffers(dul: Any) -> None:
    """Give this association's DUL the single-buffer reader (see the module's docstring)."""
    assoc = dul.assoc
    if assoc.get_handlers(evt.EVT_DATA_RECV) or assoc.get_handlers(evt.EVT_PDU_RECV):
        return  # someone wants pynetdicom's PDU objects and raw bytes
    _time_out_blocked_reads(dul.socket.socket, assoc.network_timeout)
    delay = dul.__dict__.pop("_run_loop_delay", PROMPT_DELAY)
    dul.__class__ = _PromptDUL
    dul._run_loop_delay = delay
    usual = dul._read_pdu_data
    largest: list[int] = []  # known once the association is established

    def read_pdu_data() -> None:
        if dul.state_machine.current_state != DATA_TRANSFER or not dul.event_queue.empty():
            usual()
            return
        if not largest:
            largest.append(_largest_pdu(assoc))
        _read_pdu(dul, largest[0])

    dul._read_pdu_data = read_pdu_data


def _time_out_blocked_reads(sock: socket.socket, seconds: float | None) -> None:
    """A read that waits on the peer in the middle of a PDU or of a data set gives up after
    the network timeout (a modality switched off or its cable pulled sends neither FIN nor
    RST), and the association is closed. Set in the kernel (SO_RCVTIMEO), not with
    ``settimeout``, which would add a poll() before every read; select() ignores it."""
    if not seconds or seconds <= 0:
        return
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    except OSError as exc:  # not a TCP socket (a test's socket pair): reads wait as before
        logger.debug("SO_RCVTIMEO not set: %s", exc)


class _PromptDUL(DULServiceProvider):
    """pynetdicom's DUL whose loop, after PDUs handed straight to DIMSE, looks for the next
    one at once: its loop sleeps ``_run_loop_delay`` whenever its state machine had no event
    to process (0.2 ms here, between a C-STORE's command PDU and its data set's first PDU
    otherwise; the rest of a data set is read without going round the loop)."""

    @property  # type: ignore[override]
    def _run_loop_delay(self) -> float:
        state = self.__dict__
        if state.pop("_placa_prompt", False):
            return 0.0
        return float(state.get("_placa_loop_delay", PROMPT_DELAY))

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        self.__dict__["_placa_loop_delay"] = value


def _largest_pdu(assoc: Any) -> int:
    announced = int(assoc.acceptor.maximum_length or 0)
    return announced if announced else UNLIMITED_PDU


def _read_pdu(dul: Any, largest: int) -> None:
    """Read PDUs and deliver them, P-DATA-TF straight to DIMSE, any other as pynetdicom;
    while a data set is still arriving, the next PDU at once.

    The peer must send the rest of a data set whose last fragment has not come, so the DUL
    loop (which would look at its send queue, sleep, then select() on the socket before
    each PDU: a GIL hand-off and a trip through the scheduler every time) is left only when
    a message is complete, another PDU type arrives or the DUL is told to stop. The loop's
    idle timer is restarted for each PDU, as its own reads do."""
    while _read_one_pdu(dul, largest) and not dul._kill_thread:
        dul._idle_timer.restart()


def _read_one_pdu(dul: Any, largest: int) -> bool:
    """Read one PDU and deliver it; whether it ended with a data set fragment that is not
    the last (PS3.8 E.2: message control header bit 0 clear, bit 1 clear)."""
    sock = dul.socket.socket
    header = bytearray(6)
    if recv_exactly(sock, memoryview(header)) != 6:
        dul.event_queue.put("Evt17")  # the connection closed
        return False
    pdu_type, _, length = _PDU_HEADER.unpack(header)
    if pdu_type not in KNOWN_PDU_TYPES:
        logger.error("Unknown PDU type received 0x%02X", pdu_type)
        dul.event_queue.put("Evt19")
        return False
    if pdu_type != P_DATA_TF or length > largest:
        _read_as_pynetdicom(dul, header, length)
        return False
    body = bytearray(length)
    if recv_exactly(sock, memoryview(body)) != length:
        logger.error("The connection closed in the middle of a P-DATA-TF PDU")
        dul.event_queue.put("Evt17")
        return False
    values = presentation_data_values(body)
    if values is None:
        logger.error("Invalid P-DATA-TF PDU received (its item lengths do not add up)")
        dul.event_queue.put("Evt19")
        return False
    dimse = dul.assoc.dimse
    for value in values:  # one by one, as DIMSE would take them from one primitive
        if not value[1][0] & 1:  # a data set fragment (PS3.8 E.2)
            _digest(dimse.message, value[1])
        primitive = P_DATA()
        # Set past the property, whose check admits only bytes: DIMSE reads the fragments
        # with indexing and slicing, which a memoryview answers as bytes do.
        primitive._presentation_data_value_list = [value]  # type: ignore[assignment]
        dimse.receive_primitive(primitive)
    dul.__dict__["_placa_prompt"] = True
    return not values[-1][1][0] & 0b11


class _Digest:
    """The SHA-1 of a C-STORE data set, fragment by fragment, and how many bytes it covers."""

    def __init__(self) -> None:
        self.hash = hashlib.sha1()
        self.length = 0


DIGEST_ATTRIBUTE = "placa_sha1"  # on the message's data set buffer, which DIMSE passes on


def _digest(message: Any, fragment: memoryview) -> None:
    """Hash a C-STORE data set fragment as it arrives, on the DUL thread (hashlib releases
    the GIL): the store path then has the file's hash without reading the bytes again."""
    if type(message) is not C_STORE_RQ:
        return
    buffer = message.data_set
    digest = buffer.__dict__.get(DIGEST_ATTRIBUTE)
    if digest is None:
        digest = buffer.__dict__[DIGEST_ATTRIBUTE] = _Digest()
    value = fragment[1:]
    digest.hash.update(value)
    digest.length += len(value)


def received_sha1(data_set: BytesIO, length: int) -> str | None:
    """The hex SHA-1 of a received C-STORE data set of ``length`` bytes, when every one of
    its fragments was hashed on arrival (a fragment that went pynetdicom's way was not:
    the hash then covers fewer bytes and is not used)."""
    digest = getattr(data_set, DIGEST_ATTRIBUTE, None)
    if digest is None or digest.length != length:
        return None
    return digest.hash.hexdigest()


def recv_exactly(sock: Any, view: memoryview) -> int:
    """Fill ``view`` from the socket; the bytes read (fewer when the peer closed)."""
    received = 0
    try:
        while received < len(view):
            count = sock.recv_into(view[received:])
            if not count:
                break
            received += count
    except BlockingIOError:  # SO_RCVTIMEO: the peer went silent in the middle
        logger.error("No data from the peer for the network timeout in the middle of a PDU "
                     "or data set: closing the association")  # fmt: skip
    except (OSError, TimeoutError) as exc:
        logger.error("Connection error while receiving a PDU: %s", exc)
    return received


def presentation_data_values(body: bytearray) -> list[list[Any]] | None:
    """The PDU's (context ID, fragment) pairs, fragments as views of ``body`` (PS3.8
    9.3.5.1: item length, context ID, then the message control header and the fragment);
    None when an item's length runs past the PDU or is too short for its header."""
    view = memoryview(body)
    values: list[list[Any]] = []
    offset, end = 0, len(body)
    while offset < end:
        if offset + 4 > end:
            return None
        (item_length,) = _PDV_LENGTH.unpack_from(body, offset)
        start, stop = offset + 4, offset + 4 + item_length
        if item_length < 2 or stop > end:
            return None
        values.append([body[start], view[start + 1 : stop]])
        offset = stop
    return values or None


def _read_as_pynetdicom(dul: Any, header: bytearray, length: int) -> None:
    """The rest of pynetdicom's ``_read_pdu_data`` once the header is read (read as it
    arrives: the announced length of a PDU that is not P-DATA is not allocated up front)."""
    rest = dul.socket.recv(length)
    if len(rest) != length:
        logger.error("The connection closed before the entire PDU was received")
        dul.event_queue.put("Evt17")
        return
    try:
        pdu, event = dul._decode_pdu(header + rest)
    except Exception:
        logger.exception("Unable to decode the received PDU data")
        dul.event_queue.put("Evt19")
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)
