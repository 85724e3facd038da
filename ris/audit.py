"""The audit log: one append-only table, one function to write it.

Every door records through :func:`record`: the web with the signed-in user, the DICOM
door with the calling AE, the HL7 door with the sending application.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, event, select
from sqlalchemy.orm import Session

from ris.models import AuditEvent, User

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who acts: a person, a DICOM application entity, an HL7 sender or Placa itself."""

    kind: str
    name: str
    user_id: int | None = None
    address: str | None = None

    @classmethod
    def person(cls, user: User, address: str | None) -> Actor:
        return cls("user", user.username, user.id, address)

    @classmethod
    def anonymous(cls, attempted_name: str, address: str | None) -> Actor:
        return cls("user", attempted_name[:128], None, address)

    @classmethod
    def dicom(cls, calling_ae: str, address: str | None) -> Actor:
        return cls("ae", calling_ae, None, address)

    @classmethod
    def hl7(cls, sender: str, address: str | None) -> Actor:
        return cls("hl7", sender, None, address)

    @classmethod
    def system(cls, name: str = "placa") -> Actor:
        return cls("system", name)


def record(
    db: Session,
    actor: Actor,
    action: str,
    *,
    object_type: str | None = None,
    object_id: object = None,
    patient_id: int | None = None,
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the audit log (in the caller's transaction).

    Not flushed here: the event is written with the transaction's next flush or its
    commit, in the order recorded (an HL7 order records several on its hot path)."""
    entry = AuditEvent(
        actor_kind=actor.kind,
        actor=actor.name,
        user_id=actor.user_id,
        address=actor.address,
        action=action,
        outcome=outcome,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        patient_id=patient_id,
        detail=json.dumps(detail, ensure_ascii=False, sort_keys=True) if detail else None,
    )
    db.add(entry)
    logger.debug("audit %s %s by %s:%s", action, outcome, actor.kind, actor.name)
    return entry


@dataclass(frozen=True)
class AuditFilter:
    """What an admin searches the audit log by; every field is optional."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    patient_id: int | None = None
    outcome: str | None = None


def search_events(criteria: AuditFilter) -> Select[tuple[AuditEvent]]:
    """The newest-first query for the events that match ``criteria``."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if criteria.since:
        query = query.where(AuditEvent.at >= criteria.since)
    if criteria.until:
        query = query.where(AuditEvent.at < criteria.until)
    if criteria.actor:
        query = query.where(AuditEvent.actor == criteria.actor)
    if criteria.action:
        query = query.where(AuditEvent.action.startswith(criteria.action, autoescape=True))
    if criteria.object_type:
        query = query.where(AuditEvent.object_type == criteria.object_type)
    if criteria.object_id:
        query = query.where(AuditEvent.object_id == criteria.object_id)
    if criteria.patient_id is not None:
        query = query.where(AuditEvent.patient_id == criteria.patient_id)
    if criteria.outcome:
        query = query.where(AuditEvent.outcome == criteria.outcome)
    return query


CSV_COLUMNS = (
    "id", "at", "actor_kind", "actor", "user_id", "action", "outcome",
    "object_type", "object_id", "patient_id", "address", "detail",
)  # fmt: skip


def csv_row(entry: AuditEvent) -> list[str]:
    """One exported line; timestamps in ISO 8601 UTC."""
    values = [getattr(entry, column) for column in CSV_COLUMNS]
    return [
        "" if v is None else v.isoformat() if isinstance(v, datetime) else str(v) for v in values
    ]


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _refuse_change(_mapper: object, _connection: object, target: AuditEvent) -> None:
    raise PermissionError(f"audit event {target.id} is append-only")
