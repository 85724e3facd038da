"""/api/patients: search, read, register, edit, merge and undo a merge."""

from __future__ import annotations

from flask import Response, current_app, jsonify, url_for
from flask_babel import gettext as _

from ris import audit, patients
from ris.api import bp, render
from ris.api.common import ADMIN, FRONT_DESK, PATIENT_READERS, created, referenced
from ris.api.fields import MERGE_FIELDS, NEW_PATIENT_FIELDS, NO_FIELDS, PATIENT_FIELDS, SEARCH_QUERY
from ris.api_schemas import parse_body, parse_query
from ris.auth import current_actor, roles
from ris.db import get_db
from ris.errors import NotFound
from ris.models import PatientMerge
from ris.site import site_of


@bp.get("/patients")
@roles(*PATIENT_READERS)
def search_patients() -> Response:
    """Live patients whose name, MRN, accession number or birth date match ``q``."""
    query = parse_query(SEARCH_QUERY)
    db = get_db()
    found = patients.search_patients(db, query["q"], query.get("limit", patients.SEARCH_LIMIT))
    audit.record(db, current_actor(), "patient.search",
                 detail={"query": query["q"], "results": len(found)})  # fmt: skip
    db.commit()
    return jsonify({"patients": [render.patient_summary(p) for p in found]})


@bp.post("/patients")
@roles(*FRONT_DESK)
def create_patient() -> tuple[Response, int, dict[str, str]]:
    """Register a patient under the HIS's MRN, or a new MRN of this site."""
    fields = parse_body(NEW_PATIENT_FIELDS)
    mrn, issuer = fields.pop("mrn", None), fields.pop("mrn_issuer", None)
    db = get_db()
    patient = patients.register_patient(
        db, current_actor(), site_of(current_app), patients.PatientData(**fields),
        mrn=mrn, issuer=issuer,
    )  # fmt: skip
    db.commit()
    location = url_for("api.get_patient", patient_id=patient.id)
    return created(render.patient(patient), location)


@bp.get("/patients/<int:patient_id>")
@roles(*PATIENT_READERS)
def get_patient(patient_id: int) -> Response:
    """One patient's demographics and alerts (audited as a view)."""
    db = get_db()
    patient = patients.get_patient(db, patient_id)
    patients.record_view(db, current_actor(), patient)
    db.commit()
    return jsonify(render.patient(patient))


@bp.put("/patients/<int:patient_id>")
@roles(*FRONT_DESK)
def update_patient(patient_id: int) -> Response:
    """Change the fields given; fields left out keep their values."""
    db = get_db()
    patient = patients.get_patient(db, patient_id)
    data = patients.PatientData.of(patient)
    for name, value in parse_body(PATIENT_FIELDS, partial=True).items():
        setattr(data, name, value)
    patients.update_patient(db, current_actor(), patient, data)
    db.commit()
    return jsonify(render.patient(patient))


@bp.post("/patients/<int:patient_id>/merge")
@roles(*FRONT_DESK)
def merge_patient(patient_id: int) -> tuple[Response, int, dict[str, str]]:
    """Merge the duplicate ``merged_id`` into this patient."""
    merged_id = parse_body(MERGE_FIELDS)["merged_id"]
    db = get_db()
    surviving = patients.get_patient(db, patient_id)
    merged = referenced(db, patients.get_patient, merged_id, "merged_id")
    record = patients.merge_patients(db, current_actor(), surviving, merged)
    db.commit()
    return created(render.merge(record), url_for("api.get_patient", patient_id=surviving.id))


@bp.post("/patient-merges/<int:merge_id>/undo")
@roles(*ADMIN)
def undo_merge(merge_id: int) -> Response:
    """Give the merged patient back what the merge moved."""
    parse_body(NO_FIELDS)
    db = get_db()
    record = db.get(PatientMerge, merge_id)
    if record is None:
        raise NotFound(_("No such merge."))
    patients.undo_merge(db, current_actor(), record)
    db.commit()
    return jsonify(render.merge(record))
