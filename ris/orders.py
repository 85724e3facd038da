"""Orders: what a physician asks for, turned into exams the department can schedule."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, select
from sqlalchemy.orm import InstrumentedAttribute, Session

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
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")  # DICOM PS3.5 9.1


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


@dataclass(frozen=True)
class ExamIdentifiers:
    """Identifiers an exam arrives with from the HIS (IHE Scheduled Workflow: OBR-18/19 and
    ZDS-1, or IPC-1/2/3); the ones left None are issued by Placa."""

    accession_number: str | None = None
    requested_procedure_id: str | None = None
    study_instance_uid: str | None = None


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
    codes: list[ProcedureCode], sent: Sequence[ExamIdentifiers | None] = (),
) -> Order:  # fmt: skip
    """Create an order with one exam per procedure code, each with its accession number,
    requested procedure ID and pre-assigned Study Instance UID; the exams are 'ordered'.

    ``sent`` gives, code by code, the identifiers the placer already assigned (an HL7
    order): they are kept as sent, checked for form and uniqueness; the others are issued.
    """
    _validate(patient, data, codes)
    given = [*sent, *[None] * (len(codes) - len(sent))][: len(codes)]
    _check_sent(db, [ids or ExamIdentifiers() for ids in given])
    order = Order(
        patient=patient, ordering_physician=data.ordering_physician.strip(),
        referring_physician=data.referring_physician.strip(), reason=data.reason.strip(),
        icd10_codes=",".join(data.icd10_codes), priority=data.priority,
        patient_class=data.patient_class, placer_order_number=data.placer_order_number,
        placer_issuer=data.placer_issuer, created_by=actor.name,
    )  # fmt: skip
    # Identifiers first, the rows after: issuing them queries the database, which would
    # flush a pending order once per query.
    exams = [_new_exam(db, site, code, ids or ExamIdentifiers())
             for code, ids in zip(codes, given, strict=True)]  # fmt: skip
    order.procedures.extend(exams)
    db.add(order)
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


# Column sizes are the DICOM ones: accession number and requested procedure ID are SH (16),
# a UID is at most 64 characters.
_SENT_FIELDS = (("accession_number", 16), ("requested_procedure_id", 16),
                ("study_instance_uid", 64))  # fmt: skip


def _check_sent(db: Session, given: list[ExamIdentifiers]) -> None:
    for name, size in _SENT_FIELDS:
        values = [v.strip() for v in (getattr(ids, name) for ids in given) if v and v.strip()]
        for value in values:
            _check_identifier(db, name, size, value)
        if len(set(values)) < len(values):
            raise Invalid(str(_l("Two exams of the order have the same %(name)s.",
                                 name=name.replace("_", " "))), field=name)  # fmt: skip


def _check_identifier(db: Session, name: str, size: int, value: str) -> None:
    if len(value) > size:
        raise Invalid(str(_l("%(value)s is longer than %(size)s characters.", value=value,
                             size=size)), field=name)  # fmt: skip
    if name == "study_instance_uid" and not UID.match(value):
        raise Invalid(str(_l("%(value)s is not a DICOM UID.", value=value)), field=name)
    column = getattr(RequestedProcedure, name)
    if db.scalar(select(RequestedProcedure.id).where(column == value).limit(1)) is not None:
        raise Conflict(str(_l("%(value)s is already used by another exam.", value=value)),
                       field=name)  # fmt: skip


def _new_exam(
    db: Session, site: Site, code: ProcedureCode, sent: ExamIdentifiers
) -> RequestedProcedure:
    local_now = utcnow().astimezone(site.zone)
    return RequestedProcedure(
        procedure_code=code,
        accession_number=_stripped(sent.accession_number) or _unused(
            db, RequestedProcedure.accession_number,
            lambda: identifiers.new_accession_number(db, site.accession_pattern, local_now)),
        requested_procedure_id=_stripped(sent.requested_procedure_id) or _unused(
            db, RequestedProcedure.requested_procedure_id,
            lambda: identifiers.new_requested_procedure_id(db)),
        study_instance_uid=_stripped(sent.study_instance_uid) or identifiers.new_uid(site.uid_root),
        description=code.description,
        status=ExamStatus.ORDERED,
    )  # fmt: skip


def _unused(db: Session, column: InstrumentedAttribute[str], issue: Callable[[], str]) -> str:
    """A newly issued number that no exam has yet (the HIS may have sent it already)."""
    taken = _TAKEN[column.key]
    while True:
        value = issue()
        if db.scalar(taken, {"value": value}) is None:
            return value


# Built once: this check runs twice for every exam an HL7 order creates.
_TAKEN = {
    column.key: select(RequestedProcedure.id).where(column == bindparam("value")).limit(1)
    for column in (RequestedProcedure.accession_number, RequestedProcedure.requested_procedure_id)
}


def _stripped(value: str | None) -> str:
    return (value or "").strip()


def change_order(
    db: Session, actor: Actor, order: Order, *, ordering_physician: str | None = None,
    referring_physician: str | None = None, reason: str | None = None,
    icd10_codes: list[str] | None = None, priority: Priority | None = None,
    patient_class: PatientClass | None = None,
) -> list[str]:  # fmt: skip
    """Change what an order says (None leaves a field as it is); returns the changed fields."""
    if ordering_physician is not None and not ordering_physician.strip():
        raise Invalid(str(_l("The ordering physician is required.")), field="ordering_physician")
    for code in icd10_codes or []:
        parse_icd10(code)
    wanted = {
        "ordering_physician": ordering_physician.strip() if ordering_physician else None,
        "referring_physician": referring_physician.strip() if referring_physician else None,
        "reason": reason.strip() if reason is not None else None,
        "icd10_codes": ",".join(icd10_codes) if icd10_codes is not None else None,
        "priority": priority, "patient_class": patient_class,
    }  # fmt: skip
    changed = [name for name, value in wanted.items()
               if value is not None and getattr(order, name) != value]  # fmt: skip
    for name in changed:
        setattr(order, name, wanted[name])
    if changed:
        db.flush()
        audit.record(db, actor, "order.change", object_type="order", object_id=order.id,
                     patient_id=order.patient_id, detail={"changed": changed})  # fmt: skip
    return changed


def find_orders_by_placer_number(db: Session, number: str) -> list[Order]:
    """Orders the HIS numbered ``number`` (any issuer), oldest first."""
    return list(db.scalars(_PLACER_NUMBERED, {"number": number.strip()}))


# Built once: every HL7 order looks its placer number up.
_PLACER_NUMBERED = (
    select(Order).where(Order.placer_order_number == bindparam("number")).order_by(Order.id)
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
