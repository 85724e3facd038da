"""Identifiers Placa issues: MRNs, accession numbers, procedure and step IDs, UIDs."""

from __future__ import annotations

from datetime import datetime

from pydicom.uid import generate_uid
from sqlalchemy import bindparam, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ris.models import Counter


def next_value(db: Session, name: str) -> int:
    """The next number of counter ``name``, unique even under concurrent transactions.

    The UPDATE takes the counter row's lock (PostgreSQL) or the database write lock
    (SQLite, whose writers begin IMMEDIATE) until the caller's transaction ends. A counter
    is created on first use only: the common case is one statement.
    """
    value = db.scalar(_INCREMENT, {"counter": name})
    if value is None:
        dialect = db.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        db.execute(insert(_COUNTERS).values(name=name, value=0).on_conflict_do_nothing())
        value = db.scalar(_INCREMENT, {"counter": name})
    return int(value)


# On the table, not the mapped class: an ORM-enabled UPDATE would also look for counters
# loaded in the session to synchronise, which none ever is.
_COUNTERS = Counter.__table__
_INCREMENT = (
    update(_COUNTERS).where(_COUNTERS.c.name == bindparam("counter"))
    .values(value=_COUNTERS.c.value + 1).returning(_COUNTERS.c.value)
)  # fmt: skip


def new_mrn(db: Session, pattern: str) -> str:
    return _from_pattern(db, "mrn", pattern, datetime.now())


def new_accession_number(db: Session, pattern: str, now: datetime) -> str:
    return _from_pattern(db, "accession", pattern, now)


def _from_pattern(db: Session, counter: str, pattern: str, now: datetime) -> str:
    # A pattern with {year} restarts its sequence every year.
    name = f"{counter}:{now.year}" if "{year" in pattern else counter
    return pattern.format(seq=next_value(db, name), year=now.year)


def new_requested_procedure_id(db: Session) -> str:
    return f"RP{next_value(db, 'requested_procedure'):08d}"


def new_step_id(db: Session) -> str:
    return f"SPS{next_value(db, 'scheduled_step'):08d}"


def new_uid(root: str) -> str:
    """A new DICOM UID under the organisation's root, or a UUID-derived 2.25 UID without one."""
    return generate_uid(prefix=f"{root}." if root else None)
