"""Patient screens: search, registration, the patient page, merge."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from flask_login import current_user
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from ris import audit, board, patients, scheduling
from ris.auth import FRONT_DESK, PATIENT_READERS, current_actor, roles
from ris.db import get_db
from ris.errors import NotFound, PlacaError
from ris.models import (
    HOLDS_SLOT,
    MRISafety,
    Order,
    Patient,
    PatientMerge,
    PregnancyStatus,
    RequestedProcedure,
)
from ris.patient_forms import (
    MRI_LABELS,
    PREGNANCY_LABELS,
    SEX_LABELS,
    MergeForm,
    PatientForm,
    RegisterPatientForm,
    patient_form_data,
)
from ris.site import site_of
from ris.status import LABELS

logger = logging.getLogger(__name__)
bp = Blueprint("patients", __name__, url_prefix="/patients")


@dataclass(frozen=True)
class Badge:
    label: LazyString | str
    kind: str  # a CSS class: danger or warn


def alert_badges(patient: Patient) -> list[Badge]:
    """The alerts a front desk must not miss, as short badges."""
    badges = []
    if patient.contrast_allergy:
        badges.append(Badge(_l("Contrast allergy"), "danger"))
    if patient.pregnancy_status in (
        PregnancyStatus.POSSIBLY_PREGNANT, PregnancyStatus.DEFINITELY_PREGNANT
    ):  # fmt: skip
        badges.append(Badge(PREGNANCY_LABELS[patient.pregnancy_status], "warn"))
    if patient.mri_safety in (MRISafety.CONDITIONAL, MRISafety.UNSAFE):
        kind = "danger" if patient.mri_safety is MRISafety.UNSAFE else "warn"
        badges.append(Badge(MRI_LABELS[patient.mri_safety], kind))
    return badges


def age_of(birth_date: date | None, today: date) -> int | None:
    """Whole years on ``today`` (the site's date)."""
    if birth_date is None:
        return None
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - before_birthday


def optional_url(endpoint: str, **values: object) -> str | None:
    """A link to another package's screen, or None when that screen is not installed."""
    if endpoint not in current_app.view_functions:
        return None
    return url_for(endpoint, **values)


def person_name(value: str | None) -> str:
    """An HL7/DICOM name "House^Gregory" as a person reads it: "House, Gregory"."""
    parts = [part for part in (value or "").split("^") if part]
    return f"{parts[0]}, {' '.join(parts[1:])}" if len(parts) > 1 else "".join(parts)


def _site_today() -> date:
    return datetime.now(site_of(current_app).zone).date()


@bp.context_processor
def _helpers() -> dict[str, object]:
    today = _site_today()
    return {
        "alert_badges": alert_badges,
        "age_of": lambda birth_date: age_of(birth_date, today),
        "optional_url": optional_url,
        "person_name": person_name,
        "sex_label": lambda sex: SEX_LABELS.get(sex, "") if sex else "",
        "pregnancy_label": lambda value: PREGNANCY_LABELS.get(value, "") if value else "",
        "mri_label": lambda value: MRI_LABELS.get(value, ""),
        "status_label": lambda value: LABELS.get(value, value),
        "can_write": current_user.is_authenticated and current_user.has_role(*FRONT_DESK),
        "is_admin": current_user.is_authenticated and current_user.has_role("admin"),
    }


@bp.route("")
@roles(*PATIENT_READERS)
def search() -> str:
    """Find a patient by name (any order, accents and case ignored), MRN, accession or birth
    date; the search is audited with its query, since the query names a person."""
    query = request.args.get("q", "").strip()[:200]
    found: list[Patient] = []
    if query:
        db = get_db()
        found = patients.search_patients(db, query)
        audit.record(db, current_actor(), "patient.search",
                     detail={"query": query, "results": len(found)})  # fmt: skip
        db.commit()
    return render_template(
        "patients/search.html", query=query, patients=found,
        limited=len(found) >= patients.SEARCH_LIMIT,
    )  # fmt: skip


@bp.route("/new", methods=["GET", "POST"])
@roles(*FRONT_DESK)
def new() -> tuple[str, int] | Response:
    """Register a patient, under the HIS's MRN or a new one of this site."""
    form = RegisterPatientForm()
    if form.validate_on_submit():
        db = get_db()
        try:
            patient = patients.register_patient(
                db, current_actor(), site_of(current_app), form.to_data(),
                mrn=form.mrn.data or None, issuer=form.mrn_issuer.data or None,
            )  # fmt: skip
        except PlacaError as exc:
            _refuse(db, form, exc)
            return _form_page(form, None)
        db.commit()
        flash(_("%(name)s is registered as %(mrn)s.", name=patient.display_name,
                mrn=patient.mrn), "info")  # fmt: skip
        return redirect(url_for("patients.show", patient_id=patient.id))
    return _form_page(form, None)


@bp.route("/<int:patient_id>")
@roles(*PATIENT_READERS)
def show(patient_id: int) -> str:
    """The patient page: demographics, alerts, orders and exams, merges."""
    db = get_db()
    patient = patients.get_patient(db, patient_id)
    exams = board.patient_exams(db, patient.id)
    merges = _merges_of(db, patient.id)
    surviving = db.get(Patient, patient.merged_into_id) if patient.merged_into_id else None
    patients.record_view(db, current_actor(), patient, "patient")
    db.commit()
    return render_template(
        "patients/show.html", patient=patient, surviving=surviving, orders=_by_order(exams),
        merges=merges, current_step=scheduling.current_step, holds_slot=HOLDS_SLOT,
    )  # fmt: skip


def _by_order(exams: list[RequestedProcedure]) -> list[tuple[Order, list[RequestedProcedure]]]:
    """Exams grouped under their order, keeping the newest-first order of the list."""
    grouped: dict[int, tuple[Order, list[RequestedProcedure]]] = {}
    for exam in exams:
        grouped.setdefault(exam.order_id, (exam.order, []))[1].append(exam)
    return list(grouped.values())


def _merges_of(db: Session, patient_id: int) -> list[PatientMerge]:
    query = (
        select(PatientMerge)
        .where(or_(PatientMerge.surviving_id == patient_id, PatientMerge.merged_id == patient_id))
        .order_by(PatientMerge.merged_at.desc(), PatientMerge.id.desc())
    )
    return list(db.scalars(query))


@bp.route("/<int:patient_id>/edit", methods=["GET", "POST"])
@roles(*FRONT_DESK)
def edit(patient_id: int) -> tuple[str, int] | Response:
    """Change demographics and alerts; the service audits which fields changed."""
    db = get_db()
    patient = patients.get_patient(db, patient_id)
    if patient.is_merged:
        flash(_("This record was merged; change the surviving record instead."), "error")
        return redirect(url_for("patients.show", patient_id=patient.id))
    data = None if request.method == "POST" else patient_form_data(patient)
    form = PatientForm(data=data)
    if form.validate_on_submit():
        try:
            patients.update_patient(db, current_actor(), patient, form.to_data())
        except PlacaError as exc:
            _refuse(db, form, exc)
            return _form_page(form, patient)
        db.commit()
        flash(_("The patient's data has been saved."), "info")
        return redirect(url_for("patients.show", patient_id=patient.id))
    if request.method == "GET":
        patients.record_view(db, current_actor(), patient, "patient")
        db.commit()
    return _form_page(form, patient)


def _form_page(form: PatientForm, patient: Patient | None) -> tuple[str, int]:
    """The form, answered 422 when a submission was refused."""
    status = 422 if request.method == "POST" else 200
    return render_template("patients/form.html", form=form, patient=patient), status


def _refuse(db: Session, form: PatientForm | MergeForm, exc: PlacaError) -> None:
    """Undo whatever the service began, and show its message where it belongs."""
    db.rollback()
    field = getattr(form, exc.field or "", None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


@bp.route("/<int:patient_id>/merge", methods=["GET", "POST"])
@roles(*FRONT_DESK)
def merge(patient_id: int) -> str | Response:
    """Merge a duplicate into this patient: search it, compare both, confirm."""
    db = get_db()
    surviving = patients.get_patient(db, patient_id)
    form = MergeForm()
    if form.validate_on_submit():
        return _merge(db, surviving, form)
    query = request.args.get("q", "").strip()[:200]
    duplicate = _duplicate(db, request.args.get("duplicate", type=int), surviving)
    candidates: list[Patient] = []
    actor = current_actor()
    if query and duplicate is None:
        candidates = [p for p in patients.search_patients(db, query) if p.id != surviving.id]
        audit.record(db, actor, "patient.search",
                     detail={"query": query, "results": len(candidates)})  # fmt: skip
    patients.record_view(db, actor, surviving, "patient")
    if duplicate is not None:
        patients.record_view(db, actor, duplicate, "patient")
        form.merged_id.data = str(duplicate.id)
    db.commit()
    return render_template(
        "patients/merge.html", patient=surviving, query=query, candidates=candidates,
        duplicate=duplicate, form=form,
    )  # fmt: skip


def _duplicate(db: Session, duplicate_id: int | None, surviving: Patient) -> Patient | None:
    if duplicate_id is None or duplicate_id == surviving.id:
        return None
    return db.get(Patient, duplicate_id)


def _merge(db: Session, surviving: Patient, form: MergeForm) -> Response:
    back = url_for("patients.merge", patient_id=surviving.id)
    try:
        merged = patients.get_patient(db, int(form.merged_id.data or 0))
        patients.merge_patients(db, current_actor(), surviving, merged)
    except (PlacaError, ValueError) as exc:
        db.rollback()
        flash(getattr(exc, "message", _("No such patient.")), "error")
        return redirect(back)
    db.commit()
    flash(_("%(merged)s has been merged into %(surviving)s.", merged=merged.mrn,
            surviving=surviving.mrn), "info")  # fmt: skip
    return redirect(url_for("patients.show", patient_id=surviving.id))


@bp.route("/merges/<int:merge_id>/undo", methods=["POST"])
@roles("admin")
def undo_merge(merge_id: int) -> Response:
    """Give the merged record back exactly what the merge moved (admins only)."""
    db = get_db()
    record = db.get(PatientMerge, merge_id)
    if record is None:
        raise NotFound(_("No such merge."))
    surviving_id = record.surviving_id
    try:
        patients.undo_merge(db, current_actor(), record)
    except PlacaError as exc:
        db.rollback()
        flash(exc.message, "error")
        return redirect(url_for("patients.show", patient_id=surviving_id))
    db.commit()
    flash(_("The merge has been undone."), "info")
    return redirect(url_for("patients.show", patient_id=surviving_id))
