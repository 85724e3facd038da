"""Scheduled housekeeping."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import select, update

from ris import users
from ris.db import transaction, utcnow
from ris.jobs import close_stale_sessions
from ris.models import UserSession
from ris.scheduler import JOBS, run_job


def test_stale_sessions_are_closed_and_old_ones_dropped(app: Flask, make_user) -> None:
    account = make_user("billing")
    with transaction(app) as db:
        user = users.get_user(db, account.id)
        for _ in range(3):
            users.open_session(db, user, "127.0.0.1", "test")
        first, second, third = db.scalars(select(UserSession.id).order_by(UserSession.id)).all()
        now = utcnow()
        _set(db, first, last_seen_at=now - timedelta(hours=2))  # idle: to close
        _set(db, second, created_at=now - timedelta(days=200), ended_at=now - timedelta(days=100))
    with transaction(app) as db:
        assert close_stale_sessions(db, timedelta(minutes=30), timedelta(hours=12)) == 1
    with transaction(app) as db:
        rows = {row.id: row.end_reason for row in db.scalars(select(UserSession))}
    assert rows == {first: "expired", third: None}


def _set(db, session_id: int, **values: object) -> None:
    db.execute(update(UserSession).where(UserSession.id == session_id).values(**values))


def test_a_failing_job_is_logged_not_raised(app: Flask, caplog) -> None:
    def broken(_app: Flask, _db: object) -> None:
        raise RuntimeError("disk on fire")

    run_job(app, "broken", broken)
    assert "Scheduled job broken failed" in caplog.text
    assert [job_id for job_id, _job, _trigger in JOBS] == ["close-stale-sessions", "hl7-send"]
