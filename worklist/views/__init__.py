"""The technologist's screens: today's exams per room with live status, the exam steps
done by hand for modalities without MPPS, and the reconciliation of unscheduled MPPS."""

from flask import Blueprint
from flask_babel import lazy_gettext as _l

from ris.auth import ROOM_READERS, TECHNOLOGISTS
from ris.views import NAV, ROLE_HOMES, NavItem

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

# The screens register their routes on ``bp`` when imported.
from worklist.views import rooms, steps  # noqa: E402, F401
