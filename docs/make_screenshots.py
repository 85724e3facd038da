"""Regenerate the README screenshots from the demo department, in headless Chromium.

    .venv/bin/python docs/make_screenshots.py

Loads `flask demo` into a throw-away data folder, starts the web door, signs in as the
demo front desk and photographs the day board and a patient page into docs/screenshots/.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import CHROMIUM_FLAGS  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
NEW_PASSWORD = "screenshots only 2026"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        serve = ServeProcess(Path(folder), f"sqlite:///{folder}/placa.db", only=("web",),
                             env_extra={"PLACA_TIMEZONE": "Europe/Madrid"})  # fmt: skip
        serve.flask("db", "upgrade")
        demo = serve.flask("demo").stdout
        password = re.search(r"frontdesk\s+front_desk\s+(\S+)", demo).group(1)
        serve.start()
        serve.wait_ready()
        try:
            shoot(serve.base_url, password)
        finally:
            serve.stop()


def shoot(base_url: str, password: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900}, locale="en-GB")
        page.goto(base_url + "/")
        page.fill("input[name=username]", "frontdesk")
        page.fill("input[name=password]", password)
        page.click("main button[type=submit]")
        page.fill("input[name=current_password]", password)
        page.fill("input[name=new_password]", NEW_PASSWORD)
        page.fill("input[name=confirm]", NEW_PASSWORD)
        page.click("main button[type=submit]")
        page.goto(base_url + "/board")
        page.screenshot(path=str(OUT / "day-board.png"))
        page.click("table.board tbody tr.row-arrived td.who a")
        page.wait_for_url("**/patients/*")
        page.screenshot(path=str(OUT / "patient-page.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
