"""Administration pages: accounts and the audit log (blueprint ``admin``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ris import audit, users
from ris.auth import current_actor, roles
from ris.db import get_db, read_only, utcnow
from ris.errors import PlacaError
from ris.forms import AuditSearchForm, UserForm
from ris.health import doors_status
from ris.models import AuditEvent, User, UserSession
from ris.paging import page_of

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/")
@roles("admin")
def dashboard() -> str:
    """Accounts, open sessions, recent failed sign-ins and the doors at a glance."""
    db = get_db()
    day_ago = utcnow() - timedelta(days=1)
    stats = {
        "users": db.scalar(select(func.count()).select_from(User).where(User.active)),
        "sessions": db.scalar(
            select(func.count()).select_from(UserSession).where(UserSession.ended_at.is_(None))
        ),
        "failed_logins": db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == users.LOGIN_ACTION,
                AuditEvent.outcome != "success",
                AuditEvent.at >= day_ago,
            )
        ),
    }
    recent = db.scalars(audit.search_events(audit.AuditFilter()).limit(10)).all()
    return render_template(
        "admin/dashboard.html", stats=stats, events=recent, doors=doors_status(current_app)
    )


@bp.route("/users")
@roles("admin")
def user_list() -> str:
    """Every account with its roles and state."""
    accounts = get_db().scalars(select(User).order_by(User.username)).all()
    return render_template("admin/users.html", users=accounts)


@bp.route("/users/new", methods=["GET", "POST"])
@roles("admin")
def user_new() -> str | Response:
    """Create an account with a generated one-time password shown once."""
    form = UserForm()
    if form.validate_on_submit():
        db = get_db()
        password = users.generate_password()
        try:
            user = users.create_user(
                db, current_actor(), form.username.data or "", password, form.roles.data or [],
                full_name=form.full_name.data or "", email=form.email.data,
                locale=form.locale.data, must_change_password=True,
            )  # fmt: skip
        except PlacaError as exc:
            _field_error(form, exc)
            return render_template("admin/user_form.html", form=form, user=None)
        db.commit()
        return render_template("admin/password_once.html", user=user, password=password)
    return render_template("admin/user_form.html", form=form, user=None)


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@roles("admin")
def user_edit(user_id: int) -> str | Response:
    """Change an account's profile, roles and active flag."""
    db = get_db()
    user = users.get_user(db, user_id)
    form = UserForm(obj=user, data=None if request.method == "POST" else _form_data(user))
    form.username.render_kw = {"readonly": True}
    if form.validate_on_submit():
        try:
            users.update_user(
                db, current_actor(), user, full_name=form.full_name.data or "",
                email=form.email.data, locale=form.locale.data, role_names=form.roles.data or [],
                active=form.active.data,
            )  # fmt: skip
        except PlacaError as exc:
            _field_error(form, exc)
            return render_template("admin/user_form.html", form=form, user=user)
        db.commit()
        flash(_("The account %(name)s has been saved.", name=user.username), "info")
        return redirect(url_for("admin.user_list"))
    return render_template("admin/user_form.html", form=form, user=user)


def _form_data(user: User) -> dict[str, object]:
    return {
        "username": user.username,
        "full_name": user.full_name,
        "email": user.email,
        "locale": user.locale or "",
        "roles": sorted(user.role_names),
        "active": user.active,
    }


def _field_error(form: UserForm, exc: PlacaError) -> None:
    field = getattr(form, exc.field or "", None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@roles("admin")
def user_reset_password(user_id: int) -> str:
    """Give an account a new one-time password; its sessions end."""
    db = get_db()
    user = users.get_user(db, user_id)
    password = users.generate_password()
    users.set_password(db, current_actor(), user, password, must_change=True)
    db.commit()
    return render_template("admin/password_once.html", user=user, password=password)


@bp.route("/users/<int:user_id>/sessions/end", methods=["POST"])
@roles("admin")
def user_end_sessions(user_id: int) -> Response:
    """Sign an account out everywhere."""
    db = get_db()
    user = users.get_user(db, user_id)
    users.end_all_sessions(db, user, "admin")
    audit.record(db, current_actor(), "user.signout_all", object_type="user", object_id=user.id)
    db.commit()
    flash(_("Every session of %(name)s has ended.", name=user.username), "info")
    return redirect(url_for("admin.user_list"))


@bp.route("/audit")
@roles("admin")
def audit_log() -> str:
    """Search the audit log, newest first."""
    form = AuditSearchForm(request.args)
    criteria = _criteria(form) if form.validate() else audit.AuditFilter()
    db = get_db()
    page = page_of(db, audit.search_events(criteria))
    _record_audit_access(db, "audit.view", criteria)
    db.commit()
    return render_template(
        "admin/audit.html", form=form, events=page.rows, page=page.number,
        has_more=page.has_more, query=page.query,
    )  # fmt: skip


@bp.route("/audit.csv")
@roles("admin")
def audit_export() -> Response:
    """Export the matching audit events as CSV, streamed."""
    form = AuditSearchForm(request.args)
    criteria = _criteria(form) if form.validate() else audit.AuditFilter()
    db = get_db()
    _record_audit_access(db, "audit.export", criteria)
    db.commit()
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return Response(
        stream_with_context(_csv_lines(criteria)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="placa-audit-{stamp}.csv"'},
    )


def _csv_lines(criteria: audit.AuditFilter) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(audit.CSV_COLUMNS)
    yield flush()
    # Its own session: the request's may be closed while the response still streams,
    # and a read-only one, so that a long export never blocks the other doors' writes.
    with read_only(current_app) as db:
        for entry in db.scalars(audit.search_events(criteria).execution_options(yield_per=500)):
            writer.writerow(audit.csv_row(entry))
            yield flush()


def _criteria(form: AuditSearchForm) -> audit.AuditFilter:
    zone = ZoneInfo(current_app.config["TIMEZONE"])
    return audit.AuditFilter(
        since=_day_start(form.since.data, zone),
        until=_day_start(form.until.data + timedelta(days=1), zone) if form.until.data else None,
        actor=(form.actor.data or "").strip() or None,
        action=(form.action.data or "").strip() or None,
        object_type=(form.object_type.data or "").strip() or None,
        object_id=(form.object_id.data or "").strip() or None,
        patient_id=form.patient_id.data,
        outcome=form.outcome.data or None,
    )


def _day_start(day: object, zone: ZoneInfo) -> datetime | None:
    if day is None:
        return None
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)  # type: ignore[call-overload]


def _record_audit_access(db: Session, action: str, criteria: audit.AuditFilter) -> None:
    filters = {k: str(v) for k, v in vars(criteria).items() if v is not None}
    audit.record(db, current_actor(), action, object_type="audit", detail=filters or None)
