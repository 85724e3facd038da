"""Forms of the front-desk screens: order entry, booking, cancellation and one-click actions."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    Field,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    TimeField,
    ValidationError,
)
from wtforms.validators import DataRequired, Length, Optional

from ris.errors import Invalid
from ris.models import PatientClass, Priority, ProcedureCode
from ris.orders import parse_icd10

PRIORITY_LABELS = {
    Priority.STAT: _l("STAT"),
    Priority.HIGH: _l("High"),
    Priority.ROUTINE: _l("Routine"),
}
PATIENT_CLASS_LABELS = {
    PatientClass.OUTPATIENT: _l("Outpatient"),
    PatientClass.INPATIENT: _l("Inpatient"),
    PatientClass.EMERGENCY: _l("Emergency"),
}


def _icd10(_form: FlaskForm, field: Field) -> None:
    """Refuse a list with a code that is not ICD-10, naming the code (the service's message)."""
    try:
        parse_icd10(field.data or "")
    except Invalid as exc:
        raise ValidationError(exc.message) from exc


class OrderForm(FlaskForm):
    ordering_physician = StringField(
        _l("Ordering physician"),
        validators=[
            DataRequired(message=_l("The ordering physician is required.")),
            Length(max=200),
        ],
    )
    referring_physician = StringField(_l("Referring physician"), validators=[Length(max=200)])
    reason = TextAreaField(_l("Reason for the exam"), validators=[Length(max=4000)])
    icd10_codes = StringField(
        _l("ICD-10 codes"),
        description=_l("Separated by commas or spaces, e.g. J18.9, R05"),
        validators=[Length(max=200), _icd10],
    )
    priority = SelectField(
        _l("Priority"),
        choices=[SelectChoice(p.value, label) for p, label in PRIORITY_LABELS.items()],
        default=Priority.ROUTINE.value,
    )
    patient_class = SelectField(
        _l("Patient class"),
        choices=[SelectChoice(c.value, label) for c, label in PATIENT_CLASS_LABELS.items()],
        default=PatientClass.OUTPATIENT.value,
    )
    procedures = SelectMultipleField(
        _l("Procedures"),
        coerce=int,
        validators=[DataRequired(message=_l("Choose at least one procedure."))],
    )

    def offer(self, codes: list[ProcedureCode]) -> None:
        """The active catalog as the procedure choices, grouped by modality."""
        self.procedures.choices = [
            SelectChoice(str(code.id), self.procedure_label(code), optgroup=code.modality)
            for code in codes
        ]

    @staticmethod
    def procedure_label(code: ProcedureCode) -> str:
        return str(_l("%(description)s (%(system)s %(code)s, %(minutes)d min)",
                      description=code.description, system=code.code_system, code=code.code,
                      minutes=code.duration_minutes))  # fmt: skip


class SlotForm(FlaskForm):
    """A booking: either a proposed slot (room and ISO start) or a room, a date and a time."""

    room_id = IntegerField(_l("Room"), validators=[DataRequired(message=_l("Choose a room."))])
    start = HiddenField()
    day = DateField(_l("Date"), validators=[Optional()])
    time = TimeField(_l("Time"), validators=[Optional()])

    def validate(self, extra_validators: Any = None) -> bool:
        # Checked here, not in validate_time: Optional() would skip it for an empty time.
        valid = super().validate(extra_validators)
        if valid and not self.start.data and (self.day.data is None or self.time.data is None):
            self.time.errors = [*self.time.errors, _l("Give a date and a time.")]
            return False
        return valid


class ManualSlotForm(SlotForm):
    """The manual booking form as shown: the room chosen from the eligible rooms."""

    room_id = SelectField(  # type: ignore[assignment]
        _l("Room"), coerce=int, validators=[DataRequired(message=_l("Choose a room."))]
    )


class CancelForm(FlaskForm):
    reason = StringField(
        _l("Reason for the cancellation"),
        validators=[
            DataRequired(message=_l("Give a reason for the cancellation.")),
            Length(max=500),
        ],
    )


class ActionForm(FlaskForm):
    """A one-click action (check-in, no-show): only the CSRF token and where to go back to."""

    next = HiddenField()


class ChooseExamForm(FlaskForm):
    """The exam something received without one belongs to (an unscheduled performed step,
    an unmatched study): chosen by a technologist among the candidates."""

    exam_id = IntegerField(_l("Exam"), validators=[DataRequired(message=_l("Choose an exam."))])
