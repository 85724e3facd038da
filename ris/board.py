"""What the front-desk screens show: the day board, a room's week, a patient's history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import ColumnElement, case, select
from sqlalchemy.orm import Session, contains_eager

from ris.models import (
    ExamStatus,
    Order,
    Patient,
    Priority,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
)
from ris.site import Site


@dataclass(frozen=True)
class BoardRow:
    """One booked exam on a board: the step with its exam, order, patient and room."""

    step: ScheduledProcedureStep
    exam: RequestedProcedure
    order: Order
    patient: Patient
    room: Room


def day_bounds(site: Site, day: date) -> tuple[datetime, datetime]:
    """The UTC instants a local calendar day starts and ends."""
    start = datetime.combine(day, time.min, site.zone)
    return start, datetime.combine(day + timedelta(days=1), time.min, site.zone)


def board_rows(
    db: Session, since: datetime, until: datetime, room_id: int | None = None
) -> list[BoardRow]:
    """Every exam booked between two instants, by start time then room, in one query."""
    query = (
        select(ScheduledProcedureStep)
        .join(ScheduledProcedureStep.procedure)
        .join(RequestedProcedure.order)
        .join(Order.patient)
        .join(ScheduledProcedureStep.room)
        .join(RequestedProcedure.procedure_code)
        .options(
            contains_eager(ScheduledProcedureStep.procedure)
            .contains_eager(RequestedProcedure.order)
            .contains_eager(Order.patient),
            contains_eager(ScheduledProcedureStep.room),
            contains_eager(ScheduledProcedureStep.procedure).contains_eager(
                RequestedProcedure.procedure_code
            ),
        )
        .where(ScheduledProcedureStep.start_at >= since, ScheduledProcedureStep.start_at < until)
        .order_by(ScheduledProcedureStep.start_at, Room.code)
    )
    if room_id is not None:
        query = query.where(ScheduledProcedureStep.room_id == room_id)
    steps = db.scalars(query).unique()
    return [BoardRow(s, s.procedure, s.procedure.order, s.procedure.order.patient, s.room)
            for s in steps]  # fmt: skip


def day_board(db: Session, site: Site, day: date, room_id: int | None = None) -> list[BoardRow]:
    return board_rows(db, *day_bounds(site, day), room_id=room_id)


def week_board(db: Session, site: Site, room_id: int, monday: date) -> dict[date, list[BoardRow]]:
    """A room's week, Monday to Sunday, each day's exams in start order."""
    since, _ = day_bounds(site, monday)
    _, until = day_bounds(site, monday + timedelta(days=6))
    days: dict[date, list[BoardRow]] = {monday + timedelta(days=n): [] for n in range(7)}
    for row in board_rows(db, since, until, room_id):
        days[row.step.start_at.astimezone(site.zone).date()].append(row)
    return days


def patient_exams(db: Session, patient_id: int) -> list[RequestedProcedure]:
    """A patient's exams, newest order first, with their steps and codes."""
    query = (
        select(RequestedProcedure)
        .join(RequestedProcedure.order)
        .join(RequestedProcedure.procedure_code)
        .where(Order.patient_id == patient_id)
        .order_by(Order.created_at.desc(), RequestedProcedure.id)
    )
    return list(db.scalars(query))


def unbooked_exams(db: Session, limit: int = 200) -> list[RequestedProcedure]:
    """Ordered exams waiting for the front desk to book them, oldest first."""
    waiting = [ExamStatus.ORDERED, ExamStatus.NO_SHOW, ExamStatus.DISCONTINUED]
    query = (
        select(RequestedProcedure)
        .join(RequestedProcedure.order)
        .options(contains_eager(RequestedProcedure.order).joinedload(Order.patient))
        .where(RequestedProcedure.status.in_(waiting))
        .order_by(priority_rank(), Order.created_at)
        .limit(limit)
    )
    return list(db.scalars(query))


def priority_rank() -> ColumnElement[int]:
    """STAT first, then HIGH, then ROUTINE (the stored strings do not sort that way)."""
    return case({Priority.STAT: 0, Priority.HIGH: 1}, value=Order.priority, else_=2)
