"""Forms of the RIS shell: sign-in, passwords, accounts and the audit search."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, EqualTo, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ris.i18n import LANGUAGE_NAMES
from ris.models import ROLES
from ris.users import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

ROLE_LABELS = {
    "admin": _l("Administrator"),
    "front_desk": _l("Front desk"),
    "technologist": _l("Technologist"),
    "radiologist": _l("Radiologist"),
    "transcriptionist": _l("Transcriptionist"),
    "billing": _l("Billing"),
    "referrer": _l("Referring physician"),
}
OUTCOME_LABELS = {
    "success": _l("Success"),
    "failure": _l("Failure"),
    "throttled": _l("Throttled"),
}
LOCALE_CHOICES = [SelectChoice("", _l("Browser language"))] + [
    SelectChoice(code, name) for code, name in LANGUAGE_NAMES.items()
]
NEW_PASSWORD = [DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH)]


class LoginForm(FlaskForm):
    username = StringField(_l("User name"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(_l("Current password"), validators=[DataRequired()])
    new_password = PasswordField(_l("New password"), validators=NEW_PASSWORD)
    confirm = PasswordField(
        _l("Repeat the new password"),
        validators=[DataRequired(), EqualTo("new_password", message=_l("The passwords differ."))],
    )


class ProfileForm(FlaskForm):
    full_name = StringField(_l("Full name"), validators=[Length(max=200)])
    locale = SelectField(_l("Language"), choices=LOCALE_CHOICES)


class RolesField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class UserForm(FlaskForm):
    username = StringField(_l("User name"), validators=[DataRequired(), Length(max=64)])
    full_name = StringField(_l("Full name"), validators=[Length(max=200)])
    email = EmailField(_l("E-mail"), validators=[Optional(), Length(max=254)])
    locale = SelectField(_l("Language"), choices=LOCALE_CHOICES)
    roles = RolesField(
        _l("Roles"),
        choices=[SelectChoice(role, ROLE_LABELS[role]) for role in ROLES],
        validators=[DataRequired(message=_l("Choose at least one role."))],
    )
    active = BooleanField(_l("Active"), default=True)


class AuditSearchForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search changes nothing

    since = DateField(_l("From"), validators=[Optional()])
    until = DateField(_l("To"), validators=[Optional()])
    actor = StringField(_l("Who"), validators=[Optional(), Length(max=128)])
    action = StringField(_l("Action"), validators=[Optional(), Length(max=64)])
    object_type = StringField(_l("Object type"), validators=[Optional(), Length(max=64)])
    object_id = StringField(_l("Object id"), validators=[Optional(), Length(max=128)])
    patient_id = IntegerField(_l("Patient id"), validators=[Optional()])
    outcome = SelectField(
        _l("Outcome"),
        choices=[SelectChoice("", _l("Any"))]
        + [SelectChoice(value, label) for value, label in OUTCOME_LABELS.items()],
        validators=[Optional()],
    )
