"""What the technologist's screen does: today's exams per room, the exam steps done by
hand on modalities that send no MPPS (start, complete, discontinue), and the exams an
unscheduled MPPS may belong to.

The steps go through the one status ladder (:func:`ris.status.change_status`), which
refuses illegal transitions and writes the status history and the audit log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import board, exam_candidates, patients, status
from ris.audit import Actor
from ris.errors import Invalid
from ris.models import ExamStatus, Patient, RequestedProcedure, Room
from ris.site import Site
from worklist.models import PerformedProcedureStep

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


# ---------------------------------------------------------------------------- reconciliation


@dataclass(frozen=True)
class Candidates:
    """The exams an unscheduled performed step may belong to."""

    patients: list[Patient]
    exams: list[RequestedProcedure]  # of those patients, newest first
    room: Room | None  # the room of the modality that sent the step
    room_exams: list[RequestedProcedure]  # the day's exams in that room


def reconcile_candidates(
    db: Session, site: Site, day: date, pps: PerformedProcedureStep, query: str = ""
) -> Candidates:
    """The patients a person searched for (or those the modality named: MRN, name,
    accession number), their exams, and the day's exams in the modality's room."""
    found = patients.search_patients(db, query) if query.strip() else _patients_sent(db, pps)
    room = station_room(db, pps)
    return Candidates(
        patients=found, exams=exams_of(db, [p.id for p in found]), room=room,
        room_exams=exam_candidates.day_exams_in(db, site, day, [room] if room else []),
    )  # fmt: skip


def _patients_sent(db: Session, pps: PerformedProcedureStep) -> list[Patient]:
    return exam_candidates.patients_named(
        db, pps.patient_id_sent, pps.accession_number_sent, pps.patient_name
    )


def exams_of(db: Session, patient_ids: list[int]) -> list[RequestedProcedure]:
    """The patients' exams a performed step can still be linked to, newest order first."""
    return exam_candidates.open_exams_of(db, patient_ids)


def station_room(db: Session, pps: PerformedProcedureStep) -> Room | None:
    """The room whose device sent the step (its station AE title, else the calling AE)."""
    for title in (pps.station_ae_title, pps.calling_ae):
        if title:
            room = db.scalar(select(Room).where(Room.ae_title == title))
            if room is not None:
                return room
    return None
