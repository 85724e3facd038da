"""What the technologist sees of an unmatched study: how it arrived (the calling AEs),
its series, and the exams it may belong to (the same patient or accession as sent, a
searched patient's open exams, and the day's exams in rooms of the study's modalities).

The link itself is :func:`pacs.reconciliation.link_study`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacs.models import Instance, Series, Study
from ris import exam_candidates, patients
from ris.models import Patient, RequestedProcedure, Room
from ris.site import Site


@dataclass(frozen=True)
class StudyCandidates:
    """The exams an unmatched study may belong to."""

    patients: list[Patient]
    exams: list[RequestedProcedure]  # of those patients, newest first
    rooms: list[Room]  # the active rooms of the study's modalities
    room_exams: list[RequestedProcedure]  # the day's exams in those rooms


def modalities_of(study: Study) -> list[str]:
    """Modalities in Study, as stored (a DICOM multi-value: ``CT\\SR``)."""
    return [value for value in study.modalities_in_study.split("\\") if value]


def calling_aes(db: Session, study_ids: list[int]) -> dict[int, list[str]]:
    """The AE titles that sent each study's instances, sorted (one query)."""
    if not study_ids:
        return {}
    query = (
        select(Series.study_fk, Instance.calling_ae).distinct()
        .join(Instance, Instance.series_fk == Series.id)
        .where(Series.study_fk.in_(study_ids))
    )  # fmt: skip
    found: dict[int, list[str]] = {study_id: [] for study_id in study_ids}
    for study_id, title in db.execute(query):
        if title:
            found[study_id].append(title)
    return {study_id: sorted(titles) for study_id, titles in found.items()}


def series_of(db: Session, study: Study) -> list[Series]:
    query = (
        select(Series).where(Series.study_fk == study.id)
        .order_by(Series.series_number, Series.id)
    )  # fmt: skip
    return list(db.scalars(query))


def modality_rooms(db: Session, study: Study) -> list[Room]:
    modalities = modalities_of(study)
    if not modalities:
        return []
    query = (
        select(Room).where(Room.modality.in_(modalities), Room.active.is_(True))
        .order_by(Room.code)
    )  # fmt: skip
    return list(db.scalars(query))


def study_candidates(
    db: Session, site: Site, day: date, study: Study, query: str = ""
) -> StudyCandidates:
    """The patients searched for (or those the images name: Patient ID as an MRN, the
    accession number's exam, the name), their open exams, and the day's exams in rooms
    of the study's modalities."""
    sent = study.patient
    found = (
        patients.search_patients(db, query) if query.strip()
        else exam_candidates.patients_named(db, sent.patient_id, study.accession_number,
                                            sent.patient_name)
    )  # fmt: skip
    rooms = modality_rooms(db, study)
    return StudyCandidates(
        patients=found, exams=exam_candidates.open_exams_of(db, [p.id for p in found]),
        rooms=rooms, room_exams=exam_candidates.day_exams_in(db, site, day, rooms),
    )  # fmt: skip
