"""Front-desk screens: day boards, room calendars, order entry, booking and check-in."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("frontdesk", __name__)
