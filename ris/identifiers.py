"""Identifiers Placa issues: MRNs, accession numbers, procedure and step IDs, UIDs."""

from __future__ import annotations

from datetime import datetime

from pydicom.uid import generate_uid
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ris.models import Counter


def next_value(db: Session, name: str) -> int:
    """The next number of counter ``name``, unique even under concurrent transactions.

    The UPDATE takes the counter row's lock (PostgreSQL) or the database write lock
    (SQLite, whose writers begin IMMEDIATE) until the caller's transaction ends.
    """
    insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.execute(insert(Counter).values(name=name, value=0).on_conflict_do_nothing())
    value = db.scalar(
        update(Counter).where(Counter.name == name).values(value=Counter.value + 1)
        .returning(Counter.value)
    )  # fmt: skip
    return int(value)


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
