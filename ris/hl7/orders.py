"""Orders from the HIS: ORM^O01 (v2.3.1, ZDS) and OMI^O23 (v2.5.1, TQ1 and IPC).

The fields follow the IHE Radiology Scheduled Workflow mapping (as dcm4chee applies it):

==========================  =====================================================
Placa                       HL7 (first one sent wins)
==========================  =====================================================
order control               ORC-1: NW, CA (OC), XO (XX), SC (with ORC-5), DC
placer order number/issuer  ORC-2.1 / ORC-2.2 (else OBR-2; issuer else the sender)
patient                     PID (created or updated), class PV1-2 (O, I, E)
procedure code              OBR-4 code^text^system (else OBR-44); unknown: created
ordering physician          OBR-16, else ORC-12 (XCN: "Family^Given")
referring physician         PV1-8, else ORC-12
reason                      OBR-31 (text, else code), then OBR-13
ICD-10 codes                DG1-3
priority                    TQ1-9, ORC-7.6, OBR-27.6, OBR-5: S STAT, A/P/C/T HIGH, R
accession number            IPC-1, OBR-18
requested procedure ID      IPC-2, OBR-19
scheduled step ID           IPC-4, OBR-20 (when booked from the message; else Placa's)
Study Instance UID          IPC-3, ZDS-1
modality                    IPC-5, OBR-24 (else the procedure code's)
start time                  TQ1-7, ORC-7.4, OBR-27.4 (local time unless an offset)
station                     IPC-9 (AE title of a room), else the modality's default room
==========================  =====================================================

One message is one order; each OBR is one exam, with the TQ1 before it and the IPC or
ZDS after it. Identifiers the message does not carry are issued by Placa. A scheduled
step ID sent by an order filler upstream (IPC-4) is kept when the message books the exam
(the SIU then announces it); one that is malformed or taken is replaced by Placa's own,
with a warning. An exam booked later by the front desk gets Placa's.

An order is never refused for want of reference data: an unknown procedure code is created
for an admin to map, and an order whose booking fails (no room, conflict, closed) is kept
"ordered" for the front desk, with a warning in the log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from ris import catalog, scheduling, status
from ris.db import utcnow
from ris.errors import Conflict, PlacaError
from ris.hl7.adt import upsert_patient_from_pid
from ris.hl7.errors import HL7ApplicationError
from ris.hl7.fields import Value, timestamp_value
from ris.hl7.inbound import ROUTES
from ris.hl7.message import Message, Segment
from ris.models import (
    ExamStatus,
    Order,
    Patient,
    PatientClass,
    Priority,
    ProcedureCode,
    RequestedProcedure,
    Room,
)
from ris.orders import (
    ICD10,
    ExamIdentifiers,
    OrderData,
    change_order,
    find_exam_by_accession,
    find_orders_by_placer_number,
    place_order,
)

if TYPE_CHECKING:
    from ris.hl7.inbound import Context

logger = logging.getLogger(__name__)

PRIORITIES = {"S": Priority.STAT, "A": Priority.HIGH, "P": Priority.HIGH, "C": Priority.HIGH,
              "T": Priority.HIGH, "R": Priority.ROUTINE}  # fmt: skip
PATIENT_CLASSES = {"O": PatientClass.OUTPATIENT, "I": PatientClass.INPATIENT,
                   "E": PatientClass.EMERGENCY}  # fmt: skip
# HL7 table 0074 (diagnostic service section) values that name a DICOM modality otherwise.
SERVICE_SECTIONS = {"RX": "CR", "NMS": "NM", "RUS": "US", "CUS": "US", "OUS": "US", "VUS": "US",
                    "MAM": "MG", "MRI": "MR", "CTH": "CT"}  # fmt: skip
# ORC-5 order status (HL7 table 0038) -> the exam status it asks for.
ORDER_STATUSES = {"IP": ExamStatus.IN_PROGRESS, "CM": ExamStatus.COMPLETED,
                  "CA": ExamStatus.CANCELLED, "DC": ExamStatus.DISCONTINUED,
                  "SC": ExamStatus.SCHEDULED}  # fmt: skip
# Exams a discontinue request cancels rather than discontinues: they have not started.
NOT_STARTED = frozenset({ExamStatus.ORDERED, ExamStatus.SCHEDULED, ExamStatus.ARRIVED,
                         ExamStatus.NO_SHOW, ExamStatus.DISCONTINUED})  # fmt: skip


# --- reading fields -------------------------------------------------------------------


def value(seg: Segment | None, location: str) -> str:
    """``value(obr, "OBR-4.2")``: that (sub)component of the first repetition, unescaped and
    stripped; "" when absent."""
    if seg is None:
        return ""
    number, _, rest = location.partition("-")[2].partition(".")
    component, _, sub = rest.partition(".")
    index = int(number)
    raw = seg.fields[index] if index < len(seg.fields) else ""
    first = Value(raw.split(seg.chars["REPETITION"])[0], seg.chars)
    return first.component(int(component or 1), int(sub or 1))


def _first(*candidates: tuple[Segment | None, str]) -> tuple[str, str]:
    """The first non-empty value among ``(segment, location)`` pairs, with its location."""
    for segment, location in candidates:
        found = value(segment, location)
        if found:
            return found, location
    return "", candidates[0][1] if candidates else ""


def _person(segment: Segment | None, location: str) -> str:
    """An XCN (id^family^given^...) as "Family^Given"; the id when no name is sent."""
    family = value(segment, f"{location}.2")
    given = value(segment, f"{location}.3")
    if family or given:
        return f"{family}^{given}".rstrip("^")[:200]
    return value(segment, f"{location}.1")[:200]


def hl7_time(text: str, location: str, context: Context) -> datetime | None:
    """A start time as an aware UTC datetime (site time unless an offset is sent); a date
    without a time of day is not a start time (None)."""
    digits = re.match(r"\s*(\d*)", text)
    if digits is None or len(digits.group(1)) < 10:
        timestamp_value(text, location, context.site.zone)  # a malformed one is still an AE
        return None
    return timestamp_value(text, location, context.site.zone)


# --- the message, item by item --------------------------------------------------------


@dataclass
class Item:
    """One OBR (one exam) with the segments that qualify it."""

    obr: Segment
    orc: Segment | None
    tq1: Segment | None = None
    ipc: Segment | None = None
    zds: Segment | None = None


@dataclass
class OrderMessage:
    """The segments of one ORM^O01 / OMI^O23, read without groups."""

    pid: Segment | None = None
    pv1: Segment | None = None
    orc: Segment | None = None
    items: list[Item] = field(default_factory=list)
    diagnoses: list[Segment] = field(default_factory=list)

    @classmethod
    def read(cls, message: Message) -> OrderMessage:
        found = cls()
        orc: Segment | None = None
        tq1: Segment | None = None
        for segment in message.children:
            name = segment.name
            if name == "PID":
                found.pid = found.pid or segment
            elif name == "PV1":
                found.pv1 = found.pv1 or segment
            elif name == "ORC":
                orc, tq1 = segment, None
                found.orc = found.orc or orc
            elif name == "TQ1":
                tq1 = tq1 or segment
            elif name == "OBR":
                found.items.append(Item(segment, orc, tq1))
                tq1 = None
            elif name in ("IPC", "ZDS") and found.items:
                item = found.items[-1]
                if getattr(item, name.lower()) is None:
                    setattr(item, name.lower(), segment)
            elif name == "DG1":
                found.diagnoses.append(segment)
        return found

    def control(self) -> str:
        if self.orc is None:
            raise HL7ApplicationError("ORC-1", "The message has no ORC segment", "101")
        code = value(self.orc, "ORC-1.1").upper()
        if not code:
            raise HL7ApplicationError("ORC-1", "The order control code is missing", "101")
        return code


# --- routes ---------------------------------------------------------------------------


def handle_order(context: Context, message: Message) -> int | None:
    """ORM^O01 and OMI^O23: dispatch on ORC-1; returns the patient's id."""
    parsed = OrderMessage.read(message)
    control = parsed.control()
    handler = CONTROLS.get(control)
    if handler is None:
        raise HL7ApplicationError("ORC-1", f"Order control {control} is not supported", "103")
    return handler(context, parsed)


def new_order(context: Context, parsed: OrderMessage) -> int:
    """ORC-1 NW: register or update the patient, place the order, book what has a time."""
    if not parsed.items:
        raise HL7ApplicationError("OBR", "The order has no OBR segment", "101")
    number, issuer, _ = _placer_number(context, parsed)
    if number and any(order.placer_issuer == issuer
                      for order in find_orders_by_placer_number(context.db, number)):  # fmt: skip
        raise HL7ApplicationError("ORC-2", f"Order {number} from {issuer} exists", "205")
    data = _order_data(context, parsed, number, issuer)
    patient = _patient(context, parsed)
    codes = [_procedure(context, item) for item in parsed.items]
    sent = [_identifiers(item) for item in parsed.items]
    try:
        order = place_order(context.db, context.actor, context.site, patient, data, codes, sent)
    except PlacaError as exc:
        raise _as_hl7(exc, parsed.items) from exc
    for exam, item in zip(order.procedures, parsed.items, strict=True):
        _book_new(context, exam, item)
    return patient.id


def cancel_order(context: Context, parsed: OrderMessage) -> int:
    """ORC-1 CA (or OC): cancel the order's exams; one in progress or beyond refuses it."""
    order, exams = _known_order(context, parsed)
    reason = _reason_sent(parsed) or f"Cancelled by {context.sender}"
    for exam in exams:
        if exam.status is not ExamStatus.CANCELLED:
            _move(context, exam, lambda e: scheduling.cancel(context.db, context.actor, e, reason))
    return order.patient_id


def discontinue_order(context: Context, parsed: OrderMessage) -> int:
    """ORC-1 DC: exams in progress are discontinued, those not yet started cancelled."""
    order, exams = _known_order(context, parsed)
    reason = _reason_sent(parsed) or f"Discontinued by {context.sender}"
    for exam in exams:
        if exam.status is ExamStatus.CANCELLED:
            continue
        target = ExamStatus.CANCELLED if exam.status in NOT_STARTED else ExamStatus.DISCONTINUED
        _move(context, exam, lambda e, t=target: _change(context, e, t, reason))
    return order.patient_id


def change_order_request(context: Context, parsed: OrderMessage) -> int:
    """ORC-1 XO (or XX): change physicians, priority, reason; move the booking if a new
    start time is sent."""
    order, exams = _known_order(context, parsed)
    first = parsed.items[0] if parsed.items else None
    try:
        change_order(
            context.db, context.actor, order,
            ordering_physician=_ordering(parsed, first) or None,
            referring_physician=_referring(parsed) or None,
            reason=_reason(parsed, first) or None,
            icd10_codes=_icd10(context, parsed) or None,
            priority=_priority(parsed, first),
            patient_class=PATIENT_CLASSES.get(value(parsed.pv1, "PV1-2.1").upper()),
        )  # fmt: skip
    except PlacaError as exc:
        raise _as_hl7(exc, parsed.items) from exc
    for exam in exams:
        if exam.status in scheduling.BOOKABLE | scheduling.MOVABLE:
            _rebook(context, exam, _item_for(exam, parsed))
    return order.patient_id


def status_change(context: Context, parsed: OrderMessage) -> int:
    """ORC-1 SC: move the exams to the status ORC-5 names, by legal steps of the ladder only."""
    order, exams = _known_order(context, parsed)
    code = value(parsed.orc, "ORC-5.1").upper()
    target = ORDER_STATUSES.get(code)
    if target is None:
        raise HL7ApplicationError("ORC-5", f"Order status {code or '(empty)'} is not supported",
                                  "103" if code else "101")  # fmt: skip
    reason = f"Status {code} from {context.sender}"
    for exam in exams:
        if exam.status is target:
            continue
        if target is ExamStatus.SCHEDULED:
            _rebook(context, exam, _item_for(exam, parsed), required=True)
        else:
            _move(context, exam, lambda e: _change(context, e, target, reason))
    return order.patient_id


RouteControl = Callable[["Context", OrderMessage], int]
CONTROLS: dict[str, RouteControl] = {
    "NW": new_order, "CA": cancel_order, "OC": cancel_order, "DC": discontinue_order,
    "XO": change_order_request, "XX": change_order_request, "SC": status_change,
}  # fmt: skip


# --- new orders -----------------------------------------------------------------------


def _patient(context: Context, parsed: OrderMessage) -> Patient:
    if parsed.pid is None:
        raise HL7ApplicationError("PID", "The order has no PID segment", "101")
    return upsert_patient_from_pid(context, parsed.pid)


def _order_data(context: Context, parsed: OrderMessage, number: str, issuer: str) -> OrderData:
    first = parsed.items[0]
    ordering = _ordering(parsed, first)
    if not ordering:
        raise HL7ApplicationError("OBR-16", "The ordering provider is missing", "101")
    return OrderData(
        ordering_physician=ordering, referring_physician=_referring(parsed),
        reason=_reason(parsed, first), icd10_codes=_icd10(context, parsed),
        priority=_priority(parsed, first) or Priority.ROUTINE,
        patient_class=PATIENT_CLASSES.get(value(parsed.pv1, "PV1-2.1").upper(),
                                          PatientClass.OUTPATIENT),
        placer_order_number=number or None, placer_issuer=issuer if number else None,
    )  # fmt: skip


def _ordering(parsed: OrderMessage, item: Item | None) -> str:
    return _person(item.obr if item else None, "OBR-16") or _person(parsed.orc, "ORC-12")


def _referring(parsed: OrderMessage) -> str:
    return _person(parsed.pv1, "PV1-8") or _person(parsed.orc, "ORC-12")


def _reason(parsed: OrderMessage, item: Item | None) -> str:
    obr = item.obr if item else None
    parts = [value(obr, "OBR-31.2") or value(obr, "OBR-31.1"), value(obr, "OBR-13.1")]
    return "; ".join(part for part in parts if part)


def _priority(parsed: OrderMessage, item: Item | None) -> Priority | None:
    if item is None:
        return PRIORITIES.get(value(parsed.orc, "ORC-7.6").upper()[:1])
    sent, _ = _first((item.tq1, "TQ1-9.1"), (item.orc, "ORC-7.6"), (item.obr, "OBR-27.6"),
                     (item.obr, "OBR-5.1"))  # fmt: skip
    return PRIORITIES.get(sent.upper()[:1])


def _icd10(context: Context, parsed: OrderMessage) -> list[str]:
    """DG1-3 codes that are ICD-10; others are left out (and logged), not refused."""
    codes: list[str] = []
    for segment in parsed.diagnoses:
        code = value(segment, "DG1-3.1").upper().replace(" ", "")
        system = (value(segment, "DG1-3.3") or value(segment, "DG1-2.1")).upper()
        if not code or code in codes:
            continue
        if "9" in system or not ICD10.match(code) or len(",".join([*codes, code])) > 200:
            _warn(context, f"DG1-3 {code} ({system or 'no system'}) is not kept as ICD-10")
            continue
        codes.append(code)
    return codes


def _procedure(context: Context, item: Item) -> ProcedureCode:
    obr = item.obr
    location = "OBR-4" if value(obr, "OBR-4.1") else "OBR-44"
    code = value(obr, f"{location}.1")
    if not code:
        raise HL7ApplicationError("OBR-4", "The universal service identifier is missing", "101")
    system, text = value(obr, f"{location}.3"), value(obr, f"{location}.2")
    known = _alternate(context, obr, location)
    try:
        found = known or catalog.procedure_for_order(
            context.db, context.actor, system, code, text, _modality_sent(item)
        )
    except PlacaError as exc:
        raise HL7ApplicationError(location, exc.message, "102") from exc
    if not found.active:
        raise HL7ApplicationError(location, f"{code} is no longer offered", "103")
    return found


def _alternate(context: Context, obr: Segment, location: str) -> ProcedureCode | None:
    """The code's catalog entry, by its alternate identifier (components 4 to 6) if need be."""
    primary = catalog.find_procedure(context.db, value(obr, f"{location}.3") or "L",
                                     value(obr, f"{location}.1"))  # fmt: skip
    if primary is not None:
        return primary
    code = value(obr, f"{location}.4")
    return catalog.find_procedure(context.db, value(obr, f"{location}.6"), code) if code else None


def _modality_sent(item: Item) -> str | None:
    sent = (value(item.ipc, "IPC-5.1") or value(item.obr, "OBR-24.1")).upper()
    sent = SERVICE_SECTIONS.get(sent, sent)
    return sent if sent in catalog.MODALITIES else None


def _identifiers(item: Item) -> ExamIdentifiers:
    return ExamIdentifiers(
        accession_number=_first((item.ipc, "IPC-1.1"), (item.obr, "OBR-18.1"))[0] or None,
        requested_procedure_id=_first((item.ipc, "IPC-2.1"), (item.obr, "OBR-19.1"))[0] or None,
        study_instance_uid=_first((item.ipc, "IPC-3.1"), (item.zds, "ZDS-1.1"))[0] or None,
    )  # fmt: skip


_FIELD_LOCATIONS = {  # a service's field -> where the message carries it (IHE 2.5.1, 2.3.1)
    "accession_number": ("IPC-1", "OBR-18"), "requested_procedure_id": ("IPC-2", "OBR-19"),
    "study_instance_uid": ("IPC-3", "ZDS-1"), "ordering_physician": ("OBR-16", "OBR-16"),
    "icd10_codes": ("DG1-3", "DG1-3"), "procedures": ("OBR-4", "OBR-4"),
}  # fmt: skip


def _as_hl7(exc: PlacaError, items: list[Item]) -> HL7ApplicationError:
    with_ipc = any(item.ipc is not None for item in items)
    locations = _FIELD_LOCATIONS.get(exc.field or "")
    location = (locations[0] if with_ipc else locations[1]) if locations else ""
    code = ("205" if isinstance(exc, Conflict) else "102") if location else "207"
    return HL7ApplicationError(location, exc.message, code)


def _start(context: Context, item: Item) -> tuple[datetime | None, str]:
    sent, location = _first((item.tq1, "TQ1-7.1"), (item.orc, "ORC-7.4"),
                            (item.obr, "OBR-27.4"))  # fmt: skip
    start = hl7_time(sent, location, context)
    if sent and start is None:
        _warn(context, f"{location} {sent} has no time of day: the exam waits to be booked")
    return start, location


def _book_new(context: Context, exam: RequestedProcedure, item: Item) -> None:
    """Book a new exam at the time sent; on failure it stays 'ordered', with a warning."""
    start, location = _start(context, item)
    if start is None:
        return
    room, why = _room(context, exam, item)
    if room is None:
        _warn(context, f"{exam.accession_number} not booked: {why}")
        return
    step_id, location = _first((item.ipc, "IPC-4.1"), (item.obr, "OBR-20.1"))
    try:
        _book_savepoint(context, exam, room, start, step_id or None)
    except PlacaError as exc:
        if exc.field != "step_id":
            _warn(context, f"{exam.accession_number} not booked in {room.code}: {exc.message}")
            return
        _warn(context, f"{location} {exc.message} Placa issued its own step ID.")
        try:
            _book_savepoint(context, exam, room, start, None)
        except PlacaError as again:
            _warn(context, f"{exam.accession_number} not booked in {room.code}: {again.message}")


def _book_savepoint(
    context: Context, exam: RequestedProcedure, room: Room, start: datetime, step_id: str | None
) -> None:
    with context.db.begin_nested():
        scheduling.book(context.db, context.actor, context.site, exam, room, start,
                        now=min(start, utcnow()), step_id=step_id)  # fmt: skip


def _room(context: Context, exam: RequestedProcedure, item: Item) -> tuple[Room | None, str]:
    """The station IPC-9 names, else the default room of the exam's modality."""
    station = value(item.ipc, "IPC-9.1")
    db = context.db
    if station:
        room = db.scalar(select(Room).where(Room.ae_title == station))
        if room is not None:
            return room, ""
        _warn(context, f"IPC-9 {station} is no room's AE title: using the default room")
    modality = _modality_sent(item) or exam.procedure_code.modality
    room = catalog.default_room(db, modality)
    return room, "" if room else f"no default room for {modality}"


# --- existing orders ------------------------------------------------------------------


def _placer_number(context: Context, parsed: OrderMessage) -> tuple[str, str, str]:
    """ORC-2 (else OBR-2): the number, its issuer (the namespace sent, else the sender)
    and the namespace as sent."""
    first = parsed.items[0].obr if parsed.items else None
    number, location = _first((parsed.orc, "ORC-2.1"), (first, "OBR-2.1"))
    namespace = value(parsed.orc if location.startswith("ORC") else first, f"{location[:5]}.2")
    if len(number) > 64 or len(namespace) > 64:
        raise HL7ApplicationError(location[:5], "The placer order number is too long", "102")
    return number, namespace or context.sender[:64], namespace


def _orders_numbered(context: Context, number: str, issuer: str, namespace: str) -> list[Order]:
    orders = find_orders_by_placer_number(context.db, number)
    exact = [order for order in orders if order.placer_issuer == issuer]
    if exact or not orders:
        return exact
    # A namespace sent on one message and not on the other: the sender's own numbers match,
    # and a number sent without namespace matches when only one order has it.
    own = [order for order in orders if order.placer_issuer == context.sender[:64]]
    return own or (orders if not namespace and len(orders) == 1 else [])


def _known_order(context: Context, parsed: OrderMessage) -> tuple[Order, list[RequestedProcedure]]:
    """The order a CA/XO/SC/DC names, and its exams the message names (all if none)."""
    number, issuer, namespace = _placer_number(context, parsed)
    order = _order_named(context, parsed, (number, issuer, namespace))
    named = {_identifiers(item).accession_number for item in parsed.items} - {None}
    exams = [exam for exam in order.procedures if not named or exam.accession_number in named]
    return order, exams or list(order.procedures)


def _order_named(context: Context, parsed: OrderMessage, placer: tuple[str, str, str]) -> Order:
    number, issuer, namespace = placer
    if number:
        orders = _orders_numbered(context, number, issuer, namespace)
        if len(orders) == 1:
            return orders[0]
        if orders:
            raise HL7ApplicationError("ORC-2", f"Order {number} is ambiguous", "205")
        raise HL7ApplicationError("ORC-2", f"Unknown order {number} from {issuer}", "204")
    filler = value(parsed.orc, "ORC-3.1")  # Placa's own number: an accession number
    exam = find_exam_by_accession(context.db, filler) if filler else None
    if exam is None:
        raise HL7ApplicationError("ORC-2", "No known placer or filler order number", "204")
    return exam.order


def _reason_sent(parsed: OrderMessage) -> str:
    return value(parsed.orc, "ORC-16.2") or value(parsed.orc, "ORC-16.1")


def _item_for(exam: RequestedProcedure, parsed: OrderMessage) -> Item | None:
    for item in parsed.items:
        if _identifiers(item).accession_number == exam.accession_number:
            return item
    return parsed.items[0] if parsed.items else None


def _change(context: Context, exam: RequestedProcedure, target: ExamStatus, reason: str) -> None:
    status.change_status(context.db, context.actor, exam, target, reason)


def _move(
    context: Context, exam: RequestedProcedure, apply: Callable[[RequestedProcedure], None]
) -> None:
    """Apply a ladder move; the ladder's refusal becomes an AE naming the order control."""
    try:
        apply(exam)
    except PlacaError as exc:
        raise HL7ApplicationError("ORC-1", f"{exam.accession_number}: {exc.message}",
                                  "207") from exc  # fmt: skip


def _rebook(
    context: Context, exam: RequestedProcedure, item: Item | None, *, required: bool = False
) -> None:
    """Book or move an exam to the start time sent; a refusal is an AE (nothing changes)."""
    start, location = _start(context, item) if item else (None, "TQ1-7")
    if start is None or item is None:
        if required:
            raise HL7ApplicationError(location, "A start time is required", "101")
        return
    room, why = _room_to_keep(context, exam, item)
    if room is None:
        raise HL7ApplicationError(location, f"{exam.accession_number} cannot be booked: {why}")
    step = scheduling.current_step(exam) if exam.status in scheduling.MOVABLE else None
    if step is not None and (step.start_at, step.room_id) == (start, room.id):
        return
    now = min(start, utcnow())
    try:
        if step is not None:
            scheduling.reschedule(context.db, context.actor, context.site, exam, room, start,
                                  now=now)  # fmt: skip
        else:
            scheduling.book(context.db, context.actor, context.site, exam, room, start,
                            now=now)  # fmt: skip
    except PlacaError as exc:
        raise HL7ApplicationError(location, f"{exam.accession_number}: {exc.message}") from exc


def _room_to_keep(
    context: Context, exam: RequestedProcedure, item: Item
) -> tuple[Room | None, str]:
    """A station named by IPC-9 wins; else the exam stays in its room; else the default."""
    step = scheduling.current_step(exam)
    if not value(item.ipc, "IPC-9.1") and step is not None and exam.status in scheduling.MOVABLE:
        return step.room, ""
    return _room(context, exam, item)


def _warn(context: Context, text: str) -> None:
    """Something an admin should know although the message was applied (the message log
    shows it)."""
    logger.warning("HL7 from %s: %s", context.sender, text)
    context.warnings.append(text)


ROUTES["ORM^O01"] = handle_order
ROUTES["OMI^O23"] = handle_order
