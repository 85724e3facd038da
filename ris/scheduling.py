"""Scheduling: book exams into rooms, find free slots, reschedule, check in, cancel, no-show.

Double booking is refused here, in the service, for every door. Two bookings racing for
the same room or patient are serialised by locking the room and patient rows (PostgreSQL)
or by the write lock every SQLite writer takes at BEGIN, so the second one sees the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import audit, events, identifiers, status
from ris.audit import Actor
from ris.db import utcnow
from ris.errors import Conflict, Invalid
from ris.models import (
    HOLDS_SLOT,
    ExamStatus,
    Order,
    Patient,
    ProcedureCode,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
)
from ris.site import Site

logger = logging.getLogger(__name__)
BOOKABLE = frozenset({ExamStatus.ORDERED, ExamStatus.NO_SHOW, ExamStatus.DISCONTINUED})
MOVABLE = frozenset({ExamStatus.SCHEDULED, ExamStatus.ARRIVED})
PAST_TOLERANCE = timedelta(minutes=15)


@dataclass(frozen=True)
class Slot:
    room: Room
    start: datetime
    end: datetime


def current_step(exam: RequestedProcedure) -> ScheduledProcedureStep | None:
    """The step that holds the exam's slot: its latest booking."""
    return exam.steps[-1] if exam.steps else None


def book(
    db: Session, actor: Actor, site: Site, exam: RequestedProcedure, room: Room,
    start: datetime, *, now: datetime | None = None, step_id: str | None = None,
) -> ScheduledProcedureStep:  # fmt: skip
    """Book an exam into a room at ``start`` for the procedure's duration.

    ``step_id`` is the Scheduled Procedure Step ID an order filler upstream already gave
    (HL7 IPC-4); it must be free. Without one, Placa issues the next.
    """
    if exam.status not in BOOKABLE:
        raise Conflict(str(_l("This exam is already booked; reschedule it instead.")))
    end = start + timedelta(minutes=exam.procedure_code.duration_minutes)
    _check_slot(db, site, exam, room, start, end, now or utcnow())
    if step_id is not None:
        _check_step_id(db, step_id)
    step = ScheduledProcedureStep(
        procedure=exam, step_id=step_id or identifiers.new_step_id(db), modality=room.modality,
        room=room,
        station_ae_title=room.ae_title, station_name=room.station_name, start_at=start,
        end_at=end, description=exam.description,
    )  # fmt: skip
    db.add(step)
    db.flush()
    status.change_status(db, actor, exam, ExamStatus.SCHEDULED)
    audit.record(db, actor, "exam.book", object_type="exam", object_id=exam.id,
                 patient_id=exam.order.patient_id, detail=_where(room, start))  # fmt: skip
    events.publish(db, "exam.booked", exam=exam, step=step, actor=actor)
    return step


def _check_step_id(db: Session, step_id: str) -> None:
    # SH (16 characters, no backslash or control characters), unique like every SPS ID.
    if not step_id.strip() or len(step_id) > 16 or any(c == "\\" or ord(c) < 32 for c in step_id):
        raise Invalid(str(_l("%(value)s is not a valid step ID.", value=step_id)), field="step_id")
    taken = select(ScheduledProcedureStep.id).where(ScheduledProcedureStep.step_id == step_id)
    if db.scalar(taken.limit(1)) is not None:
        raise Conflict(str(_l("%(value)s is already used by another exam.", value=step_id)),
                       field="step_id")  # fmt: skip


def reschedule(
    db: Session, actor: Actor, site: Site, exam: RequestedProcedure, room: Room,
    start: datetime, *, now: datetime | None = None,
) -> ScheduledProcedureStep:  # fmt: skip
    """Move a booked exam to another time or room (the same step, the same SPS ID)."""
    step = current_step(exam)
    if exam.status not in MOVABLE or step is None:
        raise Conflict(str(_l("Only a scheduled exam can be rescheduled.")))
    end = start + (step.end_at - step.start_at)
    _check_slot(db, site, exam, room, start, end, now or utcnow(), ignore=step)
    before = _where(step.room, step.start_at)
    step.room, step.start_at, step.end_at = room, start, end
    step.station_ae_title, step.station_name, step.modality = (
        room.ae_title,
        room.station_name,
        room.modality,
    )
    db.flush()
    audit.record(db, actor, "exam.reschedule", object_type="exam", object_id=exam.id,
                 patient_id=exam.order.patient_id,
                 detail={"before": before, "after": _where(room, start)})  # fmt: skip
    events.publish(db, "exam.rescheduled", exam=exam, step=step, actor=actor)
    return step


def check_in(db: Session, actor: Actor, exam: RequestedProcedure) -> None:
    """The patient is here: the wait-time clock starts."""
    status.change_status(db, actor, exam, ExamStatus.ARRIVED)


def cancel(db: Session, actor: Actor, exam: RequestedProcedure, reason: str) -> None:
    """Cancel an exam; its slot is freed and it leaves the worklist."""
    if not reason.strip():
        raise Invalid(str(_l("Give a reason for the cancellation.")), field="reason")
    status.change_status(db, actor, exam, ExamStatus.CANCELLED, reason.strip())


def no_show(db: Session, actor: Actor, exam: RequestedProcedure) -> None:
    """The patient did not come; the slot is freed, the exam can be booked again."""
    status.change_status(db, actor, exam, ExamStatus.NO_SHOW)


def _where(room: Room, start: datetime) -> dict[str, str]:
    return {"room": room.code, "start": start.isoformat()}


def _check_slot(
    db: Session, site: Site, exam: RequestedProcedure, room: Room, start: datetime,
    end: datetime, now: datetime, ignore: ScheduledProcedureStep | None = None,
) -> None:  # fmt: skip
    if start.tzinfo is None:
        raise Invalid(str(_l("The start time has no time zone.")), field="start")
    if start < now - PAST_TOLERANCE:
        raise Invalid(str(_l("This time is in the past.")), field="start")
    _check_room(room, exam.procedure_code)
    if not within_opening_hours(room, start, end, site):
        raise Invalid(str(_l("%(room)s is closed at that time.", room=room.code)), field="start")
    patient_id = exam.order.patient_id
    _lock(db, room.id, patient_id)
    clash = _first_overlap(db, start, end, room_id=room.id, ignore=ignore)
    if clash is not None:
        raise Conflict(str(_l("%(room)s is already booked from %(start)s to %(end)s.",
                              room=room.code, start=_local(clash.start_at, site),
                              end=_local(clash.end_at, site))))  # fmt: skip
    clash = _first_overlap(db, start, end, patient_id=patient_id, ignore=ignore)
    if clash is not None:
        raise Conflict(str(_l("The patient already has an exam in %(room)s from %(start)s to "
                              "%(end)s.", room=clash.room.code, start=_local(clash.start_at, site),
                              end=_local(clash.end_at, site))))  # fmt: skip


def _check_room(room: Room, code: ProcedureCode) -> None:
    if not room.active:
        raise Invalid(str(_l("%(room)s is not in service.", room=room.code)), field="room")
    if code.rooms and room not in code.rooms:
        raise Invalid(str(_l("%(code)s is not done in %(room)s.", code=code.description,
                             room=room.code)), field="room")  # fmt: skip
    if not code.rooms and room.modality != code.modality:
        raise Invalid(str(_l("%(room)s is not a %(modality)s room.", room=room.code,
                             modality=code.modality)), field="room")  # fmt: skip


def _local(moment: datetime, site: Site) -> str:
    return moment.astimezone(site.zone).strftime("%H:%M")


def _lock(db: Session, room_id: int, patient_id: int) -> None:
    """Serialise bookings of one room and of one patient (always room first: no deadlock)."""
    db.execute(select(Room.id).where(Room.id == room_id).with_for_update())
    db.execute(select(Patient.id).where(Patient.id == patient_id).with_for_update())


def _first_overlap(
    db: Session, start: datetime, end: datetime, *, room_id: int | None = None,
    patient_id: int | None = None, ignore: ScheduledProcedureStep | None = None,
) -> ScheduledProcedureStep | None:  # fmt: skip
    query = (
        select(ScheduledProcedureStep)
        .join(RequestedProcedure)
        .where(
            ScheduledProcedureStep.start_at < end,
            ScheduledProcedureStep.end_at > start,
            RequestedProcedure.status.in_(HOLDS_SLOT),
        )
        .order_by(ScheduledProcedureStep.start_at)
    )
    if room_id is not None:
        query = query.where(ScheduledProcedureStep.room_id == room_id)
    if patient_id is not None:
        query = query.join(Order).where(Order.patient_id == patient_id)
    if ignore is not None:
        query = query.where(ScheduledProcedureStep.id != ignore.id)
    return db.scalars(query.limit(1)).first()


def within_opening_hours(room: Room, start: datetime, end: datetime, site: Site) -> bool:
    local_start, local_end = start.astimezone(site.zone), end.astimezone(site.zone)
    if local_start.date() != local_end.date() and local_end.time() != time(0):
        return False
    if not room.is_open_on(local_start.isoweekday()):
        return False
    closes = room.closes_at if room.closes_at != time(0) else time.max
    return room.opens_at <= local_start.time() and local_end.time() <= closes


def free_slots(
    db: Session, site: Site, code: ProcedureCode, after: datetime, *, count: int = 5,
    patient_id: int | None = None, rooms: list[Room] | None = None, days: int = 14,
) -> list[Slot]:  # fmt: skip
    """The earliest free slots for a procedure across its eligible rooms, soonest first."""
    candidates = rooms or eligible_rooms(db, code)
    duration = timedelta(minutes=code.duration_minutes)
    slots: list[Slot] = []
    for room in candidates:
        slots += _room_slots(db, site, room, duration, after, count, patient_id, days)
    return sorted(slots, key=lambda slot: (slot.start, slot.room.code))[:count]


def eligible_rooms(db: Session, code: ProcedureCode) -> list[Room]:
    if code.rooms:
        return [room for room in code.rooms if room.active]
    query = select(Room).where(Room.modality == code.modality, Room.active).order_by(Room.code)
    return list(db.scalars(query))


def _room_slots(
    db: Session, site: Site, room: Room, duration: timedelta, after: datetime, count: int,
    patient_id: int | None, days: int,
) -> list[Slot]:  # fmt: skip
    found: list[Slot] = []
    first_day = after.astimezone(site.zone).date()
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        if room.is_open_on(day.isoweekday()):
            found += _day_slots(
                db, site, room, day, duration, after, count - len(found), patient_id
            )
        if len(found) >= count:
            break
    return found


def _day_slots(
    db: Session, site: Site, room: Room, day: date, duration: timedelta, after: datetime,
    count: int, patient_id: int | None,
) -> list[Slot]:  # fmt: skip
    opens = datetime.combine(day, room.opens_at, site.zone)
    closes = datetime.combine(day, room.closes_at, site.zone)
    if room.closes_at == time(0):
        closes += timedelta(days=1)
    busy = _busy(db, room.id, patient_id, opens, closes)
    step = timedelta(minutes=site.slot_minutes)
    start = _align(max(opens, after), opens, step)
    found: list[Slot] = []
    while start + duration <= closes and len(found) < count:
        end = start + duration
        clash = next((b for b in busy if b[0] < end and b[1] > start), None)
        if clash is None:
            found.append(Slot(room, start, end))
            start = end
        else:
            start = _align(clash[1], opens, step)
    return found


def _busy(
    db: Session, room_id: int, patient_id: int | None, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    query = (
        select(ScheduledProcedureStep.start_at, ScheduledProcedureStep.end_at)
        .join(RequestedProcedure).join(Order)
        .where(ScheduledProcedureStep.start_at < until, ScheduledProcedureStep.end_at > since,
               RequestedProcedure.status.in_(HOLDS_SLOT))
    )  # fmt: skip
    owner = ScheduledProcedureStep.room_id == room_id
    if patient_id is not None:
        owner = owner | (Order.patient_id == patient_id)
    return sorted((row.start_at, row.end_at) for row in db.execute(query.where(owner)))


def _align(moment: datetime, origin: datetime, step: timedelta) -> datetime:
    """The first slot boundary at or after ``moment`` (slots start every ``step`` from opening)."""
    elapsed = moment - origin
    if elapsed <= timedelta(0):
        return origin
    steps = -(-elapsed // step)
    return origin + steps * step
