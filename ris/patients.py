"""Patients: registration, demographics, search that ignores case and accents, merge.

The web door, the JSON API and the HL7 ADT handlers all call these services.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import date
from enum import Enum

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from ris import audit, identifiers
from ris.audit import Actor
from ris.db import utcnow
from ris.errors import Conflict, Invalid, NotFound
from ris.models import (
    MRISafety,
    Order,
    Patient,
    PatientMerge,
    PatientNameToken,
    PregnancyStatus,
    RequestedProcedure,
    Sex,
)
from ris.site import Site

logger = logging.getLogger(__name__)
SEARCH_LIMIT = 50
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$|^(\d{2})/(\d{2})/(\d{4})$")

# Other packages move their own records (e.g. studies) when patients merge:
# hook(db, from_patient_id, to_patient_id) -> ids moved; undo(db, ids, back_to_patient_id).
MergeHook = tuple[
    Callable[[Session, int, int], list[int]], Callable[[Session, list[int], int], None]
]
MERGE_HOOKS: dict[str, MergeHook] = {}


@dataclass
class PatientData:
    """Demographics as entered at the front desk or received from the HIS."""

    family_name: str
    given_name: str = ""
    middle_name: str = ""
    name_prefix: str = ""
    name_suffix: str = ""
    birth_date: date | None = None
    sex: Sex | None = None
    phone: str | None = None
    email: str | None = None
    street: str | None = None
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None
    insurance_payer: str | None = None
    insurance_member_id: str | None = None
    contrast_allergy: bool = False
    allergies: str | None = None
    pregnancy_status: PregnancyStatus | None = None
    mri_safety: MRISafety = MRISafety.NOT_SCREENED
    medical_alerts: str | None = None

    @classmethod
    def of(cls, patient: Patient) -> PatientData:
        return cls(**{f.name: getattr(patient, f.name) for f in fields(cls)})


def normalise(text: str) -> str:
    """Lower case without accents: "Peña" -> "pena", "Gaëlle" -> "gaelle", "Straße" -> "strasse"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def search_tokens(text: str) -> list[str]:
    """The words of a name or query, normalised; hyphens and apostrophes split words."""
    return [word for word in re.split(r"[^\w]+", normalise(text)) if word][:12]


def _name_tokens(patient: Patient) -> set[str]:
    names = " ".join((patient.family_name, patient.given_name, patient.middle_name))
    return {token[:64] for token in search_tokens(names)}


def _validate(data: PatientData) -> None:
    if not data.family_name.strip():
        raise Invalid(str(_l("The family name is required.")), field="family_name")
    if data.birth_date and data.birth_date > date.today():
        raise Invalid(str(_l("The birth date is in the future.")), field="birth_date")
    for name in ("family_name", "given_name", "middle_name", "name_prefix", "name_suffix"):
        if any(ch in getattr(data, name) for ch in "^=\\"):
            raise Invalid(str(_l("A name may not contain ^, = or \\.")), field=name)


def _apply(patient: Patient, data: PatientData) -> None:
    for key, value in asdict(data).items():
        if isinstance(value, str) and not isinstance(value, Enum):  # StrEnums stay enums
            value = value.strip()
        setattr(patient, key, value)


def _reindex(db: Session, patient: Patient) -> None:
    db.execute(delete(PatientNameToken).where(PatientNameToken.patient_id == patient.id))
    db.add_all(PatientNameToken(patient_id=patient.id, token=t) for t in _name_tokens(patient))


def register_patient(
    db: Session, actor: Actor, site: Site, data: PatientData, *,
    mrn: str | None = None, issuer: str | None = None,
) -> Patient:  # fmt: skip
    """Register a patient under the HIS's identifier, or under a new MRN of this site."""
    _validate(data)
    issuer = (issuer or site.mrn_issuer).strip()
    mrn = (mrn or "").strip() or identifiers.new_mrn(db, site.mrn_pattern)
    if find_by_mrn(db, mrn, issuer) is not None:
        raise Conflict(str(_l("The MRN %(mrn)s already exists.", mrn=mrn)), field="mrn")
    patient = Patient(mrn=mrn, mrn_issuer=issuer)
    _apply(patient, data)
    db.add(patient)
    db.flush()
    _reindex(db, patient)
    audit.record(db, actor, "patient.create", object_type="patient", object_id=patient.id,
                 patient_id=patient.id, detail={"mrn": mrn, "issuer": issuer})  # fmt: skip
    return patient


def update_patient(db: Session, actor: Actor, patient: Patient, data: PatientData) -> None:
    """Change demographics and alerts; the audit keeps which fields changed."""
    _validate(data)
    before = asdict(PatientData.of(patient))
    _apply(patient, data)
    db.flush()
    _reindex(db, patient)
    after = asdict(PatientData.of(patient))
    changed = sorted(key for key in after if after[key] != before[key])
    audit.record(db, actor, "patient.update", object_type="patient", object_id=patient.id,
                 patient_id=patient.id, detail={"changed": changed})  # fmt: skip


def get_patient(db: Session, patient_id: int) -> Patient:
    patient = db.get(Patient, patient_id)
    if patient is None:
        raise NotFound(str(_l("No such patient.")))
    return patient


def find_by_mrn(db: Session, mrn: str, issuer: str | None = None) -> Patient | None:
    if issuer is None:
        return db.scalars(_BY_MRN, {"mrn": mrn.strip()}).first()
    return db.scalars(_BY_MRN_AND_ISSUER, {"mrn": mrn.strip(), "issuer": issuer.strip()}).first()


# Built once: every HL7 message with a PID looks its patient up.
_BY_MRN = select(Patient).where(Patient.mrn == bindparam("mrn")).limit(1)
_BY_MRN_AND_ISSUER = _BY_MRN.where(Patient.mrn_issuer == bindparam("issuer"))


def search_patients(db: Session, query: str, limit: int = SEARCH_LIMIT) -> list[Patient]:
    """Patients whose name words start with every query word, or whose MRN, accession
    number or birth date is the query; merged-away records are left out."""
    text = query.strip()
    if not text:
        return []
    found: dict[int, Patient] = {}
    for patient in _exact_matches(db, text, limit) + _name_matches(db, text, limit):
        found.setdefault(patient.id, patient)
    return list(found.values())[:limit]


def _exact_matches(db: Session, text: str, limit: int) -> list[Patient]:
    live = Patient.merged_into_id.is_(None)
    matches = list(db.scalars(select(Patient).where(Patient.mrn == text, live)))
    matches += db.scalars(
        select(Patient).join(Order).join(RequestedProcedure)
        .where(RequestedProcedure.accession_number == text, live)
    )  # fmt: skip
    birth_date = _parse_date(text)
    if birth_date:
        matches += db.scalars(
            select(Patient).where(Patient.birth_date == birth_date, live)
            .order_by(Patient.family_name, Patient.given_name).limit(limit)
        )  # fmt: skip
    return matches


def _name_matches(db: Session, text: str, limit: int) -> list[Patient]:
    tokens = search_tokens(text)
    if not tokens or _parse_date(text):
        return []
    query = select(Patient).where(Patient.merged_into_id.is_(None))
    for token in tokens:
        upper = token[:-1] + chr(ord(token[-1]) + 1)  # prefix as a range: the index serves it
        words = select(PatientNameToken.patient_id).where(
            PatientNameToken.token >= token, PatientNameToken.token < upper
        )
        query = query.where(Patient.id.in_(words))
    order = (Patient.family_name, Patient.given_name, Patient.birth_date, Patient.id)
    return list(db.scalars(query.order_by(*order).limit(limit)))


def _parse_date(text: str) -> date | None:
    match = _DATE.match(text)
    if not match:
        return None
    year, month, day = (
        (match[1], match[2], match[3]) if match[1] else (match[6], match[5], match[4])
    )
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return None


def merge_patients(db: Session, actor: Actor, surviving: Patient, merged: Patient) -> PatientMerge:
    """Merge ``merged`` into ``surviving``: its orders, exams and studies move; it is kept,
    marked as merged, so that an admin can undo the merge."""
    if surviving.id == merged.id:
        raise Invalid(str(_l("A patient cannot be merged with itself.")))
    if surviving.is_merged or merged.is_merged:
        raise Conflict(str(_l("One of these patients has already been merged.")))
    moved = {"orders": _move_orders(db, merged.id, surviving.id)}
    for name, (move, _undo) in MERGE_HOOKS.items():
        moved[name] = move(db, merged.id, surviving.id)
    merged.merged_into_id = surviving.id
    record = PatientMerge(surviving=surviving, merged=merged, merged_by=actor.name,
                          moved=json.dumps(moved))  # fmt: skip
    db.add(record)
    db.flush()
    detail = {"surviving": surviving.mrn, "merged": merged.mrn, "moved": moved}
    for patient in (surviving, merged):
        audit.record(db, actor, "patient.merge", object_type="patient_merge", object_id=record.id,
                     patient_id=patient.id, detail=detail)  # fmt: skip
    logger.info("Patient %s merged into %s by %s", merged.mrn, surviving.mrn, actor.name)
    return record


def _move_orders(db: Session, from_id: int, to_id: int) -> list[int]:
    ids = list(db.scalars(select(Order.id).where(Order.patient_id == from_id)))
    if ids:
        db.execute(update(Order).where(Order.id.in_(ids)).values(patient_id=to_id))
    return ids


def undo_merge(db: Session, actor: Actor, merge: PatientMerge) -> None:
    """Give back to the merged patient exactly what the merge moved, and revive it."""
    if merge.undone_at is not None:
        raise Conflict(str(_l("This merge has already been undone.")))
    moved = json.loads(merge.moved)
    if moved.get("orders"):
        db.execute(
            update(Order).where(Order.id.in_(moved["orders"])).values(patient_id=merge.merged_id)
        )
    for name, (_move, undo) in MERGE_HOOKS.items():
        if moved.get(name):
            undo(db, moved[name], merge.merged_id)
    merge.merged.merged_into_id = None
    merge.undone_at, merge.undone_by = utcnow(), actor.name
    db.flush()
    for patient_id in (merge.surviving_id, merge.merged_id):
        audit.record(db, actor, "patient.unmerge", object_type="patient_merge", object_id=merge.id,
                     patient_id=patient_id)  # fmt: skip


def record_view(db: Session, actor: Actor, patient: Patient, what: str = "patient") -> None:
    """Audit that a person looked at a patient's data."""
    audit.record(db, actor, f"{what}.view", object_type="patient", object_id=patient.id,
                 patient_id=patient.id)  # fmt: skip
