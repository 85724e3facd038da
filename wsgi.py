"""WSGI entry point: ``flask --app wsgi ...`` and ``gunicorn 'wsgi:app'``."""

import gc
import sys

from ris.app import create_app
from ris.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"placa: configuration error: {exc}")

# Everything built so far (modules, mappers, templates) lives as long as the process: keep it
# out of the cyclic collector's scans, so that a collection during a large page (a 2,000-exam
# day board) only walks what the request created (bench/README.md: board -25 % median).
gc.freeze()
