"""Headless Chromium: a technologist signs in, sees today's exams per room, starts and
completes an exam by hand, and sees a change made elsewhere (an MPPS) without reloading."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest
from flask import Flask

from ris import catalog, migrate, orders, scheduling, status
from ris.audit import Actor
from ris.db import transaction, utcnow
from ris.models import ExamStatus
from tests.conftest import build_app
from tests.factories import ACTOR, SITE, FrontDesk
from tests.serve_process import ServeProcess

pytestmark = pytest.mark.browser
PASSWORD = "technologist password 1"


def _department(data_dir: Path, url: str) -> tuple[Flask, list[str]]:
    """CT1 and MR1 open around the clock, with two exams booked in CT1 today."""
    app = build_app(data_dir, url, TIMEZONE="Europe/Madrid")
    migrate.upgrade(app)
    desk = FrontDesk(app)
    hours = {"opens_at": time(0), "closes_at": time(0), "open_days": "1234567"}
    accessions = []
    with transaction(app) as db:
        ct = catalog.save_room(db, ACTOR, catalog.RoomData(
            code="CT1", name="Scanner 1", modality="CT", ae_title="CT1_AE", **hours))  # fmt: skip
        catalog.save_room(db, ACTOR, catalog.RoomData(
            code="MR1", name="Magnet 1", modality="MR", ae_title="MR1_AE", **hours))  # fmt: skip
        code = desk.code(db, "74177", "CT", minutes=20)
        today = utcnow().astimezone(SITE.zone).date()
        for hour, family in ((0, "Peña"), (1, "Durand")):
            exam = desk.exam(db, desk.patient(db, family, "Ana", contrast_allergy=True), code)
            start = datetime.combine(today, time(hour), SITE.zone) + timedelta(minutes=10)
            scheduling.book(db, ACTOR, SITE, exam, ct, start, now=start)
            accessions.append(exam.accession_number)
    return app, accessions


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServeProcess, Flask, list[str]]]:
    data_dir = tmp_path_factory.mktemp("technologist")
    url = f"sqlite:///{data_dir / 'placa.db'}"
    app, accessions = _department(data_dir, url)
    serve = ServeProcess(
        data_dir, url, only=("web",), env_extra={"PLACA_TIMEZONE": "Europe/Madrid"}
    )
    created = serve.flask(
        "users", "create", "tech", "--role", "technologist", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    serve.start()
    serve.wait_ready()
    yield serve, app, accessions
    serve.stop()
    app.extensions["placa.engine"].dispose()


def test_start_then_complete_an_exam_and_see_an_mpps_arrive(served, browser) -> None:
    serve, app, (first, second) = served
    page = browser.new_page(locale="en-GB")
    page.goto(serve.base_url + "/")
    page.fill("input[name=username]", "tech")
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/worklist/")  # the technologist's home

    ct = page.locator("section[data-room=CT1]")
    assert page.locator("section[data-room=MR1]").inner_text().count("No exams in this room") == 1
    row = ct.locator("tbody tr", has_text=first)
    assert "PEÑA, Ana" in row.inner_text() and "Contrast allergy" in row.inner_text()
    assert "Scheduled" in row.inner_text()

    row.locator("button:has-text('Start')").click()
    page.wait_for_load_state()
    assert "The exam is started." in page.locator(".flashes").inner_text()
    row = page.locator("section[data-room=CT1] tbody tr", has_text=first)
    assert "In progress" in row.inner_text()
    row.locator("button:has-text('Complete')").click()
    page.wait_for_load_state()
    row = page.locator("section[data-room=CT1] tbody tr", has_text=first)
    assert "Completed" in row.inner_text()
    assert row.locator("button").count() == 0

    # The scanner reports the second exam (as the MPPS service would): the row changes by
    # itself, the page is not reloaded.
    page.evaluate("window.placaMarker = 'still here'")
    with transaction(app) as db:
        exam = orders.find_exam_by_accession(db, second)
        assert exam is not None
        status.change_status(db, Actor.dicom("CT1_AE", "127.0.0.1"), exam, ExamStatus.IN_PROGRESS)
    other = page.locator("section[data-room=CT1] tbody tr", has_text=second)
    other.locator(".status-in_progress").wait_for(timeout=20_000)
    assert "In progress" in other.inner_text()
    assert other.locator("button:has-text('Complete')").count() == 1
    assert page.evaluate("window.placaMarker") == "still here"
    assert "Updated at" in page.locator("[data-updated]").inner_text()

    # The Complete button the script built works like the server's.
    other.locator("button:has-text('Complete')").click()
    page.wait_for_load_state()
    other = page.locator("section[data-room=CT1] tbody tr", has_text=second)
    assert "Completed" in other.inner_text()
    page.close()
