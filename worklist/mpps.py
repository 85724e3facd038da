"""Modality Performed Procedure Steps: what a modality reports it did (IHE RAD-6/RAD-7).

The DICOM door (:mod:`worklist.mpps_scp`) turns N-CREATE and N-SET requests into the
plain data below (times already in UTC) and calls these services in one transaction.
A performed step moves its exam along the status ladder (:func:`ris.status.change_status`):
IN PROGRESS starts the exam, COMPLETED makes it ready to read, DISCONTINUED returns it to
the front desk. When several performed steps belong to one exam, the exam follows all of
them: it is in progress while any is, completed once one completed and none is running.

Refusals are :class:`MppsRefusal` errors carrying the DICOM status the door answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import audit, scheduling
from ris.audit import Actor
from ris.db import utcnow
from ris.errors import Conflict, Invalid, NotFound, PlacaError
from ris.models import ExamStatus, RequestedProcedure, ScheduledProcedureStep
from ris.status import LABELS, change_status
from worklist.models import (
    PerformedProcedureStep,
    PerformedSeries,
    PerformedStepStatus,
)

logger = logging.getLogger(__name__)
P, S = PerformedStepStatus, ExamStatus

# PS3.7 Annex C statuses of N-CREATE / N-SET.
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121


# ---------------------------------------------------------------------------- refusals


class MppsRefusal(PlacaError):
    """A performed-step request Placa refuses; ``dicom_status`` is what the door answers."""

    dicom_status = PROCESSING_FAILURE


class StepIsFinal(MppsRefusal, Conflict):
    dicom_status = PROCESSING_FAILURE


class DuplicateStep(MppsRefusal, Conflict):
    dicom_status = DUPLICATE_SOP_INSTANCE


class UnknownStep(MppsRefusal, NotFound):
    dicom_status = NO_SUCH_SOP_INSTANCE


class InvalidAttributeValue(MppsRefusal, Invalid):
    dicom_status = INVALID_ATTRIBUTE_VALUE


class MissingAttribute(MppsRefusal, Invalid):
    dicom_status = MISSING_ATTRIBUTE


class MissingAttributeValue(MppsRefusal, Invalid):
    dicom_status = MISSING_ATTRIBUTE_VALUE


def duplicate_step() -> DuplicateStep:
    return DuplicateStep(str(_l("This performed procedure step already exists.")))


# ---------------------------------------------------------------------------- what arrives


@dataclass(frozen=True)
class ScheduledReference:
    """One item of the Scheduled Step Attributes Sequence (0040,0270)."""

    study_instance_uid: str = ""
    accession_number: str = ""
    requested_procedure_id: str = ""
    scheduled_step_id: str = ""

    @property
    def is_empty(self) -> bool:
        """An unscheduled exam: the modality had no worklist entry for it."""
        return not (self.accession_number or self.requested_procedure_id
                    or self.scheduled_step_id)  # fmt: skip


@dataclass(frozen=True)
class SeriesReport:
    """One item of the Performed Series Sequence (0040,0340)."""

    series_instance_uid: str
    description: str = ""
    protocol_name: str = ""
    operator_name: str = ""
    performing_physician: str = ""
    retrieve_ae_title: str = ""
    number_of_images: int = 0
    number_of_other_instances: int = 0


@dataclass(frozen=True)
class PerformedStepReport:
    """An N-CREATE: the step as the modality starts it."""

    sop_instance_uid: str
    calling_ae: str
    started_at: datetime
    references: Sequence[ScheduledReference]
    performed_step_id: str = ""
    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    modality: str = ""
    station_ae_title: str = ""
    station_name: str = ""
    location: str = ""
    description: str = ""
    ended_at: datetime | None = None
    series: Sequence[SeriesReport] = ()
    dose: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PerformedStepChanges:
    """An N-SET: only what the modality sent; ``None`` means "not in the request"."""

    status: PerformedStepStatus | None = None
    patient_name: str | None = None
    patient_id: str | None = None
    description: str | None = None
    station_name: str | None = None
    location: str | None = None
    ended_at: datetime | None = None
    series: Sequence[SeriesReport] | None = None
    dose: dict[str, Any] = field(default_factory=dict)
    discontinuation_reason: str | None = None


# ---------------------------------------------------------------------------- N-CREATE


def create_performed_step(
    db: Session, actor: Actor, report: PerformedStepReport
) -> PerformedProcedureStep:
    """Record a step the modality started (IN PROGRESS) and start its exam, if known."""
    if find_performed_step(db, report.sop_instance_uid) is not None:
        raise duplicate_step()
    procedure, step = _match(db, report.references)
    if procedure is not None and _exam_target_path(procedure.status, S.IN_PROGRESS) is None:
        logger.warning(
            "MPPS %s names exam %s, which is %s: recorded as unscheduled",
            report.sop_instance_uid, procedure.accession_number, procedure.status,
        )  # fmt: skip
        procedure, step = None, None
    if procedure is not None and report.patient_id not in ("", procedure.order.patient.mrn):
        # The worklist identifiers win; a differing patient ID is worth a look, not a refusal.
        logger.warning("MPPS %s for exam %s sent patient ID %r, the exam's is %r",
                       report.sop_instance_uid, procedure.accession_number, report.patient_id,
                       procedure.order.patient.mrn)  # fmt: skip
    pps = _new_step(report, procedure, step)
    db.add(pps)
    db.flush()
    audit.record(db, actor, "mpps.in_progress", object_type="mpps", object_id=pps.id,
                 patient_id=_patient_of(pps), detail=_audit_detail(pps))  # fmt: skip
    if procedure is not None:
        _follow_steps(db, actor, procedure)
    return pps


def _new_step(
    report: PerformedStepReport,
    procedure: RequestedProcedure | None,
    step: ScheduledProcedureStep | None,
) -> PerformedProcedureStep:
    sent = report.references[0] if report.references else ScheduledReference()
    pps = PerformedProcedureStep(
        sop_instance_uid=report.sop_instance_uid, status=P.IN_PROGRESS,
        procedure=procedure, scheduled_step=step,
        performed_step_id=report.performed_step_id or None,
        patient_name=report.patient_name, patient_id_sent=report.patient_id,
        patient_birth_date_sent=report.patient_birth_date, patient_sex_sent=report.patient_sex,
        accession_number_sent=sent.accession_number,
        requested_procedure_id_sent=sent.requested_procedure_id,
        scheduled_step_id_sent=sent.scheduled_step_id,
        study_instance_uid=sent.study_instance_uid, modality=report.modality,
        station_ae_title=report.station_ae_title, station_name=report.station_name,
        location=report.location, description=report.description,
        started_at=report.started_at, ended_at=report.ended_at,
        dose=dict(report.dose) or None, calling_ae=report.calling_ae,
    )  # fmt: skip
    _replace_series(pps, report.series)
    return pps


def _match(
    db: Session, references: Sequence[ScheduledReference]
) -> tuple[RequestedProcedure | None, ScheduledProcedureStep | None]:
    """The exam (and booked step) the first identifying reference names, or nothing."""
    if len(references) > 1:
        logger.warning("MPPS names %d scheduled steps: it is linked to one exam only",
                       len(references))  # fmt: skip
    for reference in references:
        procedure, step = _match_one(db, reference)
        if procedure is not None:
            return procedure, step
    return None, None


def _match_one(
    db: Session, ref: ScheduledReference
) -> tuple[RequestedProcedure | None, ScheduledProcedureStep | None]:
    found: set[RequestedProcedure] = set()
    unknown = False
    step = None
    if ref.scheduled_step_id:
        step = db.scalar(select(ScheduledProcedureStep).where(
            ScheduledProcedureStep.step_id == ref.scheduled_step_id))  # fmt: skip
        unknown |= step is None
        found |= {step.procedure} if step is not None else set()
    # Some modalities mint their own Study Instance UID: only a known one counts.
    for column, value, must_exist in (
        (RequestedProcedure.requested_procedure_id, ref.requested_procedure_id, True),
        (RequestedProcedure.accession_number, ref.accession_number, True),
        (RequestedProcedure.study_instance_uid, ref.study_instance_uid, False),
    ):
        exam = db.scalar(select(RequestedProcedure).where(column == value)) if value else None
        unknown |= exam is None and bool(value) and must_exist
        found |= {exam} if exam is not None else set()
    if unknown or len(found) != 1:
        if not ref.is_empty or found:
            # An identifier Placa does not know, or identifiers naming different exams:
            # guessing would put the images on the wrong exam, so a person reconciles it.
            logger.warning("MPPS scheduled step %s matches no single exam: unscheduled", ref)
        return None, None
    procedure = found.pop()
    return procedure, step or scheduling.current_step(procedure)


# ---------------------------------------------------------------------------- N-SET


def update_performed_step(
    db: Session, actor: Actor, sop_instance_uid: str, changes: PerformedStepChanges
) -> PerformedProcedureStep:
    """Apply an N-SET: new values while IN PROGRESS, then complete or discontinue."""
    pps = _open_step(db, sop_instance_uid)
    _apply(pps, changes)
    if changes.status is P.COMPLETED:
        if not pps.series:
            raise MissingAttributeValue(str(_l("A completed step needs its performed series.")))
        complete_performed_step(db, actor, pps, changes.ended_at)
    elif changes.status is P.DISCONTINUED:
        discontinue_performed_step(db, actor, pps, changes.discontinuation_reason,
                                   changes.ended_at)  # fmt: skip
    else:
        db.flush()
        audit.record(db, actor, "mpps.update", object_type="mpps", object_id=pps.id,
                     patient_id=_patient_of(pps), detail=_audit_detail(pps))  # fmt: skip
    return pps


def _open_step(db: Session, sop_instance_uid: str) -> PerformedProcedureStep:
    pps = find_performed_step(db, sop_instance_uid, for_update=True)
    if pps is None:
        raise UnknownStep(str(_l("There is no performed procedure step with this UID.")))
    _refuse_final(pps)
    return pps


def _refuse_final(pps: PerformedProcedureStep) -> None:
    if pps.is_final:
        raise StepIsFinal(
            str(_l("Performed procedure step is %(status)s: no more changes.",
                   status=pps.status.value))
        )  # fmt: skip


def _apply(pps: PerformedProcedureStep, changes: PerformedStepChanges) -> None:
    for name, column in (
        ("patient_name", "patient_name"), ("patient_id", "patient_id_sent"),
        ("description", "description"), ("station_name", "station_name"),
        ("location", "location"), ("ended_at", "ended_at"),
    ):  # fmt: skip
        value = getattr(changes, name)
        if value is not None:
            setattr(pps, column, value)
    if changes.series is not None:
        _replace_series(pps, changes.series)
    if changes.dose:
        # A new dict: the JSON column notices assignment, not mutation in place.
        pps.dose = {**(pps.dose or {}), **changes.dose}


def _replace_series(pps: PerformedProcedureStep, series: Sequence[SeriesReport]) -> None:
    """An N-SET's Performed Series Sequence replaces the previous one as a whole."""
    pps.series = [
        PerformedSeries(
            series_instance_uid=item.series_instance_uid,
            description=item.description,
            modality=pps.modality,
            protocol_name=item.protocol_name,
            operator_name=item.operator_name,
            performing_physician=item.performing_physician,
            retrieve_ae_title=item.retrieve_ae_title,
            number_of_images=item.number_of_images,
            number_of_other_instances=item.number_of_other_instances,
        )  # fmt: skip
        for item in series
    ]
    pps.number_of_images = sum(item.number_of_images for item in series)


def complete_performed_step(
    db: Session, actor: Actor, pps: PerformedProcedureStep, ended_at: datetime | None = None
) -> None:
    """The acquisition is finished: the exam becomes completed (ready to read)."""
    _finish(db, actor, pps, P.COMPLETED, ended_at)


def discontinue_performed_step(
    db: Session, actor: Actor, pps: PerformedProcedureStep, reason: str | None = None,
    ended_at: datetime | None = None,
) -> None:  # fmt: skip
    """The modality gave up: the exam goes back to the front desk to decide."""
    pps.discontinuation_reason = reason
    _finish(db, actor, pps, P.DISCONTINUED, ended_at)


def _finish(
    db: Session, actor: Actor, pps: PerformedProcedureStep, status: PerformedStepStatus,
    ended_at: datetime | None,
) -> None:  # fmt: skip
    _refuse_final(pps)
    pps.status = status
    pps.ended_at = ended_at or pps.ended_at or utcnow()
    db.flush()
    action = "mpps.completed" if status is P.COMPLETED else "mpps.discontinued"
    audit.record(db, actor, action, object_type="mpps", object_id=pps.id,
                 patient_id=_patient_of(pps), detail=_audit_detail(pps))  # fmt: skip
    if pps.procedure is not None:
        _follow_steps(db, actor, pps.procedure, pps.discontinuation_reason)


# ---------------------------------------------------------------------------- the exam


TO_IN_PROGRESS: dict[ExamStatus, tuple[ExamStatus, ...]] = {
    S.ORDERED: (S.ARRIVED, S.IN_PROGRESS),  # a walk-in: the modality saw the patient
    S.SCHEDULED: (S.IN_PROGRESS,),
    S.ARRIVED: (S.IN_PROGRESS,),
    S.IN_PROGRESS: (),
    # The modality restarted an exam the desk had set aside.
    S.NO_SHOW: (S.SCHEDULED, S.IN_PROGRESS),
    S.DISCONTINUED: (S.SCHEDULED, S.IN_PROGRESS),
}
PAST: dict[ExamStatus, frozenset[ExamStatus]] = {
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.READ}),
    S.COMPLETED: frozenset({S.COMPLETED, S.READ}),
    S.DISCONTINUED: frozenset({S.DISCONTINUED, S.COMPLETED, S.READ}),
}


def _exam_target_path(current: ExamStatus, target: ExamStatus) -> tuple[ExamStatus, ...] | None:
    """The ladder steps from ``current`` to ``target``; () if already there, None if barred."""
    if current in PAST[target] or current is target:
        return ()
    entry = TO_IN_PROGRESS.get(current)
    if entry is None:
        return None
    return entry if target is S.IN_PROGRESS else (*entry, target)


def implied_exam_status(steps: Sequence[PerformedProcedureStep]) -> ExamStatus | None:
    """What an exam's performed steps say about it, taken together."""
    statuses = {step.status for step in steps}
    if P.IN_PROGRESS in statuses:
        return S.IN_PROGRESS
    if P.COMPLETED in statuses:
        return S.COMPLETED
    return S.DISCONTINUED if statuses else None


def _follow_steps(
    db: Session, actor: Actor, procedure: RequestedProcedure, reason: str | None = None
) -> None:
    # Two steps of one exam finishing at once: the exam's row lock makes the second read
    # the first one's outcome (PostgreSQL; SQLite's write lock serialises them anyway).
    lock = select(RequestedProcedure.id).where(RequestedProcedure.id == procedure.id)
    db.execute(lock.with_for_update())
    db.refresh(procedure, ["status", "status_changed_at"])
    target = implied_exam_status(_steps_of(db, procedure))
    path = None if target is None else _exam_target_path(procedure.status, target)
    if path is None:
        logger.warning("Exam %s is %s: its performed steps change nothing",
                       procedure.accession_number, procedure.status)  # fmt: skip
        return
    for status in path:
        change_status(db, actor, procedure, status,
                      reason if status is S.DISCONTINUED else None)  # fmt: skip


# ---------------------------------------------------------------------------- reconciliation


def find_performed_step(
    db: Session, sop_instance_uid: str, *, for_update: bool = False
) -> PerformedProcedureStep | None:
    query = select(PerformedProcedureStep).where(
        PerformedProcedureStep.sop_instance_uid == sop_instance_uid
    )
    # Two N-SETs for one step on two associations: the second waits for the first.
    return db.scalar(query.with_for_update() if for_update else query)


def unscheduled_steps(db: Session) -> list[PerformedProcedureStep]:
    """Performed steps with no exam yet, newest first: the reconciliation list."""
    query = (
        select(PerformedProcedureStep)
        .where(PerformedProcedureStep.procedure_id.is_(None))
        .order_by(PerformedProcedureStep.started_at.desc(), PerformedProcedureStep.id.desc())
    )
    return list(db.scalars(query))


def reconcile_performed_step(
    db: Session, actor: Actor, pps: PerformedProcedureStep, procedure: RequestedProcedure
) -> None:
    """Link an unscheduled performed step to its exam and move the exam accordingly."""
    if pps.procedure_id is not None:
        raise Conflict(str(_l("This performed procedure step already belongs to an exam.")))
    target = implied_exam_status([pps, *_steps_of(db, procedure)])
    if target is not None and _exam_target_path(procedure.status, target) is None:
        raise Conflict(
            str(_l("This exam is %(status)s: book it again before linking the step.",
                   status=LABELS[procedure.status]))
        )  # fmt: skip
    pps.procedure = procedure
    pps.scheduled_step = scheduling.current_step(procedure)
    pps.reconciled_by, pps.reconciled_at = actor.name, utcnow()
    db.flush()
    detail = {"exam": procedure.id, "accession": procedure.accession_number}
    audit.record(db, actor, "mpps.reconcile", object_type="mpps", object_id=pps.id,
                 patient_id=procedure.order.patient_id, detail=detail)  # fmt: skip
    logger.info("MPPS %s reconciled with exam %s by %s", pps.sop_instance_uid,
                procedure.accession_number, actor.name)  # fmt: skip
    _follow_steps(db, actor, procedure, pps.discontinuation_reason)


def _steps_of(db: Session, procedure: RequestedProcedure) -> list[PerformedProcedureStep]:
    query = select(PerformedProcedureStep).where(
        PerformedProcedureStep.procedure_id == procedure.id
    )
    return list(db.scalars(query))


def _patient_of(pps: PerformedProcedureStep) -> int | None:
    return pps.procedure.order.patient_id if pps.procedure is not None else None


def _audit_detail(pps: PerformedProcedureStep) -> dict[str, Any]:
    return {
        "uid": pps.sop_instance_uid, "status": pps.status.value,
        "exam": pps.procedure_id, "images": pps.number_of_images,
    }  # fmt: skip
