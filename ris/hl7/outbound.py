"""The durable HL7 outbox: destinations, enqueueing in the caller's transaction, the sender.

Writing. :func:`enqueue` adds one :class:`~ris.models.OutboundMessage` per active destination
that wants the message type, in the caller's transaction: the message exists exactly when the
change that caused it committed. Each destination's copy has its own control ID (MSH-10) and
its own MSH-5/MSH-6. The SIU messages of the front desk are enqueued here, by handlers of the
``exam.*`` events (:mod:`ris.events`); results (ORU) and charges (DFT) call :func:`enqueue`
with their own builders.

Sending. :func:`send_due` runs from the scheduler every few seconds. Per destination it sends
the messages in id order over one MLLP connection, each answered by its ACK before the next:

* ``queued`` -> ``sent`` when claimed (committed before the bytes leave), then
* ``acknowledged`` on MSA-1 ``AA``/``CA``, or
* ``failed`` on anything else; the destination stops there, to keep its order, and the
  message is retried with back-off (10 s, 20 s, 40 s... at most 10 min), or
* ``dead`` (dead-lettered): parked for good, and the destination goes on with its next message.

When a message is dead-lettered. The rule follows what interface engines (Mirth Connect,
Rhapsody) do by default: their queues retry what could not be delivered, while a message
the peer answered with a negative acknowledgement is marked in error, after a configurable
number of retries, and the queue goes on:

* **Transport trouble never dead-letters.** A refused connection, a timeout, a garbled reply
  or the ACK of another message say nothing about the message: the peer is down or confused,
  every later message would meet the same fate, so the destination waits and the head is
  retried for ever. A peer down for an hour loses nothing and receives everything in order.
* **A refusal does, after** :data:`DEAD_LETTER_ATTEMPTS` **attempts.** MSA-1 ``AE``/``AR``
  (``CE``/``CR``) means the peer is up and has answered *this* message with no: an AE asks
  the sender to correct it, and an AR for an unsupported type or version will not change by
  sending the same bytes again. Keeping it at the head would hold every later appointment,
  result and charge of every patient until someone noticed. An AR may also mean the receiver
  was briefly unable to process (HL7 v2.5.1 section 2.9.2.2), hence a few retries first: a
  message still refused at its fifth attempt (whatever its earlier attempts met) is parked
  as ``dead``, logged as an error and shown to admins, and the next one goes.
* **Admins decide the rest** (:func:`skip_message`, :func:`retry_now`, :func:`resend_message`,
  each audited): skip (dead-letter) a queued or failed message that blocks its destination,
  retry a failed one at once, or send a dead (or acknowledged) message again once the cause
  is fixed (one, or every dead message of a destination). A resend is a *new* message at
  the end of the destination's queue, with a new control ID (MSH-10), since a receiver that
  remembers control IDs would answer the old one with its old refusal; a dead original
  becomes ``resent`` and stays as history.

Order per destination: a message is sent only after every older message of its destination
was acknowledged or dead-lettered. Nothing is ever deleted: a dead message is kept, never
sent again by itself, and counted on the destinations page.

Delivery is at least once: a crash after the peer received a message but before its ACK was
committed leaves it ``sent``; once its claim lapses (:data:`CLAIM_SECONDS`) it is sent again,
with the same control ID, so the peer can recognise the duplicate.

Several scheduler processes may run against one PostgreSQL database: a claim locks the
destination row (``FOR UPDATE SKIP LOCKED``), reads the head of its queue and marks it
``sent`` with a lease, so two processes never send the same message nor overtake each
other's. SQLite has one writer at a time anyway (every write transaction begins IMMEDIATE).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ris import audit, events
from ris.audit import Actor
from ris.db import sessions, utcnow
from ris.errors import Conflict, Invalid, NotFound
from ris.hl7.client import CONNECT_TIMEOUT, READ_TIMEOUT, MLLPClient, MLLPClientError
from ris.hl7.wire import decode, escape, find_header, split_segments
from ris.models import (
    ExamStatus,
    HL7Destination,
    OutboundMessage,
    RequestedProcedure,
    ScheduledProcedureStep,
)

logger = logging.getLogger(__name__)

MESSAGE_TYPES = ("SIU", "ORU", "DFT")
STATES = ("queued", "sent", "failed", "acknowledged", "dead", "resent")
PENDING = ("queued", "sent", "failed")
SKIPPABLE = ("queued", "failed")
RESENDABLE = ("dead", "acknowledged")
# A message the peer refuses at this attempt (or later) is dead-lettered (see above).
DEAD_LETTER_ATTEMPTS = 5
RETRY_BASE = timedelta(seconds=10)
RETRY_MAX = timedelta(minutes=10)
# How long a claimed message stays ``sent`` before another run may send it again: longer
# than the slowest exchange (connect + ACK wait), so a live sender is never overtaken.
CLAIM_SECONDS = 2 * (CONNECT_TIMEOUT + READ_TIMEOUT) + 30
BATCH = 200  # messages per destination per run; the next run (5 s later) goes on
ENCODING = "utf-8"  # declared in MSH-18 as "UNICODE UTF-8"
IDENTITY_KEY = "placa.hl7_identity"
ACCEPTED = frozenset({"AA", "CA"})
REFUSED = frozenset({"AE", "AR", "CE", "CR"})


# The sender's identity ---------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who Placa is in MSH-3/MSH-4 and which clock its HL7 times are written in."""

    application: str = "PLACA"
    facility: str = "PLACA"
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))


def configure(app: Flask) -> None:
    """Give every session of ``app`` the HL7 identity, so that services never read the app.

    Handlers of events run inside services, which only have ``db``; the identity travels in
    ``Session.info`` (SQLAlchemy's place for application data on a session).
    """
    identity = Identity(
        application=app.config["HL7_APPLICATION"], facility=app.config["HL7_FACILITY"],
        zone=ZoneInfo(app.config["TIMEZONE"]),
    )  # fmt: skip
    for key in ("placa.sessions", "placa.read_only_sessions"):
        factory: sessionmaker[Session] | None = app.extensions.get(key)
        if factory is not None:
            info = dict(factory.kw.get("info") or {})
            info[IDENTITY_KEY] = identity
            factory.configure(info=info)


def identity_of(db: Session) -> Identity:
    found = db.info.get(IDENTITY_KEY)
    return found if isinstance(found, Identity) else Identity()


# Writing messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """What a message builder needs to write one destination's MSH."""

    control_id: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    include_pdf: bool
    zone: ZoneInfo
    created_at: datetime

    def time(self, moment: datetime) -> str:
        return hl7_time(moment, self.zone)


Builder = Callable[[Envelope], str]
"""Builds the ER7 text of one message for one destination."""


def new_control_id() -> str:
    # MSH-10 is 20 characters in 2.5.1; 80 random bits are unique enough across processes.
    return uuid.uuid4().hex[:20].upper()


def hl7_time(moment: datetime, zone: ZoneInfo) -> str:
    """A DTM in the site's local time with its offset: ``20261124093000+0100``."""
    return moment.astimezone(zone).strftime("%Y%m%d%H%M%S%z")


def hl7_date(day: date | None) -> str:
    return day.strftime("%Y%m%d") if day else ""


def components(*parts: object) -> str:
    """Escaped components joined with ``^``, trailing empty ones dropped."""
    return "^".join(escape(str(p)) if p is not None else "" for p in parts).rstrip("^")


def header_fields(envelope: Envelope, message_type: str) -> dict[str, str]:
    """MSH-3..MSH-18 of an outbound message, as ER7 field values (already escaped)."""
    return {
        "msh_3": escape(envelope.sending_application),
        "msh_4": escape(envelope.sending_facility),
        "msh_5": escape(envelope.receiving_application),
        "msh_6": escape(envelope.receiving_facility),
        "msh_7": envelope.time(envelope.created_at),
        "msh_9": message_type,
        "msh_10": envelope.control_id,
        "msh_11": "P",
        "msh_12": "2.5.1",
        "msh_18": "UNICODE UTF-8",
    }


def enqueue(
    db: Session, message_type: str, build_payload: Builder, *, patient_id: int | None = None,
    exam_id: int | None = None,
) -> list[OutboundMessage]:  # fmt: skip
    """Queue ``message_type`` ("SIU^S12") for every active destination that wants it.

    ``build_payload`` is called once per destination with its :class:`Envelope`. Rows are
    added to ``db`` (the caller's transaction) and flushed; nothing is sent here.
    """
    wanting = [d for d in _active_destinations(db) if d.wants(message_type)]
    if not wanting:
        return []
    identity = identity_of(db)
    now = utcnow()
    queued = []
    for destination in wanting:
        envelope = Envelope(
            control_id=new_control_id(), sending_application=identity.application,
            sending_facility=identity.facility,
            receiving_application=destination.receiving_application,
            receiving_facility=destination.receiving_facility,
            include_pdf=destination.include_pdf, zone=identity.zone, created_at=now,
        )  # fmt: skip
        message = OutboundMessage(
            destination=destination, message_type=message_type, control_id=envelope.control_id,
            payload=build_payload(envelope), state="queued", created_at=now, next_attempt_at=now,
            patient_id=patient_id, exam_id=exam_id,
        )  # fmt: skip
        db.add(message)
        queued.append(message)
    db.flush()
    logger.info("Queued %s for %s", message_type, ", ".join(d.name for d in wanting))
    return queued


def _active_destinations(db: Session) -> list[HL7Destination]:
    query = select(HL7Destination).where(HL7Destination.active).order_by(HL7Destination.id)
    return list(db.scalars(query))


# SIU from the front desk's events -----------------------------------------------------------


def _on_booked(db: Session, *, exam: RequestedProcedure, step: ScheduledProcedureStep,
               actor: Actor, **_: Any) -> None:  # fmt: skip
    _enqueue_siu(db, "S12", exam, step, actor)


def _on_rescheduled(db: Session, *, exam: RequestedProcedure, step: ScheduledProcedureStep,
                    actor: Actor, **_: Any) -> None:  # fmt: skip
    _enqueue_siu(db, "S13", exam, step, actor)


def _on_status(
    db: Session, *, exam: RequestedProcedure, before: ExamStatus, after: ExamStatus,
    reason: str | None, actor: Actor, **_: Any,
) -> None:  # fmt: skip
    from ris.hl7 import siu

    trigger = siu.trigger_for_status(before, after)
    step = exam.steps[-1] if exam.steps else None
    if trigger is not None and step is not None:
        _enqueue_siu(db, trigger, exam, step, actor, reason=reason or "")


def _enqueue_siu(
    db: Session, trigger: str, exam: RequestedProcedure, step: ScheduledProcedureStep,
    actor: Actor, reason: str = "",
) -> None:  # fmt: skip
    from ris.hl7 import siu

    def build(envelope: Envelope) -> str:
        return siu.build(trigger, exam, step, envelope, reason=reason, entered_by=actor.name)

    enqueue(db, f"SIU^{trigger}", build, patient_id=exam.order.patient_id, exam_id=exam.id)


events.subscribe("exam.booked", _on_booked)
events.subscribe("exam.rescheduled", _on_rescheduled)
events.subscribe("exam.status", _on_status)


# Destinations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DestinationData:
    name: str
    host: str
    port: int
    message_types: tuple[str, ...]
    receiving_application: str = ""
    receiving_facility: str = ""
    include_pdf: bool = False
    active: bool = True


def parse_message_types(text: str | Iterable[str]) -> tuple[str, ...]:
    """ "SIU, oru" -> ("SIU", "ORU"); refuses types Placa does not send."""
    items = text.split(",") if isinstance(text, str) else list(text)
    found = tuple(dict.fromkeys(item.strip().upper() for item in items if item.strip()))
    unknown = [item for item in found if item not in MESSAGE_TYPES]
    if unknown or not found:
        raise Invalid(str(_l("Choose message types among %(types)s.",
                             types=", ".join(MESSAGE_TYPES))), field="message_types")  # fmt: skip
    return found


def save_destination(
    db: Session, actor: Actor, data: DestinationData, destination: HL7Destination | None = None
) -> HL7Destination:
    """Create a destination, or change ``destination``."""
    _check_destination(data)
    clash = find_destination(db, data.name.strip())
    if clash is not None and clash is not destination:
        raise Conflict(str(_l("A destination named %(name)s exists already.", name=data.name)),
                       field="name")  # fmt: skip
    if destination is None:
        destination = HL7Destination(name=data.name.strip())
        db.add(destination)
    before = _describe(destination) if destination.id else None
    destination.name, destination.host, destination.port = (
        data.name.strip(), data.host.strip(), data.port,
    )  # fmt: skip
    destination.message_types = ",".join(parse_message_types(data.message_types))
    destination.receiving_application = data.receiving_application.strip()
    destination.receiving_facility = data.receiving_facility.strip()
    destination.include_pdf, destination.active = data.include_pdf, data.active
    db.flush()
    audit.record(db, actor, "hl7.destination.save", object_type="hl7_destination",
                 object_id=destination.id,
                 detail={"before": before, "after": _describe(destination)})  # fmt: skip
    return destination


def _check_destination(data: DestinationData) -> None:
    if not data.name.strip() or len(data.name.strip()) > 64:
        raise Invalid(str(_l("Give a name of at most 64 characters.")), field="name")
    if not data.host.strip() or len(data.host.strip()) > 255 or " " in data.host.strip():
        raise Invalid(str(_l("Give a host name or address.")), field="host")
    if not 1 <= data.port <= 65535:
        raise Invalid(str(_l("A port is a number from 1 to 65535.")), field="port")
    for value, name in ((data.receiving_application, "receiving_application"),
                        (data.receiving_facility, "receiving_facility")):  # fmt: skip
        if len(value.strip()) > 64:
            raise Invalid(str(_l("At most 64 characters.")), field=name)


def _describe(destination: HL7Destination) -> dict[str, object]:
    return {
        "name": destination.name, "host": destination.host, "port": destination.port,
        "message_types": destination.message_types, "active": destination.active,
        "receiving_application": destination.receiving_application,
        "receiving_facility": destination.receiving_facility,
        "include_pdf": destination.include_pdf,
    }  # fmt: skip


def list_destinations(db: Session) -> list[HL7Destination]:
    return list(db.scalars(select(HL7Destination).order_by(HL7Destination.name)))


def get_destination(db: Session, destination_id: int) -> HL7Destination:
    destination = db.get(HL7Destination, destination_id)
    if destination is None:
        raise NotFound(str(_l("There is no such HL7 destination.")))
    return destination


def find_destination(db: Session, name: str) -> HL7Destination | None:
    return db.scalars(select(HL7Destination).where(HL7Destination.name == name)).first()


def set_destination_active(
    db: Session, actor: Actor, destination: HL7Destination, active: bool
) -> None:
    """An inactive destination gets no new messages, and its queue waits (nothing is dropped)."""
    destination.active = active
    db.flush()
    audit.record(db, actor, "hl7.destination." + ("activate" if active else "deactivate"),
                 object_type="hl7_destination", object_id=destination.id)  # fmt: skip


def remove_destination(db: Session, actor: Actor, destination: HL7Destination) -> bool:
    """Delete a destination that never had messages; one with a history is deactivated.

    Returns True when deleted, False when only deactivated.
    """
    used = db.scalar(
        select(func.count()).select_from(OutboundMessage)
        .where(OutboundMessage.destination_id == destination.id)
    )  # fmt: skip
    if used:
        set_destination_active(db, actor, destination, False)
        return False
    audit.record(db, actor, "hl7.destination.remove", object_type="hl7_destination",
                 object_id=destination.id, detail=_describe(destination))  # fmt: skip
    db.delete(destination)
    db.flush()
    return True


# The outbox seen by admins -------------------------------------------------------------------


def outbox_query(state: str | None = None, destination_id: int | None = None) -> Any:
    """Newest first, optionally one state and one destination."""
    query = select(OutboundMessage).order_by(OutboundMessage.id.desc())
    if state:
        query = query.where(OutboundMessage.state == state)
    if destination_id:
        query = query.where(OutboundMessage.destination_id == destination_id)
    return query


def state_counts(db: Session) -> dict[tuple[int, str], int]:
    """{(destination id, state): number of messages}."""
    rows = db.execute(
        select(OutboundMessage.destination_id, OutboundMessage.state, func.count())
        .group_by(OutboundMessage.destination_id, OutboundMessage.state)
    )  # fmt: skip
    return {(row[0], row[1]): row[2] for row in rows}


def get_message(db: Session, message_id: int) -> OutboundMessage:
    message = db.get(OutboundMessage, message_id)
    if message is None:
        raise NotFound(str(_l("There is no such outbound message.")))
    return message


def retry_now(db: Session, actor: Actor, message: OutboundMessage) -> None:
    """Make a failed message due at once (the sender picks it up within seconds)."""
    if message.state != "failed":
        raise Conflict(str(_l("Only a failed message can be retried.")))
    message.next_attempt_at = utcnow()
    db.flush()
    audit.record(db, actor, "hl7.outbound.retry", object_type="hl7_outbound",
                 object_id=message.id, patient_id=message.patient_id)  # fmt: skip


def skip_message(db: Session, actor: Actor, message: OutboundMessage, reason: str = "") -> None:
    """Dead-letter a queued or failed message, so that its destination goes on without it."""
    _lock_destination(db, message)
    if message.state not in SKIPPABLE:
        raise Conflict(str(_l("Only a queued or failed message can be skipped.")))
    message.state = "dead"
    note = f"skipped by {actor.name}" + (f": {reason.strip()}" if reason.strip() else "")
    message.last_error = "; ".join(p for p in (note, message.last_error or "") if p)[:2000]
    db.flush()
    audit.record(db, actor, "hl7.outbound.skip", object_type="hl7_outbound",
                 object_id=message.id, patient_id=message.patient_id,
                 detail={"reason": reason.strip()} if reason.strip() else None)  # fmt: skip
    logger.warning("HL7 message %s to destination %s skipped by %s", message.id,
                   message.destination_id, actor.name)  # fmt: skip


def resend_message(db: Session, actor: Actor, message: OutboundMessage) -> OutboundMessage:
    """Queue a copy of a dead or acknowledged message at the end of its destination's queue.

    The copy gets a new control ID (MSH-10) and time (MSH-7). A dead original becomes
    ``resent`` (so it is not sent twice, and the dead count shows what is still unresolved);
    an acknowledged one stays acknowledged.
    """
    _lock_destination(db, message)
    if message.state not in RESENDABLE:
        raise Conflict(str(_l("Only a dead-lettered or acknowledged message can be sent again.")))
    now = utcnow()
    control_id = new_control_id()
    copy = OutboundMessage(
        destination_id=message.destination_id, message_type=message.message_type,
        control_id=control_id,
        payload=restamp(message.payload, control_id, hl7_time(now, identity_of(db).zone)),
        state="queued", created_at=now, next_attempt_at=now, patient_id=message.patient_id,
        exam_id=message.exam_id,
    )  # fmt: skip
    db.add(copy)
    db.flush()
    if message.state == "dead":
        message.state = "resent"
        note = f"sent again as message {copy.id}"
        message.last_error = "; ".join(p for p in (note, message.last_error or "") if p)[:2000]
    audit.record(db, actor, "hl7.outbound.resend", object_type="hl7_outbound",
                 object_id=message.id, patient_id=message.patient_id,
                 detail={"copy": copy.id, "control_id": control_id})  # fmt: skip
    logger.info("HL7 message %s resent by %s as %s", message.id, actor.name, copy.id)
    return copy


def resend_dead(db: Session, actor: Actor, destination: HL7Destination) -> list[OutboundMessage]:
    """Send every dead-lettered message of ``destination`` again, oldest first (after a fix
    at the receiver that refused them); each is audited as its own resend."""
    query = (
        select(OutboundMessage)
        .where(OutboundMessage.destination_id == destination.id, OutboundMessage.state == "dead")
        .order_by(OutboundMessage.id)
    )  # fmt: skip
    return [resend_message(db, actor, message) for message in db.scalars(query).all()]


def restamp(payload: str, control_id: str, moment: str) -> str:
    """``payload`` with a new MSH-7 (message time) and MSH-10 (control ID)."""
    header, separator, rest = payload.partition("\r")
    fields = header.split(header[3])
    fields[6], fields[9] = moment, control_id  # fields[n] is MSH-(n+1)
    return header[3].join(fields) + separator + rest


def _lock_destination(db: Session, message: OutboundMessage) -> None:
    """Wait for a sender claiming from this destination, then read the message afresh.

    The sender claims under the same row lock, so an admin's change never crosses a claim.
    """
    db.scalars(select(HL7Destination).where(HL7Destination.id == message.destination_id)
               .with_for_update()).first()  # fmt: skip
    db.refresh(message)


# The sender ---------------------------------------------------------------------------------


@dataclass
class SendReport:
    acknowledged: int = 0
    failed: int = 0
    dead_lettered: int = 0
    destinations: int = 0


@dataclass(frozen=True)
class _Claim:
    id: int
    control_id: str
    payload: str
    host: str
    port: int


def send_due(
    factory: sessionmaker[Session] | Flask, *, now: Callable[[], datetime] = utcnow,
    connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
    batch: int = BATCH,
) -> SendReport:  # fmt: skip
    """Send what is due to every active destination; each state change is committed at once."""
    if isinstance(factory, Flask):
        factory = sessions(factory)
    report = SendReport()
    with factory() as db:
        destination_ids = _destinations_with_due_messages(db, now())
    for destination_id in destination_ids:
        report.destinations += 1
        try:
            _send_destination(factory, destination_id, report, now, connect_timeout,
                              read_timeout, batch)  # fmt: skip
        except Exception:  # one destination's trouble must not starve the others
            logger.exception("Sending to HL7 destination %s failed", destination_id)
    return report


def _destinations_with_due_messages(db: Session, moment: datetime) -> list[int]:
    query = (
        select(OutboundMessage.destination_id).distinct()
        .join(HL7Destination)
        .where(HL7Destination.active, OutboundMessage.state.in_(PENDING),
               OutboundMessage.next_attempt_at <= moment)
    )  # fmt: skip
    return sorted(db.scalars(query))


def _send_destination(
    factory: sessionmaker[Session], destination_id: int, report: SendReport,
    now: Callable[[], datetime], connect_timeout: float, read_timeout: float, batch: int,
) -> None:  # fmt: skip
    link: MLLPClient | None = None
    try:
        for _ in range(batch):
            claim = _claim_head(factory, destination_id, now())
            if claim is None:
                return
            if link is None:
                link = MLLPClient(claim.host, claim.port, connect_timeout=connect_timeout,
                                  read_timeout=read_timeout)  # fmt: skip
            error, ack_code = _deliver(link, claim)
            if error:
                if _record_failure(factory, claim.id, error, ack_code, now()) == "dead":
                    report.dead_lettered += 1
                    continue  # parked for good: the next message goes
                report.failed += 1
                return  # keep the order: nothing overtakes a failed message
            _record_success(factory, claim.id, ack_code, now())
            report.acknowledged += 1
    finally:
        if link is not None:
            link.close()


def _claim_head(factory: sessionmaker[Session], destination_id: int,
                moment: datetime) -> _Claim | None:  # fmt: skip
    """Mark the oldest pending message of the destination ``sent``, if it is due."""
    with factory.begin() as db:
        destination = db.scalars(
            select(HL7Destination)
            .where(HL7Destination.id == destination_id, HL7Destination.active)
            .with_for_update(skip_locked=True)
        ).first()  # fmt: skip
        if destination is None:  # inactive, removed, or another sender is claiming
            return None
        head = db.scalars(
            select(OutboundMessage)
            .where(OutboundMessage.destination_id == destination_id,
                   OutboundMessage.state.in_(PENDING))
            .order_by(OutboundMessage.id).limit(1)
        ).first()  # fmt: skip
        if head is None or head.next_attempt_at > moment:
            return None
        head.state = "sent"
        head.attempts += 1
        head.next_attempt_at = moment + timedelta(seconds=CLAIM_SECONDS)
        return _Claim(head.id, head.control_id, head.payload, destination.host, destination.port)


def _deliver(link: MLLPClient, claim: _Claim) -> tuple[str, str | None]:
    """Send one message; return (error or "", MSA-1 or None)."""
    try:
        reply = link.exchange(claim.payload.encode(ENCODING))
    except MLLPClientError as exc:
        return str(exc), None
    ack = read_ack(reply)
    if ack.control_id and ack.control_id != claim.control_id:
        return f"acknowledgement of another message (MSA-2 {ack.control_id})", ack.code or None
    if ack.code in ACCEPTED:
        return "", ack.code
    return f"{ack.code or 'no MSA'}: {ack.text or 'no reason given'}", ack.code or None


@dataclass(frozen=True)
class Ack:
    code: str  # MSA-1
    control_id: str  # MSA-2
    text: str  # MSA-3 and ERR texts


def read_ack(reply: bytes) -> Ack:
    """MSA-1, MSA-2 and the error texts of an acknowledgement, read tolerantly without hl7apy."""
    text, _codec = decode(reply)
    segments = split_segments(text)
    found = find_header(segments)
    separator = segments[found[1]][3] if found and len(segments[found[1]]) > 3 else "|"
    code = control_id = ""
    texts: list[str] = []
    for segment in segments:
        fields = segment.split(separator)
        if fields[0] == "MSA":
            code = fields[1].strip().upper() if len(fields) > 1 else ""
            control_id = fields[2].strip() if len(fields) > 2 else ""
            texts += [fields[3]] if len(fields) > 3 and fields[3] else []
        elif fields[0] == "ERR":
            texts += _error_texts(fields)
    return Ack(code, control_id, "; ".join(dict.fromkeys(texts))[:1000])


def _error_texts(fields: list[str]) -> list[str]:
    """ERR-8 (user message) and the code's text: ERR-3.2 in 2.5, ERR-1.4.2 up to 2.4."""

    def part(index: int, *path: tuple[str, int]) -> str:
        value = fields[index] if len(fields) > index else ""
        for separator, position in path:
            pieces = value.split(separator)
            value = pieces[position] if len(pieces) > position else ""
        return value.strip()

    found = [part(8), part(3, ("^", 1)), part(1, ("^", 3), ("&", 1))]
    return [text for text in found if text]


def backoff(attempts: int) -> timedelta:
    """10 s after the first failure, doubling, at most 10 minutes."""
    exponent = max(attempts - 1, 0)
    if exponent >= 16:
        return RETRY_MAX
    return min(RETRY_BASE * (2**exponent), RETRY_MAX)


def _record_failure(factory: sessionmaker[Session], message_id: int, error: str,
                    ack_code: str | None, moment: datetime) -> str | None:  # fmt: skip
    """Mark the message failed (retried after its back-off) or dead; return its new state."""
    with factory.begin() as db:
        message = db.get(OutboundMessage, message_id)
        if message is None:
            return None
        message.last_error = error[:2000]
        message.ack_code = ack_code
        if ack_code in REFUSED and message.attempts >= DEAD_LETTER_ATTEMPTS:
            message.state = "dead"
        else:
            message.state = "failed"
            message.next_attempt_at = moment + backoff(message.attempts)
        state, destination_id, attempts = message.state, message.destination_id, message.attempts
    if state == "dead":
        logger.error("HL7 message %s to destination %s dead-lettered after %d attempts: %s",
                     message_id, destination_id, attempts, error)  # fmt: skip
    else:
        logger.warning("HL7 message %s to destination %s failed: %s", message_id,
                       destination_id, error)  # fmt: skip
    return state


def _record_success(factory: sessionmaker[Session], message_id: int, ack_code: str | None,
                    moment: datetime) -> None:  # fmt: skip
    with factory.begin() as db:
        message = db.get(OutboundMessage, message_id)
        if message is None:
            return
        message.state = "acknowledged"
        message.ack_code = ack_code
        message.acknowledged_at = moment
