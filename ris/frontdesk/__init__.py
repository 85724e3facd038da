"""Front-desk screens: day boards, room calendars, order entry, booking and check-in."""

from flask import Blueprint

bp = Blueprint("frontdesk", __name__)

# The screens register their routes on ``bp`` when imported.
from ris.frontdesk import boards, common, exams, order_entry  # noqa: E402, F401
