"""/api/orders, /api/exams, bookings, free slots and the day board."""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, current_app, jsonify, url_for
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import audit, board, catalog, orders, patients, scheduling
from ris.api import bp, render
from ris.api.common import BOARD_READERS, FRONT_DESK, PATIENT_READERS, created, referenced
from ris.api.fields import (
    ACCESSION_QUERY,
    BOARD_QUERY,
    BOOKING_FIELDS,
    CANCEL_FIELDS,
    NO_FIELDS,
    ORDER_FIELDS,
    SLOTS_QUERY,
)
from ris.api_schemas import CodeRef, parse_body, parse_query
from ris.audit import Actor
from ris.auth import current_actor, roles
from ris.db import get_db, utcnow
from ris.errors import Invalid
from ris.models import ProcedureCode, RequestedProcedure, Room
from ris.site import site_of


@bp.post("/orders")
@roles(*FRONT_DESK)
def create_order() -> tuple[Response, int, dict[str, str]]:
    """Place an order: one exam per procedure code, each with its accession number."""
    fields = parse_body(ORDER_FIELDS)
    db = get_db()
    patient = referenced(db, patients.get_patient, fields.pop("patient_id"), "patient_id")
    codes = [_procedure(db, ref) for ref in fields.pop("procedures")]
    icd10 = [code for text in fields.pop("icd10_codes", []) for code in orders.parse_icd10(text)]
    data = orders.OrderData(**fields, icd10_codes=icd10)
    order = orders.place_order(db, current_actor(), site_of(current_app), patient, data, codes)
    db.commit()
    return created(render.order(order), url_for("api.get_order", order_id=order.id))


def _procedure(db: Session, ref: int | CodeRef) -> ProcedureCode:
    if isinstance(ref, int):
        return referenced(db, catalog.get_procedure, ref, "procedures")
    code = catalog.find_procedure(db, ref.code_system, ref.code)
    if code is None:
        raise Invalid(_("No procedure %(system)s %(code)s.", system=ref.code_system,
                        code=ref.code), field="procedures")  # fmt: skip
    return code


@bp.get("/orders/<int:order_id>")
@roles(*PATIENT_READERS)
def get_order(order_id: int) -> Response:
    """An order with its exams (audited as a view of the patient's order)."""
    db = get_db()
    order = orders.get_order(db, order_id)
    patients.record_view(db, current_actor(), order.patient, "order")
    db.commit()
    return jsonify(render.order(order))


@bp.get("/exams")
@roles(*PATIENT_READERS)
def find_exams() -> Response:
    """The exam with this accession number, as a list of none or one."""
    accession = parse_query(ACCESSION_QUERY)["accession"]
    db = get_db()
    exam = orders.find_exam_by_accession(db, accession)
    if exam is not None:
        patients.record_view(db, current_actor(), exam.order.patient, "exam")
        db.commit()
    return jsonify({"exams": [render.exam(exam)] if exam else []})


@bp.get("/exams/<int:exam_id>")
@roles(*PATIENT_READERS)
def get_exam(exam_id: int) -> Response:
    """One exam with its status and booking (audited as a view)."""
    db = get_db()
    exam = orders.get_exam(db, exam_id)
    patients.record_view(db, current_actor(), exam.order.patient, "exam")
    db.commit()
    return jsonify(render.exam(exam))


@bp.post("/exams/<int:exam_id>/check-in")
@roles(*FRONT_DESK)
def check_in(exam_id: int) -> Response:
    """The patient has arrived."""
    parse_body(NO_FIELDS)
    return _status_action(exam_id, scheduling.check_in)


@bp.post("/exams/<int:exam_id>/cancel")
@roles(*FRONT_DESK)
def cancel(exam_id: int) -> Response:
    """Cancel the exam, giving a reason; its slot is freed."""
    reason = parse_body(CANCEL_FIELDS)["reason"]
    return _status_action(
        exam_id, lambda db, actor, exam: scheduling.cancel(db, actor, exam, reason)
    )


@bp.post("/exams/<int:exam_id>/no-show")
@roles(*FRONT_DESK)
def no_show(exam_id: int) -> Response:
    """The patient did not come; the exam can be booked again."""
    parse_body(NO_FIELDS)
    return _status_action(exam_id, scheduling.no_show)


ExamAction = Callable[[Session, Actor, RequestedProcedure], None]


def _status_action(exam_id: int, action: ExamAction) -> Response:
    """Apply a status change through its service and answer the exam as it now stands."""
    db = get_db()
    exam = orders.get_exam(db, exam_id)
    action(db, current_actor(), exam)
    db.commit()
    return jsonify(render.exam(exam))


@bp.post("/exams/<int:exam_id>/booking")
@roles(*FRONT_DESK)
def book(exam_id: int) -> tuple[Response, int, dict[str, str]]:
    """Book the exam into a room at a time; a double booking is refused (409)."""
    fields = parse_body(BOOKING_FIELDS)
    db = get_db()
    exam = orders.get_exam(db, exam_id)
    room = _room(db, fields["room"])
    scheduling.book(db, current_actor(), site_of(current_app), exam, room, fields["start"])
    db.commit()
    return created(render.exam(exam), url_for("api.get_exam", exam_id=exam.id))


@bp.put("/exams/<int:exam_id>/booking")
@roles(*FRONT_DESK)
def reschedule(exam_id: int) -> Response:
    """Move the booking to another time or room (the same scheduled procedure step)."""
    fields = parse_body(BOOKING_FIELDS)
    db = get_db()
    exam = orders.get_exam(db, exam_id)
    room = _room(db, fields["room"])
    scheduling.reschedule(db, current_actor(), site_of(current_app), exam, room, fields["start"])
    db.commit()
    return jsonify(render.exam(exam))


def _room(db: Session, ref: int | str, field: str = "room") -> Room:
    if isinstance(ref, int):
        return referenced(db, catalog.get_room, ref, field)
    room = db.scalar(select(Room).where(Room.code == ref))
    if room is None:
        raise Invalid(_("No room %(code)s.", code=ref), field=field)
    return room


@bp.get("/procedure-codes/<int:code_id>/free-slots")
@roles(*FRONT_DESK)
def free_slots(code_id: int) -> Response:
    """The earliest free slots for a procedure across its eligible rooms."""
    query = parse_query(SLOTS_QUERY)
    db = get_db()
    code = catalog.get_procedure(db, code_id)
    patient_id = query.get("patient_id")
    if patient_id is not None:
        referenced(db, patients.get_patient, patient_id, "patient_id")
    found = scheduling.free_slots(
        db, site_of(current_app), code, query.get("after") or utcnow(), count=query.get("count", 5),
        patient_id=patient_id,
    )  # fmt: skip
    return jsonify({"slots": [render.slot(slot) for slot in found]})


@bp.get("/board")
@roles(*BOARD_READERS)
def day_board() -> Response:
    """A day's booked exams, by start time then room (audited as one view)."""
    query = parse_query(BOARD_QUERY)
    site = site_of(current_app)
    day = query.get("date") or utcnow().astimezone(site.zone).date()
    db = get_db()
    room = _room(db, query["room"]) if "room" in query else None
    rows = board.day_board(db, site, day, room.id if room else None)
    audit.record(db, current_actor(), "board.view",
                 detail={"date": day.isoformat(), "room": room.code if room else None,
                         "exams": len(rows)})  # fmt: skip
    db.commit()
    body = {"date": day.isoformat(), "room": room.code if room else None,
            "exams": [render.exam(row.exam, row.step) for row in rows]}  # fmt: skip
    return jsonify(body)
