"""Catalog administration: rooms and procedures, CSV import (all or nothing) and export."""

from __future__ import annotations

import csv
import io
from datetime import time
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ris.catalog import PROCEDURE_COLUMNS, ROOM_COLUMNS
from ris.db import transaction
from ris.models import AuditEvent, ProcedureCode, Room
from tests.conftest import csrf_token, post_form, sign_in
from tests.factories import FrontDesk

ROOMS_CSV = (
    "code,name,modality,ae_title,station_name,opens_at,closes_at,open_days,active,"
    "default_for_modality\r\n"
    "CT1,CT room 1,CT,CT1_AE,CT1,07:30,21:00,123456,1,1\r\n"
    "MR1,MR room 1,MR,,,08:00,20:00,12345,0,0\r\n"
)
PROCEDURES_CSV = (
    "code_system,code,description,modality,body_part,duration_minutes,technical_charge,"
    "professional_charge,rooms,active\r\n"
    "CPT,74177,CT abdomen and pelvis with contrast,CT,ABDOMEN,20,120.50,45.00,CT1,1\r\n"
    "CPT,70551,MR brain without contrast,MR,BRAIN,30,300.00,80.25,MR1,1\r\n"
)


@pytest.fixture
def admin(app: Flask, make_user) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, make_user("admin", username="chief")).status_code == 302
    return client


def _count(app: Flask, model: type) -> int:
    with transaction(app) as db:
        return db.scalar(select(func.count()).select_from(model)) or 0


def _upload(client: FlaskClient, kind: str, text: str):  # noqa: ANN202
    token = csrf_token(client, f"/admin/catalog/{kind}")
    return client.post(
        "/admin/catalog/import",
        data={"kind": kind, "csrf_token": token,
              "file": (io.BytesIO(text.encode()), f"{kind}.csv")},
        content_type="multipart/form-data",
    )  # fmt: skip


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


ROOM_FORM = {
    "code": "CT1", "name": "CT room 1", "modality": "CT", "ae_title": "CT1_AE",
    "station_name": "CT1", "opens_at": "07:30", "closes_at": "21:00",
    "open_days": ["1", "2", "3", "4", "5", "6"], "active": "y",
}  # fmt: skip


# Rooms -----------------------------------------------------------------------------------


def test_room_create_and_edit(app: Flask, admin: FlaskClient) -> None:
    response = post_form(admin, "/admin/catalog/rooms/new", ROOM_FORM)
    assert response.status_code == 302 and response.headers["Location"] == "/admin/catalog/rooms"
    with transaction(app) as db:
        room = db.scalars(select(Room)).one()
        room_id = room.id
        assert (room.code, room.modality, room.ae_title) == ("CT1", "CT", "CT1_AE")
        assert (room.opens_at, room.closes_at) == (time(7, 30), time(21, 0))
        assert room.open_days == "123456" and room.active
    listing = admin.get("/admin/catalog/rooms").get_data(as_text=True)
    assert "CT room 1" in listing and "07:30–21:00" in listing and "Sat" in listing

    edit = f"/admin/catalog/rooms/{room_id}"
    form = admin.get(edit).get_data(as_text=True)
    assert 'value="CT room 1"' in form and 'value="07:30"' in form
    changed = {**ROOM_FORM, "name": "Scanner 1", "open_days": ["1", "3"]}
    del changed["active"]
    assert post_form(admin, edit, changed).status_code == 302
    with transaction(app) as db:
        room = db.get(Room, room_id)
        assert (room.name, room.open_days, room.active) == ("Scanner 1", "13", False)
        saves = db.scalars(select(AuditEvent).where(AuditEvent.action == "room.save")).all()
        assert len(saves) == 2 and {s.actor for s in saves} == {"chief"}


def test_room_errors_are_shown_and_nothing_is_saved(
    app: Flask, db: Session, admin: FlaskClient
) -> None:
    FrontDesk(app).room(db, "CT2", "CT")  # owns the AE title CT2_AE
    db.commit()
    cases = [
        ({"ae_title": "CT2_AE"}, "CT2_AE belongs to CT2."),
        ({"opens_at": "20:00", "closes_at": "08:00"}, "The room must open before it closes."),
        ({"open_days": []}, "Choose at least one day."),
        ({"code": ""}, "This field is required."),
        ({"modality": "XX"}, "Not a valid choice."),
    ]
    for change, message in cases:
        response = post_form(admin, "/admin/catalog/rooms/new", {**ROOM_FORM, **change})
        assert response.status_code == 422, change
        assert message in response.get_data(as_text=True), change
    assert _count(app, Room) == 1


def test_default_room_of_a_modality_in_the_form(app: Flask, admin: FlaskClient) -> None:
    assert "Default room of its modality" in admin.get("/admin/catalog/rooms/new").get_data(
        as_text=True)  # fmt: skip
    first = {**ROOM_FORM, "default_for_modality": "y"}
    assert post_form(admin, "/admin/catalog/rooms/new", first).status_code == 302
    second = {**first, "code": "CT2", "ae_title": "CT2_AE", "station_name": "CT2"}
    new_form = admin.get("/admin/catalog/rooms/new").get_data(as_text=True)
    assert "Default CT room now: CT1" in new_form  # the admin sees what a tick replaces
    assert post_form(admin, "/admin/catalog/rooms/new", second).status_code == 302
    with transaction(app) as db:
        defaults = {r.code: r.default_for_modality for r in db.scalars(select(Room))}
        ct1_id = db.scalars(select(Room.id).where(Room.code == "CT1")).one()
    assert defaults == {"CT1": False, "CT2": True}
    listing = admin.get("/admin/catalog/rooms").get_data(as_text=True)
    assert listing.count("CT · default") == 1
    ct1_form = admin.get(f"/admin/catalog/rooms/{ct1_id}").get_data(as_text=True)
    assert "Default CT room now: CT2" in ct1_form
    inactive = {**second, "active": ""}
    del inactive["active"]
    refused = post_form(admin, "/admin/catalog/rooms/new", {**inactive, "code": "CT3",
                                                            "ae_title": "CT3_AE"})  # fmt: skip
    assert refused.status_code == 422
    assert "An inactive room cannot be the default" in refused.get_data(as_text=True)
    exported = _rows(admin.get("/admin/catalog/rooms.csv").get_data(as_text=True))
    assert [(row[0], row[-1]) for row in exported] == [
        ("code", "default_for_modality"), ("CT1", "0"), ("CT2", "1")]  # fmt: skip


def test_default_room_through_the_api(app: Flask, db: Session, admin: FlaskClient) -> None:
    desk = FrontDesk(app)
    ct1, ct2 = desk.room(db, "CT1", "CT", default_for_modality=True), desk.room(db, "CT2", "CT")
    db.commit()
    assert admin.get(f"/api/rooms/{ct1.id}").get_json()["default_for_modality"] is True
    changed = admin.put(f"/api/rooms/{ct2.id}", json={"default_for_modality": True})
    assert changed.status_code == 200 and changed.get_json()["default_for_modality"] is True
    assert admin.get(f"/api/rooms/{ct1.id}").get_json()["default_for_modality"] is False
    refused = admin.put(f"/api/rooms/{ct2.id}", json={"active": False})
    assert refused.status_code == 422
    assert refused.get_json()["field"] == "default_for_modality"
    schema = admin.get("/api/openapi.json").get_json()["components"]["schemas"]["Room"]
    assert schema["properties"]["default_for_modality"]["type"] == "boolean"


# Procedures ------------------------------------------------------------------------------


def test_procedure_create_and_edit(app: Flask, db: Session, admin: FlaskClient) -> None:
    desk = FrontDesk(app)
    desk.room(db, "CT1", "CT")
    desk.room(db, "CT2", "CT")
    db.commit()
    form = admin.get("/admin/catalog/procedures/new").get_data(as_text=True)
    assert 'value="CT1"' in form and 'value="CT2"' in form and 'type="checkbox"' in form
    response = post_form(admin, "/admin/catalog/procedures/new", {
        "code_system": "CPT", "code": "74177", "description": "CT abdomen", "modality": "CT",
        "body_part": "ABDOMEN", "duration_minutes": "20", "technical_charge": "120.50",
        "professional_charge": "45", "rooms": ["CT1", "CT2"], "active": "y",
    })  # fmt: skip
    assert response.status_code == 302
    with transaction(app) as session:
        code = session.scalars(select(ProcedureCode)).one()
        code_id = code.id
        assert code.technical_charge == Decimal("120.50")
        assert code.professional_charge == Decimal("45.00")
        assert [r.code for r in code.rooms] == ["CT1", "CT2"] and code.duration_minutes == 20
    listing = admin.get("/admin/catalog/procedures").get_data(as_text=True)
    assert "CT abdomen" in listing and "120.50" in listing

    edit = f"/admin/catalog/procedures/{code_id}"
    assert 'value="120.50"' in admin.get(edit).get_data(as_text=True)
    response = post_form(admin, edit, {
        "code_system": "CPT", "code": "74177", "description": "CT abdomen/pelvis",
        "modality": "CT", "duration_minutes": "25", "technical_charge": "99.99",
        "professional_charge": "0", "rooms": ["CT2"], "active": "y",
    })  # fmt: skip
    assert response.status_code == 302
    with transaction(app) as session:
        code = session.get(ProcedureCode, code_id)
        assert (code.description, code.duration_minutes) == ("CT abdomen/pelvis", 25)
        assert [r.code for r in code.rooms] == ["CT2"] and code.body_part is None


def test_procedure_errors_are_shown_and_nothing_is_saved(app: Flask, admin: FlaskClient) -> None:
    good = {
        "code_system": "CPT", "code": "1", "description": "X", "modality": "CT",
        "duration_minutes": "15", "technical_charge": "0", "professional_charge": "0",
    }  # fmt: skip
    cases = [
        ({"duration_minutes": "0"}, "Number must be between 1 and 1440."),
        ({"technical_charge": "abc"}, "Not a valid decimal value."),
        ({"professional_charge": "-1"}, "Number must be between 0"),
        ({"rooms": ["NOPE"]}, "is not a valid choice for this field."),
        ({"description": ""}, "This field is required."),
    ]
    for change, message in cases:
        response = post_form(admin, "/admin/catalog/procedures/new", {**good, **change})
        assert response.status_code == 422, change
        assert message in response.get_data(as_text=True), change
    assert _count(app, ProcedureCode) == 0


# CSV -------------------------------------------------------------------------------------


def test_csv_import_creates_then_updates(app: Flask, admin: FlaskClient) -> None:
    response = _upload(admin, "rooms", ROOMS_CSV)
    assert response.status_code == 302 and response.headers["Location"] == "/admin/catalog/rooms"
    assert "2 created, 0 updated" in admin.get("/admin/catalog/rooms").get_data(as_text=True)
    response = _upload(admin, "procedures", PROCEDURES_CSV)
    assert response.headers["Location"] == "/admin/catalog/procedures"
    page = admin.get("/admin/catalog/procedures").get_data(as_text=True)
    assert "2 created, 0 updated" in page and "MR brain without contrast" in page
    _upload(admin, "rooms", ROOMS_CSV.replace("CT room 1", "Scanner"))
    assert "0 created, 2 updated" in admin.get("/admin/catalog/rooms").get_data(as_text=True)
    with transaction(app) as db:
        names = db.scalars(select(Room.name).order_by(Room.code)).all()
        assert names == ["Scanner", "MR room 1"]
        mr = db.scalars(select(Room).where(Room.code == "MR1")).one()
        assert mr.ae_title is None and not mr.active


def test_csv_import_with_a_bad_line_saves_nothing(app: Flask, admin: FlaskClient) -> None:
    bad = ROOMS_CSV + "XR1,X-ray,ZZ,,,08:00,20:00,12345,1\r\nUS1,US,US,,,25:00,20:00,1,1\r\n"
    response = _upload(admin, "rooms", bad)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Nothing was imported" in page and "4: Unknown modality ZZ." in page
    assert "5: " in page
    assert _count(app, Room) == 0
    response = _upload(admin, "procedures", PROCEDURES_CSV)  # its rooms do not exist
    assert response.status_code == 422 and "2: No room CT1." in response.get_data(as_text=True)
    assert _count(app, ProcedureCode) == 0
    response = _upload(admin, "rooms", "code;name\r\nCT1;CT\r\n")
    assert response.status_code == 422 and "lacks the columns" in response.get_data(as_text=True)
    response = _upload(admin, "rooms", "")
    assert response.status_code == 422
    with transaction(app) as db:
        saves = db.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "room.save")
        )
        assert saves == 0


def test_csv_export_is_the_import_format(app: Flask, admin: FlaskClient) -> None:
    _upload(admin, "rooms", ROOMS_CSV)
    _upload(admin, "procedures", PROCEDURES_CSV)
    rooms = admin.get("/admin/catalog/rooms.csv")
    procedures = admin.get("/admin/catalog/procedures.csv")
    assert rooms.mimetype == "text/csv" and "attachment" in rooms.headers["Content-Disposition"]
    assert _rows(rooms.get_data(as_text=True)) == _rows(ROOMS_CSV)
    assert _rows(procedures.get_data(as_text=True))[0] == list(PROCEDURE_COLUMNS)
    assert _rows(procedures.get_data(as_text=True)) == _rows(PROCEDURES_CSV)[:1] + sorted(
        _rows(PROCEDURES_CSV)[1:], key=lambda row: (row[3], row[2])
    )  # listed by modality, then description
    assert _rows(rooms.get_data(as_text=True))[0] == list(ROOM_COLUMNS)
    assert admin.get("/admin/catalog/other.csv").status_code == 404


def test_export_then_import_round_trips(app: Flask, db: Session, admin: FlaskClient) -> None:
    desk = FrontDesk(app)
    desk.room(db, "CT1", "CT")
    desk.room(db, "MR1", "MR", open_days="1234567", active=False)
    desk.code(db, "74177", "CT", minutes=20, rooms=["CT1"])
    desk.code(db, "70551", "MR", minutes=45, rooms=["MR1", "CT1"])
    db.commit()
    before = {kind: admin.get(f"/admin/catalog/{kind}.csv").get_data(as_text=True)
              for kind in ("rooms", "procedures")}  # fmt: skip
    for kind, text in before.items():
        assert _upload(admin, kind, text).status_code == 302
    assert "0 created, 2 updated" in admin.get("/admin/catalog/procedures").get_data(as_text=True)
    after = {kind: admin.get(f"/admin/catalog/{kind}.csv").get_data(as_text=True)
             for kind in ("rooms", "procedures")}  # fmt: skip
    assert after == before
    assert "CT1;MR1" in before["procedures"] and "1234567,0" in before["rooms"]


def test_front_desk_cannot_administer_the_catalog(app: Flask, make_user) -> None:
    client = app.test_client()
    sign_in(client, make_user("front_desk"))
    for path in ("/admin/catalog/rooms", "/admin/catalog/procedures/new",
                 "/admin/catalog/rooms.csv"):  # fmt: skip
        assert client.get(path).status_code == 403, path
