"""The archive's retrieve services: C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3; IHE RAD-16),
Patient Root and Study Root, every level, listed in :data:`SERVICES` for :mod:`pacs.dicom`.

Each retrieve selects its instances once (:func:`pacs.retrieve.select_instances`), then sends
every stored file as stored: a C-MOVE over its own association to the destination
(:mod:`pacs.store_scu`), a C-GET over the requesting association. A Pending response with
the sub-operation counts follows each sub-operation; the final response is Success, Warning
0xB000 (some failed, FailedSOPInstanceUIDList), Failure 0xA702 (all failed) or Cancel 0xFE00.

pynetdicom drives C-MOVE and C-GET from a generator handler, sends each yielded Dataset
itself (decoded, re-encoded) and counts the outcomes itself. Placa sends files, so the
handler performs the whole retrieve and then yields what makes pynetdicom answer at once
(no destination, no sub-operations); that one answer is replaced by Placa's final response
(:func:`_answer_with`).
"""

from __future__ import annotations

import functools
import io
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from flask import Flask
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import dsutils, evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from pacs.retrieve import (
    MOVE_DESTINATION_UNKNOWN,
    OUT_OF_RESOURCES_SUBOPERATIONS,
    UNABLE_TO_PROCESS,
    Counts,
    Retrievable,
    RetrieveRefused,
    Selection,
    find_destination,
    record_retrieve,
    select_instances,
)
from pacs.storage import archive_root
from pacs.store_scu import (
    C_GET_RSP,
    C_MOVE_RSP,
    CONVERTIBLE,
    UNCOMPRESSED,
    PeerError,
    StoreAssociation,
    Wire,
    converted,
    dataset_offset,
    proposals,
    read_store_reply,
    retrieve_response,
    store_command,
)
from ris.audit import Actor
from ris.db import read_only, transaction
from ris.dicom_door import DicomService, answer_options

logger = logging.getLogger(__name__)

PENDING, SUCCESS, WARNING, CANCEL = 0xFF00, 0x0000, 0xB000, 0xFE00
STORE_TIMEOUT = 60  # seconds a destination may take to connect or to answer one C-STORE
STOLEN_CHECK = 0.05  # seconds between looks at pynetdicom's queue while a C-GET answer is due

Response = C_MOVE | C_GET


@dataclass
class Retrieve:
    """One C-MOVE or C-GET being answered."""

    event: Event
    app: Flask
    operation: str  # "C-MOVE" or "C-GET"
    cancel_read: bool = False  # a C-CANCEL this module read itself (C-GET, see _reads_taken)

    @property
    def is_cancelled(self) -> bool:
        return self.cancel_read or self.event.is_cancelled

    def cancel_received(self, message_id: int) -> None:
        if message_id == int(self.event.request.MessageID):
            self.cancel_read = True

    @property
    def calling_ae(self) -> str:
        return str(self.event.assoc.requestor.ae_title).strip()

    @property
    def actor(self) -> Actor:
        return Actor.dicom(self.calling_ae, self.event.assoc.requestor.address)

    def response(self, status: int) -> Response:
        request = self.event.request
        rsp = C_MOVE() if self.operation == "C-MOVE" else C_GET()
        rsp.MessageIDBeingRespondedTo = request.MessageID
        rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
        rsp.Status = status
        return rsp

    def refused(self, refusal: RetrieveRefused) -> Response:
        logger.warning(
            "%s from %s refused (0x%04X): %s",
            self.operation,
            self.calling_ae,
            refusal.status,
            refusal.comment,
        )
        rsp = self.response(refusal.status)
        rsp.ErrorComment = refusal.comment
        return rsp

    def counted(self, status: int, counts: Counts, *, remaining: bool) -> Response:
        rsp = self.response(status)
        if remaining:
            rsp.NumberOfRemainingSuboperations = counts.remaining
        rsp.NumberOfCompletedSuboperations = counts.completed
        rsp.NumberOfFailedSuboperations = counts.failed
        rsp.NumberOfWarningSuboperations = counts.warning
        return rsp

    @functools.cached_property
    def wire(self) -> Wire:
        """The requesting association's socket, written directly while the retrieve runs:
        pynetdicom has nothing to send on it until the final response."""
        assoc = self.event.assoc
        return Wire(assoc.dul.socket.socket, int(assoc.requestor.maximum_length or 0))

    def pending(self, counts: Counts) -> None:
        """A Pending response (encoded here: through pynetdicom's encoder and DUL it costs
        about as much as the sub-operation itself)."""
        request = self.event.request
        command_field = C_MOVE_RSP if self.operation == "C-MOVE" else C_GET_RSP
        command = retrieve_response(
            command_field, str(request.AffectedSOPClassUID), int(request.MessageID), PENDING,
            counts.remaining, counts.completed, counts.failed, counts.warning,
        )  # fmt: skip
        self.wire.send_command(int(self.event.context.context_id), command)

    def final(self, counts: Counts, cancelled: bool) -> Response:
        if cancelled:
            status = CANCEL
        elif not counts.failed and not counts.warning:
            status = SUCCESS
        elif not counts.completed and not counts.warning:
            status = OUT_OF_RESOURCES_SUBOPERATIONS  # every sub-operation failed
        else:
            status = WARNING
        rsp = self.counted(status, counts, remaining=cancelled)
        if counts.failed_uids or status != SUCCESS:
            rsp.Identifier = BytesIO(self.failed_list(counts.failed_uids))
        return rsp

    def failed_list(self, uids: list[str]) -> bytes:
        ds = Dataset()
        ds.FailedSOPInstanceUIDList = uids
        syntax = UID(self.event.context.transfer_syntax)
        data = dsutils.encode(
            ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
        )
        return data or b""

    def select(self) -> Selection:
        try:
            identifier = self.event.identifier
            with read_only(self.app) as db:
                return select_instances(
                    db,
                    identifier,
                    str(self.event.request.AffectedSOPClassUID),
                    archive_root(self.app.config["DATA_DIR"]),
                )
        except RetrieveRefused:
            raise
        except Exception as exc:  # an undecodable identifier, a database down
            logger.exception(
                "%s from %s: cannot select the instances", self.operation, self.calling_ae
            )
            raise RetrieveRefused(
                UNABLE_TO_PROCESS, f"cannot select the instances: {exc}"
            ) from None

    def audit(
        self, selection: Selection, counts: Counts, destination: str, cancelled: bool
    ) -> None:
        if cancelled:
            outcome = "cancelled"
        elif counts.failed:
            outcome = "failure" if not counts.completed else "partial"
        else:
            outcome = "success"
        try:
            with transaction(self.app) as db:
                record_retrieve(
                    db,
                    self.actor,
                    self.operation,
                    selection,
                    counts,
                    destination=destination,
                    outcome=outcome,
                )
        except Exception:
            logger.exception(
                "%s from %s: the audit event could not be written", self.operation, self.calling_ae
            )


# ------------------------------------------------------------------------- the handlers


def handle_move(event: Event, app: Flask) -> Iterator[Any]:
    """C-MOVE: send the selected instances to the Move Destination, a registered AE."""
    _answer_with(event, _answered(Retrieve(event, app, "C-MOVE"), _move))
    _ANSWERED.done = True
    yield None, None  # pynetdicom answers "no destination" at once: replaced by ours


class _AnsweredFilter(logging.Filter):
    """Drops pynetdicom's "Unknown Move Destination" error for a move Placa has answered
    (the handler's last yield names no destination on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_ANSWERED, "done", False) and "Unknown Move Destination" in record.getMessage():
            _ANSWERED.done = False
            return False
        return True


_ANSWERED = threading.local()  # set on the association's thread between yield and answer
logging.getLogger("pynetdicom.service_class").addFilter(_AnsweredFilter())


def handle_get(event: Event, app: Flask) -> Iterator[Any]:
    """C-GET: send the selected instances back over the requesting association."""
    _answer_with(event, _answered(Retrieve(event, app, "C-GET"), _get))
    yield 0  # pynetdicom answers "nothing to send" at once: replaced by ours


def _answered(retrieve: Retrieve, perform: Callable[[Retrieve], Response]) -> Response:
    """The final response of ``perform``; a failure (0xC000) when it fails unexpectedly."""
    try:
        return perform(retrieve)
    except Exception:
        logger.exception("%s from %s failed", retrieve.operation, retrieve.calling_ae)
        return retrieve.refused(RetrieveRefused(UNABLE_TO_PROCESS, "processing failure"))


def _answer_with(event: Event, final: Response) -> None:
    """Make the one answer pynetdicom sends after the handler's last yield ours."""
    dimse = event.assoc.dimse
    usual = dimse.__dict__.get("send_msg")  # the door may have set its own on the instance

    def send_final(_theirs: object, context_id: int) -> None:
        if usual is None:
            del dimse.send_msg  # back to the provider's own method for every later message
        else:
            dimse.send_msg = usual
        dimse.send_msg(final, context_id)

    dimse.send_msg = send_final  # type: ignore[method-assign]


def _move(retrieve: Retrieve) -> Response:
    destination = str(retrieve.event.move_destination or "").strip()
    try:
        selection = retrieve.select()
        with read_only(retrieve.app) as db:
            host, port = find_destination(db, destination)
    except RetrieveRefused as refusal:
        return retrieve.refused(refusal)
    counts = Counts(remaining=len(selection.instances))
    if not selection.instances:
        return retrieve.final(counts, cancelled=False)
    contexts = proposals(
        (item.sop_class_uid, item.transfer_syntax_uid) for item in selection.instances
    )
    try:
        store = StoreAssociation.open(
            host,
            port,
            calling_ae=retrieve.app.config["AE_TITLE"],
            called_ae=destination,
            contexts=contexts,
            timeout=STORE_TIMEOUT,
        )
    except PeerError as exc:
        return retrieve.refused(RetrieveRefused(MOVE_DESTINATION_UNKNOWN, exc.comment))
    started = time.perf_counter()
    request = retrieve.event.request
    send = _move_sender(store, retrieve.calling_ae, int(request.MessageID))
    try:
        cancelled = _run(retrieve, selection, counts, send)
    finally:
        if store.broken:
            store.abort()
        else:
            store.release()
    _log_done(retrieve, counts, destination, started)
    retrieve.audit(selection, counts, destination, cancelled)
    return retrieve.final(counts, cancelled)


def _get(retrieve: Retrieve) -> Response:
    try:
        selection = retrieve.select()
    except RetrieveRefused as refusal:
        return retrieve.refused(refusal)
    counts = Counts(remaining=len(selection.instances))
    started = time.perf_counter()
    cancelled = False
    if selection.instances:
        with _reads_taken(retrieve.event):
            cancelled = _run(retrieve, selection, counts, _get_sender(retrieve))
    _log_done(retrieve, counts, retrieve.calling_ae, started)
    if selection.instances:
        retrieve.audit(selection, counts, retrieve.calling_ae, cancelled)
    return retrieve.final(counts, cancelled)


@contextmanager
def _reads_taken(event: Event) -> Iterator[None]:
    """Read the requesting association's socket here, not in pynetdicom's DUL, while the
    C-GET's sub-operations run: the DUL's polling and decoding halve the rate.

    pynetdicom's transport reports no data to read while it believes itself disconnected
    (``AssociationSocket.ready``). A DUL poll may have passed that check just before: it is
    waited for (a PDU it reads meanwhile, such as an early C-CANCEL, it handles itself). The
    flag is restored before the final response, so the DUL reads the release as usual."""
    dul = event.assoc.dul
    transport = dul.socket
    sock = transport.socket
    timeout = sock.gettimeout()
    transport._is_connected = False
    _wait_out_poll(dul)
    sock.settimeout(STORE_TIMEOUT)
    try:
        yield
    finally:
        transport._is_connected = True
        try:
            sock.settimeout(timeout)
        except OSError:  # the association broke down meanwhile
            pass


DUL_READING = frozenset(("_is_transport_event", "_read_pdu_data"))


def _wait_out_poll(dul: threading.Thread, limit: float = STORE_TIMEOUT) -> None:
    """Return once the DUL thread is outside its socket-reading functions."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(dul.ident or -1)
        names = set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        if not names & DUL_READING:
            return
        time.sleep(0.0002)


Sender = Callable[[Retrievable, int], int]
"""Sends one instance as the given sub-operation's message ID; returns its C-STORE status."""


class Broken(Exception):
    """The association the sub-operations use is gone: the rest cannot be sent."""


def _run(retrieve: Retrieve, selection: Selection, counts: Counts, send: Sender) -> bool:
    """Every sub-operation, a Pending response after each; True when cancelled."""
    for number, item in enumerate(selection.instances, start=1):
        if retrieve.is_cancelled:
            logger.info(
                "%s from %s cancelled after %d of %d",
                retrieve.operation,
                retrieve.calling_ae,
                number - 1,
                len(selection.instances),
            )
            return True
        counts.remaining -= 1
        try:
            _tally(counts, item, send(item, number % 0xFFFF or 1))
        except Broken as exc:
            _lost(retrieve, counts, selection.instances[number - 1 :], exc)
            return False
        try:
            if counts.remaining:
                retrieve.pending(counts)
        except PeerError as exc:  # the requestor is gone
            _lost(retrieve, counts, selection.instances[number:], exc)
            return False
    return False


def _lost(retrieve: Retrieve, counts: Counts, unsent: list[Retrievable], exc: Exception) -> None:
    """The association broke: what was not sent is failed."""
    logger.error("%s from %s: %s", retrieve.operation, retrieve.calling_ae, exc)
    counts.failed += len(unsent)
    counts.failed_uids.extend(item.sop_instance_uid for item in unsent)
    counts.remaining = 0


def _tally(counts: Counts, item: Retrievable, status: int) -> None:
    if status == SUCCESS:
        counts.completed += 1
    elif status & 0xF000 == 0xB000:  # the Storage warnings: coercion, elements discarded
        counts.warning += 1
    else:
        counts.failed += 1
        counts.failed_uids.append(item.sop_instance_uid)


def _log_done(retrieve: Retrieve, counts: Counts, destination: str, started: float) -> None:
    elapsed = time.perf_counter() - started
    logger.info(
        "%s from %s to %s: %d completed, %d failed, %d warning in %.3f s",
        retrieve.operation,
        retrieve.calling_ae,
        destination,
        counts.completed,
        counts.failed,
        counts.warning,
        elapsed,
    )


FILE_UNREADABLE = 0xA700  # counted as a failed sub-operation; never sent to the peer


def _move_sender(store: StoreAssociation, originator: str, originator_id: int) -> Sender:
    def send(item: Retrievable, message_id: int) -> int:
        try:
            reply = store.store(
                item.path,
                item.sop_class_uid,
                item.sop_instance_uid,
                item.transfer_syntax_uid,
                message_id=message_id,
                originator_ae=originator,
                originator_message_id=originator_id,
            )
        except OSError as exc:
            logger.error("C-MOVE: %s cannot be read (%s): not sent", item.path, exc)
            return FILE_UNREADABLE
        except PeerError as exc:
            if store.broken:
                raise Broken(exc.comment) from None
            logger.warning("C-MOVE: %s not sent: %s", item.sop_instance_uid, exc.comment)
            return FILE_UNREADABLE
        if reply.status != SUCCESS:
            logger.warning(
                "C-MOVE: %s answered 0x%04X %s", item.sop_instance_uid, reply.status, reply.comment
            )
        return reply.status

    return send


def _get_sender(retrieve: Retrieve) -> Sender:
    """C-STOREs on the requesting association, where the requestor accepted the Storage SCP
    role: written and read on its socket directly (see _reads_taken)."""
    assoc = retrieve.event.assoc
    wire = retrieve.wire
    contexts: dict[tuple[str, str], int] = {}
    for context in assoc.accepted_contexts:
        if context.as_scu:
            syntax = str(context.transfer_syntax[0])
            contexts.setdefault((str(context.abstract_syntax), syntax), int(context.context_id))

    def send(item: Retrievable, message_id: int) -> int:
        chosen = _context(contexts, item)
        if chosen is None:
            logger.warning(
                "C-GET: %s not sent: the requestor accepted no context for %s in %s",
                item.sop_instance_uid,
                item.sop_class_uid,
                item.transfer_syntax_uid,
            )
            return FILE_UNREADABLE
        context_id, syntax = chosen
        if not assoc.is_established:
            raise Broken("the requestor ended the association")
        command = store_command(item.sop_class_uid, item.sop_instance_uid, message_id, "", None)
        try:
            with open(item.path, "rb") as handle:
                offset = dataset_offset(handle)
                data = None if syntax == item.transfer_syntax_uid else converted(item.path, syntax)
                _send_one(wire, context_id, command, handle, offset, data)
        except (OSError, PeerError) as exc:  # before anything was sent
            logger.error("C-GET: %s cannot be read (%s): not sent", item.path, exc)
            return FILE_UNREADABLE
        return _get_reply(retrieve, wire.sock, message_id)

    return send


def _get_reply(retrieve: Retrieve, sock: socket.socket, message_id: int) -> int:
    """The status of a C-GET sub-operation's C-STORE-RSP, read from the socket.

    Should pynetdicom's DUL have taken the answer after all (a poll that began before
    _reads_taken and was held up longer than its pause), it is in pynetdicom's queue."""
    deadline = time.monotonic() + STORE_TIMEOUT
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], STOLEN_CHECK)
        try:
            if readable:
                return read_store_reply(sock, message_id, retrieve.cancel_received).status
        except (OSError, PeerError) as exc:
            raise Broken(f"no C-STORE answer from the requestor: {exc}") from None
        _context_id, taken = retrieve.event.assoc.dimse.get_msg(block=False)
        if taken is not None and getattr(taken, "MessageIDBeingRespondedTo", None) == message_id:
            return int(taken.Status)
        if not retrieve.event.assoc.is_established:
            break
    raise Broken("no C-STORE answer from the requestor")


def _send_one(
    wire: Wire,
    context_id: int,
    command: bytes,
    handle: io.BufferedReader,
    offset: int,
    data: bytes | None,
) -> None:
    """One C-STORE-RQ: the file's dataset as stored, or its conversion."""
    try:
        wire.send_command(context_id, command)
        if data is None:
            wire.send_file(context_id, handle, offset)
        else:
            wire.send_bytes(context_id, data)
    except (OSError, PeerError) as exc:  # part of the message may be out: nothing more can go
        raise Broken(f"the requestor's association failed: {exc}") from None


def _context(contexts: dict[tuple[str, str], int], item: Retrievable) -> tuple[int, str] | None:
    exact = contexts.get((item.sop_class_uid, item.transfer_syntax_uid))
    if exact is not None:
        return exact, item.transfer_syntax_uid
    if item.transfer_syntax_uid in CONVERTIBLE:
        for syntax in UNCOMPRESSED:
            context = contexts.get((item.sop_class_uid, syntax))
            if context is not None:
                return context, syntax
    return None


# PS3.4 C.5.2.1, C.5.3.1: relational retrieval yes (a retrieve needs only its level's unique
# key; the keys above, when sent, narrow it); enhanced multi-frame image conversion no
# (instances are sent as stored).
retrieval_options_answer = answer_options((1, 0))


SERVICES = [
    DicomService(
        (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove),
        {evt.EVT_C_MOVE: handle_move},
        extended_negotiation=retrieval_options_answer,
    ),
    DicomService(
        (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet),
        {evt.EVT_C_GET: handle_get},
        extended_negotiation=retrieval_options_answer,
    ),
]
