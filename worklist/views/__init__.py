"""The technologist's screens: today's exams per room with live status, the exam steps
done by hand for modalities without MPPS, and the reconciliation of unscheduled MPPS."""

from datetime import datetime
from functools import partial

from flask import Blueprint, current_app
from flask_babel import lazy_gettext as _l

from ris.auth import ROOM_READERS, TECHNOLOGISTS
from ris.frontdesk.common import Words, alert_badges, person_name
from ris.site import site_of
from ris.views import NAV, ROLE_HOMES, NavItem
from worklist.models import PerformedStepStatus

# How a performed step's status reads, and the exam status colour it shares.
PPS_STATUS = {
    PerformedStepStatus.IN_PROGRESS: (_l("In progress"), "in_progress"),
    PerformedStepStatus.COMPLETED: (_l("Completed"), "completed"),
    PerformedStepStatus.DISCONTINUED: (_l("Discontinued"), "discontinued"),
}

bp = Blueprint("worklist", __name__, url_prefix="/worklist")


def _add_navigation() -> None:
    """The room list right after the day board; the technologist lands on it."""
    after = next((n + 1 for n, item in enumerate(NAV) if item.endpoint == "frontdesk.board"), 0)
    NAV[after:after] = [
        NavItem("worklist.rooms", _l("Rooms today"), frozenset(ROOM_READERS)),
        NavItem("worklist.unscheduled", _l("Unscheduled exams"), frozenset(TECHNOLOGISTS)),
    ]
    ROLE_HOMES.append(("technologist", "worklist.rooms"))


_add_navigation()  # once: Python imports a module once per process


@bp.context_processor
def _template_helpers() -> dict[str, object]:
    zone, words = site_of(current_app).zone, Words.of_request()

    def local(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "—"

    return {
        "status_labels": words.status, "priority_labels": words.priority,
        "sex_labels": words.sex, "badges": partial(alert_badges, words=words),
        "person": person_name, "local": local,
        "pps_labels": {key: str(label) for key, (label, _css) in PPS_STATUS.items()},
        "pps_css": {key: css for key, (_label, css) in PPS_STATUS.items()},
    }  # fmt: skip


# The screens register their routes on ``bp`` when imported.
from worklist.views import reconcile, rooms, steps  # noqa: E402, F401
