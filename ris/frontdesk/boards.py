"""The day board (department or room) and a room's week calendar."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

from flask import (
    abort,
    current_app,
    flash,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select

from ris import audit, catalog
from ris import board as boards
from ris.auth import BOARD_READERS, FRONT_DESK, current_actor, roles
from ris.db import get_db, utcnow
from ris.frontdesk import bp
from ris.frontdesk.common import (
    UNBOOKED_LIMIT,
    WAIT_LATE_MINUTES,
    WAIT_WARN_MINUTES,
    Badge,
    IdUrl,
    Words,
    age_on,
    alert_badges,
    date_arg,
    local_hm,
    local_today,
    person_name,
    wait_class,
    wait_minutes,
)
from ris.models import (
    ExamStatus,
    Room,
)
from ris.site import Site, site_of

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- day board


@dataclass(frozen=True, slots=True)
class BoardLine:
    """One board row as the template prints it. Everything is worked out here, once per
    row, so a 2,000-exam day renders fast: no macro, translation or URL building per row."""

    exam_href: str
    patient_href: str
    room_href: str
    check_in_href: str
    time: str
    room: str
    patient: str
    age_sex: str
    exam: str
    priority: str
    priority_label: str
    status: str
    status_label: str
    wait: str
    wait_class: str
    arrived_at: str
    accession: str
    referring: str
    alerts: tuple[Badge, ...]


def _board_lines(
    rows: list[boards.BoardRow], site: Site, day: date, can_check_in: bool
) -> list[BoardLine]:
    now, zone, words = utcnow(), site.zone, Words.of_request()
    exam_url, patient_url = IdUrl(".exam", "exam_id"), IdUrl("patients.show", "patient_id")
    check_in_url = IdUrl(".check_in", "exam_id")
    week_urls: dict[str, str] = {}
    lines = []
    for row in rows:
        exam, patient, order = row.exam, row.patient, row.order
        minutes = wait_minutes(exam, now)
        age = age_on(patient.birth_date, day)
        if row.room.code not in week_urls:
            week_urls[row.room.code] = url_for(".calendar", room_code=row.room.code,
                                               week=day.isoformat())  # fmt: skip
        lines.append(BoardLine(
            exam_href=exam_url(exam.id),
            patient_href=patient_url(patient.id) if patient_url else "",
            room_href=week_urls[row.room.code],
            check_in_href=check_in_url(exam.id)
            if can_check_in and exam.status is ExamStatus.SCHEDULED else "",
            time=f"{local_hm(row.step.start_at, zone)}–{local_hm(row.step.end_at, zone)}",
            room=row.room.code, patient=patient.display_name,
            age_sex=f"{'—' if age is None else age} {words.sex.get(patient.sex, '—')}",
            exam=exam.description, priority=order.priority.value.lower(),
            priority_label=words.priority[order.priority], status=exam.status.value,
            status_label=words.status[exam.status],
            wait="" if minutes is None else words.wait.replace("{n}", str(minutes)),
            wait_class=wait_class(minutes),
            arrived_at=exam.arrived_at.isoformat() if minutes is not None and exam.arrived_at
            else "", accession=exam.accession_number,
            referring=person_name(order.referring_physician),
            alerts=alert_badges(patient, words) if patient.has_alerts else (),
        ))  # fmt: skip
    return lines


def _room_arg(rooms: list[Room]) -> Room | None:
    code = request.args.get("room", "").strip()
    if not code:
        return None
    room = next((room for room in rooms if room.code == code), None)
    if room is None:
        flash(_("No room %(code)s; showing the whole department.", code=code), "error")
    return room


@bp.route("/board", endpoint="board")
@roles(*BOARD_READERS)
def day_board() -> str:
    """The department's (or one room's) day: every booked exam, in start order."""
    with collector_paused():
        db, site = get_db(), site_of(current_app)
        day = date_arg("date") or local_today(site)
        rooms = catalog.list_rooms(db)
        room = _room_arg(rooms)
        rows = boards.day_board(db, site, day, room.id if room else None)
        waiting = boards.unbooked_exams(db, limit=UNBOOKED_LIMIT)
        can_check_in = current_user.has_role(*FRONT_DESK)
        audit.record(db, current_actor(), "board.view", object_type="board",
                     detail={"date": day.isoformat(), "room": room.code if room else None,
                             "exams": len(rows)})  # fmt: skip
        db.commit()  # before the page is built: SQLite writers wait for this lock
        return render_template(
            "frontdesk/board.html", day=day, room=room, rooms=rooms, waiting=waiting,
            lines=_board_lines(rows, site, day, can_check_in),
            today=local_today(site), now=utcnow(), prev_day=day - timedelta(days=1),
            next_day=day + timedelta(days=1), exam_url=IdUrl(".exam", "exam_id"),
            token=generate_csrf(), wait_format=Words.of_request().wait,
            wait_warn=WAIT_WARN_MINUTES, wait_late=WAIT_LATE_MINUTES,
        )  # fmt: skip


@contextmanager
def collector_paused() -> Iterator[None]:
    """Build a large page without the cyclic garbage collector stopping to scan the whole
    heap: the tens of thousands of short-lived ORM objects of a busy day trigger full
    collections that cost more than the query. Reference counting still frees them, and
    the collector resumes when the page is built (it is never left off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------- room calendar


@bp.route("/calendar/<room_code>")
@roles(*BOARD_READERS)
def calendar(room_code: str) -> str:
    """One room's week, Monday to Sunday."""
    db, site = get_db(), site_of(current_app)
    room = db.scalar(select(Room).where(Room.code == room_code))
    if room is None:
        abort(404)
    day = date_arg("week") or local_today(site)
    monday = day - timedelta(days=day.weekday())
    week = boards.week_board(db, site, room.id, monday)
    rooms = catalog.list_rooms(db, active_only=True)
    audit.record(db, current_actor(), "calendar.view", object_type="room", object_id=room.id,
                 detail={"week": monday.isoformat(), "room": room.code,
                         "exams": sum(len(rows) for rows in week.values())})  # fmt: skip
    db.commit()
    return render_template(
        "frontdesk/calendar.html", room=room, rooms=rooms,
        monday=monday, week=week, today=local_today(site),
        prev_week=monday - timedelta(days=7), next_week=monday + timedelta(days=7),
    )  # fmt: skip
