"""Forms of the technologist's screens."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length

from worklist.technologist import REASON_MAX


class StepForm(FlaskForm):
    """A one-click exam step (start, complete): the CSRF token and the page to go back to."""

    next = HiddenField()


class DiscontinueForm(StepForm):
    reason = StringField(
        _l("Reason for stopping"),
        validators=[
            DataRequired(message=_l("Give a reason for stopping the exam.")),
            Length(max=REASON_MAX),
        ],
    )
