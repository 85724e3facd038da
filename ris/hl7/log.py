"""The inbound message log: every message the HL7 door receives, with the ACK it got.

:func:`process` is the door's handler. For each message it

* answers a message already applied (same sender MSH-3^MSH-4 and control id MSH-10)
  with the stored ACK, counting the delivery, without applying it again;
* otherwise runs the route in one transaction that also writes the log row, so the
  change and its record commit together;
* when the route fails, rolls that transaction back and writes the row in a second one,
  so the failure is on record.

Two deliveries racing each other are kept apart by the unique (sender, control_id) of
``hl7_inbound``: the loser's insert fails, and its retry finds the winner's row.

A message that failed (status ``error`` or ``rejected``) is not a reference for
idempotency: delivered again it is processed again (nothing of it was applied), and an
admin can :func:`reprocess` it after fixing the data it lacked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from flask import Flask
from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ris import audit
from ris.audit import Actor
from ris.db import transaction, utcnow
from ris.errors import Conflict, NotFound
from ris.hl7 import inbound
from ris.hl7.ack import ACCEPTED, Outcome, fallback_ack
from ris.hl7.errors import HL7Error
from ris.hl7.inbound import Context, Received
from ris.models import InboundMessage
from ris.site import Site, site_of

logger = logging.getLogger("ris.hl7")

APPLIED, ERROR, REJECTED = "applied", "error", "rejected"
STATUSES = (APPLIED, ERROR, REJECTED)
STATUS_OF_ACK = {"AA": APPLIED, "AE": ERROR, "AR": REJECTED}
# A race with a twin delivery or a transient database failure is worth one more try.
_RETRIED = (IntegrityError, OperationalError)
_ATTEMPTS = 2
_LIMITS = {"sender": 128, "control_id": 64, "message_type": 16, "version": 16, "peer": 64}


@dataclass(frozen=True)
class Names:
    """MSH-3 and MSH-4 of the acknowledgements Placa writes."""

    application: str = "PLACA"
    facility: str = "PLACA"


@dataclass(frozen=True)
class _Result:
    outcome: Outcome
    patient_id: int | None = None
    error: str | None = None  # for the log: may say more than the ACK; warnings if applied


def process(app: Flask, raw: bytes, peer: str, names: Names) -> bytes:
    """The door's handler: apply one message (framing removed) once, log it, return its ACK."""
    received = inbound.receive(raw, peer)
    return _answer(app, received, peer, names)


def process_oversize(app: Flask, head: bytes, peer: str, names: Names) -> bytes:
    """Log and reject a message the transport discarded as too large."""
    received = inbound.receive_oversize(head, peer)
    return _answer(app, received, peer, names)


def _answer(app: Flask, received: Received, peer: str, names: Names) -> bytes:
    try:
        ack = _deliver(app, received, peer, names)
    except Exception:
        # The database is gone or broken: the peer still gets an answer, and will resend.
        logger.exception("HL7 from %s: cannot apply or log message", peer)
        ack = fallback_ack(received.header, names.application, names.facility)
    return ack.encode(received.codec, errors="replace")


def _deliver(app: Flask, received: Received, peer: str, names: Names) -> str:
    site = site_of(app)
    for _attempt in range(1, _ATTEMPTS):
        try:
            return _deliver_once(app, site, received, peer, names, last=False)
        except _RETRIED as exc:
            logger.info("HL7 from %s: retrying after %s", peer, type(exc).__name__)
    return _deliver_once(app, site, received, peer, names, last=True)


def _deliver_once(
    app: Flask, site: Site, received: Received, peer: str, names: Names, *, last: bool
) -> str:
    if received.rejection is not None:
        result = _Result(received.rejection, error=received.rejection.text)
    else:
        try:
            return _apply_and_log(app, site, received, peer, names)
        except _RETRIED as exc:
            if not last:
                raise
            result = _failure(exc, received, peer)
        except Exception as exc:
            result = _failure(exc, received, peer)
    with transaction(app) as db:
        return _log_failure(db, received, peer, names, result)


def _apply_and_log(app: Flask, site: Site, received: Received, peer: str, names: Names) -> str:
    """One transaction: the route's work and the log row, or neither."""
    with transaction(app) as db:
        row = _find(db, received)
        if row is not None and row.status == APPLIED:
            return _duplicate(row, peer)
        ctx = Context(
            db=db,
            actor=Actor.hl7(received.sender, peer),
            site=site,
            sender=received.sender,
            version=received.header.version,
        )
        patient_id = inbound.apply(received, ctx)
        ack = inbound.acknowledge(received.header, ACCEPTED, names.application, names.facility)
        warnings = "; ".join(ctx.warnings) or None
        _store(db, row, received, peer, _Result(ACCEPTED, patient_id, warnings), ack)
    inbound.log_outcome(received.header, peer, ACCEPTED)
    return ack


def _log_failure(db: Session, received: Received, peer: str, names: Names, result: _Result) -> str:
    row = _find(db, received)
    if row is not None and row.status == APPLIED:
        return _duplicate(row, peer)  # a twin delivery applied it meanwhile
    ack = inbound.acknowledge(received.header, result.outcome, names.application, names.facility)
    _store(db, row, received, peer, result, ack)
    inbound.log_outcome(received.header, peer, result.outcome)
    return ack


def _failure(exc: Exception, received: Received, peer: str) -> _Result:
    outcome = inbound.outcome_of(exc, received.header, peer)
    return _Result(outcome, error=_error_text(exc, outcome))


def _error_text(exc: Exception, outcome: Outcome) -> str:
    if isinstance(exc, HL7Error) or outcome.ack_code == "AE":
        return outcome.text
    # An internal failure: the ACK says little, the admin reading the log needs more.
    return f"{outcome.text} ({type(exc).__name__}: {exc})"[:4000]


def _find(db: Session, received: Received) -> InboundMessage | None:
    control_id = _control_id(received)
    if control_id is None:
        return None  # no control id, no idempotency: every delivery is a new message
    return db.scalars(_DELIVERED, {"sender": _fit(received.sender, "sender"),
                                   "control_id": control_id}).first()  # fmt: skip


_DELIVERED = (  # built once: every message looks itself up
    select(InboundMessage)
    .where(InboundMessage.sender == bindparam("sender"),
           InboundMessage.control_id == bindparam("control_id"))
    .with_for_update()
)  # fmt: skip


def _duplicate(row: InboundMessage, peer: str) -> str:
    row.deliveries += 1
    logger.info(
        "HL7 %s control_id=%r from %s: already applied (delivery %d), answering the stored ACK",
        row.message_type,
        row.control_id,
        peer,
        row.deliveries,
    )
    return row.ack


def _store(
    db: Session,
    row: InboundMessage | None,
    received: Received,
    peer: str,
    result: _Result,
    ack: str,
) -> InboundMessage:
    if row is None:
        row = InboundMessage(
            sender=_fit(received.sender, "sender"), control_id=_control_id(received), deliveries=1
        )
        db.add(row)
    else:
        row.deliveries += 1
    header = received.header
    row.message_type = _fit(header.message_type, "message_type")
    row.version = _fit(header.version, "version")
    row.peer = _fit(peer, "peer")
    row.raw = _clean(received.text)
    _set_result(row, result, ack)
    return row


def _set_result(row: InboundMessage, result: _Result, ack: str) -> None:
    row.ack = _clean(ack)
    row.ack_code = result.outcome.ack_code
    row.status = STATUS_OF_ACK.get(result.outcome.ack_code, REJECTED)
    row.error = _clean(result.error) if result.error else None
    row.patient_id = result.patient_id
    row.processed_at = utcnow()


def _control_id(received: Received) -> str | None:
    return _fit(received.header.control_id, "control_id") or None


def _fit(text: str, column: str) -> str:
    return _clean(text)[: _LIMITS[column]]


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; garbage on the wire must still be logged.
    return text.replace("\x00", "\ufffd")


# --- the admin side: search, read, re-process ------------------------------------------


@dataclass(frozen=True)
class MessageFilter:
    """What an admin searches the message log by; every field is optional."""

    since: datetime | None = None
    until: datetime | None = None
    message_type: str | None = None  # prefix: "ADT" or "ADT^A08"
    status: str | None = None
    sender: str | None = None  # prefix of MSH-3^MSH-4
    control_id: str | None = None
    patient_id: int | None = None


def search_messages(criteria: MessageFilter) -> Select[tuple[InboundMessage]]:
    """The newest-first query for the messages that match ``criteria``."""
    query = select(InboundMessage).order_by(
        InboundMessage.received_at.desc(), InboundMessage.id.desc()
    )
    if criteria.since:
        query = query.where(InboundMessage.received_at >= criteria.since)
    if criteria.until:
        query = query.where(InboundMessage.received_at < criteria.until)
    if criteria.message_type:
        query = query.where(
            InboundMessage.message_type.startswith(criteria.message_type.upper(), autoescape=True)
        )
    if criteria.status:
        query = query.where(InboundMessage.status == criteria.status)
    if criteria.sender:
        query = query.where(InboundMessage.sender.startswith(criteria.sender, autoescape=True))
    if criteria.control_id:
        query = query.where(InboundMessage.control_id == criteria.control_id)
    if criteria.patient_id is not None:
        query = query.where(InboundMessage.patient_id == criteria.patient_id)
    return query


def get_message(db: Session, message_id: int) -> InboundMessage:
    message = db.get(InboundMessage, message_id)
    if message is None:
        raise NotFound(str(_l("No such HL7 message.")))
    return message


def record_message_view(db: Session, actor: Actor, message: InboundMessage) -> None:
    """Audit that a person read a message (its text is patient data)."""
    audit.record(db, actor, "hl7.message.view", object_type="hl7_message", object_id=message.id,
                 patient_id=message.patient_id)  # fmt: skip


def can_reprocess(message: InboundMessage) -> bool:
    """A failed message kept whole (an oversize one is only its first bytes)."""
    return message.status != APPLIED and not (message.error or "").startswith(inbound.OVERSIZE_TEXT)


def reprocess(
    db: Session, actor: Actor, site: Site, message: InboundMessage, names: Names
) -> InboundMessage:
    """Apply a failed message again, as ``actor``, in a savepoint of ``db``.

    The web request's own transaction is used (on SQLite it already holds the write
    lock); the savepoint undoes the route's work if it fails, the row records the new
    outcome and ACK either way. The caller commits.
    """
    if message.status == APPLIED:
        raise Conflict(str(_l("This message has already been applied.")))
    if not can_reprocess(message):
        raise Conflict(
            str(_l("Only the start of this message was kept: the sender must resend it."))
        )
    peer = message.peer or ""
    received = inbound.receive_text(message.raw, "utf-8", peer)
    result = _reapply(db, actor, site, received, peer)
    ack = inbound.acknowledge(received.header, result.outcome, names.application, names.facility)
    _set_result(message, result, ack)
    db.flush()
    audit.record(
        db, actor, "hl7.message.reprocess", object_type="hl7_message", object_id=message.id,
        patient_id=message.patient_id, outcome="success" if message.status == APPLIED
        else "failure", detail={"status": message.status, "ack_code": message.ack_code},
    )  # fmt: skip
    inbound.log_outcome(received.header, f"re-process by {actor.name}", result.outcome)
    return message


def _reapply(db: Session, actor: Actor, site: Site, received: Received, peer: str) -> _Result:
    if received.rejection is not None:
        return _Result(received.rejection, error=received.rejection.text)
    ctx = Context(db=db, actor=actor, site=site, sender=received.sender,
                  version=received.header.version)  # fmt: skip
    try:
        with db.begin_nested():
            patient_id = inbound.apply(received, ctx)
    except Exception as exc:
        return _failure(exc, received, peer)
    return _Result(ACCEPTED, patient_id, "; ".join(ctx.warnings) or None)
