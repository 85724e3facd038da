"""The one status ladder of an exam, shared by the front desk, MWL/MPPS, reporting and HL7.

ordered -> scheduled -> arrived -> in progress -> completed -> read,
with cancelled, no-show and discontinued beside it. Every transition goes through
:func:`change_status`, which refuses the illegal ones and logs who did it, when and why.
"""

from __future__ import annotations

import logging

from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from ris import audit, events
from ris.audit import Actor
from ris.db import utcnow
from ris.errors import Conflict
from ris.models import ExamStatus, RequestedProcedure, StatusChange

logger = logging.getLogger(__name__)
S = ExamStatus

TRANSITIONS: dict[ExamStatus, frozenset[ExamStatus]] = {
    S.ORDERED: frozenset({S.SCHEDULED, S.ARRIVED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.ORDERED, S.ARRIVED, S.IN_PROGRESS, S.CANCELLED, S.NO_SHOW}),
    S.ARRIVED: frozenset({S.SCHEDULED, S.IN_PROGRESS, S.CANCELLED, S.DISCONTINUED}),
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.DISCONTINUED}),
    S.COMPLETED: frozenset({S.READ}),
    S.READ: frozenset(),
    # A discontinued exam goes back to the front desk: book it again or cancel it.
    S.DISCONTINUED: frozenset({S.ORDERED, S.SCHEDULED, S.CANCELLED}),
    S.NO_SHOW: frozenset({S.ORDERED, S.SCHEDULED, S.CANCELLED}),
    S.CANCELLED: frozenset(),
}

LABELS = {
    S.ORDERED: _l("Ordered"),
    S.SCHEDULED: _l("Scheduled"),
    S.ARRIVED: _l("Arrived"),
    S.IN_PROGRESS: _l("In progress"),
    S.COMPLETED: _l("Completed"),
    S.READ: _l("Read"),
    S.CANCELLED: _l("Cancelled"),
    S.NO_SHOW: _l("No-show"),
    S.DISCONTINUED: _l("Discontinued"),
}


def can_change(current: ExamStatus, target: ExamStatus) -> bool:
    return target in TRANSITIONS[current]


def change_status(
    db: Session, actor: Actor, procedure: RequestedProcedure, target: ExamStatus,
    reason: str | None = None,
) -> StatusChange:  # fmt: skip
    """Move an exam to ``target`` or refuse with a message saying why."""
    current = procedure.status
    if not can_change(current, target):
        raise Conflict(
            str(_l("An exam that is %(current)s cannot become %(target)s.",
                   current=LABELS[current], target=LABELS[target]))
        )  # fmt: skip
    now = utcnow()
    procedure.status, procedure.status_changed_at = target, now
    if target is S.ARRIVED:
        procedure.arrived_at = now
    change = StatusChange(
        procedure_id=procedure.id, from_status=current, to_status=target, at=now,
        actor=actor.name, user_id=actor.user_id, reason=reason,
    )  # fmt: skip
    db.add(change)
    db.flush()
    detail = {"from": current.value, "reason": reason} if reason else {"from": current.value}
    audit.record(db, actor, f"exam.{target.value}", object_type="exam", object_id=procedure.id,
                 patient_id=procedure.order.patient_id, detail=detail)  # fmt: skip
    logger.info("Exam %s: %s -> %s by %s", procedure.accession_number, current, target, actor.name)
    events.publish(db, "exam.status", exam=procedure, before=current, after=target, reason=reason,
                   actor=actor)  # fmt: skip
    return change


def initial_status(db: Session, actor: Actor, procedure: RequestedProcedure) -> None:
    """Log the exam's first status (it has no 'from')."""
    db.add(StatusChange(procedure_id=procedure.id, from_status=None, to_status=procedure.status,
                        actor=actor.name, user_id=actor.user_id))  # fmt: skip
