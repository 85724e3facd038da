"""The front door of the web UI: sign-in at ``/``, each role's home, one's own account."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from flask_login import current_user
from werkzeug.wrappers import Response

from ris import audit
from ris.auth import (
    ADMIN,
    BOARD_READERS,
    FRONT_DESK,
    PATIENT_READERS,
    current_actor,
    public,
    signed_in,
)
from ris.db import get_db
from ris.forms import OUTCOME_LABELS, ROLE_LABELS, LoginForm, ProfileForm

bp = Blueprint("ris", __name__)


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: LazyString
    roles: frozenset[str]


# The main navigation; each package appends the screens it owns.
NAV: list[NavItem] = [
    NavItem("frontdesk.board", _l("Day board"), frozenset(BOARD_READERS)),
    NavItem("patients.search", _l("Patients"), frozenset(PATIENT_READERS)),
    NavItem("frontdesk.new_order", _l("New order"), frozenset(FRONT_DESK)),
    NavItem("admin.dashboard", _l("Administration"), frozenset(ADMIN)),
    NavItem("catalog.rooms", _l("Rooms"), frozenset(ADMIN)),
    NavItem("catalog.procedures", _l("Procedures"), frozenset(ADMIN)),
    NavItem("admin.user_list", _l("Users"), frozenset(ADMIN)),
    NavItem("admin.audit_log", _l("Audit log"), frozenset(ADMIN)),
    NavItem("hl7.messages", _l("HL7 messages"), frozenset(ADMIN)),
    NavItem("outbox.messages", _l("HL7 outbox"), frozenset(ADMIN)),
]


@bp.app_context_processor
def _navigation() -> dict[str, object]:
    def nav_items() -> list[NavItem]:
        # An entry whose screen is not installed (e.g. --only doors) is left out.
        return [
            item for item in NAV
            if current_user.is_authenticated and current_user.has_role(*item.roles)
            and item.endpoint in current_app.view_functions
        ]  # fmt: skip

    return {
        "nav_items": nav_items,
        "role_label": lambda role: ROLE_LABELS.get(role, role),
        "outcome_label": lambda outcome: OUTCOME_LABELS.get(outcome, outcome),
    }


# Where each role lands after sign-in, first match wins. Later packages point their
# roles at their own screens (day board, room list, reading queue, billing).
ROLE_HOMES: list[tuple[str, str]] = [
    ("admin", "admin.dashboard"),
    ("front_desk", "frontdesk.board"),
]
DEFAULT_HOME = "ris.workspace"


def home_endpoint() -> str:
    for role, endpoint in ROLE_HOMES:
        if current_user.has_role(role) and endpoint in current_app.view_functions:
            return endpoint
    return DEFAULT_HOME


@bp.route("/")
@public
def home() -> str | Response:
    """Sign-in for strangers; the role's home for a signed-in user."""
    if current_user.is_authenticated:
        return redirect(url_for(home_endpoint()))
    return render_template("login.html", form=LoginForm())


@bp.route("/workspace")
@signed_in
def workspace() -> str:
    """The signed-in user's overview of the areas their roles open."""
    return render_template("workspace.html")


@bp.route("/account", methods=["GET", "POST"])
@signed_in
def account() -> str | Response:
    """One's own name and language."""
    user = current_user._get_current_object()
    form = ProfileForm(obj=user)
    if form.validate_on_submit():
        db = get_db()
        before = {"full_name": user.full_name, "locale": user.locale}
        user.full_name = (form.full_name.data or "").strip()
        user.locale = form.locale.data or None
        after = {"full_name": user.full_name, "locale": user.locale}
        audit.record(
            db, current_actor(), "user.profile", object_type="user", object_id=user.id,
            detail={"before": before, "after": after},
        )  # fmt: skip
        db.commit()
        flash(_("Your profile has been saved."), "info")
        return redirect(url_for("ris.account"))
    return render_template("account.html", form=form)
