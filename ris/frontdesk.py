"""Front-desk screens: day boards, room calendars, order entry, booking and check-in."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response
from wtforms import SelectChoice

from ris import audit, catalog, orders, patients, scheduling, status
from ris import board as boards
from ris.audit import Actor
from ris.auth import BOARD_READERS, FRONT_DESK, PATIENT_READERS, current_actor, roles
from ris.db import get_db, utcnow
from ris.errors import Invalid, PlacaError
from ris.frontdesk_forms import (
    PATIENT_CLASS_LABELS,
    PRIORITY_LABELS,
    ActionForm,
    CancelForm,
    ManualSlotForm,
    OrderForm,
    SlotForm,
)
from ris.models import (
    ExamStatus,
    MRISafety,
    Order,
    Patient,
    PatientClass,
    PregnancyStatus,
    Priority,
    RequestedProcedure,
    Room,
    Sex,
    StatusChange,
)
from ris.site import Site, site_of
from ris.status import LABELS

logger = logging.getLogger(__name__)
bp = Blueprint("frontdesk", __name__)

WAIT_WARN_MINUTES, WAIT_LATE_MINUTES = 15, 30
SLOT_COUNT = 8
UNBOOKED_LIMIT = 100


# ---------------------------------------------------------------------------- helpers


def local_today(site: Site) -> date:
    return utcnow().astimezone(site.zone).date()


def age_on(birth: date | None, day: date) -> int | None:
    """Age in whole years on ``day``."""
    if birth is None:
        return None
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def wait_minutes(exam: RequestedProcedure, now: datetime) -> int | None:
    """Minutes an arrived patient has waited; None for an exam that is not waiting."""
    if exam.status is not ExamStatus.ARRIVED or exam.arrived_at is None:
        return None
    return max(0, int((now - exam.arrived_at).total_seconds() // 60))


def wait_class(minutes: int | None) -> str:
    if minutes is None:
        return ""
    if minutes >= WAIT_LATE_MINUTES:
        return "wait-late"
    return "wait-warn" if minutes >= WAIT_WARN_MINUTES else "wait-ok"


def person_name(value: str | None) -> str:
    """A DICOM/HL7 person name ("House^Gregory") as people write it ("House, Gregory")."""
    parts = [part.strip() for part in (value or "").split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else family or given


def local_hm(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local.hour:02d}:{local.minute:02d}"  # strftime is slow on a 2,000-row board


class IdUrl:
    """A URL pattern with one integer id, built once per page instead of once per row."""

    MARK = 987654321

    def __init__(self, endpoint: str, key: str) -> None:
        try:
            built = url_for(endpoint, **{key: self.MARK})
        except BuildError:  # the screen is not installed (e.g. --only doors)
            built = ""
        self.prefix, _mark, self.suffix = built.partition(str(self.MARK))

    def __bool__(self) -> bool:
        return bool(self.prefix)

    def __call__(self, value: int) -> str:
        return f"{self.prefix}{value}{self.suffix}"


Badge = tuple[str, str, str]  # CSS class, label, detail


@dataclass(frozen=True)
class Words:
    """The labels a list repeats on every row, translated once per request."""

    status: dict[ExamStatus, str]
    priority: dict[Priority, str]
    patient_class: dict[PatientClass, str]
    sex: dict[Sex | None, str]
    wait: str
    alerts: dict[str, str]

    @classmethod
    def of_request(cls) -> Words:
        if "frontdesk_words" not in g:
            g.frontdesk_words = cls(
                status={key: str(label) for key, label in LABELS.items()},
                priority={key: str(label) for key, label in PRIORITY_LABELS.items()},
                patient_class={key: str(label) for key, label in PATIENT_CLASS_LABELS.items()},
                sex={Sex.MALE: _("M"), Sex.FEMALE: _("F"), Sex.OTHER: _("O")},
                wait=_("%(minutes)s min", minutes="{n}"),
                alerts={
                    "contrast": _("Contrast allergy"), "allergy": _("Allergies"),
                    "pregnant": _("Pregnant"), "possibly_pregnant": _("Possibly pregnant"),
                    "mri_unsafe": _("MRI unsafe"), "mri_conditional": _("MRI conditional"),
                    "medical": _("Medical alert"),
                },
            )  # fmt: skip
        return g.frontdesk_words


def alert_badges(patient: Patient, words: Words) -> tuple[Badge, ...]:
    """What the desk must see before the patient goes in: contrast, pregnancy, MRI safety."""
    said = words.alerts
    badges: list[Badge] = []
    if patient.contrast_allergy:
        badges.append(("contrast", said["contrast"], ""))
    if patient.allergies:
        badges.append(("allergy", said["allergy"], patient.allergies))
    if patient.pregnancy_status is PregnancyStatus.DEFINITELY_PREGNANT:
        badges.append(("pregnancy", said["pregnant"], ""))
    elif patient.pregnancy_status is PregnancyStatus.POSSIBLY_PREGNANT:
        badges.append(("pregnancy", said["possibly_pregnant"], ""))
    if patient.mri_safety is MRISafety.UNSAFE:
        badges.append(("mri unsafe", said["mri_unsafe"], ""))
    elif patient.mri_safety is MRISafety.CONDITIONAL:
        badges.append(("mri", said["mri_conditional"], ""))
    if patient.medical_alerts:
        badges.append(("medical", said["medical"], patient.medical_alerts))
    return tuple(badges)


def _patient_url(patient_id: int) -> str | None:
    """The patient page, when the patients screens are installed."""
    if "patients.show" not in current_app.view_functions:
        return None
    return url_for("patients.show", patient_id=patient_id)


@bp.context_processor
def _template_helpers() -> dict[str, object]:
    zone, words = site_of(current_app).zone, Words.of_request()
    return {
        "status_labels": words.status,
        "priority_labels": words.priority,
        "class_labels": words.patient_class,
        "sex_labels": words.sex,
        "badges": partial(alert_badges, words=words),
        "patient_url": _patient_url,
        "age_on": age_on,
        "person": person_name,
        "hm": partial(local_hm, zone=zone),
        "local_day": lambda moment: moment.astimezone(zone).date(),
        "can_write": current_user.is_authenticated and current_user.has_role(*FRONT_DESK),
    }


def _date_arg(name: str) -> date | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        flash(_("%(value)s is not a date (YYYY-MM-DD); showing today.", value=value), "error")
        return None


def _safe_next(target: str | None) -> str | None:
    """Only a local path is followed back (no open redirect)."""
    target = target or ""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return None if urlsplit(target).netloc else target


def _field_error(form: Any, exc: PlacaError) -> None:
    """Show a service's refusal under the field it names, else as a message."""
    field = getattr(form, exc.field or "", None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


def _flash_form_errors(form: Any) -> None:
    for field in form:
        for error in field.errors:
            flash(f"{field.label.text}: {error}" if field.label.text else str(error), "error")


# ---------------------------------------------------------------------------- day board


@dataclass(frozen=True, slots=True)
class BoardLine:
    """One board row as the template prints it. Everything is worked out here, once per
    row, so a 2,000-exam day renders fast: no macro, translation or URL building per row."""

    exam_href: str
    patient_href: str
    room_href: str
    check_in_href: str
    time: str
    room: str
    patient: str
    age_sex: str
    exam: str
    priority: str
    priority_label: str
    status: str
    status_label: str
    wait: str
    wait_class: str
    arrived_at: str
    accession: str
    referring: str
    alerts: tuple[Badge, ...]


def _board_lines(
    rows: list[boards.BoardRow], site: Site, day: date, can_check_in: bool
) -> list[BoardLine]:
    now, zone, words = utcnow(), site.zone, Words.of_request()
    exam_url, patient_url = IdUrl(".exam", "exam_id"), IdUrl("patients.show", "patient_id")
    check_in_url = IdUrl(".check_in", "exam_id")
    week_urls: dict[str, str] = {}
    lines = []
    for row in rows:
        exam, patient, order = row.exam, row.patient, row.order
        minutes = wait_minutes(exam, now)
        age = age_on(patient.birth_date, day)
        if row.room.code not in week_urls:
            week_urls[row.room.code] = url_for(".calendar", room_code=row.room.code,
                                               week=day.isoformat())  # fmt: skip
        lines.append(BoardLine(
            exam_href=exam_url(exam.id),
            patient_href=patient_url(patient.id) if patient_url else "",
            room_href=week_urls[row.room.code],
            check_in_href=check_in_url(exam.id)
            if can_check_in and exam.status is ExamStatus.SCHEDULED else "",
            time=f"{local_hm(row.step.start_at, zone)}–{local_hm(row.step.end_at, zone)}",
            room=row.room.code, patient=patient.display_name,
            age_sex=f"{'—' if age is None else age} {words.sex.get(patient.sex, '—')}",
            exam=exam.description, priority=order.priority.value.lower(),
            priority_label=words.priority[order.priority], status=exam.status.value,
            status_label=words.status[exam.status],
            wait="" if minutes is None else words.wait.replace("{n}", str(minutes)),
            wait_class=wait_class(minutes),
            arrived_at=exam.arrived_at.isoformat() if minutes is not None and exam.arrived_at
            else "", accession=exam.accession_number,
            referring=person_name(order.referring_physician),
            alerts=alert_badges(patient, words) if patient.has_alerts else (),
        ))  # fmt: skip
    return lines


def _room_arg(rooms: list[Room]) -> Room | None:
    code = request.args.get("room", "").strip()
    if not code:
        return None
    room = next((room for room in rooms if room.code == code), None)
    if room is None:
        flash(_("No room %(code)s; showing the whole department.", code=code), "error")
    return room


def _unbooked(db: Session) -> list[RequestedProcedure]:
    """Exams waiting to be booked, with their orders and patients loaded in one more query."""
    exams = boards.unbooked_exams(db, limit=UNBOOKED_LIMIT)
    order_ids = {exam.order_id for exam in exams}
    if order_ids:
        # Many-to-one loads hit the identity map afterwards: no query per exam.
        db.scalars(
            select(Order).options(joinedload(Order.patient)).where(Order.id.in_(order_ids))
        ).all()
    return exams


@bp.route("/board", endpoint="board")
@roles(*BOARD_READERS)
def day_board() -> str:
    """The department's (or one room's) day: every booked exam, in start order."""
    with collector_paused():
        db, site = get_db(), site_of(current_app)
        day = _date_arg("date") or local_today(site)
        rooms = catalog.list_rooms(db)
        room = _room_arg(rooms)
        rows = boards.day_board(db, site, day, room.id if room else None)
        waiting = _unbooked(db)
        can_check_in = current_user.has_role(*FRONT_DESK)
        audit.record(db, current_actor(), "board.view", object_type="board",
                     detail={"date": day.isoformat(), "room": room.code if room else None,
                             "exams": len(rows)})  # fmt: skip
        db.commit()  # before the page is built: SQLite writers wait for this lock
        return render_template(
            "frontdesk/board.html", day=day, room=room, rooms=rooms, waiting=waiting,
            lines=_board_lines(rows, site, day, can_check_in),
            today=local_today(site), now=utcnow(), prev_day=day - timedelta(days=1),
            next_day=day + timedelta(days=1), exam_url=IdUrl(".exam", "exam_id"),
            token=generate_csrf(), wait_format=Words.of_request().wait,
            wait_warn=WAIT_WARN_MINUTES, wait_late=WAIT_LATE_MINUTES,
        )  # fmt: skip


@contextmanager
def collector_paused() -> Iterator[None]:
    """Build a large page without the cyclic garbage collector stopping to scan the whole
    heap: the tens of thousands of short-lived ORM objects of a busy day trigger full
    collections that cost more than the query. Reference counting still frees them, and
    the collector resumes when the page is built (it is never left off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------- room calendar


@bp.route("/calendar/<room_code>")
@roles(*BOARD_READERS)
def calendar(room_code: str) -> str:
    """One room's week, Monday to Sunday."""
    db, site = get_db(), site_of(current_app)
    room = db.scalar(select(Room).where(Room.code == room_code))
    if room is None:
        abort(404)
    day = _date_arg("week") or local_today(site)
    monday = day - timedelta(days=day.weekday())
    week = boards.week_board(db, site, room.id, monday)
    rooms = catalog.list_rooms(db, active_only=True)
    audit.record(db, current_actor(), "calendar.view", object_type="room", object_id=room.id,
                 detail={"week": monday.isoformat(), "room": room.code,
                         "exams": sum(len(rows) for rows in week.values())})  # fmt: skip
    db.commit()
    return render_template(
        "frontdesk/calendar.html", room=room, rooms=rooms,
        monday=monday, week=week, today=local_today(site),
        prev_week=monday - timedelta(days=7), next_week=monday + timedelta(days=7),
    )  # fmt: skip


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
            _field_error(form, exc)
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
        _flash_form_errors(form)
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
        _flash_form_errors(form)
    return redirect(_safe_next(form.next.data) or url_for(".exam", exam_id=exam_id))


@bp.route("/exams/<int:exam_id>/cancel", methods=["POST"])
@roles(*FRONT_DESK)
def cancel(exam_id: int) -> Response:
    """Cancel an exam, with the reason the desk gives."""
    db = get_db()
    exam_ = orders.get_exam(db, exam_id)
    form = CancelForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
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
