"""Alembic, driven from Placa's own configuration and engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(app: Flask) -> Config:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(app: Flask, revision: str = "head") -> None:
    """Bring the database to ``revision`` on the application's own engine."""
    _run(app, command.upgrade, revision)


def downgrade(app: Flask, revision: str) -> None:
    _run(app, command.downgrade, revision)


def revision(app: Flask, message: str) -> None:
    """Write a new migration with what the models have that the database lacks."""
    config = alembic_config(app)
    engine = app.extensions["placa.engine"]
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)


def current(app: Flask) -> None:
    _run(app, command.current)


def is_current(app: Flask) -> bool:
    """Whether the database is at the newest revision."""
    script = ScriptDirectory.from_config(alembic_config(app))
    with app.extensions["placa.engine"].connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    return revision == script.get_current_head()


def _run(app: Flask, operation: object, *args: str) -> None:
    config = alembic_config(app)
    engine = app.extensions["placa.engine"]
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        operation(config, *args)  # type: ignore[operator]
