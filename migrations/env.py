"""Alembic environment: one schema, Placa's metadata, batch mode so SQLite can alter tables."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from ris.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Run by the plain `alembic` command: take the URL from Placa's own settings.
    from ris.app import create_app
    from ris.db import make_engine

    engine = make_engine(create_app().config["DATABASE_URL"])
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Placa migrations run online only (flask --app wsgi db upgrade).")
run_migrations_online()
