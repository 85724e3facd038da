"""Sign-in, sign-out and password change (blueprint ``auth``)."""

from __future__ import annotations

import logging
import math
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from ris import audit, users
from ris.auth import client_address, current_actor, login_policy, public, signed_in
from ris.db import get_db
from ris.errors import PlacaError
from ris.forms import ChangePasswordForm, LoginForm

logger = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> str | Response | tuple[str, int]:
    """Show the sign-in form and sign a person in."""
    if current_user.is_authenticated:
        return redirect(url_for("ris.home"))
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form)
    db = get_db()
    try:
        user = users.authenticate(
            db, form.username.data or "", form.password.data or "", client_address(),
            login_policy(current_app),
        )  # fmt: skip
    except users.LoginThrottled as exc:
        db.commit()
        minutes = max(1, math.ceil(exc.retry_after.total_seconds() / 60))
        flash(
            ngettext(
                "Too many failed sign-ins. Try again in %(num)d minute.",
                "Too many failed sign-ins. Try again in %(num)d minutes.",
                minutes,
            ),
            "error",
        )
        return render_template("login.html", form=form), 429
    if user is None:
        db.commit()
        flash(_("Wrong user name or password."), "error")
        return render_template("login.html", form=form), 401
    _start_session(user)
    db.commit()
    return redirect(_safe_next() or url_for("ris.home"))


def _start_session(user: users.User) -> None:
    # A new session identity at every sign-in, so a planted cookie is worthless.
    session.clear()
    session["sid"] = users.open_session(
        get_db(), user, client_address(), request.headers.get("User-Agent")
    )
    session.permanent = True
    login_user(user)


def _safe_next() -> str | None:
    """Only a local path is followed after sign-in (no open redirect)."""
    target = request.args.get("next", "")
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.netloc or "\\" in target:
        return None
    return target


@bp.route("/logout", methods=["POST"])
@signed_in
def logout() -> Response:
    """Sign out: the server-side session ends, so the old cookie opens nothing."""
    db = get_db()
    audit.record(db, current_actor(), "auth.logout")
    users.end_session(db, session.get("sid", ""), "signout")
    db.commit()
    logout_user()
    session.clear()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@signed_in
def change_password() -> str | Response:
    """Change one's own password; every other session of the account ends."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        db = get_db()
        user = current_user._get_current_object()
        if not users.verify_password(user, form.current_password.data or ""):
            form.current_password.errors.append(_("The current password is wrong."))
            return render_template(
                "change_password.html", form=form, min_length=users.MIN_PASSWORD_LENGTH
            )
        try:
            users.set_password(db, current_actor(), user, form.new_password.data or "")
        except PlacaError as exc:
            form.new_password.errors.append(exc.message)
            return render_template(
                "change_password.html", form=form, min_length=users.MIN_PASSWORD_LENGTH
            )
        _start_session(user)
        db.commit()
        flash(_("Your password has been changed."), "info")
        return redirect(url_for("ris.home"))
    return render_template("change_password.html", form=form, min_length=users.MIN_PASSWORD_LENGTH)
