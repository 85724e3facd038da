"""The technologist's unmatched studies: a study the archive stored without an exam is
listed, shown with its candidate exams, linked by hand (or refused), audited; roles."""

from __future__ import annotations

import json
from datetime import date, time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacs import storage
from pacs.models import Study
from ris import scheduling
from ris.db import transaction, utcnow
from ris.models import AuditEvent, Patient, ProcedureCode, RequestedProcedure, Room
from ris.site import site_of
from tests.conftest import Account, csrf_token, sign_in
from tests.factories import ACTOR, SITE, FrontDesk, at
from tests.pacs.dicom_data import make_dataset, received


@pytest.fixture
def desk(app: Flask) -> FrontDesk:
    app.config["TIMEZONE"] = "Europe/Madrid"  # the factories' site
    return FrontDesk(app)


@pytest.fixture
def ct_room(db: Session, desk: FrontDesk) -> tuple[Room, ProcedureCode]:
    """CT1, open around the clock every day, so that today always has slots."""
    hours = {"opens_at": time(0), "closes_at": time(0), "open_days": "1234567"}
    room = desk.room(db, "CT1", "CT", **hours)
    found = (room, desk.code(db, "74177", "CT"))
    db.commit()
    return found


@pytest.fixture
def tech_account(make_user) -> Account:
    return make_user("technologist", username="tech1")


@pytest.fixture
def tech(app: Flask, tech_account: Account) -> FlaskClient:
    client = app.test_client()
    sign_in(client, tech_account)
    return client


def today() -> date:
    return utcnow().astimezone(SITE.zone).date()


def book_today(
    db: Session, desk: FrontDesk, room: tuple[Room, ProcedureCode], patient: Patient,
    hour: int = 1,
) -> RequestedProcedure:  # fmt: skip
    """An exam booked at ``hour`` local time today, whatever the time is now."""
    exam = desk.exam(db, patient, room[1])
    start = at(today(), hour)
    scheduling.book(db, ACTOR, SITE, exam, room[0], start, now=start)
    db.commit()
    return exam


def store_study(app: Flask, **fields: str) -> Study:
    """One CT image stored through the archive's store service, as the C-STORE door does."""
    root = storage.archive_root(app.config["DATA_DIR"])
    incoming = received(make_dataset(**fields), calling_ae="CT1_AE")
    with transaction(app) as db:
        result = storage.store_instance(db, root, incoming, zone=site_of(app).zone)
        assert result.new_study
        study = db.scalars(select(Study).order_by(Study.id.desc())).first()
        assert study is not None
        db.expunge(study)
    return study


def page(response) -> str:  # noqa: ANN001
    return response.get_data(as_text=True)


# Each helper that reads through the test's session ends its transaction, so that SQLite's
# write lock is free for the next request.


def study_row(db: Session, study_id: int) -> Study:
    found = db.scalars(select(Study).where(Study.id == study_id)
                       .execution_options(populate_existing=True)).one()  # fmt: skip
    db.commit()
    return found


def events(db: Session, action: str) -> list[AuditEvent]:
    found = list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))
    db.commit()
    return found


def post_link(client: FlaskClient, study: Study, exam_id: int, form_page: str = ""):  # noqa: ANN201
    """Post the link; the token comes from the study's page, or ``form_page`` once the
    study's page redirects (a second tab still showing a study linked meanwhile)."""
    token = csrf_token(client, form_page or f"/archive/unmatched/{study.id}")
    return client.post(f"/archive/unmatched/{study.id}/link",
                       data={"csrf_token": token, "exam_id": exam_id})  # fmt: skip


def test_an_unmatched_study_is_listed_and_linked_to_todays_exam(
    app: Flask, db: Session, desk: FrontDesk, ct_room, tech: FlaskClient
) -> None:
    patient = desk.patient(db, "Núñez", "Inés")
    exam = book_today(db, desk, ct_room, patient)
    study = store_study(app, accession="UNKNOWN1", patient_id="OTHER", name="PEREZ^ANA")
    assert study.procedure_id is None

    listing = page(tech.get("/archive/unmatched"))
    assert f'href="/archive/unmatched/{study.id}"' in listing
    assert "PEREZ, ANA" in listing and "UNKNOWN1" in listing and "OTHER" in listing
    assert "2026-11-30 10:15" in listing  # StudyDate/StudyTime in the site's zone
    assert "CT ABDOMEN" in listing and "CT1_AE" in listing and "1 · 1" in listing

    html = page(tech.get(f"/archive/unmatched/{study.id}"))
    assert "What the images say" in html and study.study_instance_uid in html
    assert "Today&#39;s exams in CT1" in html or "Today's exams in CT1" in html
    assert exam.accession_number in html and "AXIAL" in html  # the exam, the series
    assert f'action="/archive/unmatched/{study.id}/link"' in html  # each candidate links here

    response = post_link(tech, study, exam.id)
    assert response.status_code == 302 and response.headers["Location"] == "/archive/unmatched"
    linked = study_row(db, study.id)
    assert linked.procedure_id == exam.id and linked.ris_patient_id == patient.id
    assert linked.accession_number == exam.accession_number and linked.linked_by == "tech1"
    (event,) = events(db, "archive.study_linked")
    assert event.actor == "tech1" and event.patient_id == patient.id
    assert event.object_id == study.study_instance_uid

    after = page(tech.get("/archive/unmatched"))
    assert f"/archive/unmatched/{study.id}" not in after
    assert f"linked to exam {exam.accession_number}" in after
    assert "Every study in the archive belongs to an exam." in after
    assert len(events(db, "archive.unmatched.view")) == 2
    assert len(events(db, "archive.unmatched.study.view")) == 2  # the page, and the token
    # A linked study's page sends back to the list.
    again = tech.get(f"/archive/unmatched/{study.id}")
    assert again.status_code == 302 and again.headers["Location"] == "/archive/unmatched"


def test_candidates_by_patient_id_sent_and_by_search(
    app: Flask, db: Session, desk: FrontDesk, ct_room, tech: FlaskClient
) -> None:
    patient = desk.patient(db, "Durand", "Gaëlle")
    exam = desk.exam(db, patient, ct_room[1])  # ordered, not booked
    other = desk.patient(db, "Müller", "Anna")
    other_exam = desk.exam(db, other, ct_room[1])
    db.commit()
    study = store_study(app, accession="NOPE", patient_id=patient.mrn, name="X^Y")

    html = page(tech.get(f"/archive/unmatched/{study.id}"))
    assert "Exams of the patients matching what the images say" in html
    assert exam.accession_number in html and "Not booked" in html
    assert other_exam.accession_number not in html
    assert "No exams in CT1 today." in html
    (view,) = events(db, "archive.unmatched.study.view")
    assert json.loads(view.detail)["exams"] == [exam.id]
    assert view.object_id == study.study_instance_uid

    found = page(tech.get(f"/archive/unmatched/{study.id}?q=muller"))
    assert other_exam.accession_number in found and "Exams of the patients found" in found
    nothing = page(tech.get(f"/archive/unmatched/{study.id}?q=zzzz"))
    assert "No patient matches" in nothing


def test_refusals_change_nothing(
    app: Flask, db: Session, desk: FrontDesk, ct_room, tech: FlaskClient
) -> None:
    patient = desk.patient(db, "Peña", "José")
    cancelled = book_today(db, desk, ct_room, patient)
    scheduling.cancel(db, ACTOR, cancelled, "Duplicate order")
    open_exam = book_today(db, desk, ct_room, patient, hour=2)
    other_exam = book_today(db, desk, ct_room, desk.patient(db, "Roux", "Léa"), hour=3)
    study = store_study(app, accession="UNKNOWN2", patient_id=patient.mrn)
    back = f"/archive/unmatched/{study.id}"

    response = post_link(tech, study, cancelled.id)
    assert response.status_code == 302 and response.headers["Location"] == back
    assert "This exam is cancelled" in page(tech.get("/archive/unmatched"))
    missing = post_link(tech, study, 999999)
    assert missing.headers["Location"] == back
    assert "No such exam." in page(tech.get("/archive/unmatched"))
    no_exam = post_link(tech, study, 0)
    assert no_exam.headers["Location"] == back
    no_token = tech.post(f"{back}/link", data={"exam_id": open_exam.id})
    assert no_token.status_code == 400
    assert study_row(db, study.id).procedure_id is None
    assert events(db, "archive.study_linked") == []

    assert post_link(tech, study, open_exam.id).headers["Location"] == "/archive/unmatched"
    refused = post_link(tech, study, other_exam.id, "/account")
    assert refused.headers["Location"] == back
    assert "already linked to another exam" in page(tech.get("/archive/unmatched"))
    assert study_row(db, study.id).procedure_id == open_exam.id
    assert len(events(db, "archive.study_linked")) == 1
    assert tech.get("/archive/unmatched/999999").status_code == 404
    assert post_link(tech, study, open_exam.id, "/account").status_code == 302


def test_only_technologists_and_admins_see_unmatched_studies(
    app: Flask, make_user, desk: FrontDesk
) -> None:
    study = store_study(app, accession="UNKNOWN3")
    for role, allowed in (("front_desk", False), ("radiologist", False), ("admin", True),
                          ("technologist", True)):  # fmt: skip
        client = app.test_client()
        sign_in(client, make_user(role))
        expected = 200 if allowed else 403
        assert client.get("/archive/unmatched").status_code == expected, role
        assert client.get(f"/archive/unmatched/{study.id}").status_code == expected, role
        home = page(client.get("/account"))
        assert ('href="/archive/unmatched"' in home) is allowed, role
    refused = app.test_client()
    sign_in(refused, make_user("front_desk"))
    token = csrf_token(refused, "/account")
    response = refused.post(f"/archive/unmatched/{study.id}/link",
                            data={"csrf_token": token, "exam_id": 1})  # fmt: skip
    assert response.status_code == 403


def test_the_menu_entry_follows_unscheduled_exams(tech: FlaskClient) -> None:
    html = page(tech.get("/archive/unmatched"))
    assert html.index('href="/worklist/unscheduled"') < html.index('href="/archive/unmatched"')


def test_anonymous_is_sent_to_sign_in(app: Flask, client: FlaskClient) -> None:
    study = store_study(app)
    for path in ("/archive/unmatched", f"/archive/unmatched/{study.id}"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    token = csrf_token(client, "/login")
    posted = client.post(f"/archive/unmatched/{study.id}/link",
                         data={"csrf_token": token, "exam_id": 1})  # fmt: skip
    assert posted.status_code == 401  # a form post is not redirected: nothing to resume
    with transaction(app) as db:
        assert db.scalar(select(Study.procedure_id)) is None


def test_the_pages_speak_spanish_and_french(app: Flask, tech: FlaskClient) -> None:
    study = store_study(app, accession="UNKNOWN4")
    spanish = {"Accept-Language": "es-ES"}
    assert "Estudios sin vincular" in page(tech.get("/archive/unmatched", headers=spanish))
    detail = page(tech.get(f"/archive/unmatched/{study.id}", headers={"Accept-Language": "fr"}))
    assert "Ce que disent les images" in detail
