"""Studies and the RIS's exams: which arrived without an order, and linking them by hand.

A new study is linked automatically when it arrives (:func:`pacs.storage.reconcile_study`:
the exam's pre-assigned Study Instance UID, else its accession number). A study that
matched nothing is *unmatched*; the technologist links it to the right exam here, which
also makes the index name the exam's patient and accession number (the stored files are
left as they were received).
"""

from __future__ import annotations

import logging
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pacs.models import ArchivePatient, Study
from pacs.storage import pn_key
from ris import audit
from ris.audit import Actor
from ris.db import utcnow
from ris.errors import Conflict
from ris.models import ExamStatus, Patient, RequestedProcedure
from ris.patients import MERGE_HOOKS

logger = logging.getLogger(__name__)
UNMATCHED_LIMIT = 200


def unmatched_studies(db: Session, limit: int = UNMATCHED_LIMIT) -> list[Study]:
    """Studies no exam claims, the newest first."""
    query = (
        select(Study).where(Study.procedure_id.is_(None))
        .order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)
    )  # fmt: skip
    return list(db.scalars(query))


def studies_of_exam(db: Session, exam: RequestedProcedure) -> list[Study]:
    return list(db.scalars(select(Study).where(Study.procedure_id == exam.id).order_by(Study.id)))


def images_received_at(db: Session, exam: RequestedProcedure) -> datetime | None:
    """When the exam's first images arrived in the archive (None: none yet)."""
    return db.scalar(
        select(func.min(Study.images_received_at)).where(Study.procedure_id == exam.id)
    )


def link_study(db: Session, actor: Actor, study: Study, exam: RequestedProcedure) -> None:
    """Link an unmatched study to ``exam``: the index takes the exam's patient and accession."""
    if study.procedure_id is not None and study.procedure_id != exam.id:
        raise Conflict(str(_l("This study is already linked to another exam.")))
    if exam.status is ExamStatus.CANCELLED:
        raise Conflict(str(_l("This exam is cancelled: images cannot be linked to it.")))
    patient = exam.order.patient
    before = {"accession_number": study.accession_number,
              "patient_id": study.patient.patient_id}  # fmt: skip
    previous_patient = study.patient_fk
    study.patient_fk = _archive_patient_for(db, patient).id
    study.accession_number = exam.accession_number
    study.procedure_id, study.ris_patient_id = exam.id, patient.id
    study.linked_at, study.linked_by = utcnow(), actor.name[:128]
    study.images_received_at = study.images_received_at or study.created_at
    db.flush()
    _drop_if_empty(db, previous_patient)
    audit.record(
        db, actor, "archive.study_linked", object_type="study",
        object_id=study.study_instance_uid, patient_id=patient.id,
        detail={"before": before, "exam": exam.accession_number},
    )  # fmt: skip
    logger.info("Study %s linked by hand to exam %s by %s", study.study_instance_uid,
                exam.accession_number, actor.name)  # fmt: skip


def _archive_patient_for(db: Session, patient: Patient) -> ArchivePatient:
    found = db.scalar(
        select(ArchivePatient).where(
            ArchivePatient.patient_id == patient.mrn,
            ArchivePatient.issuer_of_patient_id == patient.mrn_issuer,
        )
    )
    if found is not None:
        return found
    found = ArchivePatient(
        patient_id=patient.mrn, issuer_of_patient_id=patient.mrn_issuer,
        patient_name=patient.dicom_name, patient_name_key=pn_key(patient.dicom_name),
        patient_birth_date=patient.birth_date,
        patient_sex=patient.sex.value if patient.sex else "",
    )  # fmt: skip
    db.add(found)
    db.flush()
    return found


def _drop_if_empty(db: Session, archive_patient_id: int) -> None:
    """An archive patient left without studies is removed (C-FIND must not list it)."""
    remaining = db.scalar(select(func.count()).where(Study.patient_fk == archive_patient_id))
    if not remaining:
        empty = db.get(ArchivePatient, archive_patient_id)
        if empty is not None:
            db.delete(empty)
            db.flush()


def _move_studies(db: Session, from_patient_id: int, to_patient_id: int) -> list[int]:
    """A patient merge in the RIS moves the merged patient's studies with its orders."""
    ids = list(db.scalars(select(Study.id).where(Study.ris_patient_id == from_patient_id)))
    if ids:
        db.execute(update(Study).where(Study.id.in_(ids)).values(ris_patient_id=to_patient_id))
    return ids


def _undo_move_studies(db: Session, ids: list[int], back_to_patient_id: int) -> None:
    db.execute(update(Study).where(Study.id.in_(ids)).values(ris_patient_id=back_to_patient_id))


MERGE_HOOKS["studies"] = (_move_studies, _undo_move_studies)
