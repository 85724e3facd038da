"""Migrations and models agree; both backends upgrade from empty and downgrade back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import inspect, select, text

from ris import migrate
from ris.db import transaction
from ris.models import ROLES, Role
from ris.schema import metadata
from tests.conftest import BACKENDS, PostgresServer, build_app


@pytest.fixture(params=BACKENDS)
def empty_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """An application on a brand-new, never-migrated database."""
    if request.param == "sqlite":
        app = build_app(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
        yield app
        app.extensions["placa.engine"].dispose()
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"placa_e_{uuid.uuid4().hex[:12]}"
    app = build_app(tmp_path, server.create(name))
    yield app
    app.extensions["placa.engine"].dispose()
    server.drop(name)


def _tables(app: Flask) -> set[str]:
    return set(inspect(app.extensions["placa.engine"]).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_and_downgrade_back(empty_app: Flask) -> None:
    assert _tables(empty_app) == set()
    migrate.upgrade(empty_app)
    assert _tables(empty_app) == set(metadata.tables)
    assert migrate.is_current(empty_app)
    with transaction(empty_app) as db:
        assert sorted(db.scalars(select(Role.name))) == sorted(ROLES)
    migrate.downgrade(empty_app, "base")
    assert _tables(empty_app) == set()
    assert not migrate.is_current(empty_app)
    migrate.upgrade(empty_app)  # and up again: downgrade left nothing behind
    assert _tables(empty_app) == set(metadata.tables)


def test_models_and_migrations_agree(app: Flask) -> None:
    with app.extensions["placa.engine"].connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_sqlite_runs_with_foreign_keys_wal_full_sync_and_busy_timeout(
    tmp_path: Path, sqlite_template
) -> None:
    app = build_app(tmp_path, f"sqlite:///{sqlite_template}")
    with app.extensions["placa.engine"].connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("foreign_keys") == 1
        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 2  # FULL
        assert pragma("busy_timeout") >= 5000
    app.extensions["placa.engine"].dispose()


def test_sqlite_enforces_foreign_keys(tmp_path: Path, sqlite_template) -> None:
    app = build_app(tmp_path, f"sqlite:///{sqlite_template}")
    with pytest.raises(Exception, match="FOREIGN KEY"), transaction(app) as db:
        db.execute(text("INSERT INTO user_roles (user_id, role_id) VALUES (999, 1)"))
    app.extensions["placa.engine"].dispose()


def test_postgresql_connections_survive_a_server_restart(
    postgres: PostgresServer, postgres_template: str, tmp_path: Path
) -> None:
    name = f"placa_r_{uuid.uuid4().hex[:12]}"
    app = build_app(tmp_path, postgres.create(name, template=postgres_template))
    try:
        with transaction(app) as db:
            assert db.scalar(text("SELECT count(*) FROM roles")) == len(ROLES)
        # What a restart does to pooled connections: the server ends every backend.
        with postgres.engine.connect() as admin:
            ended = admin.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :db"
            ), {"db": name}).scalar()  # fmt: skip
        assert ended >= 1
        with transaction(app) as db:  # the pool pings, replaces the dead connection
            assert db.scalar(text("SELECT count(*) FROM roles")) == len(ROLES)
    finally:
        app.extensions["placa.engine"].dispose()
        postgres.drop(name)
