"""Health check, languages, error pages and security headers."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import build_app, sign_in


def test_healthz_reports_database_and_archive(client: FlaskClient) -> None:
    response = client.get("/healthz")
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "ok" and body["database"] is True and body["archive"] is True
    assert body["doors"] == {}  # plain WSGI: no door started in this process


def test_healthz_is_unavailable_without_a_database(tmp_path: Path) -> None:
    app = build_app(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] is False


def test_sign_in_page_speaks_the_browser_language(client: FlaskClient) -> None:
    spanish = client.get("/", headers={"Accept-Language": "es-ES,es;q=0.9"}).get_data(as_text=True)
    french = client.get("/", headers={"Accept-Language": "fr-FR"}).get_data(as_text=True)
    english = client.get("/", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert 'lang="es"' in spanish and "Contraseña" in spanish
    assert 'lang="fr"' in french and "Mot de passe" in french
    assert 'lang="en"' in english and "Password" in english


def test_profile_language_wins_over_the_browser(client: FlaskClient, make_user) -> None:
    sign_in(client, make_user("front_desk"))
    from tests.conftest import post_form

    post_form(client, "/account", {"full_name": "Gaëlle Peña", "locale": "fr"})
    page = client.get("/workspace", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert 'lang="fr"' in page and "Gaëlle Peña" in page


def test_security_headers_and_no_cache_for_signed_in_pages(client: FlaskClient, make_user) -> None:
    anonymous = client.get("/")
    assert "default-src 'self'" in anonymous.headers["Content-Security-Policy"]
    assert anonymous.headers["X-Content-Type-Options"] == "nosniff"
    assert anonymous.headers["X-Frame-Options"] == "DENY"
    sign_in(client, make_user("admin"))
    assert client.get("/admin/users").headers["Cache-Control"] == "no-store"


def test_pages_use_only_local_assets(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "http://" not in page and "https://" not in page
    with client.get("/static/placa.css") as stylesheet:
        assert stylesheet.status_code == 200


def test_error_pages_leak_nothing(app: Flask, client: FlaskClient, make_user) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    from ris.auth import signed_in

    signed_in(boom)
    sign_in(client, make_user("admin"))
    response = client.get("/boom")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "hunter2" not in body and "Traceback" not in body and "RuntimeError" not in body
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "does not exist" in missing.get_data(as_text=True)
    api = client.get("/api/nothing")
    assert api.status_code == 404 and api.get_json()["status"] == 404
