"""The web door (waitress): the client address seen through a trusted proxy, and only then."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from ris.db import transaction
from ris.models import AuditEvent
from ris.web_door import WebDoor
from tests.conftest import free_port


def _sign_in_attempt(door: WebDoor, forwarded_for: str) -> None:
    host, port = door.address
    request = urllib.request.Request(
        f"http://{host}:{port}/login",
        data=b"username=ghost&password=whatever-password",
        headers={"X-Forwarded-For": forwarded_for},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:  # wrong password: 401
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    refused.value.close()


@pytest.fixture
def door_app(app: Flask) -> Iterator[Flask]:
    app.config.update(HTTP_HOST="127.0.0.1", HTTP_PORT=free_port(), WTF_CSRF_ENABLED=False)
    yield app


def _addresses(app: Flask) -> list[str | None]:
    with transaction(app) as db:
        return list(db.scalars(select(AuditEvent.address).where(AuditEvent.action == "auth.login")))


def test_forwarded_address_is_ignored_without_a_trusted_proxy(door_app: Flask) -> None:
    door = WebDoor(door_app)
    try:
        _sign_in_attempt(door, "203.0.113.7")
    finally:
        door.stop()
    assert _addresses(door_app) == ["127.0.0.1"]


def test_forwarded_address_is_used_behind_the_trusted_proxy(door_app: Flask) -> None:
    door_app.config["TRUSTED_PROXY"] = "127.0.0.1"
    door = WebDoor(door_app)
    try:
        _sign_in_attempt(door, "203.0.113.7")
    finally:
        door.stop()
    assert _addresses(door_app) == ["203.0.113.7"]
