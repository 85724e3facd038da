"""The patient screens: search, registration, edit, the patient page, merge and undo."""

from __future__ import annotations

import json
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ris.db import transaction
from ris.models import AuditEvent, MRISafety, Order, Patient, PatientMerge, Sex
from tests.conftest import csrf_token, post_form, sign_in
from tests.factories import FrontDesk, at, next_weekday


@pytest.fixture
def front(app: Flask, make_user) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, make_user("front_desk", username="desk")).status_code == 302
    return client


@pytest.fixture
def admin(app: Flask, make_user) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, make_user("admin", username="chief")).status_code == 302
    return client


def _events(app: Flask, action: str) -> list[AuditEvent]:
    with transaction(app) as db:
        rows = db.scalars(select(AuditEvent).where(AuditEvent.action == action)).all()
        db.expunge_all()
        return list(rows)


def _patients(app: Flask) -> int:
    with transaction(app) as db:
        return db.scalar(select(func.count()).select_from(Patient)) or 0


def _form(**values: object) -> dict[str, object]:
    data: dict[str, object] = {"family_name": "", "given_name": "", "sex": "",
                               "pregnancy_status": "", "mri_safety": "not_screened"}  # fmt: skip
    data.update(values)
    return data


# Search ----------------------------------------------------------------------------------


def test_empty_search_shows_only_the_form(app: Flask, front: FlaskClient) -> None:
    page = front.get("/patients").get_data(as_text=True)
    assert 'name="q"' in page and "data-search" in page and "autofocus" in page
    assert "Register a patient" in page and "<table" not in page
    assert "patients.js" in page
    assert _events(app, "patient.search") == []


def test_search_ignores_accents_and_case(
    app: Flask, db: Session, desk: FrontDesk, front: FlaskClient
) -> None:
    pena = desk.patient(db, "Peña", "José")
    gaelle = desk.patient(db, "Durand", "Gaëlle")
    db.commit()
    page = front.get("/patients?q=pena").get_data(as_text=True)
    assert "PEÑA, José" in page and f"/patients/{pena.id}" in page
    assert "DURAND" not in page and "data-row-link" in page
    page = front.get("/patients?q=GAELLE").get_data(as_text=True)
    assert "DURAND, Gaëlle" in page and f"/patients/{gaelle.id}" in page
    assert "1970-01-01" in page and pena.mrn not in page
    queries = [json.loads(e.detail)["query"] for e in _events(app, "patient.search")]
    assert queries == ["pena", "GAELLE"]
    assert all(e.actor == "desk" for e in _events(app, "patient.search"))


def test_search_by_mrn_and_accession(db: Session, desk: FrontDesk, front: FlaskClient) -> None:
    patient = desk.patient(db, "Martin", "Ana")
    desk.patient(db, "Other", "Person")
    exam = desk.exam(db, patient, desk.code(db))
    db.commit()
    for query in (patient.mrn, exam.accession_number):
        page = front.get(f"/patients?q={query}").get_data(as_text=True)
        assert "MARTIN, Ana" in page and "OTHER" not in page, query
    assert "No patient matches" in front.get("/patients?q=nobody").get_data(as_text=True)


def test_search_shows_alert_badges(db: Session, desk: FrontDesk, front: FlaskClient) -> None:
    desk.patient(db, "Alerta", "Eva", contrast_allergy=True, mri_safety=MRISafety.UNSAFE)
    db.commit()
    page = front.get("/patients?q=alerta").get_data(as_text=True)
    assert "Contrast allergy" in page and "MR unsafe" in page


# Registration and edit -------------------------------------------------------------------


def test_registration_generates_an_mrn(app: Flask, front: FlaskClient) -> None:
    response = post_form(front, "/patients/new", _form(
        family_name="Núñez", given_name="Lucía", birth_date="1985-03-04", sex="F",
        phone="+34 600 000 000", email="lucia@example.org", city="Madrid",
        insurance_payer="Sanitas", insurance_member_id="S-1", contrast_allergy="y",
        pregnancy_status="2", mri_safety="conditional", medical_alerts="Pacemaker",
    ))  # fmt: skip
    assert response.status_code == 302
    with transaction(app) as db:
        patient = db.scalars(select(Patient)).one()
        assert response.headers["Location"] == f"/patients/{patient.id}"
        assert patient.mrn.startswith("PL") and patient.mrn_issuer == "PLACA"
        assert (patient.family_name, patient.given_name, patient.sex) == (
            "Núñez",
            "Lucía",
            Sex.FEMALE,
        )
        assert patient.birth_date == date(1985, 3, 4) and patient.contrast_allergy
        assert patient.mri_safety is MRISafety.CONDITIONAL and patient.medical_alerts
        assert patient.email == "lucia@example.org" and patient.middle_name == ""
    assert len(_events(app, "patient.create")) == 1


def test_registration_under_the_his_mrn_refuses_a_duplicate(app: Flask, front: FlaskClient) -> None:
    his = _form(family_name="Dupont", mrn="H-42", mrn_issuer="HIS")
    assert post_form(front, "/patients/new", his).status_code == 302
    response = post_form(front, "/patients/new", his)
    assert response.status_code == 422
    assert "The MRN H-42 already exists." in response.get_data(as_text=True)
    with transaction(app) as db:
        patient = db.scalars(select(Patient)).one()
        assert (patient.mrn, patient.mrn_issuer) == ("H-42", "HIS")


def test_registration_errors_are_shown_and_nothing_is_saved(app: Flask, front: FlaskClient) -> None:
    future = (date.today() + timedelta(days=2)).isoformat()
    response = post_form(front, "/patients/new", _form(
        family_name="", given_name="Ana", birth_date=future, email="not-an-address",
    ))  # fmt: skip
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "This field is required." in page
    assert "The birth date is in the future." in page
    assert "This is not an e-mail address." in page
    assert 'value="Ana"' in page  # what was typed is kept
    response = post_form(front, "/patients/new", _form(family_name="Bad^Name"))
    assert response.status_code == 422
    assert "A name may not contain" in response.get_data(as_text=True)
    assert _patients(app) == 0 and _events(app, "patient.create") == []


def test_edit_is_audited(app: Flask, db: Session, desk: FrontDesk, front: FlaskClient) -> None:
    patient = desk.patient(db, "Peña", "José", phone="111")
    db.commit()
    form_page = front.get(f"/patients/{patient.id}/edit").get_data(as_text=True)
    assert 'value="Peña"' in form_page and 'value="111"' in form_page
    response = post_form(front, f"/patients/{patient.id}/edit", _form(
        family_name="Peña", given_name="José", birth_date="1970-01-01", sex="M", phone="222",
        contrast_allergy="y",
    ))  # fmt: skip
    assert response.status_code == 302
    with transaction(app) as session:
        saved = session.get(Patient, patient.id)
        assert saved.phone == "222" and saved.contrast_allergy
    (event,) = _events(app, "patient.update")
    assert event.actor == "desk" and event.patient_id == patient.id
    assert json.loads(event.detail)["changed"] == ["contrast_allergy", "phone"]


def test_edit_errors_change_nothing(
    app: Flask, db: Session, desk: FrontDesk, front: FlaskClient
) -> None:
    patient = desk.patient(db, "Peña", "José")
    db.commit()
    response = post_form(front, f"/patients/{patient.id}/edit", _form(family_name=""))
    assert response.status_code == 422
    with transaction(app) as session:
        assert session.get(Patient, patient.id).family_name == "Peña"
    assert _events(app, "patient.update") == []


# The patient page ------------------------------------------------------------------------


def test_patient_page_shows_exams_and_is_audited(
    app: Flask, db: Session, desk: FrontDesk, front: FlaskClient
) -> None:
    room = desk.room(db, "CT1", "CT")
    code = desk.code(db, "74177", "CT", rooms=["CT1"])
    patient = desk.patient(db, "Peña", "José", contrast_allergy=True)
    start = at(next_weekday(), 9)
    booked = desk.booked(db, room, code, start, patient=patient)
    waiting = desk.exam(db, patient, code)
    db.commit()
    page = front.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "PEÑA, José" in page and "Contrast allergy" in page
    assert booked.accession_number in page and waiting.accession_number in page
    assert "CT exam 74177" in page and "Scheduled" in page and "Ordered" in page
    shown = start.astimezone(ZoneInfo(app.config["TIMEZONE"])).strftime("%Y-%m-%d %H:%M")
    assert shown in page and ">CT1<" in page
    # Newest order first: the unbooked exam was ordered last.
    assert page.index(waiting.accession_number) < page.index(booked.accession_number)
    exam_link = f'href="/exams/{booked.id}"'
    assert (exam_link in page) == ("frontdesk.exam" in app.view_functions)
    new_order = f"/orders/new?patient={patient.id}"
    assert (new_order in page) == ("frontdesk.new_order" in app.view_functions)
    (event,) = _events(app, "patient.view")
    assert event.patient_id == patient.id and event.actor == "desk"


def test_readers_see_the_page_without_write_buttons(
    app: Flask, db: Session, desk: FrontDesk, make_user
) -> None:
    patient = desk.patient(db, "Peña", "José")
    db.commit()
    client = app.test_client()
    sign_in(client, make_user("radiologist"))
    page = client.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "PEÑA, José" in page and "/edit" not in page and "/merge" not in page
    assert client.get(f"/patients/{patient.id}/edit").status_code == 403
    assert client.get("/patients/999999").status_code == 404


# Merge -----------------------------------------------------------------------------------


def test_merge_and_undo(
    app: Flask, db: Session, desk: FrontDesk, front: FlaskClient, admin: FlaskClient
) -> None:
    code = desk.code(db)
    surviving = desk.patient(db, "Peña", "José")
    duplicate = desk.patient(db, "Pena", "Jose")
    order = desk.order(db, duplicate, code)
    db.commit()
    merge_page = f"/patients/{surviving.id}/merge"

    found = front.get(f"{merge_page}?q=pena").get_data(as_text=True)
    assert f"duplicate={duplicate.id}" in found and f"duplicate={surviving.id}" not in found
    compare = front.get(f"{merge_page}?duplicate={duplicate.id}").get_data(as_text=True)
    assert surviving.mrn in compare and duplicate.mrn in compare and "Surviving record" in compare

    token = csrf_token(front, f"{merge_page}?duplicate={duplicate.id}")
    response = front.post(merge_page, data={"merged_id": duplicate.id, "csrf_token": token})
    assert response.status_code == 302
    with transaction(app) as session:
        assert session.get(Order, order.id).patient_id == surviving.id
        assert session.get(Patient, duplicate.id).merged_into_id == surviving.id
        merge_id = session.scalars(select(PatientMerge.id)).one()
    assert len(_events(app, "patient.merge")) == 2

    merged_page = front.get(f"/patients/{duplicate.id}").get_data(as_text=True)
    assert "merged into" in merged_page and f'href="/patients/{surviving.id}"' in merged_page
    page = front.get(f"/patients/{surviving.id}").get_data(as_text=True)
    assert order.procedures[0].accession_number in page and duplicate.mrn in page
    assert "Undo merge" not in page

    undo = f"/patients/merges/{merge_id}/undo"
    assert front.post(undo, data={"csrf_token": csrf_token(front, merge_page)}).status_code == 403
    with transaction(app) as session:
        assert session.get(Order, order.id).patient_id == surviving.id

    page = admin.get(f"/patients/{surviving.id}").get_data(as_text=True)
    assert "Undo merge" in page
    token = csrf_token(admin, f"/patients/{surviving.id}")
    assert admin.post(undo, data={"csrf_token": token}).status_code == 302
    with transaction(app) as session:
        assert session.get(Order, order.id).patient_id == duplicate.id
        assert session.get(Patient, duplicate.id).merged_into_id is None
        assert session.get(PatientMerge, merge_id).undone_by == "chief"
    assert len(_events(app, "patient.unmerge")) == 2
    assert "Undo merge" not in admin.get(f"/patients/{surviving.id}").get_data(as_text=True)


def test_a_refused_merge_changes_nothing(
    app: Flask, db: Session, desk: FrontDesk, front: FlaskClient
) -> None:
    patient = desk.patient(db, "Peña", "José")
    db.commit()
    merge_page = f"/patients/{patient.id}/merge"
    response = post_form(front, merge_page, {"merged_id": patient.id})
    assert response.status_code == 302 and response.headers["Location"] == merge_page
    assert "cannot be merged with itself" in front.get(merge_page).get_data(as_text=True)
    with transaction(app) as session:
        assert session.scalar(select(func.count()).select_from(PatientMerge)) == 0
