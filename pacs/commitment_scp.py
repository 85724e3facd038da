"""The Storage Commitment Push Model SCP (PS3.4 Annex J; IHE RAD-10): the DICOM door's side.

N-ACTION (Action Type 1, Request Storage Commitment). The Action Information is read and
checked (Transaction UID and Referenced SOP Sequence required, each item with its SOP class
and instance UIDs); a malformed request is refused with a failure status and an Error
Comment and leaves nothing behind. A well-formed one is decided and kept
(:func:`pacs.commitment.record_request`) before the N-ACTION-RSP (Success) goes out.

N-EVENT-REPORT. IHE RAD-10 lets the archive report on the request's association or on a
new one. Placa reports at once, from a short-lived thread:

* on the **same association** when the requestor is still connected (unless
  ``PLACA_COMMITMENT_NEW_ASSOCIATION=1``). pynetdicom sends the N-ACTION-RSP after the
  handler returns, so the thread first waits for the association's reactor to finish
  serving the N-ACTION (the response is then queued ahead of the report), then sends;
* otherwise, or if that fails, on a **new association** from Placa to the requestor AE as
  registered (``flask ae add``), proposing the Storage Commitment context with Placa in
  the SCP role (SCP/SCU Role Selection, PS3.4 J.3.5 and J.6), TCP_NODELAY on its socket.

A report not delivered (peer down, not registered, refused) stays pending and is retried
by the scheduler (:func:`send_due_reports`, job ``storage-commitment-reports``) with the
back-off of :mod:`pacs.commitment`, on a new association, also after a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

from flask import Flask
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_RELEASE
from sqlalchemy.orm import Session

from pacs import commitment
from pacs.commitment import (
    MAX_REFERENCES,
    REQUEST_STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_PUSH_MODEL,
    WELL_KNOWN_INSTANCE,
    CommitmentRequest,
    Reference,
)
from pacs.models import StorageCommitment
from pacs.remote_aes import find_remote_ae
from pacs.storage import archive_root, clean_uid, valid_uid
from ris.audit import Actor
from ris.db import read_only, transaction, utcnow
from ris.dicom_door import (
    ACSE_TIMEOUT,
    DIMSE_TIMEOUT,
    NETWORK_TIMEOUT,
    DicomService,
    set_nodelay,
)
from ris.dimse_status import requestor_actor, status_with_comment

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
NO_SUCH_ACTION = 0x0123
RESOURCE_LIMITATION = 0x0213
CONNECT_TIMEOUT = 10
# How long the report thread waits for the N-ACTION to be answered before giving the
# report to a new association (the handler is quick; this bounds a stuck reactor).
RESPONSE_WAIT = 30.0
REPORT_MESSAGE_ID = 1  # the report is the only request Placa sends on an association
SAME_ASSOCIATION, NEW_ASSOCIATION = "same association", "new association"
Reply = tuple[int | Dataset, Dataset | None]


class Refused(Exception):
    """An N-ACTION refused: its DIMSE status and Error Comment."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status, self.comment = status, comment


# ---------------------------------------------------------------------------- N-ACTION


def handle_n_action(event: Event, app: Flask) -> Reply:
    """N-ACTION: record the request, answer, then report from a thread."""
    actor = requestor_actor(event)
    try:
        request = read_request(event)
        commitment_id = _record(app, actor, request)
    except Refused as refusal:
        logger.warning("Storage commitment N-ACTION from %s refused (0x%04X): %s", actor.name,
                       refusal.status, refusal.comment)  # fmt: skip
        return status_with_comment(refusal.status, refusal.comment), None
    except Exception:
        logger.exception("Storage commitment N-ACTION from %s failed", actor.name)
        return status_with_comment(PROCESSING_FAILURE, "Processing failure"), None
    same = not app.config.get("COMMITMENT_NEW_ASSOCIATION", False)
    threading.Thread(
        target=_report_soon, args=(app, event.assoc if same else None, commitment_id),
        name=f"commitment-report-{commitment_id}", daemon=True,
    ).start()  # fmt: skip
    return SUCCESS, None


def read_request(event: Event) -> CommitmentRequest:
    """The N-ACTION's request, checked (PS3.4 J.3.2); raises :class:`Refused`."""
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        raise Refused(NO_SUCH_ACTION, f"Action Type {event.action_type} is not 1")
    instance = str(event.request.RequestedSOPInstanceUID or "")
    if instance != WELL_KNOWN_INSTANCE:
        raise Refused(NO_SUCH_SOP_INSTANCE, f"Requested SOP Instance is not {WELL_KNOWN_INSTANCE}")
    try:
        info = event.action_information
        return _read_information(info)
    except Refused:
        raise
    except Exception as exc:
        raise Refused(INVALID_ARGUMENT_VALUE, "Action Information cannot be decoded") from exc


def _uid_text(ds: Dataset, keyword: str) -> str:
    """A UID element's text as sent: read raw, so that a malformed value is refused here
    with a reason rather than only warned about by pydicom."""
    element = ds.get_item(keyword)
    value = element.value if element is not None else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return clean_uid(value)


def _read_information(info: Dataset) -> CommitmentRequest:
    transaction_uid = _uid_text(info, "TransactionUID")
    if not transaction_uid:
        raise Refused(INVALID_ARGUMENT_VALUE, "TransactionUID missing")
    if not valid_uid(transaction_uid):
        raise Refused(INVALID_ARGUMENT_VALUE, "TransactionUID is not a UID")
    items = info.get("ReferencedSOPSequence")
    if not items:
        raise Refused(INVALID_ARGUMENT_VALUE, "ReferencedSOPSequence missing or empty")
    if len(items) > MAX_REFERENCES:
        raise Refused(RESOURCE_LIMITATION, f"More than {MAX_REFERENCES} references")
    references = []
    for number, item in enumerate(items, start=1):
        sop_class = _uid_text(item, "ReferencedSOPClassUID")
        sop_instance = _uid_text(item, "ReferencedSOPInstanceUID")
        if not sop_class or not sop_instance:
            raise Refused(
                INVALID_ARGUMENT_VALUE, f"ReferencedSOPSequence item {number} lacks a UID"
            )
        if not valid_uid(sop_class) or not valid_uid(sop_instance):
            raise Refused(
                INVALID_ARGUMENT_VALUE, f"ReferencedSOPSequence item {number}: invalid UID"
            )
        references.append(Reference(sop_class, sop_instance))
    return CommitmentRequest(transaction_uid, tuple(references))


def _record(app: Flask, actor: Actor, request: CommitmentRequest) -> int:
    archive = archive_root(app.config["DATA_DIR"])
    # Leased: the report thread owns the first attempt, the scheduler the later ones.
    with transaction(app) as db:
        kept = commitment.record_request(db, actor, request, archive,
                                         first_attempt_at=utcnow() + commitment.CLAIM)  # fmt: skip
        return kept.id


# ------------------------------------------------------------------------ the report


def _report_soon(app: Flask, assoc: Association | None, commitment_id: int) -> None:
    """The first attempt: on the request's association if given and still up, else new."""
    try:
        if assoc is not None and _answered(assoc):
            error = _send_on_association(app, assoc, commitment_id)
            if error is None:
                _delivered(app, commitment_id, SAME_ASSOCIATION)
                return
            logger.info("Storage commitment report %d: not on the same association (%s), "
                        "trying a new one", commitment_id, error)  # fmt: skip
        deliver(app, commitment_id)
    except Exception:
        # The report stays pending, leased: the scheduler tries again once the lease ends.
        logger.exception("Storage commitment report %d: first attempt failed", commitment_id)


def _answered(assoc: Association) -> bool:
    """Wait until the reactor has served the N-ACTION (its response queued to the peer).

    pynetdicom marks the reactor paused while a handler runs and sends the response right
    after it; :func:`_reactor_paused` then holds it at its checkpoint. A report sent
    earlier could overtake the N-ACTION-RSP, which the requestor expects first.
    """
    deadline = time.monotonic() + RESPONSE_WAIT
    while assoc._is_paused:  # noqa: SLF001 (pynetdicom has no public signal for this)
        if not assoc.is_established or time.monotonic() > deadline:
            return False
        time.sleep(0.0005)
    return assoc.is_established


def _send_on_association(app: Flask, assoc: Association, commitment_id: int) -> str | None:
    """Send the report on the request's association; None once the peer answered Success,
    else why not.

    pynetdicom's ``send_n_event_report`` would wait for the answer whatever happens, and a
    requestor that releases as soon as its N-ACTION is answered (many modalities do, and
    expect the report on a new association) never gives one: its release would wait behind
    the report until the DIMSE timeout aborts both. So the report is sent here the way
    pynetdicom sends it (the reactor paused, the DIMSE provider's own queue), and the wait
    ends as soon as the peer answers, asks for a release, or goes away.
    """
    event_type, info = _report_of(app, commitment_id)
    if _release_requested(assoc):
        return "the requestor is releasing the association"
    try:
        context = assoc._get_valid_context(STORAGE_COMMITMENT_PUSH_MODEL, "", None)  # noqa: SLF001
        syntax = context.transfer_syntax[0]
        encoded = encode(info, syntax.is_implicit_VR, syntax.is_little_endian,
                         syntax.is_deflated)  # fmt: skip
    except Exception as exc:  # no Storage Commitment context (cannot happen once asked)
        return f"{type(exc).__name__}: {exc}"
    if encoded is None:
        return "the report cannot be encoded"
    report = N_EVENT_REPORT()
    report.MessageID = REPORT_MESSAGE_ID
    report.AffectedSOPClassUID = STORAGE_COMMITMENT_PUSH_MODEL
    report.AffectedSOPInstanceUID = WELL_KNOWN_INSTANCE
    report.EventTypeID = event_type
    report.EventInformation = BytesIO(encoded)
    with _reactor_paused(assoc):
        if _release_requested(assoc):
            return "the requestor is releasing the association"
        assoc.dimse.send_msg(report, int(context.context_id or 0))
        return _answer_to(assoc)


@contextmanager
def _reactor_paused(assoc: Association) -> Iterator[None]:
    """Hold the association's reactor at its checkpoint, as pynetdicom's ``send_*`` do."""
    assoc._reactor_checkpoint.clear()  # noqa: SLF001
    try:
        deadline = time.monotonic() + RESPONSE_WAIT
        while not assoc._is_paused and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.0001)
        yield
    finally:
        assoc._reactor_checkpoint.set()  # noqa: SLF001


def _answer_to(assoc: Association) -> str | None:
    """Wait for the N-EVENT-REPORT-RSP; give up when the peer releases or goes away."""
    strays: list[tuple[int | None, Any]] = []
    deadline = time.monotonic() + DIMSE_TIMEOUT
    try:
        while time.monotonic() < deadline:
            context_id, message = assoc.dimse.get_msg(block=False)
            if isinstance(message, N_EVENT_REPORT) and message.is_valid_response:
                if message.MessageIDBeingRespondedTo == REPORT_MESSAGE_ID:
                    return _refusal_of(Dataset() if message.Status is None else _status_of(message))
            elif message is not None:
                strays.append((context_id, message))  # a new request: the reactor's
            elif _release_requested(assoc) or not assoc.dul.is_alive():
                return "the requestor released the association before answering"
            else:
                time.sleep(0.002)
        return "no answer to the N-EVENT-REPORT"
    finally:
        # A request the peer sent meanwhile goes back to the reactor, which serves it.
        for stray in strays:
            assoc.dimse.msg_queue.put(stray)


def _status_of(message: N_EVENT_REPORT) -> Dataset:
    status = Dataset()
    status.Status = message.Status
    return status


def _release_requested(assoc: Association) -> bool:
    """Whether an A-RELEASE-RQ waits (looked at, not taken: the reactor answers it)."""
    return isinstance(assoc.dul.peek_next_pdu(), A_RELEASE) or not assoc.is_established


def _refusal_of(status: Dataset) -> str | None:
    code = status.get("Status")
    if code is None:
        return "no answer to the N-EVENT-REPORT"
    if code != SUCCESS:
        return f"N-EVENT-REPORT answered 0x{int(code):04X}"
    return None


def _report_of(app: Flask, commitment_id: int) -> tuple[int, Dataset]:
    with read_only(app) as db:
        kept = db.get_one(StorageCommitment, commitment_id)
        return commitment.event_information(kept, app.config["AE_TITLE"])


def deliver(app: Flask, commitment_id: int) -> bool:
    """One attempt on a new association to the requestor; the outcome is recorded."""
    with read_only(app) as db:
        kept = db.get_one(StorageCommitment, commitment_id)
        calling_ae = kept.calling_ae
        node = find_remote_ae(db, calling_ae)
        peer = (node.host, node.port) if node else None
        event_type, info = commitment.event_information(kept, app.config["AE_TITLE"])
    if peer is None:
        error = f"requestor AE {calling_ae} is not registered (flask ae add)"
    else:
        error = send_report(app, calling_ae, peer, event_type, info)
    if error is None:
        _delivered(app, commitment_id, NEW_ASSOCIATION)
        return True
    with transaction(app) as db:
        commitment.report_undelivered(db, commitment_id, error)
    return False


def send_report(
    app: Flask, ae_title: str, peer: tuple[str, int], event_type: int, info: Dataset
) -> str | None:
    """Open an association to ``ae_title`` at ``peer`` with Placa as the Storage Commitment
    SCP (role selection) and send one N-EVENT-REPORT; None on Success, else why not."""
    ae = AE(ae_title=app.config["AE_TITLE"])
    ae.acse_timeout, ae.dimse_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT
    ae.network_timeout, ae.connection_timeout = NETWORK_TIMEOUT, CONNECT_TIMEOUT
    ae.add_requested_context(
        STORAGE_COMMITMENT_PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    )
    role = build_role(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=False, scp_role=True)
    assoc = ae.associate(*peer, ae_title=ae_title, ext_neg=[role],
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])  # fmt: skip
    if not assoc.is_established:
        return f"association to {ae_title} at {peer[0]}:{peer[1]} {_why_not(assoc)}"
    try:
        if not any(cx.abstract_syntax == STORAGE_COMMITMENT_PUSH_MODEL
                   for cx in assoc.accepted_contexts):  # fmt: skip
            return f"{ae_title} did not accept the Storage Commitment context"
        status, _reply = assoc.send_n_event_report(
            info, event_type, STORAGE_COMMITMENT_PUSH_MODEL, WELL_KNOWN_INSTANCE
        )
        return _refusal_of(status)
    finally:
        if assoc.is_established:
            assoc.release()


def _why_not(assoc: Association) -> str:
    if assoc.is_rejected:
        return "rejected"
    if assoc.is_aborted:
        return "aborted"
    return "failed (no connection)"


def _delivered(app: Flask, commitment_id: int, how: str) -> None:
    with transaction(app) as db:
        commitment.report_delivered(db, commitment_id, how)


def send_due_reports(app: Flask, _db: Session | None = None) -> int:
    """The scheduler job: one attempt for each report due; returns how many were delivered.

    Each report is claimed and recorded in its own short transaction; the network waits
    hold none (SQLite's write lock stays free for the other doors).
    """
    with transaction(app) as db:
        due = commitment.claim_due(db)
    return sum(1 for commitment_id in due if _deliver_quietly(app, commitment_id))


def _deliver_quietly(app: Flask, commitment_id: int) -> bool:
    try:
        return deliver(app, commitment_id)
    except Exception:
        logger.exception("Storage commitment report %d: attempt failed", commitment_id)
        return False


SERVICES: list[DicomService] = [
    DicomService((STORAGE_COMMITMENT_PUSH_MODEL,), {evt.EVT_N_ACTION: handle_n_action}),
]
