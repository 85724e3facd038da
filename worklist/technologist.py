"""What the technologist's screen does: today's exams per room, and the exam steps done by
hand on modalities that send no MPPS (start, complete, discontinue).

The steps go through the one status ladder (:func:`ris.status.change_status`), which
refuses illegal transitions and writes the status history and the audit log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from ris import board, status
from ris.audit import Actor
from ris.errors import Invalid
from ris.models import ExamStatus, RequestedProcedure, Room
from ris.site import Site

logger = logging.getLogger(__name__)
S = ExamStatus

# A cancelled exam has left the room's day; a no-show stays visible (the slot was lost).
HIDDEN = frozenset({S.CANCELLED})
# The hand-made steps, in the order the buttons appear, and where each one leads.
MANUAL_STEPS: dict[str, ExamStatus] = {
    "start": S.IN_PROGRESS,
    "complete": S.COMPLETED,
    "discontinue": S.DISCONTINUED,
}
REASON_MAX = 500


@dataclass
class RoomDay:
    """One room's exams of the day, in start order."""

    room: Room
    rows: list[board.BoardRow] = field(default_factory=list)


def room_days(
    db: Session, site: Site, day: date, rooms: list[Room], room: Room | None = None
) -> list[RoomDay]:
    """The day's exams grouped by room: every room of ``rooms`` (or only ``room``), even
    empty, plus any other room an exam is booked in. One query (the day board's)."""
    shown = [room] if room else rooms
    days = {r.id: RoomDay(r) for r in shown}
    for row in board.day_board(db, site, day, room.id if room else None):
        if row.exam.status not in HIDDEN:
            days.setdefault(row.room.id, RoomDay(row.room)).rows.append(row)
    return sorted(days.values(), key=lambda day_: day_.room.code)


def manual_steps(exam: RequestedProcedure) -> tuple[str, ...]:
    """The hand-made steps the ladder allows from the exam's status."""
    return tuple(name for name, target in MANUAL_STEPS.items()
                 if status.can_change(exam.status, target))  # fmt: skip


def start_exam(db: Session, actor: Actor, exam: RequestedProcedure) -> None:
    """The technologist starts the exam by hand (the modality sends no MPPS)."""
    status.change_status(db, actor, exam, S.IN_PROGRESS)


def complete_exam(db: Session, actor: Actor, exam: RequestedProcedure) -> None:
    """The acquisition is finished: the exam is ready to read."""
    status.change_status(db, actor, exam, S.COMPLETED)


def discontinue_exam(db: Session, actor: Actor, exam: RequestedProcedure, reason: str) -> None:
    """The exam was stopped; it goes back to the front desk with the reason."""
    reason = reason.strip()
    if not reason:
        raise Invalid(str(_l("Give a reason for stopping the exam.")), field="reason")
    if len(reason) > REASON_MAX:
        raise Invalid(str(_l("The reason is too long (%(max)s characters at most).",
                             max=REASON_MAX)), field="reason")  # fmt: skip
    status.change_status(db, actor, exam, S.DISCONTINUED, reason)
