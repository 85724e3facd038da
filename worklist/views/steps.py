"""The exam steps a technologist does by hand when the modality sends no MPPS."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import flash, redirect, url_for
from flask_babel import gettext as _
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from ris import orders
from ris.audit import Actor
from ris.auth import TECHNOLOGISTS, current_actor, roles
from ris.db import get_db
from ris.errors import PlacaError
from ris.frontdesk.common import flash_form_errors, safe_next
from ris.models import RequestedProcedure
from worklist import technologist
from worklist.forms import DiscontinueForm, StepForm
from worklist.views import bp

logger = logging.getLogger(__name__)

Step = Callable[[Session, Actor, RequestedProcedure], None]


@bp.route("/exams/<int:exam_id>/start", methods=["POST"])
@roles(*TECHNOLOGISTS)
def start(exam_id: int) -> Response:
    """The patient is on the table: the exam is in progress."""
    return _step(exam_id, StepForm(), technologist.start_exam, _("The exam is started."))


@bp.route("/exams/<int:exam_id>/complete", methods=["POST"])
@roles(*TECHNOLOGISTS)
def complete(exam_id: int) -> Response:
    """The acquisition is finished: the exam is ready to read."""
    return _step(exam_id, StepForm(), technologist.complete_exam, _("The exam is completed."))


@bp.route("/exams/<int:exam_id>/discontinue", methods=["POST"])
@roles(*TECHNOLOGISTS)
def discontinue(exam_id: int) -> Response:
    """The exam was stopped; the front desk decides what happens next."""
    form = DiscontinueForm()

    def stop(db: Session, actor: Actor, exam: RequestedProcedure) -> None:
        technologist.discontinue_exam(db, actor, exam, form.reason.data or "")

    return _step(
        exam_id, form, stop, _("The exam is discontinued; the front desk will rebook or cancel it.")
    )


def _step(exam_id: int, form: StepForm, step: Step, done: str) -> Response:
    db = get_db()
    exam = orders.get_exam(db, exam_id)
    if not form.validate_on_submit():
        logger.info("Exam step on %s refused: %s", exam.accession_number, form.errors)
        flash_form_errors(form)
    else:
        try:
            step(db, current_actor(), exam)
        except PlacaError as exc:
            logger.info("Exam step on %s refused: %s", exam.accession_number, exc.message)
            db.rollback()  # a refused step changes nothing
            flash(exc.message, "error")
        else:
            db.commit()
            flash(done, "info")
    return redirect(safe_next(form.next.data) or url_for(".rooms"))
