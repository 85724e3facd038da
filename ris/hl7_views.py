"""The HL7 message log for admins (blueprint ``hl7``): search, read, re-process.

Messages carry patient data: reading one is audited (``hl7.message.view``), and so is a
search of the log (``hl7.message.search``), as one event like the audit log's own.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from wtforms import DateField, IntegerField, SelectChoice, SelectField, StringField
from wtforms.validators import Length, Optional

from ris import audit
from ris.auth import current_actor, roles
from ris.db import get_db
from ris.errors import PlacaError
from ris.hl7 import log
from ris.paging import page_of
from ris.site import site_of

bp = Blueprint("hl7", __name__, url_prefix="/admin/hl7")
STATUS_LABELS = {
    log.APPLIED: _l("Applied"),
    log.ERROR: _l("Error"),
    log.REJECTED: _l("Rejected"),
}


class MessageSearchForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search changes nothing

    since = DateField(_l("From"), validators=[Optional()])
    until = DateField(_l("To"), validators=[Optional()])
    message_type = StringField(_l("Type"), validators=[Optional(), Length(max=16)])
    status = SelectField(
        _l("Status"),
        choices=[SelectChoice("", _l("Any"))]
        + [SelectChoice(value, label) for value, label in STATUS_LABELS.items()],
        validators=[Optional()],
    )
    sender = StringField(_l("Sender"), validators=[Optional(), Length(max=128)])
    control_id = StringField(_l("Control ID"), validators=[Optional(), Length(max=64)])
    patient_id = IntegerField(_l("Patient id"), validators=[Optional()])


class ReprocessForm(FlaskForm):
    """Only the CSRF token: the button is the whole form."""


@bp.app_template_global()
def hl7_status_label(status: str) -> str:
    return str(STATUS_LABELS.get(status, status))


@bp.route("/messages")
@roles("admin")
def messages() -> str:
    """Search the inbound message log, newest first."""
    form = MessageSearchForm(request.args)
    criteria = _criteria(form) if form.validate() else log.MessageFilter()
    db = get_db()
    page = page_of(db, log.search_messages(criteria))
    _record_search(db, criteria)
    db.commit()
    return render_template(
        "hl7/messages.html", form=form, messages=page.rows, page=page.number,
        has_more=page.has_more, query=page.query,
    )  # fmt: skip


@bp.route("/messages/<int:message_id>")
@roles("admin")
def message(message_id: int) -> str:
    """One message as received, with the ACK Placa answered and what went wrong."""
    db = get_db()
    found = log.get_message(db, message_id)
    log.record_message_view(db, current_actor(), found)
    db.commit()
    return render_template(
        "hl7/message.html", message=found, raw=_lines(found.raw), ack=_lines(found.ack),
        form=ReprocessForm(), can_reprocess=log.can_reprocess(found),
    )  # fmt: skip


@bp.route("/messages/<int:message_id>/reprocess", methods=["POST"])
@roles("admin")
def reprocess(message_id: int) -> Response:
    """Apply a failed message again (after the data it lacked has been fixed)."""
    form = ReprocessForm()
    target = url_for("hl7.message", message_id=message_id)
    if not form.validate_on_submit():
        flash(_("The form has expired; please try again."), "error")
        return redirect(target)
    db = get_db()
    found = log.get_message(db, message_id)
    names = log.Names(current_app.config["HL7_APPLICATION"], current_app.config["HL7_FACILITY"])
    try:
        log.reprocess(db, current_actor(), site_of(current_app), found, names)
    except PlacaError as exc:
        flash(exc.message, "error")
        return redirect(target)
    db.commit()
    if found.status == log.APPLIED:
        flash(_("The message has been applied."), "info")
    else:
        flash(_("The message failed again: %(error)s", error=found.error or ""), "error")
    return redirect(target)


def _criteria(form: MessageSearchForm) -> log.MessageFilter:
    zone = ZoneInfo(current_app.config["TIMEZONE"])
    until = form.until.data
    return log.MessageFilter(
        since=_day_start(form.since.data, zone),
        until=_day_start(until + timedelta(days=1), zone) if until else None,
        message_type=(form.message_type.data or "").strip() or None,
        status=form.status.data or None,
        sender=(form.sender.data or "").strip() or None,
        control_id=(form.control_id.data or "").strip() or None,
        patient_id=form.patient_id.data,
    )


def _day_start(day: date | None, zone: ZoneInfo) -> datetime | None:
    if day is None:
        return None
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def _record_search(db: Session, criteria: log.MessageFilter) -> None:
    filters = {k: str(v) for k, v in vars(criteria).items() if v is not None}
    audit.record(db, current_actor(), "hl7.message.search", object_type="hl7_message",
                 patient_id=criteria.patient_id, detail=filters or None)  # fmt: skip


def _lines(text: str) -> str:
    """Segments one per line, as people read HL7."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
