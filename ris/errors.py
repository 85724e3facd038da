"""Placa's errors, raised by services and translated by each door.

The web door turns them into a page or a JSON body here; the DICOM door into a status;
the HL7 door into an ACK AE/AR with an ERR segment.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/dicomweb", "/healthz")


class PlacaError(Exception):
    """A request Placa understood but will not carry out; the message is for a person."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(PlacaError):
    status = 404


class Conflict(PlacaError):
    status = 409


class Invalid(PlacaError):
    status = 422


class Forbidden(PlacaError):
    status = 403


def wants_json() -> bool:
    """API clients get JSON errors; browsers get pages."""
    if request.path.startswith(JSON_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, reason: str, field: str | None = None) -> tuple[Response, int]:
    if wants_json():
        body = {"error": reason, "status": status}
        if field:
            body["field"] = field
        return jsonify(body), status
    return render_template("error.html", status=status, reason=reason), status


def register_error_handlers(app: Flask) -> None:
    """Answer every error without leaking internals (no traceback, no SQL)."""

    @app.errorhandler(PlacaError)
    def _placa_error(exc: PlacaError) -> tuple[Response, int]:
        return error_response(exc.status, exc.message, exc.field)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int] | HTTPException:
        if exc.code is None or exc.code < 400:
            return exc
        return error_response(exc.code, _public_reason(exc.code, exc.description))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return error_response(500, _("Something went wrong. The error has been logged."))


def _public_reason(code: int, description: str | None) -> str:
    reasons = {
        401: _("Please sign in."),
        403: _("You do not have access to this page."),
        404: _("This page does not exist."),
        405: _("This method is not allowed here."),
        413: _("The request is too large."),
        429: _("Too many requests. Please wait and try again."),
    }
    return reasons.get(code) or description or _("The request could not be processed.")
