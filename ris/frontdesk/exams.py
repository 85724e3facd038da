"""The exam page: booking from free slots, rescheduling, status actions, requisition."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from flask import (
    current_app,
    flash,
    redirect,
    render_template,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import SelectChoice

from ris import catalog, orders, patients, scheduling, status
from ris.audit import Actor
from ris.auth import FRONT_DESK, PATIENT_READERS, current_actor, roles
from ris.db import get_db, utcnow
from ris.errors import Invalid, PlacaError
from ris.frontdesk import bp
from ris.frontdesk.common import (
    SLOT_COUNT,
    flash_form_errors,
    local_today,
    safe_next,
)
from ris.frontdesk_forms import (
    ActionForm,
    CancelForm,
    ManualSlotForm,
    SlotForm,
)
from ris.models import (
    ExamStatus,
    RequestedProcedure,
    Room,
    StatusChange,
)
from ris.site import Site, site_of

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- exam page


@bp.route("/exams/<int:exam_id>")
@roles(*PATIENT_READERS)
def exam(exam_id: int) -> str:
    """An exam with its patient, history and booking; the desk books and moves it here."""
    db, site = get_db(), site_of(current_app)
    found = orders.get_exam(db, exam_id)
    page = _exam_page(db, site, found)
    patients.record_view(db, current_actor(), found.order.patient, "exam")
    db.commit()  # after the last query: a SQLite writer holds its lock until then
    return render_template("frontdesk/exam.html", **page)


def _exam_page(db: Session, site: Site, exam: RequestedProcedure) -> dict[str, object]:
    history = db.scalars(
        select(StatusChange)
        .where(StatusChange.procedure_id == exam.id)
        .order_by(StatusChange.at, StatusChange.id)
    ).all()
    page: dict[str, object] = {
        "exam": exam, "order": exam.order, "patient": exam.order.patient,
        "step": scheduling.current_step(exam), "history": history, "slots": [],
        "bookable": exam.status in scheduling.BOOKABLE,
        "movable": exam.status in scheduling.MOVABLE, "today": local_today(site),
        "cancellable": status.can_change(exam.status, ExamStatus.CANCELLED),
    }  # fmt: skip
    if current_user.has_role(*FRONT_DESK) and (page["bookable"] or page["movable"]):
        page.update(_booking_panel(db, site, exam))
    return page


def _booking_panel(db: Session, site: Site, exam: RequestedProcedure) -> dict[str, object]:
    code = exam.procedure_code
    rooms = scheduling.eligible_rooms(db, code)
    slots = scheduling.free_slots(db, site, code, utcnow(), count=SLOT_COUNT,
                                  patient_id=exam.order.patient_id, rooms=rooms)  # fmt: skip
    manual = ManualSlotForm(formdata=None)
    manual.room_id.choices = [SelectChoice(str(room.id), f"{room.code} · {room.name}")
                              for room in rooms]  # fmt: skip
    return {
        "slots": slots,
        "manual": manual,
        "cancel_form": CancelForm(formdata=None),
        "action_form": ActionForm(formdata=None),
    }


# ---------------------------------------------------------------------------- booking actions

Booker = Callable[[Session, Actor, Site, RequestedProcedure, Room, datetime], object]


@bp.route("/exams/<int:exam_id>/book", methods=["POST"])
@roles(*FRONT_DESK)
def book(exam_id: int) -> Response:
    """Book an exam into a proposed slot or a room, date and time given by hand."""
    return _slot_action(exam_id, scheduling.book, _("The exam is booked."))


@bp.route("/exams/<int:exam_id>/reschedule", methods=["POST"])
@roles(*FRONT_DESK)
def reschedule(exam_id: int) -> Response:
    """Move a booked exam to another slot (same step, same SPS ID)."""
    return _slot_action(exam_id, scheduling.reschedule, _("The exam is rescheduled."))


def _slot_action(exam_id: int, service: Booker, done: str) -> Response:
    db, site = get_db(), site_of(current_app)
    exam_ = orders.get_exam(db, exam_id)
    form = SlotForm()
    if not form.validate_on_submit():
        flash_form_errors(form)
        return redirect(url_for(".exam", exam_id=exam_id))
    try:
        room = catalog.get_room(db, form.room_id.data or 0)
        service(db, current_actor(), site, exam_, room, _start(form, site))
    except PlacaError as exc:
        db.rollback()  # a refused booking leaves nothing behind
        flash(exc.message, "error")
    else:
        db.commit()
        flash(done, "info")
    return redirect(url_for(".exam", exam_id=exam_id))


def _start(form: SlotForm, site: Site) -> datetime:
    """The chosen start: a proposed slot's ISO instant, or a local date and time."""
    if form.start.data:
        try:
            return datetime.fromisoformat(form.start.data)
        except ValueError:
            raise Invalid(_("The start time is not valid."), field="start") from None
    return datetime.combine(form.day.data, form.time.data, site.zone)  # type: ignore[arg-type]


@bp.route("/exams/<int:exam_id>/check-in", methods=["POST"])
@roles(*FRONT_DESK)
def check_in(exam_id: int) -> Response:
    """The patient is at the desk: the wait-time clock starts."""
    return _status_action(exam_id, scheduling.check_in, _("The patient is checked in."))


@bp.route("/exams/<int:exam_id>/no-show", methods=["POST"])
@roles(*FRONT_DESK)
def no_show(exam_id: int) -> Response:
    """The patient did not come; the exam goes back to the list to book."""
    return _status_action(exam_id, scheduling.no_show, _("The exam is marked as a no-show."))


def _status_action(
    exam_id: int, action: Callable[[Session, Actor, RequestedProcedure], None], done: str
) -> Response:
    db = get_db()
    exam_ = orders.get_exam(db, exam_id)
    form = ActionForm()
    if form.validate_on_submit():
        try:
            action(db, current_actor(), exam_)
        except PlacaError as exc:
            db.rollback()
            flash(exc.message, "error")
        else:
            db.commit()
            flash(done, "info")
    else:
        flash_form_errors(form)
    return redirect(safe_next(form.next.data) or url_for(".exam", exam_id=exam_id))


@bp.route("/exams/<int:exam_id>/cancel", methods=["POST"])
@roles(*FRONT_DESK)
def cancel(exam_id: int) -> Response:
    """Cancel an exam, with the reason the desk gives."""
    db = get_db()
    exam_ = orders.get_exam(db, exam_id)
    form = CancelForm()
    if not form.validate_on_submit():
        flash_form_errors(form)
        return redirect(url_for(".exam", exam_id=exam_id))
    try:
        scheduling.cancel(db, current_actor(), exam_, form.reason.data or "")
    except PlacaError as exc:
        db.rollback()
        flash(exc.message, "error")
    else:
        db.commit()
        flash(_("The exam is cancelled."), "info")
    return redirect(url_for(".exam", exam_id=exam_id))


# ---------------------------------------------------------------------------- requisition


@bp.route("/exams/<int:exam_id>/requisition")
@roles(*PATIENT_READERS)
def requisition(exam_id: int) -> str:
    """A printable A4 requisition for the exam."""
    db, site = get_db(), site_of(current_app)
    found = orders.get_exam(db, exam_id)
    patient, step = found.order.patient, scheduling.current_step(found)
    patients.record_view(db, current_actor(), patient, "requisition")
    db.commit()
    return render_template(
        "frontdesk/requisition.html", exam=found, order=found.order, patient=patient,
        step=step, today=local_today(site), printed_at=utcnow(),
    )  # fmt: skip
