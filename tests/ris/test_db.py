"""Four doors write at once: concurrent read-then-write transactions all succeed."""

from __future__ import annotations

import threading

from flask import Flask
from sqlalchemy import func, select

from ris import audit
from ris.audit import Actor
from ris.db import read_only, transaction
from ris.models import AuditEvent

THREADS, TRANSACTIONS = 4, 25


def _door(app: Flask, name: str, errors: list[BaseException]) -> None:
    try:
        for number in range(TRANSACTIONS):
            with transaction(app) as db:
                seen = db.scalar(select(func.count()).select_from(AuditEvent))  # read first...
                audit.record(
                    db, Actor.system(name), "test.write", detail={"n": number, "seen": seen}
                )
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_concurrent_writers_neither_fail_nor_lose_writes(app: Flask) -> None:
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_door, args=(app, f"door{i}", errors)) for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with transaction(app) as db:
        assert db.scalar(select(func.count()).select_from(AuditEvent)) == THREADS * TRANSACTIONS


def test_a_long_read_does_not_block_writers(app: Flask) -> None:
    with read_only(app) as reader:
        reader.scalar(select(func.count()).select_from(AuditEvent))  # holds a read snapshot
        with transaction(app) as writer:
            audit.record(writer, Actor.system(), "test.write")
    with transaction(app) as db:
        assert db.scalar(select(func.count()).select_from(AuditEvent)) == 1
