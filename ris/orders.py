"""Orders: what a physician asks for, turned into exams the department can schedule."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import audit, identifiers, status
from ris.audit import Actor
from ris.db import utcnow
from ris.errors import Conflict, Invalid, NotFound
from ris.models import (
    ExamStatus,
    Order,
    Patient,
    PatientClass,
    Priority,
    ProcedureCode,
    RequestedProcedure,
)
from ris.site import Site

logger = logging.getLogger(__name__)
ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")


@dataclass
class OrderData:
    """What an order says, whichever door it came through."""

    ordering_physician: str
    referring_physician: str = ""
    reason: str = ""
    icd10_codes: list[str] = field(default_factory=list)
    priority: Priority = Priority.ROUTINE
    patient_class: PatientClass = PatientClass.OUTPATIENT
    placer_order_number: str | None = None
    placer_issuer: str | None = None


def parse_icd10(text: str) -> list[str]:
    """ "J18.9, r05" -> ["J18.9", "R05"]; an invalid code is refused with its name."""
    codes = [code.strip().upper() for code in re.split(r"[,;\s]+", text) if code.strip()]
    for code in codes:
        if not ICD10.match(code):
            raise Invalid(
                str(_l("%(code)s is not an ICD-10 code.", code=code)), field="icd10_codes"
            )
    return codes


def place_order(
    db: Session, actor: Actor, site: Site, patient: Patient, data: OrderData,
    codes: list[ProcedureCode],
) -> Order:  # fmt: skip
    """Create an order with one exam per procedure code, each with its accession number,
    requested procedure ID and pre-assigned Study Instance UID; the exams are 'ordered'."""
    _validate(patient, data, codes)
    order = Order(
        patient=patient, ordering_physician=data.ordering_physician.strip(),
        referring_physician=data.referring_physician.strip(), reason=data.reason.strip(),
        icd10_codes=",".join(data.icd10_codes), priority=data.priority,
        patient_class=data.patient_class, placer_order_number=data.placer_order_number,
        placer_issuer=data.placer_issuer, created_by=actor.name,
    )  # fmt: skip
    db.add(order)
    for code in codes:
        order.procedures.append(_new_exam(db, site, code))
    db.flush()
    for exam in order.procedures:
        status.initial_status(db, actor, exam)
    audit.record(db, actor, "order.create", object_type="order", object_id=order.id,
                 patient_id=patient.id,
                 detail={"accessions": [e.accession_number for e in order.procedures]})  # fmt: skip
    return order


def _validate(patient: Patient, data: OrderData, codes: list[ProcedureCode]) -> None:
    if patient.is_merged:
        raise Conflict(str(_l("This patient record was merged; order for the surviving record.")))
    if not data.ordering_physician.strip():
        raise Invalid(str(_l("The ordering physician is required.")), field="ordering_physician")
    if not codes:
        raise Invalid(str(_l("Choose at least one procedure.")), field="procedures")
    if any(not code.active for code in codes):
        raise Invalid(str(_l("A chosen procedure is no longer offered.")), field="procedures")
    for code in data.icd10_codes:
        parse_icd10(code)


def _new_exam(db: Session, site: Site, code: ProcedureCode) -> RequestedProcedure:
    return RequestedProcedure(
        procedure_code=code,
        accession_number=identifiers.new_accession_number(
            db, site.accession_pattern, utcnow().astimezone(site.zone)
        ),
        requested_procedure_id=identifiers.new_requested_procedure_id(db),
        study_instance_uid=identifiers.new_uid(site.uid_root),
        description=code.description,
        status=ExamStatus.ORDERED,
    )


def get_exam(db: Session, exam_id: int) -> RequestedProcedure:
    exam = db.get(RequestedProcedure, exam_id)
    if exam is None:
        raise NotFound(str(_l("No such exam.")))
    return exam


def find_exam_by_accession(db: Session, accession_number: str) -> RequestedProcedure | None:
    return db.scalar(
        select(RequestedProcedure).where(RequestedProcedure.accession_number == accession_number)
    )


def get_order(db: Session, order_id: int) -> Order:
    order = db.get(Order, order_id)
    if order is None:
        raise NotFound(str(_l("No such order.")))
    return order
