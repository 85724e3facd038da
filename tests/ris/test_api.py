"""The JSON API: each operation through the services, its errors, its access rules and CSRF
stance, and an OpenAPI document that lists exactly the routes there are."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris.models import AuditEvent, ProcedureCode, Room
from tests.conftest import sign_in
from tests.factories import FrontDesk, at, next_weekday

JSON = "application/json"


@pytest.fixture(autouse=True)
def madrid(app: Flask) -> None:
    app.config["TIMEZONE"] = "Europe/Madrid"  # the factories' site, so at() is local time


@pytest.fixture
def ct(db: Session, desk: FrontDesk) -> tuple[Room, ProcedureCode]:
    room = desk.room(db, "CT1", "CT")
    desk.room(db, "CT2", "CT")
    desk.room(db, "MR1", "MR")
    code = desk.code(db, "74177", "CT", minutes=20)
    db.commit()
    return room, code


def signed_in_as(app: Flask, make_user, *roles: str) -> FlaskClient:
    client = app.test_client()
    sign_in(client, make_user(*roles))
    return client


@pytest.fixture
def clerk(app: Flask, make_user) -> FlaskClient:
    return signed_in_as(app, make_user, "front_desk")


@pytest.fixture
def admin(app: Flask, make_user) -> FlaskClient:
    return signed_in_as(app, make_user, "admin")


def actions(db: Session) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    body = response.get_json()
    assert response.status_code == status, body
    assert response.mimetype == JSON and body["status"] == status and body["error"]
    assert body.get("field") == field
    return body


def assert_shape(document: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    """``value`` has exactly the properties its OpenAPI schema lists, nested ones too."""
    schema = document["components"]["schemas"][name]
    assert set(value) == set(schema["properties"]), name
    for key, prop in schema["properties"].items():
        options = prop.get("oneOf", [prop])
        refs = [o["$ref"].rsplit("/", 1)[1] for o in options if "$ref" in o]
        if refs and value[key] is not None:
            assert_shape(document, refs[0], value[key])
        items = prop.get("items", {})
        if "$ref" in items:
            for item in value[key]:
                assert_shape(document, items["$ref"].rsplit("/", 1)[1], item)


NEW_PATIENT = {
    "family_name": "Peña", "given_name": "José", "birth_date": "1970-01-31", "sex": "M",
    "phone": "+34 600 000 000", "contrast_allergy": True, "mri_safety": "conditional",
}  # fmt: skip


# --- The document --------------------------------------------------------------------------


def test_openapi_lists_every_api_route_and_nothing_else(app: Flask, clerk: FlaskClient) -> None:
    response = clerk.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == JSON
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    registered = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert registered == documented
    components = document["components"]
    for name in ("Patient", "Order", "Exam", "Booking", "Slot", "Room", "ProcedureCode", "Error"):
        assert name in components["schemas"]
    text = response.get_data(as_text=True)
    for ref in set(re.findall(r'"\$ref": ?"#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in components[ref[0]], ref
    assert "X-Requested-With" in document["info"]["description"]
    assert document["paths"]["/api/patient-merges/{merge_id}/undo"]["post"]["x-placa-roles"] == [
        "admin"
    ]


def test_openapi_needs_a_signed_in_user(client: FlaskClient) -> None:
    assert_error(client.get("/api/openapi.json"), 401)


# --- Patients ------------------------------------------------------------------------------


def test_register_read_change_and_search_a_patient(
    clerk: FlaskClient, db: Session, make_user, app: Flask
) -> None:
    document = clerk.get("/api/openapi.json").get_json()
    response = clerk.post("/api/patients", json=NEW_PATIENT)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert response.headers["Location"] == f"/api/patients/{created['id']}"
    assert created["mrn"].startswith("PL") and created["display_name"] == "PEÑA, José"
    assert created["birth_date"] == "1970-01-31" and created["created_at"].endswith("Z")
    assert_shape(document, "Patient", created)

    changed = clerk.put(f"/api/patients/{created['id']}", json={"given_name": "José Luis"})
    assert changed.status_code == 200
    assert changed.get_json()["given_name"] == "José Luis"
    assert changed.get_json()["phone"] == "+34 600 000 000"  # left out: kept
    cleared = clerk.put(f"/api/patients/{created['id']}", json={"phone": None}).get_json()
    assert cleared["phone"] is None and cleared["contrast_allergy"] is True

    found = clerk.get("/api/patients?q=PENA jose").get_json()["patients"]
    assert [p["id"] for p in found] == [created["id"]]
    assert_shape(document, "PatientSummary", found[0])
    assert clerk.get("/api/patients?q=gaelle").get_json() == {"patients": []}

    reader = signed_in_as(app, make_user, "billing")
    assert reader.get(f"/api/patients/{created['id']}").get_json()["mrn"] == created["mrn"]
    patient_events = [a for a in actions(db) if a.startswith("patient.")]
    assert patient_events == ["patient.create", "patient.update", "patient.update",
                              "patient.search", "patient.search", "patient.view"]  # fmt: skip


def test_register_under_the_his_mrn_and_refuse_a_duplicate(clerk: FlaskClient) -> None:
    body = {**NEW_PATIENT, "mrn": "HIS-1", "mrn_issuer": "HOSP"}
    assert clerk.post("/api/patients", json=body).get_json()["mrn_issuer"] == "HOSP"
    assert_error(clerk.post("/api/patients", json=body), 409, "mrn")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**NEW_PATIENT, "famly_name": "X"}, "famly_name"),  # a typo
        ({"given_name": "José"}, "family_name"),  # required
        ({**NEW_PATIENT, "birth_date": "31/01/1970"}, "birth_date"),
        ({**NEW_PATIENT, "sex": "male"}, "sex"),
        ({**NEW_PATIENT, "contrast_allergy": "yes"}, "contrast_allergy"),
        ({**NEW_PATIENT, "family_name": None}, "family_name"),
        ({**NEW_PATIENT, "family_name": "x" * 65}, "family_name"),
    ],
)
def test_a_malformed_patient_is_a_bad_request(clerk: FlaskClient, body, field: str) -> None:
    assert_error(clerk.post("/api/patients", json=body), 400, field)


def test_malformed_json_and_non_objects_are_bad_requests(clerk: FlaskClient) -> None:
    for data in ('{"family_name": "Peña",', "[1, 2]", '{"family_name": NaN}', b"\xff"):
        body = assert_error(clerk.post("/api/patients", data=data, content_type=JSON), 400)
        assert "JSON" in body["error"]


def test_service_rules_answer_422(clerk: FlaskClient) -> None:
    assert_error(clerk.post("/api/patients", json={"family_name": "  "}), 422, "family_name")
    future = {**NEW_PATIENT, "birth_date": "2999-01-01"}
    assert_error(clerk.post("/api/patients", json=future), 422, "birth_date")


def test_unknown_ids_and_routes_answer_json_404(clerk: FlaskClient) -> None:
    for path in ("/api/patients/999", "/api/orders/999", "/api/exams/999", "/api/rooms/999",
                 "/api/procedure-codes/999", "/api/nothing-here"):  # fmt: skip
        assert_error(clerk.get(path), 404)
    assert_error(clerk.put("/api/patients/999", json={}), 404)
    assert_error(clerk.post("/api/exams/999/check-in", json={}), 404)


def test_merge_then_undo_by_an_admin(
    clerk: FlaskClient, admin: FlaskClient, db: Session, desk: FrontDesk, ct
) -> None:
    _room, code = ct
    surviving, duplicate = desk.patient(db, "Durand", "Gaëlle"), desk.patient(db, "Durand", "G")
    order = desk.order(db, duplicate, code)
    db.commit()
    path = f"/api/patients/{surviving.id}/merge"
    assert_error(clerk.post(path, json={"merged_id": 999}), 422, "merged_id")
    assert_error(clerk.post(path, json={"merged_id": surviving.id}), 422)
    response = clerk.post(path, json={"merged_id": duplicate.id})
    assert response.status_code == 201, response.get_json()
    merge = response.get_json()
    assert merge["moved"] == {"orders": [order.id], "studies": []} and merge["undone_at"] is None
    assert clerk.get(f"/api/orders/{order.id}").get_json()["patient_id"] == surviving.id
    assert clerk.get(f"/api/patients/{duplicate.id}").get_json()["merged_into_id"] == surviving.id
    assert_error(clerk.post(path, json={"merged_id": duplicate.id}), 409)

    undo = f"/api/patient-merges/{merge['id']}/undo"
    assert_error(clerk.post(undo, json={}), 403)
    undone = admin.post(undo, json={})
    assert undone.status_code == 200 and undone.get_json()["undone_at"].endswith("Z")
    assert clerk.get(f"/api/orders/{order.id}").get_json()["patient_id"] == duplicate.id
    assert_error(admin.post(undo, json={}), 409)
    assert_error(admin.post("/api/patient-merges/999/undo", json={}), 404)


# --- Orders and exams ----------------------------------------------------------------------


def test_place_an_order_by_code_id_and_by_coding_system(
    clerk: FlaskClient, db: Session, desk: FrontDesk, ct
) -> None:
    _room, code = ct
    patient = desk.patient(db)
    db.commit()
    body = {
        "patient_id": patient.id, "ordering_physician": "House^Gregory",
        "procedures": [code.id, {"code_system": "CPT", "code": "74177"}],
        "icd10_codes": ["j18.9", "R05"], "priority": "STAT", "patient_class": "I",
    }  # fmt: skip
    response = clerk.post("/api/orders", json=body)
    assert response.status_code == 201, response.get_json()
    order = response.get_json()
    document = clerk.get("/api/openapi.json").get_json()
    assert_shape(document, "Order", order)
    assert order["icd10_codes"] == ["J18.9", "R05"] and order["priority"] == "STAT"
    assert [e["status"] for e in order["exams"]] == ["ordered", "ordered"]
    exam = order["exams"][0]
    assert exam["patient"]["id"] == patient.id and exam["booking"] is None
    assert clerk.get(response.headers["Location"]).get_json() == order

    assert clerk.get(f"/api/exams/{exam['id']}").get_json() == exam
    by_accession = clerk.get(f"/api/exams?accession={exam['accession_number']}").get_json()
    assert by_accession == {"exams": [exam]}
    assert clerk.get("/api/exams?accession=nope").get_json() == {"exams": []}
    assert_error(clerk.get("/api/exams"), 400, "accession")
    assert_error(clerk.get("/api/exams?acession=1"), 400, "acession")
    assert actions(db)[-3:] == ["order.view", "exam.view", "exam.view"]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"patient_id": 999}, 422, "patient_id"),
        ({"procedures": [999]}, 422, "procedures"),
        ({"procedures": [{"code_system": "CPT", "code": "0"}]}, 422, "procedures"),
        ({"procedures": []}, 422, "procedures"),
        ({"procedures": ["74177"]}, 400, "procedures"),
        ({"procedures": [{"code": "74177"}]}, 400, "code_system"),
        ({"icd10_codes": ["nonsense"]}, 422, "icd10_codes"),
        ({"ordering_physician": ""}, 422, "ordering_physician"),
        ({"priority": "urgent"}, 400, "priority"),
        ({"patient_id": "1"}, 400, "patient_id"),
        ({"patient_id": True}, 400, "patient_id"),
    ],
)
def test_a_wrong_order_is_refused(
    clerk: FlaskClient, db: Session, desk: FrontDesk, ct, change, status: int, field: str
) -> None:
    _room, code = ct
    patient = desk.patient(db)
    db.commit()
    body = {"patient_id": patient.id, "ordering_physician": "House", "procedures": [code.id]}
    assert_error(clerk.post("/api/orders", json={**body, **change}), status, field)


# --- Booking and the board -----------------------------------------------------------------


def test_book_a_free_slot_then_the_board_lists_it(
    clerk: FlaskClient, app: Flask, make_user, db: Session, desk: FrontDesk, ct
) -> None:
    room, code = ct
    patient = desk.patient(db)
    exam = desk.exam(db, patient, code)
    db.commit()
    day = next_weekday()
    after = at(day, 7).isoformat()
    slots = clerk.get(
        f"/api/procedure-codes/{code.id}/free-slots",
        query_string={"after": after, "count": 3, "patient_id": patient.id},
    ).get_json()["slots"]
    assert [(s["room_code"], s["start"]) for s in slots][:2] == [
        ("CT1", _utc(at(day, 8))), ("CT2", _utc(at(day, 8))),
    ]  # fmt: skip

    response = clerk.post(
        f"/api/exams/{exam.id}/booking", json={"room": "CT1", "start": slots[0]["start"]}
    )
    assert response.status_code == 201, response.get_json()
    booking = response.get_json()["booking"]
    assert response.get_json()["status"] == "scheduled"
    assert (booking["room_code"], booking["start"], booking["end"]) == (
        "CT1", _utc(at(day, 8)), _utc(at(day, 8, 20)),
    )  # fmt: skip

    technologist = signed_in_as(app, make_user, "technologist")
    board = technologist.get(f"/api/board?date={day.isoformat()}&room=CT1").get_json()
    assert board["date"] == day.isoformat() and board["room"] == "CT1"
    assert [(e["id"], e["patient"]["display_name"]) for e in board["exams"]] == [
        (exam.id, "PEÑA, José")
    ]
    assert_shape(clerk.get("/api/openapi.json").get_json(), "Board", board)
    assert clerk.get(f"/api/board?date={day.isoformat()}&room=CT2").get_json()["exams"] == []
    assert_error(clerk.get("/api/board?room=XX"), 422, "room")
    assert_error(clerk.get("/api/board?date=tomorrow"), 400, "date")
    assert "board.view" in actions(db)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_double_booking_is_a_conflict(clerk: FlaskClient, db: Session, desk: FrontDesk, ct):
    room, code = ct
    day = next_weekday()
    desk.booked(db, room, code, at(day, 9))
    other = desk.exam(db, desk.patient(db, "Durand", "Gaëlle"), code)
    db.commit()
    start = at(day, 9, 10).isoformat()
    body = assert_error(clerk.post(f"/api/exams/{other.id}/booking",
                                   json={"room": room.id, "start": start}), 409)  # fmt: skip
    assert "CT1 is already booked" in body["error"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"room": "CT1", "start": "2030-01-07T09:00:00"}, 400, "start"),  # no offset
        ({"room": "CT1", "start": "next monday"}, 400, "start"),
        ({"room": "CT1"}, 400, "start"),
        ({"room": 999, "start": "2030-01-07T09:00:00+01:00"}, 422, "room"),
        ({"room": "MR1", "start": "2030-01-07T09:00:00+01:00"}, 422, "room"),
        ({"room": "CT1", "start": "2030-01-07T21:00:00+01:00"}, 422, "start"),  # closed
        ({"room": "CT1", "start": "2020-01-07T09:00:00Z"}, 422, "start"),  # past
    ],
)
def test_a_wrong_booking_is_refused(
    clerk: FlaskClient, db: Session, desk: FrontDesk, ct, body, status: int, field: str
) -> None:
    _room, code = ct
    exam = desk.exam(db, desk.patient(db), code)
    db.commit()
    assert_error(clerk.post(f"/api/exams/{exam.id}/booking", json=body), status, field)


def test_reschedule_check_in_cancel_and_no_show(
    clerk: FlaskClient, db: Session, desk: FrontDesk, ct
) -> None:
    room, code = ct
    day = next_weekday()
    exam = desk.booked(db, room, code, at(day, 9))
    other = desk.booked(db, room, code, at(day, 11))
    unbooked = desk.exam(db, desk.patient(db, "Martin", "Léa"), code)
    db.commit()
    moved = clerk.put(f"/api/exams/{exam.id}/booking",
                      json={"room": "CT2", "start": at(day, 10).isoformat()})  # fmt: skip
    assert moved.status_code == 200, moved.get_json()
    assert moved.get_json()["booking"]["room_code"] == "CT2"
    booking = {"room": "CT1", "start": at(day, 12).isoformat()}
    assert_error(clerk.put(f"/api/exams/{unbooked.id}/booking", json=booking), 409)

    arrived = clerk.post(f"/api/exams/{exam.id}/check-in", json={}).get_json()
    assert arrived["status"] == "arrived" and arrived["arrived_at"].endswith("Z")
    assert_error(clerk.post(f"/api/exams/{other.id}/cancel", json={}), 400, "reason")
    assert_error(clerk.post(f"/api/exams/{other.id}/cancel", json={"reason": " "}), 422, "reason")
    cancelled = clerk.post(f"/api/exams/{other.id}/cancel", json={"reason": "asked by phone"})
    assert cancelled.get_json()["status"] == "cancelled"
    assert_error(clerk.post(f"/api/exams/{other.id}/no-show", json={}), 409)
    assert_error(clerk.post(f"/api/exams/{exam.id}/no-show", json={"why": "late"}), 400, "why")


def test_free_slots_refuse_bad_parameters(clerk: FlaskClient, ct) -> None:
    _room, code = ct
    path = f"/api/procedure-codes/{code.id}/free-slots"
    assert len(clerk.get(path).get_json()["slots"]) == 5
    assert_error(clerk.get(path + "?count=0"), 400, "count")
    assert_error(clerk.get(path + "?count=2&count=3"), 400, "count")
    assert_error(clerk.get(path + "?after=2030-01-07"), 400, "after")
    assert_error(clerk.get(path + "?patient_id=999"), 422, "patient_id")
    assert_error(clerk.get("/api/procedure-codes/999/free-slots"), 404)


# --- Catalog -------------------------------------------------------------------------------


def test_admin_edits_rooms_and_procedure_codes(admin: FlaskClient, clerk: FlaskClient) -> None:
    document = admin.get("/api/openapi.json").get_json()
    room = {"code": "US1", "name": "Ultrasound 1", "modality": "US", "ae_title": "US1_AE",
            "opens_at": "07:30", "closes_at": "15:00", "open_days": "12345"}  # fmt: skip
    response = admin.post("/api/rooms", json=room)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert_shape(document, "Room", created)
    assert (created["opens_at"], created["active"]) == ("07:30", True)
    changed = admin.put(f"/api/rooms/{created['id']}", json={"active": False}).get_json()
    assert changed["active"] is False and changed["ae_title"] == "US1_AE"
    assert_error(admin.post("/api/rooms", json=room), 422, "code")
    assert_error(admin.post("/api/rooms", json={**room, "modality": "XX"}), 400, "modality")
    assert_error(admin.post("/api/rooms", json={**room, "opens_at": "7h30"}), 400, "opens_at")
    assert clerk.get("/api/rooms").get_json()["rooms"] == [changed]
    assert clerk.get("/api/rooms?active=true").get_json()["rooms"] == []

    code = {"code_system": "CPT", "code": "76700", "description": "US abdomen",
            "modality": "US", "duration_minutes": 30, "technical_charge": "80.5",
            "rooms": ["US1"]}  # fmt: skip
    response = admin.post("/api/procedure-codes", json=code)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert_shape(document, "ProcedureCode", created)
    assert (created["technical_charge"], created["rooms"]) == ("80.50", ["US1"])
    changed = admin.put(f"/api/procedure-codes/{created['id']}", json={"rooms": []}).get_json()
    assert changed["rooms"] == [] and changed["duration_minutes"] == 30
    assert clerk.get(f"/api/procedure-codes/{created['id']}").get_json() == changed
    unknown_room = {**code, "code": "2", "rooms": ["ZZ"]}
    assert_error(admin.post("/api/procedure-codes", json=unknown_room), 422, "rooms")
    bad_money = {**code, "code": "1", "technical_charge": "1.005"}
    assert_error(admin.post("/api/procedure-codes", json=bad_money), 400, "technical_charge")


# --- Access and cross-site requests --------------------------------------------------------


def test_anonymous_requests_get_json_401(client: FlaskClient) -> None:
    assert_error(client.get("/api/patients?q=pena"), 401)
    assert_error(client.post("/api/patients", json=NEW_PATIENT), 401)


@pytest.mark.parametrize(
    ("role", "method", "path"),
    [
        ("referrer", "GET", "/api/patients/1"),
        ("referrer", "GET", "/api/patients?q=pena"),
        ("transcriptionist", "GET", "/api/board"),
        ("technologist", "POST", "/api/orders"),
        ("radiologist", "POST", "/api/exams/1/booking"),
        ("front_desk", "POST", "/api/rooms"),
        ("front_desk", "PUT", "/api/procedure-codes/1"),
        ("front_desk", "POST", "/api/patient-merges/1/undo"),
    ],
)
def test_wrong_role_gets_json_403(app: Flask, make_user, role: str, method: str, path: str):
    client = signed_in_as(app, make_user, role)
    assert_error(client.open(path, method=method, json={}), 403)


def test_writes_must_be_json_and_need_no_form_token(
    clerk: FlaskClient, app: Flask, db: Session, desk: FrontDesk, ct
) -> None:
    assert app.config.get("WTF_CSRF_ENABLED", True)  # the screens' forms still need tokens
    _room, code = ct
    exam = desk.exam(db, desk.patient(db), code)
    db.commit()
    form = clerk.post("/api/patients", data={"family_name": "Forged"})
    assert_error(form, 415)
    text = clerk.post("/api/patients", data='{"family_name": "X"}', content_type="text/plain")
    assert_error(text, 415)
    assert_error(clerk.post(f"/api/exams/{exam.id}/check-in"), 415)  # no body, no header
    scripted = clerk.post(f"/api/exams/{exam.id}/check-in",
                          headers={"X-Requested-With": "XMLHttpRequest"})  # fmt: skip
    assert scripted.status_code == 200 and scripted.get_json()["status"] == "arrived"
    assert clerk.post("/api/patients", json=NEW_PATIENT).status_code == 201  # no CSRF token
