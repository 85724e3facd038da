"""/api/rooms and /api/procedure-codes: read by any signed-in user, written by admins."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import Any

from flask import Response, jsonify, url_for

from ris import catalog
from ris.api import bp, render
from ris.api.common import ADMIN, created
from ris.api.fields import LIST_QUERY, PROCEDURE_FIELDS, ROOM_FIELDS
from ris.api_schemas import parse_body, parse_query
from ris.auth import current_actor, roles, signed_in
from ris.db import get_db
from ris.models import Room


@bp.get("/rooms")
@signed_in
def rooms() -> Response:
    """Every room, by code (``active=true``: only those in service)."""
    active = parse_query(LIST_QUERY).get("active", False)
    return jsonify({"rooms": [render.room(r) for r in catalog.list_rooms(get_db(), active)]})


@bp.post("/rooms")
@roles(*ADMIN)
def create_room() -> tuple[Response, int, dict[str, str]]:
    """Add a room (a device: its AE title identifies it to the worklist)."""
    data = catalog.RoomData(**parse_body(ROOM_FIELDS))
    db = get_db()
    room = catalog.save_room(db, current_actor(), data)
    db.commit()
    return created(render.room(room), url_for("api.get_room", room_id=room.id))


@bp.get("/rooms/<int:room_id>")
@signed_in
def get_room(room_id: int) -> Response:
    """One room."""
    return jsonify(render.room(catalog.get_room(get_db(), room_id)))


@bp.put("/rooms/<int:room_id>")
@roles(*ADMIN)
def update_room(room_id: int) -> Response:
    """Change the fields given; fields left out keep their values."""
    db = get_db()
    room = catalog.get_room(db, room_id)
    data = catalog.RoomData(**{**_room_data(room), **parse_body(ROOM_FIELDS, partial=True)})
    catalog.save_room(db, current_actor(), data, room)
    db.commit()
    return jsonify(render.room(room))


def _room_data(room: Room) -> dict[str, Any]:
    return {field.name: getattr(room, field.name) for field in dataclass_fields(catalog.RoomData)}


@bp.get("/procedure-codes")
@signed_in
def procedure_codes() -> Response:
    """The catalog, by modality then description (``active=true``: only those offered)."""
    active = parse_query(LIST_QUERY).get("active", False)
    codes = catalog.list_procedures(get_db(), active)
    return jsonify({"procedure_codes": [render.procedure_code(c) for c in codes]})


@bp.post("/procedure-codes")
@roles(*ADMIN)
def create_procedure_code() -> tuple[Response, int, dict[str, str]]:
    """Add a procedure code with the rooms it is done in."""
    data = catalog.ProcedureData(**_renamed(parse_body(PROCEDURE_FIELDS)))
    db = get_db()
    code = catalog.save_procedure(db, current_actor(), data)
    db.commit()
    return created(render.procedure_code(code), url_for("api.get_procedure_code", code_id=code.id))


@bp.get("/procedure-codes/<int:code_id>")
@signed_in
def get_procedure_code(code_id: int) -> Response:
    """One procedure code."""
    return jsonify(render.procedure_code(catalog.get_procedure(get_db(), code_id)))


@bp.put("/procedure-codes/<int:code_id>")
@roles(*ADMIN)
def update_procedure_code(code_id: int) -> Response:
    """Change the fields given; fields left out keep their values."""
    db = get_db()
    code = catalog.get_procedure(db, code_id)
    current = {f.name: getattr(code, f.name) for f in dataclass_fields(catalog.ProcedureData)
               if f.name != "room_codes"}  # fmt: skip
    current["room_codes"] = [room.code for room in code.rooms]
    changes = _renamed(parse_body(PROCEDURE_FIELDS, partial=True))
    catalog.save_procedure(
        db, current_actor(), catalog.ProcedureData(**{**current, **changes}), code
    )
    db.commit()
    return jsonify(render.procedure_code(code))


def _renamed(fields: dict[str, Any]) -> dict[str, Any]:
    """The API says ``rooms`` where the service says ``room_codes``."""
    if "rooms" in fields:
        fields["room_codes"] = fields.pop("rooms")
    return fields
