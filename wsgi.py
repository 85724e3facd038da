"""WSGI entry point: ``flask --app wsgi ...`` and ``gunicorn 'wsgi:app'``."""

import sys

from ris.app import create_app
from ris.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"placa: configuration error: {exc}")
