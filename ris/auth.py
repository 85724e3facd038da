"""Who may use which route: one mechanism for every page, API route and DICOMweb route.

Every view declares its audience with :func:`roles`, :func:`signed_in` or :func:`public`.
:func:`enforce_access` runs before every request and refuses any route that declares
nothing, so a route added without a declaration is closed, not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, g, redirect, request, session, url_for
from flask_login import AnonymousUserMixin, LoginManager, current_user
from flask_wtf import CSRFProtect

from ris import api_tokens, audit, users
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
    app.before_request(answer_preflight)  # before enforce_access: preflights carry no credentials
    app.before_request(enforce_access)
    app.after_request(_credential_headers)
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
    if credential_request():
        _sign_in_by_header()
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


# --- Credentials in the request: HTTP Basic and bearer API tokens (DICOMweb, /api) ----------
#
# Programs (viewers, scripts) send ``Authorization`` on every request instead of a cookie.
# Such a request is authenticated by its header alone (a cookie beside it is ignored).

CREDENTIAL_PREFIXES = ("/dicomweb", "/api/")
REALM = "Placa"
# Content types an HTML form can send cross-site without a CORS preflight.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
BASIC_CACHE_SECONDS = 300  # a verified Basic password is not re-hashed (argon2) on every request
BASIC_CACHE_SIZE = 1000


def credential_request() -> bool:
    """Whether this request authenticates by an ``Authorization`` header on a program route."""
    return request.path.startswith(CREDENTIAL_PREFIXES) and bool(
        request.headers.get("Authorization", "").strip()
    )


def _sign_in_by_header() -> None:
    """Make the header's user the current user for this request only, or answer 401."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    db = get_db()
    user: User | None = None
    if scheme.lower() == "bearer":
        user = api_tokens.user_for_token(db, value.strip())
        if user is None:
            audit.record(
                db, Actor.anonymous("api-token", client_address()), "auth.token",
                outcome="failure",
            )  # fmt: skip
            logger.warning("Refused API token from %s", client_address())
    elif scheme.lower() == "basic":
        user = _basic_user(db, value.strip())
    db.commit()
    if user is None:
        g._login_user = AnonymousUserMixin()
        abort(401)
    g._login_user = user  # Flask-Login's current_user for this request


def _basic_user(db: Any, value: str) -> User | None:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep:
        return None
    cached = _basic_cache.get(username, password)
    if cached is not None:
        user = db.get(User, cached[0])
        if user is not None and user.active and user.password_hash == cached[1]:
            return user
    try:
        user = users.authenticate(
            db, username, password, client_address(), login_policy(current_app)
        )
    except users.LoginThrottled as exc:
        db.commit()
        response = Response(
            status=429, headers={"Retry-After": str(int(exc.retry_after.total_seconds()))}
        )
        abort(response)
    if user is not None:
        _basic_cache.put(username, password, user)
    return user


class _BasicCache:
    """Recently verified Basic credentials: a keyed digest of them → (user id, password hash).

    The stored password hash makes a password change invalidate the entry at once."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, int, str]] = {}
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)  # per process: digests are useless elsewhere

    def _digest(self, username: str, password: str) -> str:
        message = f"{username.strip().lower()}\0{password}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def get(self, username: str, password: str) -> tuple[int, str] | None:
        with self._lock:
            entry = self._entries.get(self._digest(username, password))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1], entry[2]

    def put(self, username: str, password: str, user: User) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._entries) > BASIC_CACHE_SIZE:
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
                if len(self._entries) > BASIC_CACHE_SIZE:
                    self._entries.clear()
            entry = (now + BASIC_CACHE_SECONDS, user.id, user.password_hash)
            self._entries[self._digest(username, password)] = entry


_basic_cache = _BasicCache()


def csrf_unless_credentials(csrf: CSRFProtect) -> Callable[[], None]:
    """Flask-WTF's CSRF check, except for requests carrying their own credentials.

    A cookie travels with any cross-site request, so cookie requests need the CSRF token;
    an ``Authorization`` header does not, except Basic credentials a browser remembers: those
    are excused only for bodies no HTML form can send (STOW-RS multipart/related, JSON),
    which a foreign page can send only after a CORS preflight this server answers."""

    def check() -> None:
        config = current_app.config
        if not config.get("WTF_CSRF_ENABLED", True) or not request.endpoint:
            return
        if request.method not in config.get("WTF_CSRF_METHODS", ("POST", "PUT", "PATCH", "DELETE")):
            return
        if credential_request():
            scheme = request.headers.get("Authorization", "").split(" ", 1)[0].lower()
            if scheme == "bearer" or request.mimetype not in FORM_TYPES:
                return
        if _exempted(csrf):
            return
        csrf.protect()

    return check


def _exempted(csrf: CSRFProtect) -> bool:
    """What ``csrf.exempt`` excused (as Flask-WTF's own check reads it)."""
    app = current_app
    if app.blueprints.get(request.blueprint or "") in csrf._exempt_blueprints:
        return True
    view = app.view_functions.get(request.endpoint or "")
    return view is not None and f"{view.__module__}.{view.__name__}" in csrf._exempt_views


# --- CORS for an external viewer's origin (PLACA_CORS_ORIGINS), DICOMweb routes only --------

CORS_PREFIX = "/dicomweb"
CORS_METHODS = "GET, HEAD, POST, OPTIONS"
CORS_HEADERS = "Authorization, Accept, Content-Type, Cache-Control, X-Requested-With"
CORS_EXPOSED = "Content-Type, Content-Length, Content-Location, Warning, WWW-Authenticate"


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    if not origin or not request.path.startswith(CORS_PREFIX):
        return None
    allowed = current_app.config.get("CORS_ORIGINS") or ()
    return origin if origin in allowed or "*" in allowed else None


def answer_preflight() -> Response | None:
    """Answer a CORS preflight (OPTIONS with Access-Control-Request-Method) before any auth."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    if not request.path.startswith(CORS_PREFIX):
        return None
    response = Response(status=204)
    if _allowed_origin() is not None:
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    return response  # without the allow headers the browser refuses the real request


def _credential_headers(response: Response) -> Response:
    if response.status_code == 401 and request.path.startswith(CREDENTIAL_PREFIXES):
        response.headers.add("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        response.headers.add("WWW-Authenticate", f'Bearer realm="{REALM}"')
    origin = _allowed_origin()
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
        response.headers.add("Vary", "Origin")
    return response
