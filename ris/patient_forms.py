"""Forms of the patient screens: registration, demographics, merge."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    HiddenField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError

from ris.models import MRISafety, Patient, PregnancyStatus, Sex
from ris.patients import PatientData

SEX_LABELS = {Sex.FEMALE: _l("Female"), Sex.MALE: _l("Male"), Sex.OTHER: _l("Other")}
PREGNANCY_LABELS = {
    PregnancyStatus.NOT_PREGNANT: _l("Not pregnant"),
    PregnancyStatus.POSSIBLY_PREGNANT: _l("Possibly pregnant"),
    PregnancyStatus.DEFINITELY_PREGNANT: _l("Pregnant"),
    PregnancyStatus.UNKNOWN: _l("Unknown"),
}
MRI_LABELS = {
    MRISafety.NOT_SCREENED: _l("Not screened"),
    MRISafety.SAFE: _l("MR safe"),
    MRISafety.CONDITIONAL: _l("MR conditional"),
    MRISafety.UNSAFE: _l("MR unsafe"),
}
# A plausible address, no more: the HIS and the patient own the real one.
EMAIL = Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message=_l("This is not an e-mail address."))
NAME_PART = [Optional(), Length(max=64)]


def _choices(labels: dict[Any, Any], blank: Any = None) -> list[SelectChoice]:
    head = [SelectChoice("", blank)] if blank is not None else []
    return head + [SelectChoice(member.value, label) for member, label in labels.items()]


def _not_in_future(_form: FlaskForm, field: DateField) -> None:
    if field.data and field.data > date.today():
        raise ValidationError(str(_l("The birth date is in the future.")))


class PatientForm(FlaskForm):
    """Every demographic field of :class:`ris.patients.PatientData`."""

    family_name = StringField(_l("Family name"), validators=[DataRequired(), Length(max=64)])
    given_name = StringField(_l("Given name"), validators=NAME_PART)
    middle_name = StringField(_l("Middle name"), validators=NAME_PART)
    name_prefix = StringField(_l("Prefix"), validators=NAME_PART)
    name_suffix = StringField(_l("Suffix"), validators=NAME_PART)
    birth_date = DateField(_l("Birth date"), validators=[Optional(), _not_in_future])
    sex = SelectField(_l("Sex"), choices=_choices(SEX_LABELS, _l("Not known")))
    phone = StringField(_l("Phone"), validators=[Optional(), Length(max=64)])
    email = EmailField(_l("E-mail"), validators=[Optional(), Length(max=254), EMAIL])
    street = StringField(_l("Street"), validators=[Optional(), Length(max=200)])
    city = StringField(_l("City"), validators=[Optional(), Length(max=100)])
    postal_code = StringField(_l("Postal code"), validators=[Optional(), Length(max=20)])
    country = StringField(_l("Country"), validators=[Optional(), Length(max=64)])
    insurance_payer = StringField(_l("Insurance payer"), validators=[Optional(), Length(max=128)])
    insurance_member_id = StringField(
        _l("Insurance member id"), validators=[Optional(), Length(max=64)]
    )
    contrast_allergy = BooleanField(_l("Contrast allergy"))
    allergies = TextAreaField(_l("Other allergies"), validators=[Optional(), Length(max=2000)])
    pregnancy_status = SelectField(
        _l("Pregnancy status"), choices=_choices(PREGNANCY_LABELS, _l("Not asked"))
    )
    mri_safety = SelectField(_l("MRI safety"), choices=_choices(MRI_LABELS))
    medical_alerts = TextAreaField(_l("Medical alerts"), validators=[Optional(), Length(max=2000)])

    def to_data(self) -> PatientData:
        def text(name: str) -> str:
            return (getattr(self, name).data or "").strip()

        def optional(name: str) -> str | None:
            return text(name) or None

        return PatientData(
            family_name=text("family_name"), given_name=text("given_name"),
            middle_name=text("middle_name"), name_prefix=text("name_prefix"),
            name_suffix=text("name_suffix"), birth_date=self.birth_date.data,
            sex=Sex(self.sex.data) if self.sex.data else None,
            phone=optional("phone"), email=optional("email"), street=optional("street"),
            city=optional("city"), postal_code=optional("postal_code"),
            country=optional("country"), insurance_payer=optional("insurance_payer"),
            insurance_member_id=optional("insurance_member_id"),
            contrast_allergy=bool(self.contrast_allergy.data), allergies=optional("allergies"),
            pregnancy_status=(
                PregnancyStatus(self.pregnancy_status.data) if self.pregnancy_status.data
                else None
            ),
            mri_safety=MRISafety(self.mri_safety.data or MRISafety.NOT_SCREENED),
            medical_alerts=optional("medical_alerts"),
        )  # fmt: skip


class RegisterPatientForm(PatientForm):
    """Registration: the HIS's MRN and issuer when known, else Placa numbers the patient."""

    mrn = StringField(_l("MRN"), validators=[Optional(), Length(max=64)])
    mrn_issuer = StringField(_l("Issuer"), validators=[Optional(), Length(max=64)])


def patient_form_data(patient: Patient) -> dict[str, object]:
    """The stored demographics as form data (enums as their values, None as blank)."""
    data = asdict(PatientData.of(patient))
    for key, value in data.items():
        if key == "birth_date" or isinstance(value, bool):
            continue
        data[key] = "" if value is None else getattr(value, "value", value)
    return data


class MergeForm(FlaskForm):
    """Confirms which duplicate is merged into the patient whose page this is."""

    merged_id = HiddenField(validators=[DataRequired()])
