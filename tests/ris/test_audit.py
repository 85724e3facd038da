"""The audit log is append-only, in the ORM and in the database itself."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ris import audit
from ris.audit import Actor
from ris.db import transaction
from ris.models import AuditEvent


def _one_event(app: Flask) -> int:
    with transaction(app) as db:
        entry = audit.record(
            db, Actor.dicom("CT_SCANNER", "10.0.0.5"), "study.view", object_type="study",
            object_id="1.2.3", patient_id=42, detail={"reason": "prior comparison"},
        )  # fmt: skip
        db.flush()
        return entry.id


def test_record_keeps_who_what_when_where(app: Flask) -> None:
    event_id = _one_event(app)
    with transaction(app) as db:
        entry = db.get(AuditEvent, event_id)
        assert (entry.actor_kind, entry.actor, entry.address) == ("ae", "CT_SCANNER", "10.0.0.5")
        assert (entry.object_type, entry.object_id, entry.patient_id) == ("study", "1.2.3", 42)
        assert entry.at.utcoffset().total_seconds() == 0
        assert entry.detail == '{"reason": "prior comparison"}'


def test_orm_refuses_to_change_or_delete(app: Flask) -> None:
    event_id = _one_event(app)
    with pytest.raises(PermissionError), transaction(app) as db:
        db.get(AuditEvent, event_id).action = "forged"
        db.flush()
    with pytest.raises(PermissionError), transaction(app) as db:
        db.delete(db.get(AuditEvent, event_id))
        db.flush()


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_events SET action = 'forged'", "DELETE FROM audit_events"]
)
def test_database_refuses_to_change_or_delete(app: Flask, statement: str) -> None:
    _one_event(app)
    with pytest.raises(DBAPIError, match="append-only"), transaction(app) as db:
        db.execute(text(statement))
    with transaction(app) as db:
        assert db.scalar(text("SELECT action FROM audit_events")) == "study.view"
