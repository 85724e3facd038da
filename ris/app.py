"""The web composition root: ``create_app`` builds the Flask application, nothing more.

No sockets, threads or migrations start here (those are ``serve`` and ``db upgrade``),
so tests and WSGI servers can build as many applications as they like.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from flask_login import current_user
from flask_wtf import CSRFProtect

from ris import auth, config, db, i18n

HERE = Path(__file__).parent


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Placa web application from settings (environment, then ``test_config``)."""
    settings = config.load(test_config)
    app = Flask("ris", root_path=str(HERE))
    app.config.update(settings)
    _configure_logging(app)
    _configure_cookies(app)
    db.init_app(app)
    i18n.init_app(app)
    # Checked by ris.auth, which excuses requests that carry their own credentials.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.before_request(auth.csrf_unless_credentials(CSRFProtect(app)))
    _register_blueprints(app)
    _register_commands(app)
    app.after_request(_security_headers)
    return app


def _configure_logging(app: Flask) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(app.config["LOG_LEVEL"])
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _configure_cookies(app: Flask) -> None:
    app.config.update(
        SESSION_COOKIE_NAME="placa_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app.config["SECURE_COOKIES"],
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the server-side session
    )


def _register_blueprints(app: Flask) -> None:
    # Imported here so that nothing binds to an application at import time.
    from pacs import dicomweb
    from pacs import views as pacs_views
    from ris import (
        admin,
        api,
        auth,
        catalog_views,
        frontdesk,
        health,
        hl7_views,
        outbox_views,
        patient_views,
        signin,
        views,
    )
    from ris.errors import register_error_handlers
    from worklist import views as worklist_views

    for module in (signin, views, admin, health, patient_views, frontdesk, catalog_views, api,
                   outbox_views, hl7_views, worklist_views, pacs_views, dicomweb):  # fmt: skip
        app.register_blueprint(module.bp)
    auth.init_app(app)
    register_error_handlers(app)


def _register_commands(app: Flask) -> None:
    from pacs import cli as pacs_cli
    from ris import cli, demo, hl7_cli, serve
    from worklist import cli as worklist_cli

    app.cli.add_command(cli.users_group)
    app.cli.add_command(cli.db_group)
    app.cli.add_command(serve.serve_command)
    app.cli.add_command(demo.demo_command)
    app.cli.add_command(hl7_cli.hl7_group)
    app.cli.add_command(worklist_cli.simulate_modality_command)
    app.cli.add_command(pacs_cli.ae_group)
    app.cli.add_command(pacs_cli.import_dicom_command)


CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "geolocation=(), camera=(), payment=()")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static" and current_user and current_user.is_authenticated:
        headers["Cache-Control"] = "no-store"  # pages with patient data stay off disk caches
    if response.mimetype == "text/html":
        headers.add("Vary", "Cookie")
    return response
