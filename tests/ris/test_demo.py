"""The `demo` command: a realistic department, loaded once, through the services."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from ris import demo, patients
from ris.config import AE_TITLE_PATTERN
from ris.db import sessions, transaction
from ris.models import (
    HOLDS_SLOT,
    ExamStatus,
    MRISafety,
    Patient,
    PregnancyStatus,
    ProcedureCode,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
    StatusChange,
)
from ris.scheduling import within_opening_hours
from ris.site import site_of
from tests.conftest import Account, sign_in
from tests.factories import FrontDesk


def test_demo_loads_a_department_once(app: Flask, make_user) -> None:
    make_user("technologist", username="tech")  # accounts may exist: they are kept
    runner = app.test_cli_runner()
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    assert "patients: 200" in result.output
    passwords = dict(re.findall(r"^  (\w+) +\w+ +(\S{20,})$", result.output, re.MULTILINE))
    assert set(passwords) == {"frontdesk", "radiologist", "billing"}
    assert (
        sign_in(app.test_client(), Account("frontdesk", passwords["frontdesk"], 0)).status_code
        == 302
    )

    with transaction(app) as db:
        _check_catalog(db)
        _check_patients(db)
        _check_exams(db, app)

    again = runner.invoke(args=["demo"])
    assert again.exit_code != 0
    assert "already holds patients" in again.output
    with transaction(app) as db:
        assert db.scalar(select(func.count()).select_from(Patient)) == 200


def _check_catalog(db) -> None:
    rooms = {room.code: room for room in db.scalars(select(Room))}
    assert set(rooms) == {"CT1", "MR1", "US1", "CR1"}
    assert all(AE_TITLE_PATTERN.match(room.ae_title or "") for room in rooms.values())
    assert all(room.station_name for room in rooms.values())
    codes = db.scalars(select(ProcedureCode)).all()
    assert 28 <= len(codes) <= 40
    assert {"71045", "71046", "70450", "74177", "71260", "70551", "70553", "72148", "73721",
            "76700", "76856", "76536", "93880", "73030", "73610", "72100"} <= {
        code.code for code in codes
    }  # fmt: skip
    for code in codes:
        assert code.code_system == "CPT" and code.body_part and code.technical_charge > 0
        assert [room.modality for room in code.rooms] == [code.modality]


def _check_patients(db) -> None:
    people = db.scalars(select(Patient)).all()
    assert len(people) == 200
    names = " ".join(f"{p.family_name} {p.given_name}" for p in people)
    assert re.search(r"[ñÑ]", names) and re.search(r"[ëèéï]", names) and "'" in names
    assert any(" " in p.family_name for p in people)  # Spanish: two surnames
    assert any(p.contrast_allergy for p in people)
    assert any(p.mri_safety is MRISafety.CONDITIONAL for p in people)
    assert any(p.pregnancy_status is PregnancyStatus.DEFINITELY_PREGNANT for p in people)
    assert all(p.phone and p.birth_date and p.sex for p in people)
    # The accent-blind search finds the woman registered twice, with and without accents.
    found = patients.search_patients(db, "nunez garcia begona")
    assert {p.family_name for p in found} >= {"Núñez García", "NUNEZ GARCIA"}


def _check_exams(db, app: Flask) -> None:
    site = site_of(app)
    exams = db.scalars(select(RequestedProcedure)).all()
    assert {exam.status for exam in exams} == set(ExamStatus)
    for exam in exams:
        history = db.scalars(
            select(StatusChange).where(StatusChange.procedure_id == exam.id)
            .order_by(StatusChange.id)
        ).all()  # fmt: skip
        assert history[0].from_status is None and history[-1].to_status is exam.status
        assert [c.at for c in history] == sorted(c.at for c in history)
        assert (exam.arrived_at is not None) == (
            ExamStatus.ARRIVED in {c.to_status for c in history}
        )
    steps = db.scalars(select(ScheduledProcedureStep)).all()
    for step in steps:
        assert within_opening_hours(step.room, step.start_at, step.end_at, site)
    holding = [s for s in steps if s.procedure.status in HOLDS_SLOT]
    for one in holding:
        for other in holding:
            if one.id < other.id and one.start_at < other.end_at and other.start_at < one.end_at:
                assert one.room_id != other.room_id
                assert one.procedure.order.patient_id != other.procedure.order.patient_id


def test_demo_refuses_a_database_with_patients(app: Flask) -> None:
    desk = FrontDesk(app)
    with desk.session() as db:
        desk.patient(db)
        db.commit()
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code != 0 and "already holds patients" in result.output
    with transaction(app) as db:
        assert db.scalar(select(func.count()).select_from(Room)) == 0


@pytest.mark.parametrize(
    ("weekday", "hour", "minute"), [(0, 0, 5), (0, 7, 30), (2, 12, 0), (4, 23, 58), (6, 3, 0)]
)
def test_every_status_whatever_the_time_of_the_load(
    app: Flask, weekday: int, hour: int, minute: int
) -> None:
    """Just after midnight on Monday nothing of the week is past yet, late on Friday nothing
    is ahead: the emergency CT and next week's bookings still give every status."""
    site = site_of(app)
    today = datetime.now(site.zone).date()
    day = today + timedelta(days=7 - today.weekday() + weekday)
    now = datetime.combine(day, time(hour, minute), site.zone)
    with app.app_context(), sessions(app)() as db:
        rooms, codes = demo.load_catalog(db)
        bookings, days = demo.plan_bookings(db, site, rooms, codes, now)
        assert {b.target for b in bookings} == set(ExamStatus) - {ExamStatus.ORDERED}
        assert days[0].weekday() == 0 and len(days) == 5
        db.rollback()
