"""The technologist's screen: today's exams per room, the steps done by hand (start,
complete, discontinue), the live JSON rows, roles and audit."""

from __future__ import annotations

import json
import uuid
from datetime import date, time, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import scheduling, status
from ris.audit import Actor
from ris.db import utcnow
from ris.models import (
    AuditEvent,
    ExamStatus,
    Patient,
    ProcedureCode,
    RequestedProcedure,
    Room,
    StatusChange,
)
from tests.conftest import Account, csrf_token, sign_in
from tests.factories import ACTOR, SITE, FrontDesk, at

S = ExamStatus


@pytest.fixture
def desk(app: Flask) -> FrontDesk:
    app.config["TIMEZONE"] = "Europe/Madrid"  # the factories' site
    return FrontDesk(app)


@pytest.fixture
def rooms(db: Session, desk: FrontDesk) -> dict[str, tuple[Room, ProcedureCode]]:
    """CT1 and MR1, open around the clock every day, so that today always has slots."""
    hours = {"opens_at": time(0), "closes_at": time(0), "open_days": "1234567"}
    ct, mr = desk.room(db, "CT1", "CT", **hours), desk.room(db, "MR1", "MR", **hours)
    found = {"CT1": (ct, desk.code(db, "74177", "CT")), "MR1": (mr, desk.code(db, "70551", "MR"))}
    db.commit()
    return found


def today() -> date:
    return utcnow().astimezone(SITE.zone).date()


def book(
    db: Session, desk: FrontDesk, room: tuple[Room, ProcedureCode], day: date, hour: int,
    patient: Patient | None = None,
) -> RequestedProcedure:  # fmt: skip
    """An exam booked at ``hour`` local time on ``day``, whatever the time is now."""
    patient = patient or desk.patient(db, family=f"Room{room[0].code}{day.day}{hour}")
    exam = desk.exam(db, patient, room[1])
    start = at(day, hour)
    scheduling.book(db, ACTOR, SITE, exam, room[0], start, now=start)
    return exam


@pytest.fixture
def tech_account(make_user) -> Account:
    return make_user("technologist", username="tech1")


@pytest.fixture
def tech(app: Flask, tech_account: Account) -> FlaskClient:
    client = app.test_client()
    sign_in(client, tech_account)
    return client


def page(response) -> str:  # noqa: ANN001
    return response.get_data(as_text=True)


def section(html: str, code: str) -> str:
    """The part of the page that is one room's section."""
    start = html.index(f'<section class="room-day" data-room="{code}"')
    return html[start : html.index("</section>", start)]


# Each helper that reads through the test's session ends its transaction, so that SQLite's
# write lock is free for the next request.


def reloaded(db: Session, exam: RequestedProcedure) -> RequestedProcedure:
    found = db.scalars(select(RequestedProcedure).where(RequestedProcedure.id == exam.id)
                       .execution_options(populate_existing=True)).one()  # fmt: skip
    db.commit()
    return found


def events(db: Session, action: str) -> list[AuditEvent]:
    found = list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))
    db.commit()
    return found


def post_step(client: FlaskClient, exam: RequestedProcedure, step: str, **data: str):  # noqa: ANN201
    token = csrf_token(client, "/worklist/")
    form = {"csrf_token": token, "next": "/worklist/?room=CT1", **data}
    return client.post(f"/worklist/exams/{exam.id}/{step}", data=form)


# ---------------------------------------------------------------------------- room list


def test_room_list_shows_todays_exams_per_room_and_not_other_days(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    day = today()
    allergic = desk.patient(db, "Peña", "José", contrast_allergy=True)
    ct_exam = book(db, desk, rooms["CT1"], day, 1, patient=allergic)
    mr_exam = book(db, desk, rooms["MR1"], day, 2)
    tomorrow = book(db, desk, rooms["CT1"], day + timedelta(days=1), 1)
    yesterday = book(db, desk, rooms["CT1"], day - timedelta(days=1), 3)
    cancelled = book(db, desk, rooms["CT1"], day, 4)
    scheduling.cancel(db, ACTOR, cancelled, "Patient called")
    db.commit()

    html = page(tech.get("/worklist/"))
    ct, mr = section(html, "CT1"), section(html, "MR1")
    assert ct_exam.accession_number in ct and ct_exam.accession_number not in mr
    assert mr_exam.accession_number in mr and mr_exam.accession_number not in ct
    for absent in (tomorrow, yesterday, cancelled):
        assert absent.accession_number not in html
    assert "PEÑA, José" in ct and allergic.mrn in ct and "Contrast allergy" in ct
    assert "01:00–01:20" in ct and "Scheduled" in ct and "status-scheduled" in ct
    assert f'action="/worklist/exams/{ct_exam.id}/start"' in ct
    assert f'action="/worklist/exams/{ct_exam.id}/complete"' not in ct

    one_room = page(tech.get("/worklist/?room=MR1"))
    assert mr_exam.accession_number in one_room and ct_exam.accession_number not in one_room
    assert 'data-room="CT1"' not in one_room
    views = events(db, "rooms.view")
    assert [json.loads(v.detail)["room"] for v in views] == [None, "MR1"]
    assert views[0].actor == "tech1" and json.loads(views[0].detail)["exams"] == 2


def test_an_unknown_room_shows_every_room_with_a_message(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    html = page(tech.get("/worklist/?room=XX9"))
    assert "No room XX9" in html and 'data-room="CT1"' in html and 'data-room="MR1"' in html
    assert "No exams in this room today." in html


def test_the_technologist_lands_on_the_room_list(app: Flask, tech_account: Account, rooms) -> None:
    client = app.test_client()
    response = sign_in(client, tech_account)
    assert response.status_code == 302
    home = client.get("/")
    assert home.headers["Location"] == "/worklist/"
    html = page(client.get("/worklist/"))
    assert '<a href="/worklist/" aria-current="page">Rooms today</a>' in html


def test_wait_since_arrival_is_shown(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    scheduling.check_in(db, ACTOR, exam)
    db.commit()
    ct = section(page(tech.get("/worklist/")), "CT1")
    assert "Arrived" in ct and 'class="wait wait-ok"' in ct and "0 min" in ct


# ---------------------------------------------------------------------------- steps by hand


def test_start_then_complete_by_hand(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient, tech_account: Account
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    db.commit()

    response = post_step(tech, exam, "start")
    assert response.status_code == 302 and response.headers["Location"] == "/worklist/?room=CT1"
    assert reloaded(db, exam).status is S.IN_PROGRESS
    assert "The exam is started." in page(tech.get("/worklist/?room=CT1"))

    post_step(tech, exam, "complete")
    assert reloaded(db, exam).status is S.COMPLETED
    history = list(db.scalars(select(StatusChange).where(StatusChange.procedure_id == exam.id)
                              .order_by(StatusChange.id)))  # fmt: skip
    db.commit()
    assert [(h.to_status, h.actor) for h in history[-2:]] == [
        (S.IN_PROGRESS, "tech1"),
        (S.COMPLETED, "tech1"),
    ]
    assert history[-1].user_id == tech_account.id
    for action in ("exam.in_progress", "exam.completed"):
        (event,) = events(db, action)
        assert event.actor == "tech1" and event.object_id == str(exam.id)


def test_start_from_arrived_and_discontinue_with_a_reason(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    scheduling.check_in(db, ACTOR, exam)
    db.commit()
    post_step(tech, exam, "start")
    assert reloaded(db, exam).status is S.IN_PROGRESS

    post_step(tech, exam, "discontinue", reason="Patient felt unwell")
    assert reloaded(db, exam).status is S.DISCONTINUED
    last = db.scalars(select(StatusChange).where(StatusChange.procedure_id == exam.id)
                      .order_by(StatusChange.id.desc())).first()  # fmt: skip
    db.commit()
    assert last is not None and last.reason == "Patient felt unwell"
    (event,) = events(db, "exam.discontinued")
    assert "Patient felt unwell" in (event.detail or "")


def test_illegal_steps_are_refused_with_a_message(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    db.commit()

    post_step(tech, exam, "complete")  # scheduled -> completed skips a rung
    assert reloaded(db, exam).status is S.SCHEDULED
    html = page(tech.get("/worklist/"))
    assert "An exam that is Scheduled cannot become Completed." in html

    post_step(tech, exam, "discontinue", reason="   ")
    assert reloaded(db, exam).status is S.SCHEDULED
    assert "Give a reason for stopping the exam." in page(tech.get("/worklist/"))

    post_step(tech, exam, "start")
    post_step(tech, exam, "complete")
    post_step(tech, exam, "start")  # completed -> in progress
    assert reloaded(db, exam).status is S.COMPLETED
    assert "An exam that is Completed cannot become In progress." in page(tech.get("/worklist/"))
    assert len(events(db, "exam.in_progress")) == 1


def test_a_step_without_the_csrf_token_changes_nothing(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    db.commit()
    response = tech.post(f"/worklist/exams/{exam.id}/start", data={})
    assert response.status_code in (302, 400)
    assert reloaded(db, exam).status is S.SCHEDULED


def test_a_step_on_a_missing_exam_is_404(rooms, tech: FlaskClient) -> None:
    token = csrf_token(tech, "/worklist/")
    assert tech.post("/worklist/exams/999999/start", data={"csrf_token": token}).status_code == 404


# ---------------------------------------------------------------------------- live rows


def test_the_json_rows_reflect_a_change_made_elsewhere(
    app: Flask, db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    db.commit()

    before = tech.get("/worklist/rows", headers={"Accept": "application/json"})
    assert before.status_code == 200 and before.is_json
    (row,) = [r for room in before.json["rooms"] if room["code"] == "CT1" for r in room["rows"]]
    assert row["status"] == "scheduled" and row["accession"] == exam.accession_number
    assert [name for name, _href in row["steps"]] == ["start"]

    # The scanner's MPPS (or another screen) moves the exam on.
    found = reloaded(db, exam)
    status.change_status(db, Actor.dicom("CT1_AE", "127.0.0.1"), found, S.IN_PROGRESS)
    db.commit()

    after = tech.get("/worklist/rows?room=CT1").json
    assert after["room"] == "CT1" and [room["code"] for room in after["rooms"]] == ["CT1"]
    (row,) = after["rooms"][0]["rows"]
    assert row["status"] == "in_progress" and row["status_label"] == "In progress"
    assert row["steps"] == [["complete", f"/worklist/exams/{exam.id}/complete"],
                            ["discontinue", f"/worklist/exams/{exam.id}/discontinue"]]  # fmt: skip
    refreshes = events(db, "rooms.refresh")
    assert len(refreshes) == 2 and refreshes[0].actor == "tech1"


def test_the_page_carries_its_rows_for_the_script(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    db.commit()
    html = page(tech.get("/worklist/"))
    marker = '<script type="application/json" data-initial>'
    start = html.index(marker) + len(marker)
    island = json.loads(html[start : html.index("</script>", start)])
    rows = {room["code"]: room["rows"] for room in island["rooms"]}
    assert [r["exam_id"] for r in rows["CT1"]] == [exam.id] and rows["MR1"] == []
    assert "<template data-row-template>" in html and 'data-step-template="start"' in html


# ---------------------------------------------------------------------------- roles


def test_the_front_desk_sees_the_rooms_but_cannot_do_steps(
    app: Flask, db: Session, desk: FrontDesk, rooms, make_user
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    db.commit()
    clerk = app.test_client()
    sign_in(clerk, make_user("front_desk"))
    html = page(clerk.get("/worklist/"))
    assert exam.accession_number in html
    assert f'action="/worklist/exams/{exam.id}/start"' not in html
    token = csrf_token(clerk, "/worklist/")
    assert clerk.post(f"/worklist/exams/{exam.id}/start",
                      data={"csrf_token": token}).status_code == 403  # fmt: skip
    assert reloaded(db, exam).status is S.SCHEDULED
    assert clerk.get("/worklist/rows").json["rooms"][0]["rows"][0]["steps"] == []


@pytest.mark.parametrize("role", ["radiologist", "billing", "referrer", "transcriptionist"])
def test_other_roles_are_refused(app: Flask, make_user, role: str) -> None:
    client = app.test_client()
    sign_in(client, make_user(role))
    assert client.get("/worklist/").status_code == 403
    assert client.get("/worklist/rows", headers={"Accept": "application/json"}).status_code == 403


def test_anonymous_json_gets_401(client: FlaskClient) -> None:
    response = client.get("/worklist/rows", headers={"Accept": "application/json"})
    assert response.status_code == 401 and response.is_json


# ---------------------------------------------------------------------------- unscheduled MPPS


def unscheduled_step(db: Session, patient_id: str = "", name: str = "", **extra: object):  # noqa: ANN201
    """An MPPS N-CREATE that names no worklist entry, recorded through the MPPS service."""
    from worklist import mpps

    report = mpps.PerformedStepReport(
        sop_instance_uid=f"1.2.826.0.1.3680043.10.1.{uuid.uuid4().int % 10**12}",
        calling_ae="CT1_AE", started_at=utcnow(), references=[mpps.ScheduledReference()],
        patient_name=name, patient_id=patient_id, modality="CT", station_ae_title="CT1_AE",
        description="Thorax", **extra,
    )  # fmt: skip
    pps = mpps.create_performed_step(db, Actor.dicom("CT1_AE", "127.0.0.1"), report)
    db.commit()
    return pps


def test_an_unscheduled_step_is_linked_to_the_patients_exam(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    patient = desk.patient(db, "Durand", "Gaëlle")
    exam = book(db, desk, rooms["CT1"], today(), 1, patient=patient)
    db.commit()
    pps = unscheduled_step(db, patient_id=patient.mrn, name="DURAND^GAELLE")
    assert pps.procedure_id is None

    listing = page(tech.get("/worklist/unscheduled"))
    assert f'href="/worklist/unscheduled/{pps.id}"' in listing and "DURAND, GAELLE" in listing
    html = page(tech.get(f"/worklist/unscheduled/{pps.id}"))
    assert "What the modality sent" in html and exam.accession_number in html
    assert f'action="/worklist/unscheduled/{pps.id}/link"' in html  # each candidate links here
    assert "Today&#39;s exams in CT1" in html or "Today's exams in CT1" in html

    token = csrf_token(tech, f"/worklist/unscheduled/{pps.id}")
    response = tech.post(f"/worklist/unscheduled/{pps.id}/link",
                         data={"csrf_token": token, "exam_id": exam.id})  # fmt: skip
    assert response.status_code == 302 and response.headers["Location"] == "/worklist/unscheduled"
    assert reloaded(db, exam).status is S.IN_PROGRESS  # the exam follows the performed step
    db.refresh(pps)
    linked = pps
    assert linked is not None and linked.procedure_id == exam.id and linked.reconciled_by == "tech1"
    db.commit()
    (event,) = events(db, "mpps.reconcile")
    assert event.actor == "tech1" and event.patient_id == patient.id
    after = page(tech.get("/worklist/unscheduled"))
    assert f"/worklist/unscheduled/{pps.id}" not in after
    assert f"linked to exam {exam.accession_number}" in after
    assert len(events(db, "mpps.unscheduled.view")) == 2
    assert len(events(db, "mpps.reconcile.view")) == 2  # the page, and the token fetched from it


def test_the_technologist_searches_another_patient(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    other = desk.patient(db, "Müller", "Anna")
    exam = desk.exam(db, other, rooms["MR1"][1])  # ordered, not booked yet
    db.commit()
    pps = unscheduled_step(db, patient_id="UNKNOWN-1", name="MULLER^A")
    html = page(tech.get(f"/worklist/unscheduled/{pps.id}?q=muller"))
    assert exam.accession_number in html and "Not booked" in html
    (view,) = events(db, "mpps.reconcile.view")
    assert json.loads(view.detail)["query"] == "muller"
    assert json.loads(view.detail)["exams"] == [exam.id]
    nothing = page(tech.get(f"/worklist/unscheduled/{pps.id}?q=zzzz"))
    assert "No patient matches" in nothing


def test_linking_to_a_cancelled_exam_is_refused(
    db: Session, desk: FrontDesk, rooms, tech: FlaskClient
) -> None:
    exam = book(db, desk, rooms["CT1"], today(), 1)
    scheduling.cancel(db, ACTOR, exam, "Duplicate order")
    db.commit()
    pps = unscheduled_step(db)
    token = csrf_token(tech, f"/worklist/unscheduled/{pps.id}")
    response = tech.post(f"/worklist/unscheduled/{pps.id}/link",
                         data={"csrf_token": token, "exam_id": exam.id})  # fmt: skip
    assert response.headers["Location"] == f"/worklist/unscheduled/{pps.id}"
    assert reloaded(db, exam).status is S.CANCELLED
    assert events(db, "mpps.reconcile") == []
    assert f'href="/worklist/unscheduled/{pps.id}"' in page(tech.get("/worklist/unscheduled"))

    missing = tech.post(f"/worklist/unscheduled/{pps.id}/link",
                        data={"csrf_token": token, "exam_id": 999999})  # fmt: skip
    assert missing.headers["Location"] == f"/worklist/unscheduled/{pps.id}"
    assert "No such exam." in page(tech.get("/worklist/unscheduled"))
    assert tech.get("/worklist/unscheduled/999999").status_code == 404


def test_only_technologists_and_admins_reconcile(app: Flask, db: Session, make_user) -> None:
    pps = unscheduled_step(db)
    for role, allowed in (("front_desk", False), ("radiologist", False), ("admin", True)):
        client = app.test_client()
        sign_in(client, make_user(role))
        expected = 200 if allowed else 403
        assert client.get("/worklist/unscheduled").status_code == expected, role
        assert client.get(f"/worklist/unscheduled/{pps.id}").status_code == expected, role
