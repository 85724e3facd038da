"""Who may use which route: one mechanism for every page, API route and DICOMweb route.

Every view declares its audience with :func:`roles`, :func:`signed_in` or :func:`public`.
:func:`enforce_access` runs before every request and refuses any route that declares
nothing, so a route added without a declaration is closed, not open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import Flask, abort, current_app, redirect, request, session, url_for
from flask_login import LoginManager, current_user

from ris import audit, users
from ris.audit import Actor
from ris.db import get_db
from ris.errors import wants_json
from ris.models import ROLES, User

logger = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., Any])
ALL_ROLES = frozenset(ROLES)

# Who may do what, named once for every door (pages, API, later DICOMweb).
ADMIN = ("admin",)
FRONT_DESK = ("front_desk", "admin")
PATIENT_READERS = ("admin", "front_desk", "technologist", "radiologist", "transcriptionist",
                   "billing")  # fmt: skip
BOARD_READERS = ("admin", "front_desk", "technologist", "radiologist")
TECHNOLOGISTS = ("technologist", "admin")
ROOM_READERS = ("technologist", "admin", "front_desk")  # the technologist room list
# DICOMweb: who may see images (referrers are refused until studies can be filtered to
# their own patients), and who may store them (STOW-RS).
IMAGE_READERS = ("admin", "radiologist", "technologist", "front_desk")
IMAGE_WRITERS = ("technologist", "admin")
# Pages a user whose password must be changed may still reach.
PASSWORD_CHANGE_ENDPOINTS = {"auth.change_password", "auth.logout", "static"}


def roles(*names: str) -> Callable[[View], View]:
    """Allow the view to signed-in users holding at least one of ``names``."""
    unknown = set(names) - ALL_ROLES
    if unknown or not names:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def declare(view: View) -> View:
        view.placa_roles = frozenset(names)  # type: ignore[attr-defined]
        return view

    return declare


def signed_in(view: View) -> View:
    """Allow the view to any signed-in user, whatever their role."""
    view.placa_roles = ALL_ROLES  # type: ignore[attr-defined]
    return view


def public(view: View) -> View:
    """Allow the view to anyone, signed in or not (sign-in page, health check, assets)."""
    view.placa_public = True  # type: ignore[attr-defined]
    return view


def init_app(app: Flask) -> None:
    manager = LoginManager()
    manager.session_protection = None  # sessions are checked on the server instead
    manager.user_loader(_load_user)
    manager.init_app(app)
    app.before_request(enforce_access)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["SESSION_MAX_HOURS"])
    if "static" in app.view_functions:
        public(app.view_functions["static"])


def session_policy(app: Flask) -> users.SessionPolicy:
    return users.SessionPolicy(
        idle=timedelta(minutes=app.config["SESSION_IDLE_MINUTES"]),
        absolute=timedelta(hours=app.config["SESSION_MAX_HOURS"]),
    )


def login_policy(app: Flask) -> users.LoginPolicy:
    return users.LoginPolicy(
        max_per_account=app.config["LOGIN_MAX_FAILURES"],
        max_per_address=app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"],
        window=timedelta(minutes=app.config["LOGIN_LOCK_MINUTES"]),
    )


def _load_user(user_id: str) -> User | None:
    """Flask-Login's loader: the cookie names a user, the server session must agree."""
    token = session.get("sid")
    if not token:
        return None
    db = get_db()
    row = users.resume_session(db, token, session_policy(current_app))
    db.commit()
    if row is None or str(row.user_id) != user_id:
        session.clear()
        return None
    return row.user


def client_address() -> str | None:
    return request.remote_addr


def current_actor() -> Actor:
    """The signed-in person as an audit actor."""
    return Actor.person(current_user, client_address())


def enforce_access() -> Any:
    """Refuse the request unless the route's declaration admits the current user."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return None  # no route: the 404 handler answers
    if getattr(view, "placa_public", False):
        return None
    allowed: frozenset[str] | None = getattr(view, "placa_roles", None)
    if allowed is None:
        logger.error("Route %s declares no roles; refusing it", request.endpoint)
        abort(403)
    if not current_user.is_authenticated:
        return _ask_to_sign_in()
    if current_user.must_change_password and request.endpoint not in PASSWORD_CHANGE_ENDPOINTS:
        if wants_json():
            abort(403)
        return redirect(url_for("auth.change_password"))
    if not current_user.has_role(*allowed):
        _record_denied()
        abort(403)
    return None


def _ask_to_sign_in() -> Any:
    if wants_json() or request.method != "GET":
        abort(401)
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _record_denied() -> None:
    db = get_db()
    audit.record(
        db, current_actor(), "access.denied", outcome="failure",
        object_type="route", object_id=request.endpoint,
    )  # fmt: skip
    db.commit()
