"""HL7 outbound administration: destinations and the outbox (blueprint ``outbox``).

Importing this module (the composition root does) imports :mod:`ris.hl7.outbound`, whose
event handlers then enqueue SIU messages from every door of every process; registering the
blueprint gives the application's sessions Placa's HL7 identity (MSH-3/MSH-4, time zone).
"""

from __future__ import annotations

import logging

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms import BooleanField, IntegerField, SelectChoice, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ris import audit
from ris.auth import current_actor, roles
from ris.db import get_db
from ris.errors import PlacaError
from ris.hl7 import outbound
from ris.models import HL7Destination
from ris.paging import page_of

logger = logging.getLogger(__name__)
bp = Blueprint("outbox", __name__, url_prefix="/admin/outbox")
Page = str | tuple[str, int] | Response
STATE_LABELS = {
    "queued": _l("queued"),
    "sent": _l("sent, awaiting acknowledgement"),
    "failed": _l("failed, will retry"),
    "acknowledged": _l("acknowledged"),
    "dead": _l("dead-lettered, not sent"),
    "resent": _l("dead-lettered, then sent again"),
}


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    outbound.configure(state.app)


@bp.context_processor
def _helpers() -> dict[str, object]:
    return {"state_label": lambda state: STATE_LABELS.get(state, state)}


class CheckboxesField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class DestinationForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=64)])
    host = StringField(_l("Host"), validators=[DataRequired(), Length(max=255)])
    port = IntegerField(_l("Port"), validators=[DataRequired(), NumberRange(1, 65535)])
    message_types = CheckboxesField(
        _l("Messages"), choices=[SelectChoice(t, t) for t in outbound.MESSAGE_TYPES],
        validators=[DataRequired(message=_l("Choose at least one message type."))],
    )  # fmt: skip
    receiving_application = StringField(
        _l("Receiving application (MSH-5)"), validators=[Optional(), Length(max=64)]
    )
    receiving_facility = StringField(
        _l("Receiving facility (MSH-6)"), validators=[Optional(), Length(max=64)]
    )
    include_pdf = BooleanField(_l("Send the report PDF in results"))
    active = BooleanField(_l("Active"), default=True)

    def to_data(self) -> outbound.DestinationData:
        return outbound.DestinationData(
            name=(self.name.data or "").strip(), host=(self.host.data or "").strip(),
            port=self.port.data or 0, message_types=tuple(self.message_types.data or ()),
            receiving_application=self.receiving_application.data or "",
            receiving_facility=self.receiving_facility.data or "",
            include_pdf=bool(self.include_pdf.data), active=bool(self.active.data),
        )  # fmt: skip


def _form_data(destination: HL7Destination) -> dict[str, object]:
    return {
        "name": destination.name, "host": destination.host, "port": destination.port,
        "message_types": destination.message_types.split(","),
        "receiving_application": destination.receiving_application,
        "receiving_facility": destination.receiving_facility,
        "include_pdf": destination.include_pdf, "active": destination.active,
    }  # fmt: skip


# The outbox -------------------------------------------------------------------------------


@bp.route("/")
@roles("admin")
def messages() -> str:
    """Outbound messages, newest first, by state and destination (no patient data shown)."""
    db = get_db()
    state = request.args.get("state", "")
    state = state if state in outbound.STATES else ""
    destination_id = request.args.get("destination", type=int)
    page = page_of(db, outbound.outbox_query(state or None, destination_id))
    detail = {"state": state, "destination": destination_id, "page": page.number}
    audit.record(db, current_actor(), "hl7.outbox.view", detail=detail)
    db.commit()
    return render_template(
        "outbox/messages.html", rows=page.rows, has_more=page.has_more,
        page=page.number, state=state, destination_id=destination_id, states=outbound.STATES,
        destinations=outbound.list_destinations(db),
    )  # fmt: skip


@bp.route("/messages/<int:message_id>")
@roles("admin")
def message(message_id: int) -> str:
    """One message with its payload (patient data: the view is audited)."""
    db = get_db()
    found = outbound.get_message(db, message_id)
    audit.record(db, current_actor(), "hl7.outbound.view", object_type="hl7_outbound",
                 object_id=found.id, patient_id=found.patient_id)  # fmt: skip
    db.commit()
    return render_template("outbox/message.html", message=found,
                           segments=found.payload.replace("\n", "\r").split("\r"))  # fmt: skip


@bp.route("/messages/<int:message_id>/retry", methods=["POST"])
@roles("admin")
def retry(message_id: int) -> Response:
    """Send a failed message again at the sender's next run, without waiting for its back-off."""
    db = get_db()
    found = outbound.get_message(db, message_id)
    try:
        outbound.retry_now(db, current_actor(), found)
    except PlacaError as exc:
        db.rollback()
        flash(exc.message, "error")
    else:
        db.commit()
        flash(_("The message will be sent again within a few seconds."), "info")
    return redirect(url_for("outbox.message", message_id=message_id))


@bp.route("/messages/<int:message_id>/skip", methods=["POST"])
@roles("admin")
def skip(message_id: int) -> Response:
    """Dead-letter a queued or failed message: its destination goes on with the next one."""
    db = get_db()
    found = outbound.get_message(db, message_id)
    reason = (request.form.get("reason") or "").strip()[:500]
    try:
        outbound.skip_message(db, current_actor(), found, reason)
    except PlacaError as exc:
        db.rollback()
        flash(exc.message, "error")
    else:
        db.commit()
        flash(_("The message is dead-lettered; the messages after it will be sent."), "info")
    return redirect(url_for("outbox.message", message_id=message_id))


@bp.route("/messages/<int:message_id>/resend", methods=["POST"])
@roles("admin")
def resend(message_id: int) -> Response:
    """Queue a copy of a dead-lettered or acknowledged message, with a new control ID."""
    db = get_db()
    found = outbound.get_message(db, message_id)
    try:
        copy = outbound.resend_message(db, current_actor(), found)
    except PlacaError as exc:
        db.rollback()
        flash(exc.message, "error")
        return redirect(url_for("outbox.message", message_id=message_id))
    db.commit()
    flash(_("A copy of message %(old)s is queued as message %(new)s.", old=message_id,
            new=copy.id), "info")  # fmt: skip
    return redirect(url_for("outbox.message", message_id=copy.id))


# Destinations ------------------------------------------------------------------------------


@bp.route("/destinations")
@roles("admin")
def destinations() -> str:
    """The peers Placa sends HL7 to, with their queue by state."""
    db = get_db()
    return render_template("outbox/destinations.html", destinations=outbound.list_destinations(db),
                           counts=outbound.state_counts(db), states=outbound.STATES)  # fmt: skip


@bp.route("/destinations/new", methods=["GET", "POST"])
@roles("admin")
def destination_new() -> Page:
    return _destination_form(None)


@bp.route("/destinations/<int:destination_id>", methods=["GET", "POST"])
@roles("admin")
def destination_edit(destination_id: int) -> Page:
    return _destination_form(outbound.get_destination(get_db(), destination_id))


def _destination_form(destination: HL7Destination | None) -> Page:
    db = get_db()
    data = _form_data(destination) if destination is not None and request.method == "GET" else None
    form = DestinationForm(data=data)
    if form.validate_on_submit():
        try:
            saved = outbound.save_destination(db, current_actor(), form.to_data(), destination)
        except PlacaError as exc:
            _refuse(db, form, exc)
        else:
            db.commit()
            flash(_("The destination %(name)s has been saved.", name=saved.name), "info")
            return redirect(url_for("outbox.destinations"))
    status = 422 if request.method == "POST" else 200
    return render_template("outbox/destination_form.html", form=form,
                           destination=destination), status  # fmt: skip


def _refuse(db: Session, form: DestinationForm, exc: PlacaError) -> None:
    db.rollback()
    field = getattr(form, exc.field or "", None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


@bp.route("/destinations/<int:destination_id>/resend-dead", methods=["POST"])
@roles("admin")
def destination_resend_dead(destination_id: int) -> Response:
    """Send every dead-lettered message of a destination again, oldest first."""
    db = get_db()
    destination = outbound.get_destination(db, destination_id)
    copies = outbound.resend_dead(db, current_actor(), destination)
    db.commit()
    flash(_("%(count)d dead-lettered messages to %(name)s are queued again.",
            count=len(copies), name=destination.name), "info")  # fmt: skip
    return redirect(url_for("outbox.destinations"))


@bp.route("/destinations/<int:destination_id>/deactivate", methods=["POST"])
@roles("admin")
def destination_deactivate(destination_id: int) -> Response:
    """Stop queueing and sending to a destination; its waiting messages are kept."""
    db = get_db()
    destination = outbound.get_destination(db, destination_id)
    outbound.set_destination_active(db, current_actor(), destination, False)
    db.commit()
    flash(_("The destination %(name)s is inactive; its waiting messages are kept.",
            name=destination.name), "info")  # fmt: skip
    return redirect(url_for("outbox.destinations"))
