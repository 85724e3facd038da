"""What the API's route modules share: role sets, references to records, 201 answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, jsonify
from sqlalchemy.orm import Session

from ris.auth import ADMIN, BOARD_READERS, FRONT_DESK, PATIENT_READERS  # noqa: F401 (re-exported)
from ris.errors import Invalid, NotFound

T = TypeVar("T")


def referenced(db: Session, lookup: Callable[[Session, int], T], record_id: int, field: str) -> T:
    """A record named in a request body: its absence is an invalid field (422), not a 404,
    since the URL itself exists."""
    try:
        return lookup(db, record_id)
    except NotFound as exc:
        raise Invalid(exc.message, field=field) from None


def created(body: dict[str, Any], location: str) -> tuple[Response, int, dict[str, str]]:
    return jsonify(body), 201, {"Location": location}
