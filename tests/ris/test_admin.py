"""The admin's user management and audit log pages."""

from __future__ import annotations

import csv
import io
import re

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from ris.db import transaction
from ris.models import AuditEvent, User
from tests.conftest import Account, csrf_token, post_form, sign_in


def _admin_client(app: Flask, make_user) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, make_user("admin", username="chief")).status_code == 302
    return client


def test_admin_creates_a_user_who_must_change_the_one_time_password(app: Flask, make_user) -> None:
    admin = _admin_client(app, make_user)
    response = post_form(admin, "/admin/users/new", {
        "username": "Maria.Lopez", "full_name": "María López", "email": "maria@example.org",
        "locale": "es", "roles": ["front_desk", "billing"],
    })  # fmt: skip
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    password = re.search(r'data-testid="one-time-password">([^<]+)<', page).group(1)
    with transaction(app) as db:
        user = db.scalars(select(User).where(User.username == "maria.lopez")).one()
        assert user.role_names == {"front_desk", "billing"} and user.must_change_password
        assert user.password_hash != password and user.password_hash.startswith("$argon2id$")
        event = db.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "user.create", AuditEvent.object_id == str(user.id)
            )
        ).one()
        assert event.actor == "chief" and event.object_id == str(user.id)
    maria = app.test_client()
    assert sign_in(maria, Account("maria.lopez", password, 0)).status_code == 302
    assert maria.get("/workspace").headers["Location"] == "/account/password"


def test_duplicate_user_name_is_a_form_error(app: Flask, make_user) -> None:
    admin = _admin_client(app, make_user)
    make_user("billing", username="taken")
    response = post_form(
        admin, "/admin/users/new", {"username": "TAKEN", "roles": ["billing"], "locale": ""}
    )
    assert response.status_code == 200
    assert "is taken" in response.get_data(as_text=True)


def test_user_without_roles_is_a_form_error(app: Flask, make_user) -> None:
    admin = _admin_client(app, make_user)
    response = post_form(admin, "/admin/users/new", {"username": "norole", "locale": ""})
    assert "Choose at least one role" in response.get_data(as_text=True)


def test_disabling_a_user_ends_their_sessions(app: Flask, make_user) -> None:
    admin = _admin_client(app, make_user)
    tech = make_user("technologist")
    tech_client = app.test_client()
    sign_in(tech_client, tech)
    assert tech_client.get("/workspace").status_code == 200
    response = post_form(admin, f"/admin/users/{tech.id}", {
        "username": tech.username, "full_name": "Tech", "roles": ["technologist"], "locale": "",
    })  # active unchecked  # fmt: skip
    assert response.status_code == 302
    assert tech_client.get("/workspace").status_code == 302
    assert sign_in(app.test_client(), tech).status_code == 401
    with transaction(app) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "user.update")).one()
        assert '"active": false' in event.detail and '"active": true' in event.detail


def test_admin_cannot_lock_themselves_out(app: Flask, make_user) -> None:
    admin = _admin_client(app, make_user)
    with transaction(app) as db:
        me = db.scalars(select(User).where(User.username == "chief")).one().id
    response = post_form(admin, f"/admin/users/{me}", {
        "username": "chief", "roles": ["billing"], "active": "y", "locale": "",
    })  # fmt: skip
    assert response.status_code == 200
    assert "cannot disable yourself" in response.get_data(as_text=True)


def test_reset_password_gives_a_new_one_time_password(app: Flask, make_user) -> None:
    admin = _admin_client(app, make_user)
    user = make_user("radiologist")
    response = post_form(admin, f"/admin/users/{user.id}/password", {}, form_page="/admin/users")
    password = re.search(
        r'data-testid="one-time-password">([^<]+)<', response.get_data(as_text=True)
    ).group(1)
    assert sign_in(app.test_client(), user).status_code == 401
    assert sign_in(app.test_client(), Account(user.username, password, 0)).status_code == 302


def test_audit_log_search_and_csv_export(app: Flask, make_user) -> None:
    victim = make_user("billing", username="victim")
    sign_in(app.test_client(), victim, password="wrong password!!")
    admin = _admin_client(app, make_user)
    page = admin.get("/admin/audit?actor=victim&outcome=failure").get_data(as_text=True)
    assert "auth.login" in page and "victim" in page
    assert "chief" not in page.split("<tbody>")[1]  # the admin's own sign-in is filtered out
    export = admin.get("/admin/audit.csv?action=auth.login")
    assert export.mimetype == "text/csv"
    assert "attachment" in export.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert {(r["actor"], r["outcome"]) for r in rows} == {
        ("victim", "failure"),
        ("chief", "success"),
    }
    assert all(r["at"].endswith("+00:00") for r in rows)
    with transaction(app) as db:
        actions = set(db.scalars(select(AuditEvent.action).where(AuditEvent.actor == "chief")))
        assert {"audit.view", "audit.export"} <= actions


def test_audit_search_rejects_bad_dates_with_a_message(app: Flask, make_user) -> None:
    admin = _admin_client(app, make_user)
    response = admin.get("/admin/audit?since=yesterday")
    assert response.status_code == 200
    assert "Not a valid date value" in response.get_data(as_text=True)


def test_sign_out_is_audited(app: Flask, make_user) -> None:
    client = app.test_client()
    account = make_user("referrer")
    sign_in(client, account)
    client.post("/logout", data={"csrf_token": csrf_token(client, "/workspace")})
    with transaction(app) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "auth.logout")).one()
        assert event.user_id == account.id
