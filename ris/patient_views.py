"""Patient screens: search, registration, the patient page, merge."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("patients", __name__, url_prefix="/patients")
