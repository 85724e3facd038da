"""Reconciliation of unscheduled MPPS: a modality performed an exam Placa could not identify
(no worklist entry, or identifiers naming no single exam); a technologist links it to the
right exam, which then follows the performed step's status."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from ris import audit, scheduling
from ris.auth import TECHNOLOGISTS, current_actor, roles
from ris.db import get_db, get_or_404
from ris.frontdesk.common import link_chosen_exam, local_today
from ris.frontdesk_forms import ChooseExamForm
from ris.site import site_of
from worklist import mpps, technologist
from worklist.models import PerformedProcedureStep
from worklist.views import bp

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


@bp.route("/unscheduled/<int:pps_id>", endpoint="reconcile")
@roles(*TECHNOLOGISTS)
def reconcile_page(pps_id: int) -> str | Response:
    """One unscheduled step as the modality sent it, and the exams it may belong to."""
    db, site = get_db(), site_of(current_app)
    pps = get_or_404(PerformedProcedureStep, pps_id)
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
        "worklist/reconcile.html", pps=pps, query=query, found=found, form=ChooseExamForm(),
        current_step=scheduling.current_step,
    )  # fmt: skip


@bp.route("/unscheduled/<int:pps_id>/link", methods=["POST"], endpoint="link")
@roles(*TECHNOLOGISTS)
def link(pps_id: int) -> Response:
    """Link the performed step to the exam the technologist chose."""
    pps = get_or_404(PerformedProcedureStep, pps_id)
    exam = link_chosen_exam(
        ChooseExamForm(),
        lambda exam: mpps.reconcile_performed_step(get_db(), current_actor(), pps, exam),
        f"MPPS {pps_id}",
    )
    if exam is None:
        return redirect(url_for(".reconcile", pps_id=pps_id))
    flash(_("The performed step is linked to exam %(accession)s.",
            accession=exam.accession_number), "info")  # fmt: skip
    return redirect(url_for(".unscheduled"))
