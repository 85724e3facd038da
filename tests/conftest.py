"""Shared fixtures: an application on a fresh database (SQLite and PostgreSQL), users, peers.

Each test gets its own database, copied from a template migrated once per run, so tests
that start real doors (threads, other processes) see committed data like production does.
A missing peer tool or server skips the test with a reason naming it, unless
``PLACA_REQUIRE_ALL=1`` (set by .ci/run), where it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ris import migrate, users
from ris.app import create_app
from ris.audit import Actor
from ris.db import transaction
from tests.factories import FrontDesk
from tests.hl7_peer import HL7Peer

REQUIRE_ALL = os.environ.get("PLACA_REQUIRE_ALL") == "1"
PG_SERVER_URL = os.environ.get(
    "PLACA_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgresql")
PASSWORD = "correct horse battery staple"


def require(available: bool, what: str) -> None:
    """Skip (or, under PLACA_REQUIRE_ALL=1, fail) when a peer tool or server is missing."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required (PLACA_REQUIRE_ALL=1) but not available")
    pytest.skip(f"{what} is not available")


VENV_BIN = str(Path(sys.executable).parent)


def require_tool(name: str) -> str:
    """A system command-line peer (DCMTK, Chromium), never the virtualenv's namesake.

    pynetdicom installs its own `echoscu`, `storescu`... in the virtualenv; the tests
    must talk to DCMTK's.
    """
    system_path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d != VENV_BIN
    )
    path = shutil.which(name, path=system_path)
    require(path is not None, f"the command-line tool {name!r}")
    return str(path)


def require_python_tool(name: str) -> str:
    """A console script installed in this virtualenv by requirements-dev.txt."""
    path = shutil.which(name, path=VENV_BIN)
    require(path is not None, f"the command-line tool {name!r}")
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """Creates and drops the throw-away databases of the run on the local server."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.engine = create_engine(self.url, isolation_level="AUTOCOMMIT")

    def reachable(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def create(self, name: str, template: str | None = None) -> str:
        clause = f' TEMPLATE "{template}"' if template else ""
        with self.engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        with self.engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(PG_SERVER_URL)
    require(server.reachable(), f"a PostgreSQL server at {server.url.host}:{server.url.port}")
    yield server
    server.engine.dispose()


def build_app(data_dir: Path, database_url: str, **extra: object) -> Flask:
    settings = {"DATA_DIR": str(data_dir), "DATABASE_URL": database_url, "SECRET_KEY": "test"}
    app = create_app({**settings, "TESTING": True, **extra})
    return app


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sqlite-template")
    app = build_app(folder, f"sqlite:///{folder / 'placa.db'}")
    migrate.upgrade(app)
    app.extensions["placa.engine"].dispose()
    # Fold the WAL into the database file, so that copying the file copies everything.
    with closing(sqlite3.connect(folder / "placa.db")) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder / "placa.db"


@pytest.fixture(scope="session")
def postgres_template(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    name = f"placa_tpl_{uuid.uuid4().hex[:12]}"
    url = postgres.create(name)
    app = build_app(tmp_path_factory.mktemp("pg-template"), url)
    migrate.upgrade(app)
    app.extensions["placa.engine"].dispose()
    yield name
    postgres.drop(name)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each backend, for this test alone."""
    if request.param == "sqlite":
        path = tmp_path / "placa.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    template = request.getfixturevalue("postgres_template")
    name = f"placa_t_{uuid.uuid4().hex[:12]}"
    url = server.create(name, template=template)
    yield url
    server.drop(name)


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[Flask]:
    app = build_app(tmp_path, database_url)
    yield app
    app.extensions["placa.engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class Account:
    username: str
    password: str
    id: int


@pytest.fixture
def make_user(app: Flask) -> Callable[..., Account]:
    """Factory: an active account with the given roles and a known password."""

    def make(*roles: str, username: str | None = None, must_change: bool = False) -> Account:
        name = username or f"{'-'.join(roles) or 'user'}-{uuid.uuid4().hex[:6]}".replace("_", "-")
        with transaction(app) as db:
            user = users.create_user(
                db, Actor.system("test"), name, PASSWORD, list(roles) or ["referrer"],
                full_name=name.title(), must_change_password=must_change,
            )  # fmt: skip
            return Account(user.username, PASSWORD, user.id)

    return make


CSRF_PATTERN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path)
    match = CSRF_PATTERN.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, account: Account, password: str | None = None):  # noqa: ANN201
    token = csrf_token(client, "/login")
    return client.post(
        "/login",
        data={"username": account.username, "password": password or account.password,
              "csrf_token": token},
    )  # fmt: skip


def post_form(
    client: FlaskClient, path: str, data: dict[str, object], form_page: str | None = None
):  # noqa: ANN201
    """Submit a form with the CSRF token of the page that shows it."""
    token = csrf_token(client, form_page or path)
    return client.post(path, data={**data, "csrf_token": token})


@pytest.fixture
def db(app: Flask) -> Iterator:
    """A session on the test database; the test commits what it wants others to see."""
    from ris.db import sessions

    with sessions(app)() as session:
        yield session


@pytest.fixture
def desk(app: Flask) -> FrontDesk:
    """The front-desk factories (rooms, codes, patients, orders) on the test's application."""
    return FrontDesk(app)


@pytest.fixture
def peer() -> Iterator[HL7Peer]:
    """A test MLLP peer (an HIS or billing system receiving what Placa sends)."""
    running = HL7Peer(free_port()).start()
    yield running
    running.stop()


CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    chromium = require_tool("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the Python package playwright")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()
