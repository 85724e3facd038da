"""The `users` and `db` command groups."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import select

from ris.db import transaction
from ris.models import AuditEvent, User
from tests.conftest import Account, sign_in


def test_users_create_list_disable(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "Dr.House", "--role", "radiologist", "--role", "admin",
              "--password-stdin"],
        input="diagnosis is lupus never\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    listing = runner.invoke(args=["users", "list"]).output
    assert "dr.house\tactive\tadmin,radiologist" in listing
    assert (
        sign_in(app.test_client(), Account("dr.house", "diagnosis is lupus never", 0)).status_code
        == 302
    )
    assert runner.invoke(args=["users", "disable", "dr.house"]).exit_code == 0
    assert "dr.house\tdisabled" in runner.invoke(args=["users", "list"]).output
    assert (
        sign_in(app.test_client(), Account("dr.house", "diagnosis is lupus never", 0)).status_code
        == 401
    )
    with transaction(app) as db:
        actors = set(db.scalars(select(AuditEvent.actor).where(AuditEvent.action.like("user.%"))))
        assert actors == {"cli"}


def test_users_create_refuses_weak_password_and_unknown_role(app: Flask) -> None:
    runner = app.test_cli_runner()
    weak = runner.invoke(
        args=["users", "create", "x", "--role", "billing", "--password-stdin"], input="short\n"
    )
    assert weak.exit_code != 0 and "at least 12 characters" in weak.output
    role = runner.invoke(args=["users", "create", "x", "--role", "janitor"])
    assert role.exit_code != 0 and "janitor" in role.output


def test_users_create_without_password_prints_a_one_time_one(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["users", "create", "nurse", "--role", "front_desk"])
    password = result.output.rsplit(": ", 1)[1].strip()
    client = app.test_client()
    assert sign_in(client, Account("nurse", password, 0)).status_code == 302
    assert client.get("/workspace").headers["Location"] == "/account/password"


def test_bootstrap_admin_once_with_a_private_password_file(app: Flask) -> None:
    runner = app.test_cli_runner()
    first = runner.invoke(args=["users", "bootstrap-admin"])
    assert first.exit_code == 0 and "First administrator account created" in first.output
    path = Path(app.config["DATA_DIR"]) / "initial-admin-password"
    password = path.read_text().strip()
    assert password in first.output and len(password) >= 20
    assert path.stat().st_mode & 0o777 == 0o600
    second = runner.invoke(args=["users", "bootstrap-admin"])
    assert second.exit_code == 0 and second.output == ""
    assert path.read_text().strip() == password
    with transaction(app) as db:
        admins = db.scalars(select(User)).all()
        assert [(u.username, sorted(u.role_names), u.must_change_password) for u in admins] == [
            ("admin", ["admin"], True)
        ]
    client = app.test_client()
    assert sign_in(client, Account("admin", password, 0)).status_code == 302


def test_no_default_password_signs_in(app: Flask) -> None:
    app.test_cli_runner().invoke(args=["users", "bootstrap-admin"])
    for guess in ("admin", "password", "placa", "changeme", "admin123"):
        assert sign_in(app.test_client(), Account("admin", guess, 0)).status_code == 401
