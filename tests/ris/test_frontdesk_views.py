"""Front-desk screens: day board, check-in, order entry, booking, rescheduling, cancellation,
no-show, requisition, room week, roles and audit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from ris import scheduling
from ris.db import utcnow
from ris.models import (
    AuditEvent,
    ExamStatus,
    Order,
    Patient,
    ProcedureCode,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
    StatusChange,
)
from tests.conftest import csrf_token, post_form, sign_in
from tests.factories import ACTOR, SITE, FrontDesk, at, next_weekday


@pytest.fixture
def desk(app: Flask) -> FrontDesk:
    app.config["TIMEZONE"] = "Europe/Madrid"  # the factories' site
    return FrontDesk(app)


@pytest.fixture
def ct(db: Session, desk: FrontDesk) -> tuple[Room, Room, ProcedureCode]:
    ct1, ct2 = desk.room(db, "CT1", "CT"), desk.room(db, "CT2", "CT")
    desk.room(db, "MR1", "MR")
    code = desk.code(db, "74177", "CT", minutes=20)
    db.commit()
    return ct1, ct2, code


@pytest.fixture
def clerk(app: Flask, make_user) -> FlaskClient:
    client = app.test_client()
    sign_in(client, make_user("front_desk"))
    return client


def page(response) -> str:  # noqa: ANN001
    return response.get_data(as_text=True)


# On SQLite every transaction but a read-only one holds the write lock: each helper that
# reads through the test's session ends its transaction, so the next request is not kept
# waiting.


def actions(db: Session, action: str) -> list[AuditEvent]:
    found = list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))
    db.commit()
    return found


def refreshed(db: Session, exam: RequestedProcedure) -> RequestedProcedure:
    """The exam as committed, with its steps loaded."""
    query = (
        select(RequestedProcedure)
        .where(RequestedProcedure.id == exam.id)
        .options(selectinload(RequestedProcedure.steps), joinedload(RequestedProcedure.order))
        .execution_options(populate_existing=True)
    )
    found = db.scalars(query).one()
    db.commit()
    return found


# ---------------------------------------------------------------------------- day board


def test_board_shows_the_department_or_one_room(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, ct2, code = ct
    day = next_weekday()
    first = desk.booked(db, ct1, code, at(day, 9), patient=desk.patient(db, "Peña", "José"))
    second = desk.booked(db, ct2, code, at(day, 10, 30))
    db.commit()

    whole = page(clerk.get(f"/board?date={day.isoformat()}"))
    assert first.accession_number in whole and second.accession_number in whole
    assert "09:00–09:20" in whole and "10:30–10:50" in whole
    assert "PEÑA, José" in whole and "Wilson, James" in whole
    assert whole.index(first.accession_number) < whole.index(second.accession_number)

    one_room = page(clerk.get(f"/board?date={day.isoformat()}&room=CT1"))
    assert first.accession_number in one_room and second.accession_number not in one_room

    other_day = page(clerk.get(f"/board?date={(day + timedelta(days=1)).isoformat()}"))
    assert first.accession_number not in other_day
    views = actions(db, "board.view")
    assert len(views) == 3 and '"room": "CT1"' in views[1].detail


def test_board_lists_exams_waiting_to_be_booked(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    _ct1, _ct2, code = ct
    waiting = desk.exam(db, desk.patient(db, "Durand", "Gaëlle"), code)
    db.commit()
    html = page(clerk.get("/board"))
    assert "Waiting to be booked" in html
    assert f'href="/exams/{waiting.id}"' in html and "DURAND, Gaëlle" in html


def test_check_in_from_the_board_starts_the_wait_clock(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, _ct2, code = ct
    day = next_weekday()
    exam = desk.booked(db, ct1, code, at(day, 9))
    db.commit()
    board = f"/board?date={day.isoformat()}"
    html = page(clerk.get(board))
    assert f'formaction="/exams/{exam.id}/check-in"' in html

    response = clerk.post(f"/exams/{exam.id}/check-in",
                          data={"csrf_token": csrf_token(clerk, board), "next": board})  # fmt: skip
    assert response.status_code == 302 and response.headers["Location"] == board
    assert refreshed(db, exam).status is ExamStatus.ARRIVED

    html = page(clerk.get(board))
    assert re.search(r'class="wait wait-ok" data-arrived-at="[^"]+">[01] min', html)
    assert f'formaction="/exams/{exam.id}/check-in"' not in html


def test_wait_time_is_coloured_after_fifteen_and_thirty_minutes(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, ct2, code = ct
    day = next_weekday()
    waited, late = desk.booked(db, ct1, code, at(day, 9)), desk.booked(db, ct2, code, at(day, 9))
    for exam, minutes in ((waited, 20), (late, 45)):
        scheduling.check_in(db, ACTOR, exam)
        exam.arrived_at = utcnow() - timedelta(minutes=minutes, seconds=5)
    db.commit()
    html = page(clerk.get(f"/board?date={day.isoformat()}"))
    assert re.search(r'class="wait wait-warn" data-arrived-at="[^"]+">2[01] min', html)
    assert re.search(r'class="wait wait-late" data-arrived-at="[^"]+">4[56] min', html)


def test_board_shows_alerts_priority_and_status(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, _ct2, code = ct
    day = next_weekday()
    patient = desk.patient(db, "Alert", "Ana", contrast_allergy=True)
    desk.booked(db, ct1, code, at(day, 9), patient=patient)
    db.commit()
    html = page(clerk.get(f"/board?date={day.isoformat()}"))
    assert "Contrast allergy" in html
    assert 'class="prio prio-routine"' in html and 'class="status status-scheduled"' in html


def test_board_runs_the_same_queries_for_few_or_many_exams(
    app: Flask, db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, ct2, code = ct
    day = next_weekday()
    path = f"/board?date={day.isoformat()}"
    for hour in (8, 9):
        desk.booked(db, ct1, code, at(day, hour))
    db.commit()
    clerk.get(path)  # warm up (session resume, CSRF)
    with counted(app) as few:
        clerk.get(path)
    for hour in range(10, 19):
        desk.booked(db, ct1, code, at(day, hour))
        desk.booked(db, ct2, code, at(day, hour))
    db.commit()
    with counted(app) as many:
        assert clerk.get(path).status_code == 200
    assert len(many) == len(few), many


class counted:  # noqa: N801
    """Collect the SQL statements an application runs inside the block."""

    def __init__(self, app: Flask) -> None:
        self.engine = app.extensions["placa.engine"]
        self.statements: list[str] = []

    def _seen(self, _conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        self.statements.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self.statements

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


# ---------------------------------------------------------------------------- order entry


def test_order_entry_creates_the_exams(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    _ct1, _ct2, code = ct
    head = desk.code(db, "70450", "CT", minutes=15)
    patient = desk.patient(db)
    db.commit()
    path = f"/orders/new?patient={patient.id}"
    html = page(clerk.get(path))
    assert "PEÑA, José" in html and 'name="procedures"' in html and "<legend>CT</legend>" in html
    response = post_form(clerk, path, {
        "ordering_physician": "House^Gregory", "referring_physician": "Wilson^James",
        "reason": "Cough", "icd10_codes": "j18.9 R05", "priority": "HIGH",
        "patient_class": "O", "procedures": [str(code.id), str(head.id)],
    })  # fmt: skip
    assert response.status_code == 302
    order = db.scalars(select(Order).where(Order.patient_id == patient.id)).one()
    exams = order.procedures
    assert [e.procedure_code_id for e in exams] == [code.id, head.id]
    assert response.headers["Location"] == f"/exams/{exams[0].id}"
    assert order.icd10_codes == "J18.9,R05" and order.priority.value == "HIGH"
    assert all(e.status is ExamStatus.ORDERED for e in exams)
    assert actions(db, "order.view") and actions(db, "order.create")


def test_order_entry_refuses_a_bad_icd10_code_without_saving(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    _ct1, _ct2, code = ct
    patient = desk.patient(db)
    db.commit()
    path = f"/orders/new?patient={patient.id}"
    response = post_form(clerk, path, {
        "ordering_physician": "House^Gregory", "icd10_codes": "J18.9, 123",
        "priority": "ROUTINE", "patient_class": "O", "procedures": [str(code.id)],
    })  # fmt: skip
    html = page(response)
    assert response.status_code == 200 and "123 is not an ICD-10 code." in html
    missing = post_form(clerk, path, {"ordering_physician": "", "priority": "ROUTINE",
                                      "patient_class": "O"})  # fmt: skip
    assert "The ordering physician is required." in page(missing)
    assert "Choose at least one procedure." in page(missing)
    assert db.scalar(select(func.count()).select_from(Order)) == 0
    assert db.scalar(select(func.count()).select_from(RequestedProcedure)) == 0


def test_order_entry_finds_the_patient_first(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    patient = desk.patient(db, "Peña", "José")
    db.commit()
    assert 'type="search"' in page(clerk.get("/orders/new"))
    html = page(clerk.get("/orders/new?q=pena"))
    assert f'href="/orders/new?patient={patient.id}"' in html
    searches = actions(db, "patient.search")
    assert len(searches) == 1 and '"query": "pena"' in searches[0].detail


# ---------------------------------------------------------------------------- booking


SLOT = re.compile(
    r'name="room_id" value="(\d+)">\s*<input type="hidden" name="start" value="([^"]+)"'
)


def test_booking_from_a_free_slot_button(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    _ct1, _ct2, code = ct
    exam = desk.exam(db, desk.patient(db), code)
    db.commit()
    html = page(clerk.get(f"/exams/{exam.id}"))
    assert exam.accession_number in html and exam.study_instance_uid in html
    slots = SLOT.findall(html)
    assert len(slots) == 8
    room_id, start = slots[0]
    response = post_form(clerk, f"/exams/{exam.id}/book", {"room_id": room_id, "start": start},
                         form_page=f"/exams/{exam.id}")  # fmt: skip
    assert response.headers["Location"] == f"/exams/{exam.id}"
    exam = refreshed(db, exam)
    assert exam.status is ExamStatus.SCHEDULED
    step = exam.steps[0]
    assert step.room_id == int(room_id) and step.start_at == datetime.fromisoformat(start)
    html = page(clerk.get(f"/exams/{exam.id}"))
    assert "The exam is booked." in html and "Reschedule" in html and "Check in" in html
    assert actions(db, "exam.view") and actions(db, "exam.book")


def test_double_booking_shows_the_conflict_and_keeps_nothing(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, _ct2, code = ct
    day = next_weekday()
    desk.booked(db, ct1, code, at(day, 9))
    exam = desk.exam(db, desk.patient(db), code)
    db.commit()
    response = post_form(
        clerk, f"/exams/{exam.id}/book",
        {"room_id": str(ct1.id), "day": day.isoformat(), "time": "09:10"},
        form_page=f"/exams/{exam.id}",
    )  # fmt: skip
    html = page(clerk.get(response.headers["Location"]))
    assert "CT1 is already booked from 09:00 to 09:20." in html
    assert refreshed(db, exam).status is ExamStatus.ORDERED
    assert not db.scalars(
        select(ScheduledProcedureStep).where(ScheduledProcedureStep.procedure_id == exam.id)
    ).all()


def test_manual_booking_then_reschedule(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, ct2, code = ct
    day = next_weekday()
    exam = desk.exam(db, desk.patient(db), code)
    db.commit()
    exam_page = f"/exams/{exam.id}"
    post_form(clerk, f"{exam_page}/book",
              {"room_id": str(ct1.id), "day": day.isoformat(), "time": "11:00"},
              form_page=exam_page)  # fmt: skip
    step = refreshed(db, exam).steps[0]
    assert (step.room_id, step.start_at) == (ct1.id, at(day, 11))

    post_form(clerk, f"{exam_page}/reschedule",
              {"room_id": str(ct2.id), "start": at(day, 12, 30).isoformat()},
              form_page=exam_page)  # fmt: skip
    exam = refreshed(db, exam)
    assert len(exam.steps) == 1 and exam.steps[0].step_id == step.step_id
    assert (exam.steps[0].room_id, exam.steps[0].start_at) == (ct2.id, at(day, 12, 30))
    html = page(clerk.get(exam_page))
    assert "The exam is rescheduled." in html and "12:30–12:50" in html
    assert actions(db, "exam.reschedule")


def test_booking_needs_a_date_and_time(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, _ct2, code = ct
    exam = desk.exam(db, desk.patient(db), code)
    db.commit()
    response = post_form(clerk, f"/exams/{exam.id}/book", {"room_id": str(ct1.id)},
                         form_page=f"/exams/{exam.id}")  # fmt: skip
    assert "Give a date and a time." in page(clerk.get(response.headers["Location"]))
    assert refreshed(db, exam).status is ExamStatus.ORDERED


def test_cancel_needs_a_reason(db: Session, desk: FrontDesk, ct, clerk: FlaskClient) -> None:
    ct1, _ct2, code = ct
    exam = desk.booked(db, ct1, code, at(next_weekday(), 9))
    db.commit()
    exam_page = f"/exams/{exam.id}"
    response = post_form(clerk, f"{exam_page}/cancel", {"reason": "  "}, form_page=exam_page)
    assert "Give a reason for the cancellation." in page(clerk.get(response.headers["Location"]))
    assert refreshed(db, exam).status is ExamStatus.SCHEDULED

    post_form(clerk, f"{exam_page}/cancel", {"reason": "Patient asked"}, form_page=exam_page)
    assert refreshed(db, exam).status is ExamStatus.CANCELLED
    change = db.scalars(select(StatusChange).where(StatusChange.procedure_id == exam.id)
                        .order_by(StatusChange.id.desc())).first()  # fmt: skip
    assert change.reason == "Patient asked"
    db.commit()
    html = page(clerk.get(exam_page))
    assert "The exam is cancelled." in html and "Patient asked" in html
    assert f"{exam_page}/cancel" not in html  # a cancelled exam cannot be cancelled again


def test_no_show_sends_the_exam_back_to_booking(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, _ct2, code = ct
    exam = desk.booked(db, ct1, code, at(next_weekday(), 9))
    db.commit()
    exam_page = f"/exams/{exam.id}"
    assert f'action="{exam_page}/no-show"' in page(clerk.get(exam_page))
    post_form(clerk, f"{exam_page}/no-show", {}, form_page=exam_page)
    assert refreshed(db, exam).status is ExamStatus.NO_SHOW
    html = page(clerk.get(exam_page))
    assert f'action="{exam_page}/book"' in html and "This booking no longer holds its slot." in html


def test_refused_status_change_is_shown(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    _ct1, _ct2, code = ct
    exam = desk.exam(db, desk.patient(db), code)
    db.commit()
    response = post_form(clerk, f"/exams/{exam.id}/no-show", {}, form_page=f"/exams/{exam.id}")
    assert "cannot become No-show" in page(clerk.get(response.headers["Location"]))
    assert refreshed(db, exam).status is ExamStatus.ORDERED


# ---------------------------------------------------------------------------- requisition, week


def test_requisition_is_printable_and_audited(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, _ct2, code = ct
    day = next_weekday()
    exam = desk.booked(db, ct1, code, at(day, 9), patient=desk.patient(db, "Peña", "José"))
    db.commit()
    html = page(clerk.get(f"/exams/{exam.id}/requisition"))
    assert f'<span class="big mono">{exam.accession_number}</span>' in html
    assert "PEÑA, José" in html and "House, Gregory" in html and "09:00–09:20" in html
    assert "frontdesk.css" in html and "data-print" in html
    views = actions(db, "requisition.view")
    assert len(views) == 1 and views[0].patient_id == exam.order.patient_id


def test_calendar_shows_the_rooms_week(
    db: Session, desk: FrontDesk, ct, clerk: FlaskClient
) -> None:
    ct1, ct2, code = ct
    day = next_weekday()
    monday = day - timedelta(days=day.weekday())
    friday = monday + timedelta(days=4)
    if friday <= utcnow().astimezone(SITE.zone).date():
        monday, friday = monday + timedelta(days=7), friday + timedelta(days=7)
    first = desk.booked(db, ct1, code, at(friday, 8), patient=desk.patient(db, "Lundi", "Léa"))
    desk.booked(db, ct2, code, at(friday, 9), patient=desk.patient(db, "Other", "Room"))
    db.commit()
    html = page(clerk.get(f"/calendar/CT1?week={friday.isoformat()}"))
    assert "LUNDI, Léa" in html and "08:00–08:20" in html and "OTHER, Room" not in html
    assert f'href="/exams/{first.id}"' in html
    assert html.count('<section class="day') == 7 and html.count("Closed") == 2
    prev_week = (monday - timedelta(days=7)).isoformat()
    assert f"/calendar/CT1?week={prev_week}" in html
    assert actions(db, "calendar.view")
    assert clerk.get("/calendar/NOPE").status_code == 404


# ---------------------------------------------------------------------------- roles


@pytest.fixture
def booked_exam(db: Session, desk: FrontDesk, ct) -> RequestedProcedure:
    ct1, _ct2, code = ct
    exam = desk.booked(db, ct1, code, at(next_weekday(), 9))
    db.commit()
    return exam


@pytest.fixture
def signed_in_as(app: Flask, make_user) -> Iterator:
    def client_for(role: str) -> FlaskClient:
        client = app.test_client()
        sign_in(client, make_user(role))
        return client

    yield client_for


def test_readers_see_the_exam_without_desk_actions(
    db: Session, booked_exam: RequestedProcedure, signed_in_as
) -> None:
    technologist = signed_in_as("technologist")
    html = page(technologist.get(f"/exams/{booked_exam.id}"))
    assert booked_exam.accession_number in html
    assert "/check-in" not in html and "/reschedule" not in html and "/cancel" not in html
    assert technologist.get("/board").status_code == 200


def test_wrong_roles_are_refused(
    app: Flask, db: Session, booked_exam: RequestedProcedure, signed_in_as
) -> None:
    exam_page = f"/exams/{booked_exam.id}"
    billing, technologist = signed_in_as("billing"), signed_in_as("technologist")
    referrer = signed_in_as("referrer")
    assert billing.get("/board").status_code == 403
    assert billing.get("/calendar/CT1").status_code == 403
    assert billing.get(exam_page).status_code == 200  # billing reads patient data
    assert referrer.get(exam_page).status_code == 403
    assert referrer.get(f"{exam_page}/requisition").status_code == 403
    assert technologist.get("/orders/new").status_code == 403
    token = csrf_token(technologist, exam_page)
    for action in ("check-in", "no-show", "cancel", "book", "reschedule"):
        response = technologist.post(f"{exam_page}/{action}", data={"csrf_token": token})
        assert response.status_code == 403, action
    assert refreshed(db, booked_exam).status is ExamStatus.SCHEDULED
    assert db.scalar(select(func.count()).select_from(Patient)) == 1
