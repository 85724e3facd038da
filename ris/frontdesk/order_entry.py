"""Order entry: pick a patient, choose procedures, place the order."""

from __future__ import annotations

import logging

from flask import (
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from ris import audit, catalog, orders, patients
from ris.auth import FRONT_DESK, current_actor, roles
from ris.db import get_db
from ris.errors import PlacaError
from ris.frontdesk import bp
from ris.frontdesk.common import (
    field_error,
    local_today,
)
from ris.frontdesk_forms import (
    OrderForm,
)
from ris.models import (
    Order,
    PatientClass,
    Priority,
)
from ris.site import site_of

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- order entry


@bp.route("/orders/new", methods=["GET", "POST"])
@roles(*FRONT_DESK)
def new_order() -> str | Response:
    """Order exams for a patient (found first with the search box when none is given)."""
    db = get_db()
    patient_id = request.args.get("patient", type=int)
    if patient_id is None:
        return _pick_patient(db)
    patient = patients.get_patient(db, patient_id)
    codes = catalog.list_procedures(db, active_only=True)
    form = OrderForm()
    form.offer(codes)
    if form.validate_on_submit():
        try:
            order = _place_order(db, patient.id, form)
        except PlacaError as exc:
            db.rollback()  # nothing of a refused order is kept
            field_error(form, exc)
        else:
            db.commit()
            flash(_("The order is placed: %(count)d exam(s).", count=len(order.procedures)), "info")
            return redirect(url_for(".exam", exam_id=order.procedures[0].id))
    patients.record_view(db, current_actor(), patient, "order")
    db.commit()
    return render_template(
        "frontdesk/order.html", form=form, patient=patient,
        today=local_today(site_of(current_app)),
    )  # fmt: skip


def _place_order(db: Session, patient_id: int, form: OrderForm) -> Order:
    data = orders.OrderData(
        ordering_physician=form.ordering_physician.data or "",
        referring_physician=form.referring_physician.data or "",
        reason=form.reason.data or "",
        icd10_codes=orders.parse_icd10(form.icd10_codes.data or ""),
        priority=Priority(form.priority.data),
        patient_class=PatientClass(form.patient_class.data),
    )
    codes = [catalog.get_procedure(db, code_id) for code_id in form.procedures.data or []]
    patient = patients.get_patient(db, patient_id)
    return orders.place_order(db, current_actor(), site_of(current_app), patient, data, codes)


def _pick_patient(db: Session) -> str:
    query = request.args.get("q", "").strip()
    found = patients.search_patients(db, query) if query else []
    if query:
        # The query text can name a person: it is kept in the audit detail only.
        audit.record(db, current_actor(), "patient.search", object_type="patient",
                     detail={"query": query, "results": len(found),
                             "screen": "frontdesk.new_order"})  # fmt: skip
        db.commit()
    return render_template(
        "frontdesk/pick_patient.html", query=query, found=found,
        today=local_today(site_of(current_app)),
        new_patient_url="patients.new" in current_app.view_functions,
    )  # fmt: skip
