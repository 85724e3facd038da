"""The DICOM door: one pynetdicom application entity for every DICOM service Placa offers.

Services live in their packages (``pacs.dicom``, ``worklist.dicom``); each lists
:class:`DicomService` entries, and this module assembles them on one AE title and port,
with the socket and timeout settings every association needs.

pynetdicom binds one handler per event (one for every C-FIND, one for every N-SET...),
whatever the SOP class. The door binds a dispatcher per event instead, which hands the
request to the service registered for its SOP class: the Modality Worklist and the
archive's Query/Retrieve both answer C-FIND, MPPS and Storage Commitment both use
N-services, without knowing of each other.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventType
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from ris.dicom_receive import receive_pdus_into_buffers

logger = logging.getLogger(__name__)

ACSE_TIMEOUT = 30
DIMSE_TIMEOUT = 60
NETWORK_TIMEOUT = 60
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.5.4 (refused: SOP Class not supported)

ServiceHandler = Callable[[Event, Flask], Any]
"""A service's handler: pynetdicom's event, and the application (database, settings)."""

ExtendedNegotiation = Callable[[bytes], bytes]
"""What Placa answers to the service class application information a requestor proposes."""


@dataclass(frozen=True)
class DicomService:
    """The SOP classes a service answers and its handler for each DIMSE event."""

    sop_classes: tuple[str, ...]
    handlers: Mapping[EventType, ServiceHandler]
    # SCP/SCU role selection to accept for these classes (C-GET needs the requestor as SCP).
    scu_role: bool | None = None
    scp_role: bool | None = None
    # Transfer syntaxes accepted; None: pynetdicom's default (the three uncompressed ones).
    # Storage accepts compressed syntaxes too, since it stores datasets as received.
    transfer_syntaxes: tuple[str, ...] | None = None
    # The answer to a requestor's SOP Class Extended Negotiation for these classes (PS3.7
    # D.3.3.5): its service class application information in, the acceptor's out.
    extended_negotiation: ExtendedNegotiation | None = None


AssociationHook = Callable[[Event, Flask], None]
"""Called on EVT_REQUESTED, before negotiation: may reject the association
(``event.assoc.acse.send_reject``), e.g. the archive's calling-AE whitelist."""


def set_nodelay(event: Event) -> None:
    """Disable Nagle on the association's socket (see ../shared/bench/BASELINE.md).

    pynetdicom never sets TCP_NODELAY; without it every small response waits for a
    delayed ACK (about 40 ms), which caps a store at a few dozen instances a second.
    """
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101  # Command Data Set Type (PS3.7 E.1)
COMMAND_LAST_FRAGMENT = b"\x03"  # message control header: command, last fragment (PS3.8 E.2)


def _command_element(element: int, value: bytes) -> bytes:
    """One implicit VR little endian element of group 0000 (every command set's encoding)."""
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: object) -> bytes:
    data = str(value).encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def store_success_command(sop_class_uid: str, message_id: int, sop_instance_uid: str) -> bytes:
    """The C-STORE-RSP command set with status Success (PS3.7 9.3.1.2), tags in order."""
    body = b"".join((
        _command_element(0x0002, _uid(sop_class_uid)),
        _command_element(0x0100, struct.pack("<H", C_STORE_RSP)),
        _command_element(0x0120, struct.pack("<H", message_id)),
        _command_element(0x0800, struct.pack("<H", NO_DATA_SET)),
        _command_element(0x0900, struct.pack("<H", 0x0000)),
        _command_element(0x1000, _uid(sop_instance_uid)),
    ))  # fmt: skip
    return _command_element(0x0000, struct.pack("<I", len(body))) + body


def store_success_pdu(context_id: int, command: bytes) -> bytes:
    """The P-DATA-TF PDU (PS3.8 9.3.5) holding one command set as its only, last fragment."""
    return struct.pack(">BBIIB", 0x04, 0, 6 + len(command), 2 + len(command), context_id) + (
        COMMAND_LAST_FRAGMENT + command
    )


def send_store_successes_as_bytes(event: Event) -> None:
    """Write C-STORE Success responses on the socket as prebuilt bytes.

    pynetdicom builds each response's command set as a pydicom Dataset and encodes it twice
    (once for the group length), then queues it for its DUL thread, which polls its queue
    every millisecond: about a third of the door's Python time per stored instance, and up
    to a millisecond of waiting. A Success response has no identifier and six fixed
    elements, so it is encoded here and written by the association's own thread. Nothing
    else writes on the socket meanwhile: the peer waits for this response before its next
    request (no asynchronous operations are negotiated), so every earlier message of the
    association has been sent already. Every other message (a failure with its Error
    Comment, other services) goes pynetdicom's way, and so does any message when something
    is still queued for the DUL.
    """
    assoc = event.assoc
    dimse = assoc.dimse
    usual = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        transport = assoc.dul.socket
        sock = transport.socket if transport is not None else None
        if (type(primitive) is not C_STORE or primitive.MessageIDBeingRespondedTo is None
                or primitive.Status != 0x0000 or primitive.ErrorComment is not None
                or primitive.OffendingElement is not None or sock is None
                or not assoc.dul.to_provider_queue.empty()):  # fmt: skip
            usual(primitive, context_id)
            return
        command = store_success_command(
            str(primitive.AffectedSOPClassUID), int(primitive.MessageIDBeingRespondedTo),
            str(primitive.AffectedSOPInstanceUID),
        )  # fmt: skip
        try:
            sock.sendall(store_success_pdu(context_id, command))
        except OSError as exc:  # the peer is gone: the DUL sees the closed socket itself
            logger.warning("C-STORE response to %s not sent: %s", assoc.requestor.ae_title, exc)

    dimse.send_msg = send_msg


WAKE_INTERVAL = 0.05  # seconds a waiting DUL thread sleeps at most (timers, a kill)


class _WakingQueue(queue.Queue):
    """The DUL's queue of primitives to send: a put also wakes the DUL thread."""

    def __init__(self, wake: int) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        _wake(self._wake)


class _SignallingQueue(queue.Queue):
    """A queue the association's reactor reads: a put also sets its wake-up event."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake.set()


class _Checkpoint(threading.Event):
    """The reactor's checkpoint: clearing it (to pause the reactor, as pynetdicom does
    before an acceptor sends a request) wakes the reactor so it pauses at once."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake
        self.set()

    def clear(self) -> None:
        super().clear()
        self._wake.set()


class _WaitingSocket(AssociationSocket):
    """pynetdicom's socket whose ``ready`` waits for data (or a wake-up) instead of
    answering at once: the DUL thread then sleeps in select() rather than polling.

    A service that takes the socket's reads from the DUL for a while (C-GET) marks it not
    connected: the DUL is woken, and waits on the wake-up pipe alone until it is marked
    connected again (which wakes it too)."""

    _wake_read: int
    _wake_write: int

    @property
    def _is_connected(self) -> bool:
        return bool(self.__dict__.get("_is_connected"))

    @_is_connected.setter
    def _is_connected(self, value: bool) -> None:
        self.__dict__["_is_connected"] = value
        if "_wake_write" in self.__dict__:
            _wake(self._wake_write)

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None:
            return False
        connected = self._is_connected
        waited = [sock, self._wake_read] if connected else [self._wake_read]
        # The DUL handles one event per turn of its loop and asks here in between: with
        # events still queued (a connection's Evt5 and, read at once behind it, the
        # A-ASSOCIATE-RQ's Evt6) it must only look, not wait, or the second one waits out
        # the interval (every association's acceptance took 50 ms more).
        wait = WAKE_INTERVAL if self.event_queue.empty() else 0
        try:
            readable, _, _ = select.select(waited, [], [], wait)
        except (OSError, TimeoutError, ValueError):
            if not connected:
                return False
            self.event_queue.put("Evt17")  # what pynetdicom's ready does: connection closed
            return False
        if self._wake_read in readable:
            try:
                os.read(self._wake_read, 4096)
            except OSError:
                pass
        return connected and self._is_connected and sock in readable


def _wake(fd: int) -> None:
    try:
        os.write(fd, b"\0")
    except OSError:  # the pipe is full (the DUL is being woken anyway) or closed
        pass


def wait_instead_of_polling(event: Event) -> None:
    """Let the association's DUL thread sleep until the peer sends or Placa queues a PDU.

    pynetdicom's DUL thread polls: it sleeps 1 ms, checks its queue, calls select() with
    no timeout, and again, a thousand times a second for every open association, each
    time taking the GIL: with four associations ingesting, a good share of the CPU a
    stored instance costs, and up to 1 ms of delay on each incoming request. Here its
    socket's ``ready`` waits in select() on the socket and on a pipe written whenever a
    primitive is queued for sending or the thread is told to stop, so it wakes at once
    for either and otherwise every WAKE_INTERVAL for its timers.
    """
    dul = event.assoc.dul
    transport = dul.socket
    if transport is None or type(transport) is not AssociationSocket:
        return
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    weakref.finalize(dul, _close_pipe, wake_read, wake_write)
    transport.__class__ = _WaitingSocket
    transport._wake_read = wake_read  # type: ignore[attr-defined]
    transport._wake_write = wake_write  # type: ignore[attr-defined]
    dul.to_provider_queue = _WakingQueue(wake_write)
    dul._run_loop_delay = 0.0002  # its idle sleep, before select() waits
    usual_kill = dul.kill_dul

    def kill_dul() -> None:
        usual_kill()
        _wake(wake_write)

    def stop_dul() -> bool:  # pynetdicom's, with the wake-up
        if dul.state_machine.current_state != "Sta1":
            return False
        dul._kill_thread = True
        _wake(wake_write)
        while dul.is_alive():
            time.sleep(0.0005)
        return True

    dul.kill_dul, dul.stop_dul = kill_dul, stop_dul
    _reactor_waits(event.assoc)
    receive_pdus_into_buffers(dul)


def _reactor_waits(assoc: Any) -> None:
    """The association's own reactor, which polls every millisecond too, waits instead for
    what it acts on: a DIMSE message decoded, or a release or abort from the peer (their
    queues set its event), checking its timers every WAKE_INTERVAL. The loop is
    pynetdicom 3.0.4's ``Association._run_reactor`` with ``time.sleep(0.001)`` replaced."""
    wake = threading.Event()
    assoc.dimse.msg_queue = _SignallingQueue(wake)
    assoc.dul.to_user_queue = _SignallingQueue(wake)
    checkpoint = _Checkpoint(wake)
    if not assoc._reactor_checkpoint.is_set():
        checkpoint.clear()
    assoc._reactor_checkpoint = checkpoint

    def run_reactor() -> None:
        assoc._is_paused = False
        while not assoc._kill:
            wake.wait(WAKE_INTERVAL)
            wake.clear()
            assoc._is_paused = True
            assoc._reactor_checkpoint.wait()
            assoc._is_paused = False
            context_id, msg = assoc.dimse.get_msg(block=False)
            if msg:
                wake.set()  # more may be queued: look again at once
                assoc._serve_request(msg, context_id)
            if _reactor_done(assoc):
                return

    assoc._run_reactor = run_reactor


def _reactor_done(assoc: Any) -> bool:
    """Release, abort, a stopped DUL or the network timeout, as pynetdicom's loop checks."""
    if assoc.is_established and assoc.acse.is_release_requested():
        assoc.acse.send_release(is_response=True)
        logger.debug("Association released")
        assoc.is_released, assoc.is_established = True, False
        evt.trigger(assoc, evt.EVT_RELEASED, {})
        assoc.kill()
        return True
    if assoc.acse.is_aborted():
        assoc.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV for its subscribers
        assoc.is_aborted, assoc.is_established = True, False
        evt.trigger(assoc, evt.EVT_ABORTED, {})
        assoc.kill()
        return True
    if not assoc.dul.is_alive():
        assoc.kill()
        return True
    if assoc.dul.idle_timer_expired():
        logger.error("Network timeout reached")
        if assoc.network_timeout_response == "A-RELEASE":
            assoc._is_paused = True
            assoc._reactor_checkpoint.wait()
            assoc.release()
            assoc._is_paused = False
        else:
            assoc.abort()
        assoc.kill()
        return True
    return False


def _close_pipe(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _log_association(event: Event) -> None:
    requestor = event.assoc.requestor
    logger.info(
        "Association %s from %s (%s:%s) in process %s",
        "accepted" if event.event == evt.EVT_ACCEPTED else "rejected",
        requestor.ae_title, requestor.address, requestor.port, os.getpid(),
    )  # fmt: skip


def requested_sop_class(event: Event) -> str:
    """The SOP class a DIMSE request is for (N-SET/N-ACTION/N-GET name it "Requested")."""
    request = event.request
    uid = getattr(request, "AffectedSOPClassUID", None) or getattr(
        request, "RequestedSOPClassUID", None
    )
    return str(uid or "")


def _dispatcher(app: Flask, table: dict[str, ServiceHandler]) -> Callable[[Event], Any]:
    def dispatch(event: Event) -> Any:
        uid = requested_sop_class(event)
        handler = table.get(uid)
        if handler is None:
            logger.warning("%s for SOP class %s: no service", event.event.name, uid)
            return _refusal(event)
        return handler(event, app)

    return dispatch


def _refusal(event: Event) -> Any:
    if event.event in (evt.EVT_C_FIND, evt.EVT_C_GET, evt.EVT_C_MOVE):
        return iter([(SOP_CLASS_NOT_SUPPORTED, None)])
    if event.event in (evt.EVT_N_CREATE, evt.EVT_N_SET, evt.EVT_N_ACTION, evt.EVT_N_GET):
        return SOP_CLASS_NOT_SUPPORTED, None
    return SOP_CLASS_NOT_SUPPORTED


def _services() -> list[DicomService]:
    from pacs import dicom as pacs_dicom
    from worklist import dicom as worklist_dicom

    return [*pacs_dicom.SERVICES, *worklist_dicom.SERVICES]


def _association_hooks() -> list[AssociationHook]:
    from pacs import dicom as pacs_dicom

    return list(pacs_dicom.ASSOCIATION_HOOKS)


def _on_requested(app: Flask, hooks: list[AssociationHook]) -> Callable[[Event], None]:
    def requested(event: Event) -> None:
        for hook in hooks:
            if event.assoc.is_rejected or event.assoc.is_aborted:
                return
            hook(event, app)

    return requested


def build_ae(
    app: Flask, services: Iterable[DicomService] | None = None
) -> tuple[AE, list[tuple[Any, Any]]]:
    """The application entity with every service's presentation contexts and handlers."""
    # pynetdicom writes each C-FIND/C-MOVE request identifier to the log at INFO and formats
    # each response identifier for DEBUG even when DEBUG is off: patient names in the log,
    # and a quarter of the CPU of a worklist answer (bench/bench_worklist.py).
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    # Nor bind its standard handlers, which format every DIMSE message and PDU for DEBUG
    # (each C-STORE request's attributes, looked up in its command Dataset) at any level.
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=app.config["AE_TITLE"])
    ae.maximum_pdu_size = app.config["DICOM_MAX_PDU"]
    ae.require_called_aet = True
    ae.acse_timeout, ae.dimse_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT
    ae.network_timeout = NETWORK_TIMEOUT
    # pynetdicom's default (10 at once) is a workstation's: a department's modalities,
    # viewers and archives together open more.
    ae.maximum_associations = 64
    tables: dict[EventType, dict[str, ServiceHandler]] = {}
    negotiations: dict[str, ExtendedNegotiation] = {}
    for service in _services() if services is None else services:
        for uid in service.sop_classes:
            syntaxes = list(service.transfer_syntaxes or DEFAULT_TRANSFER_SYNTAXES)
            ae.add_supported_context(
                uid, syntaxes, scu_role=service.scu_role, scp_role=service.scp_role
            )
            for event_type, handler in service.handlers.items():
                tables.setdefault(event_type, {})[uid] = handler
            if service.extended_negotiation is not None:
                negotiations[uid] = service.extended_negotiation
    handlers: list[tuple[Any, Any]] = [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_CONN_OPEN, send_store_successes_as_bytes),
        (evt.EVT_CONN_OPEN, wait_instead_of_polling),
        (evt.EVT_ACCEPTED, _log_association),
        (evt.EVT_REJECTED, _log_association),
        (evt.EVT_REQUESTED, _on_requested(app, _association_hooks())),
    ]
    handlers.extend((event_type, _dispatcher(app, table)) for event_type, table in tables.items())
    if negotiations:
        handlers.append((evt.EVT_SOP_EXTENDED, _extended_negotiation(negotiations)))
    return ae, handlers


def _extended_negotiation(
    negotiations: Mapping[str, ExtendedNegotiation],
) -> Callable[[Event], dict[str, bytes]]:
    """EVT_SOP_EXTENDED: an answer for each SOP class proposed that has a service's rule;
    the others get none (the requestor then knows the options are not supported)."""

    def answer(event: Event) -> dict[str, bytes]:
        replies = {}
        for uid, proposed in (event.app_info or {}).items():
            negotiate = negotiations.get(str(uid))
            if negotiate is not None and proposed:
                replies[str(uid)] = negotiate(bytes(proposed))
        return replies

    return answer


def answer_options(supported: tuple[int, ...]) -> ExtendedNegotiation:
    """The answer of a service whose options are bytes of 0 or 1 (the Query/Retrieve
    classes, PS3.4 C.5): for each byte proposed, 1 where the requestor asked for an option
    that ``supported`` marks 1, else 0 (bytes past ``supported``: 0)."""

    def answer(proposed: bytes) -> bytes:
        return bytes(
            1 if wanted == 1 and index < len(supported) and supported[index] else 0
            for index, wanted in enumerate(proposed)
        )  # fmt: skip

    return answer


def accepted_extended_negotiation(event: Event) -> bytes:
    """The service class application information Placa answered, on the event's
    association, for the request's SOP class (empty when none was proposed or answered)."""
    answered = event.assoc.acceptor.sop_class_extended.get(requested_sop_class(event))
    return bytes(answered or b"")


class _Contexts(list):
    """The server's supported presentation contexts, copied cheaply for each association.

    pynetdicom deep-copies them for every association it accepts (each association then
    negotiates on its own copy): about 180 contexts and 2,250 transfer syntax UIDs, 3-4 ms
    of CPU, 36 ms on a busy machine, before a C-ECHO or C-FIND can even start. A context
    holds immutable values and one list, so a shallow copy of each with its own list is
    the same copy."""

    def __deepcopy__(self, memo: dict) -> list:
        copies = []
        for context in self:
            duplicate = copy.copy(context)
            duplicate._transfer_syntax = list(context._transfer_syntax)
            copies.append(duplicate)
        return copies


class DicomDoor:
    """The running DICOM listener, in this process and ``processes - 1`` helper processes.

    One Python process runs one thread at a time (the GIL): pynetdicom's receiving, the
    header parse and the index rows of every association share one core. With
    ``processes`` above 1 (``serve``: ``PLACA_DICOM_PROCESSES``), this process still
    listens on the port alone, and hands each new connection to whichever process serves
    the fewest associations (itself on a tie): the socket goes to a helper over a Unix
    socket pair (SCM_RIGHTS), and the helper, the same application started as ``serve
    --only dicom`` by this process, runs the association with its own group commit. A
    helper ends when this process closes its socket pair (stop, or this process dying).
    """

    name = "dicom"

    def __init__(self, app: Flask, processes: int = 1, handoff_fd: int | None = None) -> None:
        ae, handlers = build_ae(app)
        self._helpers: list[_Helper] = []
        self._handoff: socket.socket | None = None
        if handoff_fd is not None:  # a helper: connections come from the listening process
            handlers.append((evt.EVT_CONN_CLOSE, self._report_closed))
            address = ("127.0.0.1", 0)
        else:
            address = (app.config["DICOM_HOST"], app.config["DICOM_PORT"])
        self.server: ThreadedAssociationServer = ae.start_server(
            address, block=False, evt_handlers=handlers
        )
        self.server.contexts = _Contexts(self.server.contexts)
        self.ae = ae
        if handoff_fd is not None:
            self._handoff = socket.socket(fileno=handoff_fd)
            threading.Thread(target=self._receive_connections, name="placa-dicom-handoff",
                             daemon=True).start()  # fmt: skip
            self._handoff.send(READY)
            logger.info("DICOM door helper %s ready", os.getpid())
            return
        self._local_process_request = self.server.process_request
        for _ in range(processes - 1):
            self._helpers.append(_Helper.spawn())
        if self._helpers:
            self.server.process_request = self._dispatch  # type: ignore[method-assign]
            # Until they are up, associations are served here: wait (the doors that open
            # next, the web door's /healthz last, then mean every DICOM process is up).
            for helper in self._helpers:
                if not helper.started.wait(HELPER_START_TIMEOUT):
                    logger.warning("DICOM door helper %s is not up yet", helper.process.pid)
        logger.info("DICOM door: AE %s on %s:%s, %d processes", ae.ae_title, *self.address,
                    1 + len(self._helpers))  # fmt: skip

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def is_up(self) -> bool:
        return self.server.socket is not None and self.server.socket.fileno() != -1

    def stop(self) -> None:
        for helper in self._helpers:
            helper.close()
        if self.is_up():
            self.ae.shutdown()  # shuts the server down and aborts open associations
        for helper in self._helpers:
            helper.wait()

    # --- the listening process

    def _dispatch(self, request: socket.socket, client_address: Any) -> None:
        """Serve the new connection here or in the helper with the fewest associations."""
        local = len(self.server.active_associations)
        helpers = [helper for helper in self._helpers if helper.alive and helper.ready]
        chosen = min(helpers, key=lambda helper: helper.active, default=None)
        if (
            chosen is not None
            and chosen.active < local
            and chosen.hand_over(request, client_address)
        ):
            request.close()  # this process's descriptor only: the connection is the helper's
            return
        self._local_process_request(request, client_address)

    # --- a helper process

    def _receive_connections(self) -> None:
        assert self._handoff is not None
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(self._handoff, 1024, 1)
            except OSError:
                message, fds = b"", []
            if not message:
                break
            for fd in fds:
                connection = socket.socket(fileno=fd)
                self.server.process_request(connection, tuple(json.loads(message)))
        logger.info("DICOM door helper %s: the listening process is gone, stopping", os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own stop: the doors close in order

    def _report_closed(self, _event: Event) -> None:
        try:
            assert self._handoff is not None
            self._handoff.send(CLOSED)
        except OSError:
            pass


READY, CLOSED = b"+", b"-"  # what a helper says on its socket pair
HELPER_START_TIMEOUT = 60


@dataclass
class _Helper:
    """A helper process of the DICOM door, and the associations it is serving."""

    process: subprocess.Popen[bytes]
    channel: socket.socket
    active: int = 0
    alive: bool = True
    ready: bool = False  # it has said so: connections handed over before would wait
    started: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def spawn(cls) -> _Helper:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-m", "flask", *_app_option(), "serve", "--only", "dicom",
                   "--dicom-handoff-fd", str(theirs.fileno())]  # fmt: skip
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(),))
        theirs.close()
        helper = cls(process, ours)
        threading.Thread(target=helper._listen, name="placa-dicom-helper", daemon=True).start()
        return helper

    def hand_over(self, request: socket.socket, client_address: Any) -> bool:
        try:
            address = json.dumps(list(client_address[:2])).encode()
            socket.send_fds(self.channel, [address], [request.fileno()])
        except OSError as exc:
            logger.error("DICOM door helper %s unreachable: %s", self.process.pid, exc)
            self.alive = False
            return False
        self.active += 1
        return True

    def _listen(self) -> None:
        """What the helper says: ready once, then one byte per association it closed."""
        while True:
            try:
                data = self.channel.recv(64)
            except OSError:
                data = b""
            if not data:
                break
            if READY in data:
                self.ready = True
                self.started.set()
            self.active = max(0, self.active - data.count(CLOSED))
        if self.alive:  # not closed by this process: the helper ended on its own
            logger.error("DICOM door helper %s ended", self.process.pid)
        self.alive = False
        self.started.set()  # nobody waits for a helper that is gone

    def close(self) -> None:
        self.alive = False
        try:
            self.channel.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.channel.close()

    def wait(self, timeout: float = 15) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.error("DICOM door helper %s did not stop: killed", self.process.pid)
            self.process.kill()
            self.process.wait()


def _app_option() -> list[str]:
    """``--app`` as this process was given it (else flask finds the app the same way)."""
    context = click.get_current_context(silent=True)
    info = context.find_object(ScriptInfo) if context else None
    path = getattr(info, "app_import_path", None)
    return ["--app", path] if path else []
