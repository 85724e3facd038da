"""Forms of the catalog administration: rooms, procedure codes, CSV import."""

from __future__ import annotations

from decimal import Decimal

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DecimalField,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TimeField,
)
from wtforms.validators import AnyOf, DataRequired, InputRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ris.catalog import MODALITIES, ProcedureData, RoomData
from ris.models import ProcedureCode, Room

WEEKDAYS = [
    SelectChoice("1", _l("Mon")), SelectChoice("2", _l("Tue")), SelectChoice("3", _l("Wed")),
    SelectChoice("4", _l("Thu")), SelectChoice("5", _l("Fri")), SelectChoice("6", _l("Sat")),
    SelectChoice("7", _l("Sun")),
]  # fmt: skip
MODALITY_CHOICES = [SelectChoice(m, m) for m in MODALITIES]
# Numeric(10, 2) in the schema.
MAX_CHARGE = Decimal("99999999.99")
IMPORT_KINDS = ("rooms", "procedures")


class CheckboxesField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class RoomForm(FlaskForm):
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=16)])
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=100)])
    modality = SelectField(_l("Modality"), choices=MODALITY_CHOICES)
    ae_title = StringField(_l("AE title"), validators=[Optional(), Length(max=16)])
    station_name = StringField(_l("Station name"), validators=[Optional(), Length(max=16)])
    opens_at = TimeField(_l("Opens at"), validators=[InputRequired()])
    closes_at = TimeField(_l("Closes at"), validators=[InputRequired()])
    open_days = CheckboxesField(
        _l("Open days"), choices=WEEKDAYS,
        validators=[DataRequired(message=_l("Choose at least one day."))],
    )  # fmt: skip
    active = BooleanField(_l("Active"), default=True)
    default_for_modality = BooleanField(_l("Default room of its modality"))

    def to_data(self) -> RoomData:
        return RoomData(
            code=(self.code.data or "").strip(), name=(self.name.data or "").strip(),
            modality=self.modality.data or "",
            ae_title=(self.ae_title.data or "").strip() or None,
            station_name=(self.station_name.data or "").strip() or None,
            opens_at=self.opens_at.data, closes_at=self.closes_at.data,
            open_days="".join(sorted(set(self.open_days.data or []))),
            active=bool(self.active.data),
            default_for_modality=bool(self.default_for_modality.data),
        )  # fmt: skip


def room_form_data(room: Room) -> dict[str, object]:
    return {
        "code": room.code, "name": room.name, "modality": room.modality,
        "ae_title": room.ae_title or "", "station_name": room.station_name or "",
        "opens_at": room.opens_at, "closes_at": room.closes_at,
        "open_days": list(room.open_days), "active": room.active,
        "default_for_modality": room.default_for_modality,
    }  # fmt: skip


CHARGE = [InputRequired(), NumberRange(min=0, max=MAX_CHARGE)]


class ProcedureForm(FlaskForm):
    code_system = StringField(
        _l("Code system"), default="CPT", validators=[DataRequired(), Length(max=16)]
    )
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=32)])
    description = StringField(_l("Description"), validators=[DataRequired(), Length(max=200)])
    modality = SelectField(_l("Modality"), choices=MODALITY_CHOICES)
    body_part = StringField(_l("Body part"), validators=[Optional(), Length(max=64)])
    duration_minutes = IntegerField(
        _l("Duration (minutes)"), default=15,
        validators=[InputRequired(), NumberRange(min=1, max=24 * 60)],
    )  # fmt: skip
    technical_charge = DecimalField(
        _l("Technical charge"), places=2, default=Decimal("0"), validators=CHARGE
    )
    professional_charge = DecimalField(
        _l("Professional charge"), places=2, default=Decimal("0"), validators=CHARGE
    )
    rooms = CheckboxesField(_l("Eligible rooms"), choices=[])
    active = BooleanField(_l("Active"), default=True)

    def set_rooms(self, rooms: list[Room]) -> None:
        self.rooms.choices = [
            SelectChoice(r.code, f"{r.code} · {r.name} ({r.modality})") for r in rooms
        ]

    def to_data(self) -> ProcedureData:
        return ProcedureData(
            code_system=(self.code_system.data or "").strip(),
            code=(self.code.data or "").strip(),
            description=(self.description.data or "").strip(),
            modality=self.modality.data or "",
            body_part=(self.body_part.data or "").strip() or None,
            duration_minutes=int(self.duration_minutes.data or 0),
            technical_charge=self.technical_charge.data or Decimal("0"),
            professional_charge=self.professional_charge.data or Decimal("0"),
            active=bool(self.active.data),
            room_codes=list(self.rooms.data or []),
        )


def procedure_form_data(code: ProcedureCode) -> dict[str, object]:
    return {
        "code_system": code.code_system, "code": code.code, "description": code.description,
        "modality": code.modality, "body_part": code.body_part or "",
        "duration_minutes": code.duration_minutes, "technical_charge": code.technical_charge,
        "professional_charge": code.professional_charge,
        "rooms": [room.code for room in code.rooms], "active": code.active,
    }  # fmt: skip


class ImportForm(FlaskForm):
    """A CSV file of rooms or of procedure codes, in the export's format."""

    kind = HiddenField(validators=[AnyOf(IMPORT_KINDS)])
    file = FileField(_l("CSV file"), validators=[FileRequired(message=_l("Choose a file."))])
