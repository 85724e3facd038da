"""``/healthz``: liveness and readiness as JSON, for load balancers and monitoring."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from ris.auth import public
from ris.db import sessions

logger = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.route("/healthz")
@public
def healthz() -> tuple[Response, int]:
    """Ready when the database answers, the archive is writable and started doors listen."""
    checks: dict[str, Any] = {
        "database": _database_ok(),
        "archive": _archive_writable(current_app.config["DATA_DIR"]),
        "doors": doors_status(current_app),
    }
    ready = (
        checks["database"]
        and checks["archive"]
        and all(state == "up" for state in checks["doors"].values())
    )
    body = {"status": "ok" if ready else "unavailable", "live": True, "ready": ready, **checks}
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if ready else 503


def _database_ok() -> bool:
    try:
        with sessions(current_app)() as db:
            db.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError as exc:
        logger.warning("Health check: database unreachable: %s", exc.__class__.__name__)
        return False


def _archive_writable(data_dir: str) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".healthz-") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
        return True
    except OSError as exc:
        logger.warning("Health check: %s is not writable: %s", data_dir, exc)
        return False


def doors_status(app: Any) -> dict[str, str]:
    """State of each door this process started ('up' or 'down'); empty under plain WSGI."""
    doors = app.extensions.get("placa.doors", {})
    return {name: ("up" if door.is_up() else "down") for name, door in doors.items()}
