"""Sign-in, sign-out, sessions that end on the server, throttling and CSRF."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from ris.db import transaction, utcnow
from ris.models import AuditEvent, UserSession
from tests.conftest import Account, csrf_token, post_form, sign_in


def test_sign_in_lands_on_role_home_and_is_audited(
    app: Flask, client: FlaskClient, make_user
) -> None:
    admin = make_user("admin")
    response = sign_in(client, admin)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert client.get("/").headers["Location"] == "/admin/"
    assert "Administration" in client.get("/admin/").get_data(as_text=True)
    with transaction(app) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login")).one()
        assert (event.actor, event.outcome, event.user_id) == (admin.username, "success", admin.id)
        assert event.address == "127.0.0.1"


def test_other_roles_land_on_their_workspace(client: FlaskClient, make_user) -> None:
    sign_in(client, make_user("radiologist"))
    assert client.get("/").headers["Location"] == "/workspace"
    assert "Radiologist" in client.get("/workspace").get_data(as_text=True)


def test_wrong_password_is_refused_and_audited(app: Flask, client: FlaskClient, make_user) -> None:
    account = make_user("front_desk")
    response = sign_in(client, account, password="not the password")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.get_data(as_text=True)
    assert client.get("/workspace").status_code == 302  # still anonymous
    with transaction(app) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login")).one()
        assert (event.actor, event.outcome) == (account.username, "failure")


def test_unknown_and_disabled_accounts_get_the_same_answer(client: FlaskClient, make_user) -> None:
    ghost = Account("nobody", "whatever-password", 0)
    assert sign_in(client, ghost).status_code == 401


def test_login_form_requires_csrf_token(client: FlaskClient, make_user) -> None:
    account = make_user("admin")
    client.get("/login")
    response = client.post(
        "/login", data={"username": account.username, "password": account.password}
    )
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


def test_session_cookie_flags(client: FlaskClient, make_user) -> None:
    response = sign_in(client, make_user("billing"))
    cookie = response.headers["Set-Cookie"]
    assert "placa_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def _captured_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("placa_session")
    assert cookie is not None
    return cookie.value


def _replay(app: Flask, cookie: str, path: str = "/workspace") -> int:
    other = app.test_client()
    other.set_cookie("placa_session", cookie)
    return other.get(path).status_code


def test_cookie_captured_before_sign_out_no_longer_works(
    app: Flask, client: FlaskClient, make_user
) -> None:
    sign_in(client, make_user("technologist"))
    cookie = _captured_cookie(client)
    assert _replay(app, cookie) == 200
    response = post_form(client, "/logout", {}, form_page="/workspace")
    assert response.status_code == 302
    assert _replay(app, cookie) == 302  # sent back to sign-in


def test_password_change_ends_other_sessions(app: Flask, client: FlaskClient, make_user) -> None:
    account = make_user("radiologist")
    elsewhere = app.test_client()
    sign_in(elsewhere, account)
    sign_in(client, account)
    old_cookie = _captured_cookie(client)
    new_password = "a brand new password 42"
    response = post_form(
        client, "/account/password",
        {"current_password": account.password, "new_password": new_password,
         "confirm": new_password},
    )  # fmt: skip
    assert response.status_code == 302
    assert client.get("/workspace").status_code == 200  # this browser carries on
    assert elsewhere.get("/workspace").status_code == 302
    assert _replay(app, old_cookie) == 302
    assert sign_in(app.test_client(), account).status_code == 401
    assert sign_in(app.test_client(), account, password=new_password).status_code == 302


def test_wrong_current_password_keeps_the_old_one(client: FlaskClient, make_user) -> None:
    account = make_user("billing")
    sign_in(client, account)
    response = post_form(
        client, "/account/password",
        {"current_password": "wrong wrong wrong", "new_password": "x" * 14, "confirm": "x" * 14},
    )  # fmt: skip
    assert response.status_code == 200
    assert "The current password is wrong" in response.get_data(as_text=True)


def _age_sessions(app: Flask, **ages: timedelta) -> None:
    values = {column: utcnow() - age for column, age in ages.items()}
    with transaction(app) as db:
        db.execute(update(UserSession).values(**values))


def test_idle_timeout_is_enforced_on_the_server(app: Flask, client: FlaskClient, make_user) -> None:
    sign_in(client, make_user("front_desk"))
    assert client.get("/workspace").status_code == 200
    _age_sessions(app, last_seen_at=timedelta(minutes=app.config["SESSION_IDLE_MINUTES"] + 1))
    assert client.get("/workspace").status_code == 302
    with transaction(app) as db:
        assert db.scalars(select(UserSession.end_reason)).one() == "idle"


def test_absolute_lifetime_is_enforced_on_the_server(
    app: Flask, client: FlaskClient, make_user
) -> None:
    sign_in(client, make_user("front_desk"))
    _age_sessions(app, created_at=timedelta(hours=app.config["SESSION_MAX_HOURS"], minutes=1))
    assert client.get("/workspace").status_code == 302


def test_throttling_per_account(app: Flask, client: FlaskClient, make_user) -> None:
    account = make_user("admin")
    limit = app.config["LOGIN_MAX_FAILURES"]
    for _ in range(limit):
        assert sign_in(client, account, password="wrong password!").status_code == 401
    response = sign_in(client, account)  # even the right password waits
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
    with transaction(app) as db:
        outcomes = db.scalars(select(AuditEvent.outcome).where(AuditEvent.action == "auth.login"))
        assert list(outcomes).count("throttled") == 1


def test_throttling_per_address(tmp_path, database_url: str, make_user) -> None:
    from tests.conftest import build_app

    app = build_app(tmp_path, database_url, LOGIN_MAX_FAILURES_PER_ADDRESS=3)
    client = app.test_client()
    for name in ("a1", "a2", "a3"):
        assert sign_in(client, Account(name, "wrong password!", 0)).status_code == 401
    assert sign_in(client, Account("a4", "wrong password!", 0)).status_code == 429
    app.extensions["placa.engine"].dispose()


def test_next_parameter_cannot_redirect_elsewhere(client: FlaskClient, make_user) -> None:
    account = make_user("admin")
    token = csrf_token(client, "/login")
    data = {"username": account.username, "password": account.password, "csrf_token": token}
    response = client.post("/login?next=//evil.example/x", data=data)
    assert response.headers["Location"] == "/"


def test_next_parameter_returns_to_the_asked_page(client: FlaskClient, make_user) -> None:
    account = make_user("admin")
    assert client.get("/admin/users").headers["Location"].startswith("/login?next=/admin/users")
    token = csrf_token(client, "/login")
    data = {"username": account.username, "password": account.password, "csrf_token": token}
    assert client.post("/login?next=/admin/users", data=data).headers["Location"] == "/admin/users"


def test_must_change_password_before_anything_else(client: FlaskClient, make_user) -> None:
    account = make_user("admin", must_change=True)
    sign_in(client, account)
    assert client.get("/admin/users").headers["Location"] == "/account/password"
    new_password = "first real password 1"
    post_form(
        client, "/account/password",
        {"current_password": account.password, "new_password": new_password,
         "confirm": new_password},
    )  # fmt: skip
    assert client.get("/admin/users").status_code == 200
