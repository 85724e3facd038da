"""The exams something that arrived without an order may belong to: an unscheduled MPPS
(:mod:`worklist.technologist`) or an unmatched study (:mod:`pacs.unmatched`).

Both name a patient and an accession number as the modality sent them; the person
reconciling also sees the day's exams in the rooms the data came from.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session, contains_eager, selectinload

from ris import board, orders, patients
from ris.models import ExamStatus, Order, Patient, RequestedProcedure, Room
from ris.site import Site

# A cancelled exam has left the day and takes no images or performed steps.
HIDDEN = frozenset({ExamStatus.CANCELLED})
CANDIDATE_LIMIT = 50


def patients_named(db: Session, patient_id: str, accession: str, dicom_name: str) -> list[Patient]:
    """The patients a modality's data points to: by MRN, by the accession number's exam,
    then by the name (family and given components of a DICOM PN)."""
    found: dict[int, Patient] = {}
    by_mrn = patients.find_by_mrn(db, patient_id) if patient_id.strip() else None
    by_accession = orders.find_exam_by_accession(db, accession) if accession.strip() else None
    for patient in (by_mrn, by_accession.order.patient if by_accession else None):
        if patient is not None:
            found.setdefault(patient.id, patient)
    named = " ".join(part for part in dicom_name.split("^")[:2] if part.strip())
    for patient in patients.search_patients(db, named) if named else []:
        found.setdefault(patient.id, patient)
    return list(found.values())


def open_exams_of(db: Session, patient_ids: list[int]) -> list[RequestedProcedure]:
    """The patients' exams that can still be linked to, newest order first."""
    if not patient_ids:
        return []
    query = (
        select(RequestedProcedure)
        .join(RequestedProcedure.order)
        .options(
            contains_eager(RequestedProcedure.order).joinedload(Order.patient),
            selectinload(RequestedProcedure.steps),
        )  # fmt: skip
        .where(Order.patient_id.in_(patient_ids), RequestedProcedure.status.not_in(HIDDEN))
        .order_by(Order.created_at.desc(), RequestedProcedure.id.desc())
        .limit(CANDIDATE_LIMIT)
    )
    return list(db.scalars(query))


def day_exams_in(db: Session, site: Site, day: date, rooms: list[Room]) -> list[RequestedProcedure]:
    """The day's exams booked in ``rooms`` (cancelled ones left out), in start order."""
    if not rooms:
        return []
    room_id = rooms[0].id if len(rooms) == 1 else None  # one room: let the query filter
    wanted = {room.id for room in rooms}
    rows = board.day_board(db, site, day, room_id)
    return [row.exam for row in rows if row.room.id in wanted and row.exam.status not in HIDDEN]
