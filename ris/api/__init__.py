"""The JSON API under /api, for integrations and the screens' scripts.

Described by the OpenAPI document at /api/openapi.json (ris/api/openapi.py). The routes
call the same services as the screens; this package only reads JSON, calls, commits and
writes JSON. Errors are rendered as JSON by ris.errors for every path under /api/.

Cross-site request forgery: the blueprint is exempt from Flask-WTF's form tokens, which a
script cannot easily carry. Instead every state-changing request must either declare a JSON
body (``Content-Type: application/json``) or, when it has no body, carry
``X-Requested-With: XMLHttpRequest``. A browser sends neither cross-site without a CORS
preflight, which Placa never grants, so a forged form post is refused with 415.
"""

from __future__ import annotations

from flask import Blueprint, request
from flask.blueprints import BlueprintSetupState
from flask_babel import gettext as _

from ris.api_schemas import UnsupportedMediaType

bp = Blueprint("api", __name__, url_prefix="/api")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@bp.record_once
def _exempt_from_form_tokens(state: BlueprintSetupState) -> None:
    csrf = state.app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)


@bp.before_request
def _refuse_cross_site_writes() -> None:
    """Writes must be JSON (or body-less with X-Requested-With): see the module docstring.

    Runs after the access check (an app-wide hook), so strangers get 401/403 first.
    """
    if request.method not in WRITES or request.mimetype == "application/json":
        return
    scripted = request.headers.get("X-Requested-With") == "XMLHttpRequest"
    if scripted and not request.get_data(cache=True):
        return
    raise UnsupportedMediaType(
        _("Send the request body as JSON, with Content-Type: application/json.")
    )


# The routes register themselves on ``bp``; imported last because they import ``bp``.
from ris.api import catalog, exams, openapi, patients  # noqa: E402, F401
