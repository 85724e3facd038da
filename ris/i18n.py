"""Languages: English, Spanish and French; the user's choice, else the browser's."""

from __future__ import annotations

from flask import Flask, current_app, has_request_context, request
from flask_babel import Babel, get_locale
from flask_login import current_user

from ris.config import LANGUAGES

LANGUAGE_NAMES = {"en": "English", "es": "Español", "fr": "Français"}


def select_locale() -> str:
    if current_user and current_user.is_authenticated and current_user.locale:
        return current_user.locale
    if has_request_context():
        best = request.accept_languages.best_match(LANGUAGES)
        if best:
            return best
    return current_app.config["DEFAULT_LOCALE"]


def select_timezone() -> str:
    return current_app.config["TIMEZONE"]


def init_app(app: Flask) -> None:
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(app.root_path + "/translations")
    Babel(app, locale_selector=select_locale, timezone_selector=select_timezone)

    @app.context_processor
    def _languages() -> dict[str, object]:
        return {"LANGUAGE_NAMES": LANGUAGE_NAMES, "get_locale": get_locale}
