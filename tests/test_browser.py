"""Headless Chromium against a running `serve`: sign in, land on the role's home, sign out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_process import ServeProcess

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("browser")
    serve = ServeProcess(data_dir, f"sqlite:///{data_dir / 'placa.db'}", only=("web",))
    assert serve.flask("db", "upgrade").returncode == 0
    assert serve.flask("users", "bootstrap-admin").returncode == 0
    serve.start()
    serve.wait_ready()
    yield serve
    serve.stop()


def test_first_admin_signs_in_changes_password_and_signs_out(served: ServeProcess, browser) -> None:
    password = (Path(served.data_dir) / "initial-admin-password").read_text().strip()
    page = browser.new_page(locale="en-GB")
    page.goto(served.base_url + "/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")
    page.wait_for_url("**/account/password")
    assert page.locator("h1").inner_text() == "Change your password"
    page.fill("input[name=current_password]", password)
    page.fill("input[name=new_password]", "radiology rocks 2026")
    page.fill("input[name=confirm]", "radiology rocks 2026")
    page.click("main button[type=submit]")
    page.wait_for_url("**/admin/")
    assert page.locator("h1").inner_text() == "Administration"
    assert page.get_by_role("link", name="Audit log").first.is_visible()
    page.click("[data-testid=sign-out]")
    page.wait_for_url("**/login")
    assert "You are signed out." in page.content()
    page.goto(served.base_url + "/admin/")
    assert "/login?next=" in page.url
    page.close()


def test_front_desk_lands_on_the_day_board_in_spanish(served: ServeProcess, browser) -> None:
    created = served.flask(
        "users", "create", "recepcion", "--role", "front_desk", "--password-stdin",
        stdin="mostrador principal 1\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    page = browser.new_page(locale="es-ES")
    page.goto(served.base_url + "/")
    assert page.locator("h1").inner_text() == "Iniciar sesión en Placa"
    page.fill("input[name=username]", "recepcion")
    page.fill("input[name=password]", "mostrador principal 1")
    page.keyboard.press("Enter")
    page.wait_for_url("**/board")
    assert page.get_by_role("link", name="Pacientes").count() == 1  # navigation in Spanish
    assert page.get_by_role("link", name="Usuarios").count() == 0  # no admin navigation
    page.click("[data-testid=sign-out]")
    page.wait_for_url("**/login")
    page.close()
