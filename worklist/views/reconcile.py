"""Reconciliation of unscheduled MPPS: a modality performed an exam Placa could not identify
(no worklist entry, or identifiers naming no single exam); a technologist links it to the
right exam, which then follows the performed step's status."""

from __future__ import annotations

import logging

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from ris import audit, orders, scheduling
from ris.auth import TECHNOLOGISTS, current_actor, roles
from ris.db import get_db
from ris.errors import PlacaError
from ris.frontdesk.common import flash_form_errors, local_today
from ris.site import site_of
from worklist import mpps, technologist
from worklist.forms import ReconcileForm
from worklist.models import PerformedProcedureStep
from worklist.views import bp

logger = logging.getLogger(__name__)
QUERY_MAX = 100


@bp.route("/unscheduled", endpoint="unscheduled")
@roles(*TECHNOLOGISTS)
def unscheduled_list() -> str:
    """The performed steps no exam claims yet, newest first."""
    db = get_db()
    steps = mpps.unscheduled_steps(db)
    audit.record(db, current_actor(), "mpps.unscheduled.view", object_type="mpps",
                 detail={"steps": len(steps)})  # fmt: skip
    db.commit()
    return render_template("worklist/unscheduled.html", steps=steps)


def _step_or_404(pps_id: int) -> PerformedProcedureStep:
    pps = get_db().get(PerformedProcedureStep, pps_id)
    if pps is None:
        abort(404)
    return pps


@bp.route("/unscheduled/<int:pps_id>", endpoint="reconcile")
@roles(*TECHNOLOGISTS)
def reconcile_page(pps_id: int) -> str | Response:
    """One unscheduled step as the modality sent it, and the exams it may belong to."""
    db, site = get_db(), site_of(current_app)
    pps = _step_or_404(pps_id)
    if pps.procedure_id is not None:
        flash(_("This performed step is already linked to an exam."), "info")
        return redirect(url_for(".unscheduled"))
    query = request.args.get("q", "").strip()[:QUERY_MAX]
    found = technologist.reconcile_candidates(db, site, local_today(site), pps, query)
    shown = {exam.id for exam in [*found.exams, *found.room_exams]}
    audit.record(db, current_actor(), "mpps.reconcile.view", object_type="mpps",
                 object_id=pps.id, detail={"query": query, "patients": len(found.patients),
                                           "exams": sorted(shown)})  # fmt: skip
    db.commit()
    return render_template(
        "worklist/reconcile.html", pps=pps, query=query, found=found, form=ReconcileForm(),
        current_step=scheduling.current_step,
    )  # fmt: skip


@bp.route("/unscheduled/<int:pps_id>/link", methods=["POST"], endpoint="link")
@roles(*TECHNOLOGISTS)
def link(pps_id: int) -> Response:
    """Link the performed step to the exam the technologist chose."""
    db = get_db()
    pps = _step_or_404(pps_id)
    form = ReconcileForm()
    back = redirect(url_for(".reconcile", pps_id=pps_id))
    if not form.validate_on_submit():
        flash_form_errors(form)
        return back
    try:
        exam = orders.get_exam(db, form.exam_id.data or 0)
        accession = exam.accession_number
        mpps.reconcile_performed_step(db, current_actor(), pps, exam)
    except PlacaError as exc:
        logger.info("Reconciliation of MPPS %s refused: %s", pps_id, exc.message)
        db.rollback()  # a refused link changes nothing
        flash(exc.message, "error")
        return back
    db.commit()
    flash(_("The performed step is linked to exam %(accession)s.", accession=accession), "info")
    return redirect(url_for(".unscheduled"))
