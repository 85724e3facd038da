"""Catalog administration: rooms and procedure codes, CSV import and export."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from datetime import time

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from ris import catalog
from ris.audit import Actor
from ris.auth import current_actor, roles
from ris.catalog import PROCEDURE_COLUMNS, ROOM_COLUMNS, ImportResult
from ris.catalog_forms import (
    IMPORT_KINDS,
    WEEKDAYS,
    ImportForm,
    ProcedureForm,
    RoomForm,
    procedure_form_data,
    room_form_data,
)
from ris.db import get_db
from ris.errors import PlacaError
from ris.models import ProcedureCode, Room

logger = logging.getLogger(__name__)
bp = Blueprint("catalog", __name__, url_prefix="/admin/catalog")

Page = str | tuple[str, int] | Response
IMPORTERS: dict[str, Callable[[Session, Actor, str], ImportResult]] = {
    "rooms": catalog.import_rooms,
    "procedures": catalog.import_procedures,
}
DAY_LABELS = {choice.value: choice.label for choice in WEEKDAYS}


@bp.context_processor
def _helpers() -> dict[str, object]:
    return {
        "day_labels": lambda days: " ".join(str(DAY_LABELS[d]) for d in days if d in DAY_LABELS)
    }


def _status() -> int:
    """A refused submission answers 422, a first display 200."""
    return 422 if request.method == "POST" else 200


def _refuse(db: Session, form: RoomForm | ProcedureForm, exc: PlacaError) -> None:
    """Undo what the service began; show its message on the field it names."""
    db.rollback()
    field = getattr(form, exc.field or "", None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


# Rooms ---------------------------------------------------------------------------------


@bp.route("/rooms")
@roles("admin")
def rooms() -> str:
    """Every room, active or not, with its device and opening hours."""
    return _rooms_page()


def _rooms_page(import_errors: list[str] | None = None) -> str:
    return render_template(
        "catalog/rooms.html", rooms=catalog.list_rooms(get_db()),
        import_form=ImportForm(kind="rooms"), import_errors=import_errors, columns=ROOM_COLUMNS,
    )  # fmt: skip


@bp.route("/rooms/new", methods=["GET", "POST"])
@roles("admin")
def room_new() -> Page:
    return _room_form(None)


@bp.route("/rooms/<int:room_id>", methods=["GET", "POST"])
@roles("admin")
def room_edit(room_id: int) -> Page:
    return _room_form(catalog.get_room(get_db(), room_id))


def _room_form(room: Room | None) -> Page:
    db = get_db()
    data = room_form_data(room) if room is not None and request.method == "GET" else None
    form = RoomForm(data=data)
    if form.validate_on_submit():
        try:
            saved = catalog.save_room(db, current_actor(), form.to_data(), room)
        except PlacaError as exc:
            _refuse(db, form, exc)
        else:
            db.commit()
            flash(_("The room %(code)s has been saved.", code=saved.code), "info")
            return redirect(url_for("catalog.rooms"))
    defaults = {r.modality: r.code for r in catalog.list_rooms(db) if r.default_for_modality}
    return render_template("catalog/room_form.html", form=form, room=room,
                           defaults=defaults), _status()  # fmt: skip


# Procedures ----------------------------------------------------------------------------


@bp.route("/procedures")
@roles("admin")
def procedures() -> str:
    """The orderable procedures with their duration, charges and eligible rooms."""
    return _procedures_page()


def _procedures_page(import_errors: list[str] | None = None) -> str:
    return render_template(
        "catalog/procedures.html", procedures=catalog.list_procedures(get_db()),
        import_form=ImportForm(kind="procedures"), import_errors=import_errors,
        columns=PROCEDURE_COLUMNS,
    )  # fmt: skip


@bp.route("/procedures/new", methods=["GET", "POST"])
@roles("admin")
def procedure_new() -> Page:
    return _procedure_form(None)


@bp.route("/procedures/<int:code_id>", methods=["GET", "POST"])
@roles("admin")
def procedure_edit(code_id: int) -> Page:
    return _procedure_form(catalog.get_procedure(get_db(), code_id))


def _procedure_form(code: ProcedureCode | None) -> Page:
    db = get_db()
    data = procedure_form_data(code) if code is not None and request.method == "GET" else None
    form = ProcedureForm(data=data)
    form.set_rooms(catalog.list_rooms(db))
    if form.validate_on_submit():
        try:
            saved = catalog.save_procedure(db, current_actor(), form.to_data(), code)
        except PlacaError as exc:
            _refuse(db, form, exc)
        else:
            db.commit()
            flash(_("The procedure %(code)s has been saved.", code=saved.code), "info")
            return redirect(url_for("catalog.procedures"))
    return render_template("catalog/procedure_form.html", form=form, code=code), _status()


# CSV -----------------------------------------------------------------------------------


@bp.route("/import", methods=["POST"])
@roles("admin")
def import_csv() -> Page:
    """Import rooms or procedures from CSV: every line is saved, or none."""
    form = ImportForm()
    kind = form.kind.data if form.kind.data in IMPORT_KINDS else None
    if kind is None:
        abort(400)
    if not form.validate_on_submit():
        return _import_page(kind, [str(e) for errors in form.errors.values() for e in errors])
    try:
        text = form.file.data.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        return _import_page(kind, [_("The file is not UTF-8 text.")])
    db = get_db()
    try:
        result = IMPORTERS[kind](db, current_actor(), text)
    except PlacaError as exc:
        db.rollback()
        return _import_page(kind, exc.message.split("; "))
    db.commit()
    logger.info("Catalog import of %s: %d created, %d updated", kind, result.created,
                result.updated)  # fmt: skip
    flash(_("Import done: %(created)d created, %(updated)d updated.",
            created=result.created, updated=result.updated), "info")  # fmt: skip
    return redirect(url_for(f"catalog.{kind}"))


def _import_page(kind: str, errors: list[str]) -> tuple[str, int]:
    page = _rooms_page if kind == "rooms" else _procedures_page
    return page(errors), 422


@bp.route("/<kind>.csv")
@roles("admin")
def export_csv(kind: str) -> Response:
    """The rooms or the procedures as CSV, in exactly the format the import reads."""
    db = get_db()
    if kind == "rooms":
        header, rows = ROOM_COLUMNS, [_room_row(r) for r in catalog.list_rooms(db)]
    elif kind == "procedures":
        header = PROCEDURE_COLUMNS
        rows = [_procedure_row(p) for p in catalog.list_procedures(db)]
    else:
        abort(404)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        buffer.getvalue(), mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="placa-{kind}.csv"'},
    )  # fmt: skip


def _hhmm(value: time) -> str:
    return value.strftime("%H:%M")


def _room_row(room: Room) -> list[str]:
    return [
        room.code, room.name, room.modality, room.ae_title or "", room.station_name or "",
        _hhmm(room.opens_at), _hhmm(room.closes_at), room.open_days, "1" if room.active else "0",
        "1" if room.default_for_modality else "0",
    ]  # fmt: skip


def _procedure_row(code: ProcedureCode) -> list[str]:
    return [
        code.code_system, code.code, code.description, code.modality, code.body_part or "",
        str(code.duration_minutes), str(code.technical_charge), str(code.professional_charge),
        ";".join(room.code for room in code.rooms), "1" if code.active else "0",
    ]  # fmt: skip
