"""What the front-desk screens share: labels, times, URLs, form errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import (
    current_app,
    flash,
    g,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.routing import BuildError

from ris import orders
from ris.auth import FRONT_DESK
from ris.db import get_db, utcnow
from ris.errors import PlacaError
from ris.frontdesk import bp
from ris.frontdesk_forms import (
    PATIENT_CLASS_LABELS,
    PRIORITY_LABELS,
    ChooseExamForm,
)
from ris.models import (
    ExamStatus,
    MRISafety,
    Patient,
    PatientClass,
    PregnancyStatus,
    Priority,
    RequestedProcedure,
    Sex,
)
from ris.site import Site, site_of
from ris.status import LABELS

logger = logging.getLogger(__name__)

WAIT_WARN_MINUTES, WAIT_LATE_MINUTES = 15, 30
SLOT_COUNT = 8
UNBOOKED_LIMIT = 100


# ---------------------------------------------------------------------------- helpers


def local_today(site: Site) -> date:
    return utcnow().astimezone(site.zone).date()


def age_on(birth: date | None, day: date) -> int | None:
    """Age in whole years on ``day``."""
    if birth is None:
        return None
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def wait_minutes(exam: RequestedProcedure, now: datetime) -> int | None:
    """Minutes an arrived patient has waited; None for an exam that is not waiting."""
    if exam.status is not ExamStatus.ARRIVED or exam.arrived_at is None:
        return None
    return max(0, int((now - exam.arrived_at).total_seconds() // 60))


def wait_class(minutes: int | None) -> str:
    if minutes is None:
        return ""
    if minutes >= WAIT_LATE_MINUTES:
        return "wait-late"
    return "wait-warn" if minutes >= WAIT_WARN_MINUTES else "wait-ok"


def person_name(value: str | None) -> str:
    """A DICOM/HL7 person name ("House^Gregory") as people write it ("House, Gregory")."""
    parts = [part.strip() for part in (value or "").split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else family or given


def local_hm(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local.hour:02d}:{local.minute:02d}"  # strftime is slow on a 2,000-row board


class IdUrl:
    """A URL pattern with one integer id, built once per page instead of once per row."""

    MARK = 987654321

    def __init__(self, endpoint: str, key: str) -> None:
        try:
            built = url_for(endpoint, **{key: self.MARK})
        except BuildError:  # the screen is not installed (e.g. --only doors)
            built = ""
        self.prefix, _mark, self.suffix = built.partition(str(self.MARK))

    def __bool__(self) -> bool:
        return bool(self.prefix)

    def __call__(self, value: int) -> str:
        return f"{self.prefix}{value}{self.suffix}"


Badge = tuple[str, str, str]  # CSS class, label, detail


@dataclass(frozen=True)
class Words:
    """The labels a list repeats on every row, translated once per request."""

    status: dict[ExamStatus, str]
    priority: dict[Priority, str]
    patient_class: dict[PatientClass, str]
    sex: dict[Sex | None, str]
    wait: str
    alerts: dict[str, str]

    @classmethod
    def of_request(cls) -> Words:
        if "frontdesk_words" not in g:
            g.frontdesk_words = cls(
                status={key: str(label) for key, label in LABELS.items()},
                priority={key: str(label) for key, label in PRIORITY_LABELS.items()},
                patient_class={key: str(label) for key, label in PATIENT_CLASS_LABELS.items()},
                sex={Sex.MALE: _("M"), Sex.FEMALE: _("F"), Sex.OTHER: _("O")},
                wait=_("%(minutes)s min", minutes="{n}"),
                alerts={
                    "contrast": _("Contrast allergy"), "allergy": _("Allergies"),
                    "pregnant": _("Pregnant"), "possibly_pregnant": _("Possibly pregnant"),
                    "mri_unsafe": _("MRI unsafe"), "mri_conditional": _("MRI conditional"),
                    "medical": _("Medical alert"),
                },
            )  # fmt: skip
        return g.frontdesk_words


def alert_badges(patient: Patient, words: Words) -> tuple[Badge, ...]:
    """What the desk must see before the patient goes in: contrast, pregnancy, MRI safety."""
    said = words.alerts
    badges: list[Badge] = []
    if patient.contrast_allergy:
        badges.append(("contrast", said["contrast"], ""))
    if patient.allergies:
        badges.append(("allergy", said["allergy"], patient.allergies))
    if patient.pregnancy_status is PregnancyStatus.DEFINITELY_PREGNANT:
        badges.append(("pregnancy", said["pregnant"], ""))
    elif patient.pregnancy_status is PregnancyStatus.POSSIBLY_PREGNANT:
        badges.append(("pregnancy", said["possibly_pregnant"], ""))
    if patient.mri_safety is MRISafety.UNSAFE:
        badges.append(("mri unsafe", said["mri_unsafe"], ""))
    elif patient.mri_safety is MRISafety.CONDITIONAL:
        badges.append(("mri", said["mri_conditional"], ""))
    if patient.medical_alerts:
        badges.append(("medical", said["medical"], patient.medical_alerts))
    return tuple(badges)


def _patient_url(patient_id: int) -> str | None:
    """The patient page, when the patients screens are installed."""
    if "patients.show" not in current_app.view_functions:
        return None
    return url_for("patients.show", patient_id=patient_id)


@bp.context_processor
def _template_helpers() -> dict[str, object]:
    zone, words = site_of(current_app).zone, Words.of_request()
    return {
        "status_labels": words.status,
        "priority_labels": words.priority,
        "class_labels": words.patient_class,
        "sex_labels": words.sex,
        "badges": partial(alert_badges, words=words),
        "patient_url": _patient_url,
        "age_on": age_on,
        "person": person_name,
        "hm": partial(local_hm, zone=zone),
        "local_day": lambda moment: moment.astimezone(zone).date(),
        "can_write": current_user.is_authenticated and current_user.has_role(*FRONT_DESK),
    }


def date_arg(name: str) -> date | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        flash(_("%(value)s is not a date (YYYY-MM-DD); showing today.", value=value), "error")
        return None


def safe_next(target: str | None) -> str | None:
    """Only a local path is followed back (no open redirect)."""
    target = target or ""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return None if urlsplit(target).netloc else target


def field_error(form: Any, exc: PlacaError) -> None:
    """Show a service's refusal under the field it names, else as a message."""
    field = getattr(form, exc.field or "", None)
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


def flash_form_errors(form: Any) -> None:
    for field in form:
        for error in field.errors:
            flash(f"{field.label.text}: {error}" if field.label.text else str(error), "error")


def link_chosen_exam(
    form: ChooseExamForm, link: Callable[[RequestedProcedure], None], what: str
) -> RequestedProcedure | None:
    """Apply ``link`` to the exam ``form`` names, in the request's transaction.

    Returns the exam once committed; None when the choice is invalid or the service refuses
    (rolled back, the reason flashed). ``what`` names the thing linked, for the log.
    """
    db = get_db()
    if not form.validate_on_submit():
        flash_form_errors(form)
        return None
    try:
        exam = orders.get_exam(db, form.exam_id.data or 0)
        link(exam)
    except PlacaError as exc:
        logger.info("Linking %s refused: %s", what, exc.message)
        db.rollback()  # a refused link changes nothing
        flash(exc.message, "error")
        return None
    db.commit()
    return exam
