"""One schema, one engine, and three ways to borrow a session.

* Web views call :func:`get_db` and commit after a successful write; the request's
  teardown closes the session, which rolls back anything left uncommitted.
* DICOM handlers, HL7 handlers and scheduler jobs run outside Flask's request context and
  use ``with transaction(app) as db:`` (commit on success, roll back on any error).
* Services take ``db`` as their first argument, flush, and never commit.
* Long read-only work (an export, a large query) uses ``with read_only(app) as db:``.

On SQLite every transaction but the read-only ones begins IMMEDIATE: it takes the write
lock up front and waits for it (busy timeout), instead of failing with "database is
locked" when a transaction that has read tries to write after another door committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g
from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_OPTION = "placa_read_only"


class Base(DeclarativeBase):
    """The declarative base of every table in every Placa package."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is expected")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time in UTC, the only clock the schema knows."""
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """Create the process's engine with the settings each backend needs."""
    if url.startswith("sqlite"):
        engine = create_engine(url)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys, WAL with full sync and a busy timeout: four doors write at once."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (SQLAlchemy's
        # documented recipe); pysqlite would otherwise run SELECTs outside them.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()
        _add_sqlite_functions(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")


def _add_sqlite_functions(dbapi_connection: Any) -> None:
    """What PostgreSQL has and SQLite lacks for DICOM matching (ris.dicom_match): a lower()
    that knows accented letters, and the local time of day of a UTC timestamp."""
    from ris.dicom_match import sqlite_local_time, sqlite_lower

    dbapi_connection.create_function("placa_lower", 1, sqlite_lower, deterministic=True)
    dbapi_connection.create_function("placa_local_time", 2, sqlite_local_time, deterministic=True)


def init_app(app: Flask) -> None:
    """Create the engine and session factory once, shared by every door."""
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["placa.engine"] = engine
    app.extensions["placa.sessions"] = sessionmaker(engine, expire_on_commit=False)
    app.extensions["placa.read_only_sessions"] = sessionmaker(
        engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
    )
    app.teardown_appcontext(_close_request_db)


def sessions(app: Flask) -> sessionmaker[Session]:
    """The application's session factory."""
    return app.extensions["placa.sessions"]


def get_db() -> Session:
    """The current request's session, opened on first use."""
    if "db" not in g:
        g.db = sessions(current_app)()
    return g.db


Row = TypeVar("Row", bound="Base")


def get_or_404(model: type[Row], row_id: int) -> Row:
    """The row of the current request's session with this primary key, or a 404 answer."""
    row = get_db().get(model, row_id)
    if row is None:
        abort(404)
    return row


def _close_request_db(_exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


@contextmanager
def transaction(app: Flask) -> Iterator[Session]:
    """One unit of work outside a request: commit on success, roll back on any error."""
    with app.app_context(), sessions(app).begin() as db:
        yield db


@contextmanager
def read_only(app: Flask) -> Iterator[Session]:
    """A session for reading only; on SQLite it never holds the write lock."""
    with app.app_context(), app.extensions["placa.read_only_sessions"]() as db:
        try:
            yield db
        finally:
            db.rollback()
