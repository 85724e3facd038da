"""Headless Chromium: the front desk finds a patient, books the next free CT slot, checks the
patient in and sees the wait time on the day board."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time
from pathlib import Path

import pytest

from ris import catalog, migrate
from ris.db import transaction
from tests.conftest import build_app
from tests.factories import ACTOR, FrontDesk
from tests.serve_process import ServeProcess

pytestmark = pytest.mark.browser
PASSWORD = "front desk password 1"


def _department(data_dir: Path, url: str) -> None:
    """A CT room open around the clock (so a slot is free right now), a CT code, a patient."""
    app = build_app(data_dir, url, TIMEZONE="Europe/Madrid")
    migrate.upgrade(app)
    desk = FrontDesk(app)
    with transaction(app) as db:
        room = catalog.RoomData(
            code="CT1", name="Scanner 1", modality="CT", ae_title="CT1_AE",
            opens_at=time(0), closes_at=time(0), open_days="1234567",
        )  # fmt: skip
        catalog.save_room(db, ACTOR, room)
        desk.code(db, "74177", "CT", minutes=5)  # short: the next slot stays today
        desk.patient(db, "Peña", "José")
    app.extensions["placa.engine"].dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("frontdesk")
    url = f"sqlite:///{data_dir / 'placa.db'}"
    _department(data_dir, url)
    serve = ServeProcess(
        data_dir, url, only=("web",), env_extra={"PLACA_TIMEZONE": "Europe/Madrid"}
    )
    created = serve.flask(
        "users", "create", "desk", "--role", "front_desk", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert created.returncode == 0, created.stderr
    serve.start()
    serve.wait_ready()
    yield serve
    serve.stop()


def test_book_the_next_free_ct_slot_check_in_and_see_the_wait(
    served: ServeProcess, browser
) -> None:
    page = browser.new_page(locale="en-GB")
    page.goto(served.base_url + "/")
    page.fill("input[name=username]", "desk")
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/board")  # the front desk's home

    page.click("nav >> text=Patients")
    page.fill("input[name=q]", "pena")
    page.keyboard.press("Enter")
    page.click("text=PEÑA, José")
    page.wait_for_url("**/patients/*")

    page.click("main >> text=New order")
    page.fill("input[name=ordering_physician]", "House^Gregory")
    page.check("input[name=procedures]")
    page.click("main button[type=submit]")
    page.wait_for_url("**/exams/*")
    accession = page.locator("main").inner_text()

    page.click("button.slot >> nth=0")  # the next free CT slot
    page.wait_for_load_state()
    assert "Scheduled" in page.locator("main").inner_text()
    page.click("main button:has-text('Check in')")
    page.wait_for_load_state()
    assert "Arrived" in page.locator("main").inner_text()

    page.click("nav >> text=Day board")
    page.wait_for_url("**/board**")
    row = page.locator("table.board tbody tr", has_text="PEÑA")
    assert row.count() == 1
    assert "Arrived" in row.inner_text()
    wait = row.locator("span.wait")
    assert wait.count() == 1 and "min" in wait.inner_text()
    assert any(word in accession for word in row.inner_text().split())
    page.close()
