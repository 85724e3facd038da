"""The technologist's home: today's exams per room, and the same rows as JSON for the
page's live refresh (an MPPS from the scanner shows up without a click)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime

from flask import Response, current_app, flash, jsonify, render_template, request
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import generate_csrf

from ris import audit, catalog
from ris.auth import ROOM_READERS, TECHNOLOGISTS, current_actor, roles
from ris.board import BoardRow
from ris.db import get_db, utcnow
from ris.frontdesk.common import (
    Badge,
    IdUrl,
    Words,
    age_on,
    alert_badges,
    local_hm,
    local_today,
    wait_class,
    wait_minutes,
)
from ris.models import Room
from ris.site import Site, site_of
from worklist import technologist
from worklist.views import bp

logger = logging.getLogger(__name__)
REFRESH_SECONDS = 10


@dataclass(frozen=True, slots=True)
class RoomLine:
    """One exam row as the page prints it and the refresh sends it."""

    exam_id: int
    exam_href: str
    patient_href: str
    time: str
    patient: str
    mrn: str
    age_sex: str
    alerts: tuple[Badge, ...]
    exam: str
    accession: str
    priority: str
    priority_label: str
    status: str
    status_label: str
    wait: str
    wait_class: str
    steps: tuple[tuple[str, str], ...]  # (step name, URL to POST to)


@dataclass(frozen=True)
class Section:
    room: Room
    lines: list[RoomLine]


def _lines(rows: list[BoardRow], site: Site, day: date, now: datetime) -> list[RoomLine]:
    words, zone = Words.of_request(), site.zone
    exam_url, patient_url = IdUrl("frontdesk.exam", "exam_id"), IdUrl("patients.show", "patient_id")
    step_urls = {name: IdUrl(f".{name}", "exam_id") for name in technologist.MANUAL_STEPS}
    may_act = current_user.has_role(*TECHNOLOGISTS)
    lines = []
    for row in rows:
        exam, patient = row.exam, row.patient
        minutes, age = wait_minutes(exam, now), age_on(patient.birth_date, day)
        steps = technologist.manual_steps(exam) if may_act else ()
        lines.append(RoomLine(
            exam_id=exam.id, exam_href=exam_url(exam.id) if exam_url else "",
            patient_href=patient_url(patient.id) if patient_url else "",
            time=f"{local_hm(row.step.start_at, zone)}–{local_hm(row.step.end_at, zone)}",
            patient=patient.display_name, mrn=patient.mrn,
            age_sex=f"{'—' if age is None else age} {words.sex.get(patient.sex, '—')}",
            alerts=alert_badges(patient, words) if patient.has_alerts else (),
            exam=exam.description, accession=exam.accession_number,
            priority=row.order.priority.value.lower(),
            priority_label=words.priority[row.order.priority],
            status=exam.status.value, status_label=words.status[exam.status],
            wait="" if minutes is None else words.wait.replace("{n}", str(minutes)),
            wait_class=wait_class(minutes),
            steps=tuple((name, step_urls[name](exam.id)) for name in steps),
        ))  # fmt: skip
    return lines


def _room_arg(rooms: list[Room], warn: bool) -> Room | None:
    code = request.args.get("room", "").strip()
    if not code:
        return None
    room = next((room for room in rooms if room.code == code), None)
    if room is None and warn:
        flash(_("No room %(code)s; showing every room.", code=code), "error")
    return room


def _today_sections(
    action: str, warn: bool = True
) -> tuple[date, Room | None, list[Room], list[Section]]:
    """Today's sections (site time zone), audited as one look at the room list."""
    db, site, now = get_db(), site_of(current_app), utcnow()
    day = local_today(site)
    rooms = catalog.list_rooms(db, active_only=True)
    room = _room_arg(rooms, warn)
    days = technologist.room_days(db, site, day, rooms, room)
    sections = [Section(d.room, _lines(d.rows, site, day, now)) for d in days]
    audit.record(db, current_actor(), action, object_type="board",
                 detail={"date": day.isoformat(), "room": room.code if room else None,
                         "exams": sum(len(s.lines) for s in sections)})  # fmt: skip
    db.commit()  # before the page is built: SQLite writers wait for this lock
    return day, room, rooms, sections


@bp.route("/", endpoint="rooms")
@roles(*ROOM_READERS)
def room_list() -> str:
    """Today's exams in every room (or one), with the steps done by hand."""
    day, room, rooms, sections = _today_sections("rooms.view")
    return render_template(
        "worklist/rooms.html", day=day, room=room, rooms=rooms, sections=sections,
        token=generate_csrf(), here=request.full_path.rstrip("?"),
        refresh_seconds=REFRESH_SECONDS, blank=_blank_line(),
        initial=_payload(day, room, sections),
    )  # fmt: skip


@bp.route("/rows", endpoint="rows")
@roles(*ROOM_READERS)
def room_rows() -> Response:
    """The room list's rows as JSON, for the page to refresh itself."""
    day, room, _rooms, sections = _today_sections("rooms.refresh", warn=False)
    return jsonify(_payload(day, room, sections))


def _payload(day: date, room: Room | None, sections: list[Section]) -> dict[str, object]:
    return {
        "date": day.isoformat(), "room": room.code if room else None,
        "updated_at": utcnow().isoformat(),
        "rooms": [{"code": s.room.code, "name": s.room.name,
                   "rows": [asdict(line) for line in s.lines]} for s in sections],
    }  # fmt: skip


def _blank_line() -> RoomLine:
    """The row the page's script copies for an exam that appears after the page loaded."""
    return RoomLine(0, "", "", "", "", "", "", (), "", "", "", "", "", "", "", "", ())
