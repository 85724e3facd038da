"""The generic DICOM matching rules (ris.dicom_match): value parsing, and the SQL they give on
SQLite and PostgreSQL for what the worklist does not exercise (DT keys, SQL metacharacters)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris.db import utcnow
from ris.dicom_match import (
    DateTime,
    MatchContext,
    MatchError,
    Text,
    build_conditions,
    date_bounds,
    parse_datetime,
    time_bounds,
)
from ris.models import Patient
from tests.factories import FrontDesk

MADRID = ZoneInfo("Europe/Madrid")
H = timedelta(hours=1)


def test_time_values_cover_their_precision() -> None:
    assert time_bounds("T", "10") == (10 * H, 11 * H)
    assert time_bounds("T", "1030") == (10.5 * H, 10.5 * H + timedelta(minutes=1))
    assert time_bounds("T", "0800-1000") == (8 * H, 10 * H + timedelta(minutes=1))
    assert time_bounds("T", "-0900") == (None, 9 * H + timedelta(minutes=1))
    assert time_bounds("T", "083000.5-") == (8.5 * H + timedelta(milliseconds=500), None)
    for wrong in ("25", "1261", "10h", "08-09-10"):
        with pytest.raises(MatchError):
            time_bounds("T", wrong)


def test_date_values_and_ranges() -> None:
    assert date_bounds("D", "20261201") == (datetime(2026, 12, 1).date(),) * 2
    assert date_bounds("D", "-20261201")[0] is None
    assert date_bounds("D", "2026.12.01-")[1] is None  # the ACR-NEMA form is read too
    for wrong in ("2026-13-45", "20261345", "202612", "20261202-20261201"):
        with pytest.raises(MatchError):
            date_bounds("D", wrong)


def test_date_times_with_offsets_and_precision() -> None:
    start = parse_datetime("DT", "20261201083000", MADRID, end=False)
    assert start == datetime(2026, 12, 1, 7, 30, tzinfo=UTC)  # site local: UTC+1 in winter
    assert parse_datetime("DT", "20261201083000-0500", MADRID, end=False) == datetime(
        2026, 12, 1, 13, 30, tzinfo=UTC
    )
    assert parse_datetime("DT", "202612", MADRID, end=True) == datetime(2026, 12, 31, 23,
                                                                        tzinfo=UTC)  # fmt: skip
    with pytest.raises(MatchError):
        parse_datetime("DT", "20261301", MADRID, end=False)


def _names(db: Session, request: Dataset, *rules: object) -> list[str]:
    match = build_conditions(request, rules, MatchContext(zone=MADRID))  # type: ignore[arg-type]
    statement = select(Patient.family_name).where(match.where()).order_by(Patient.family_name)
    return list(db.scalars(statement))


def test_sql_metacharacters_are_literal_on_both_backends(app, db: Session) -> None:
    desk = FrontDesk(app)
    for family in ("O[Neil", "100%", "A_B", "AxB", "Case"):
        desk.patient(db, family, "X")
    db.commit()
    rule = Text("PatientName", Patient.family_name)

    def find(value: str) -> list[str]:
        request = Dataset()
        request.PatientName = value
        return _names(db, request, rule)

    assert find("O[N*") == ["O[Neil"]
    assert find("O[Neil") == ["O[Neil"]
    assert find("100%") == ["100%"]
    assert find("1*%") == ["100%"]
    assert find("A_B") == ["A_B"]
    assert find("A?B") == ["A_B", "AxB"]
    assert find("case") == []  # Text is case-sensitive, also where SQLite's LIKE is not
    assert find("C*") == ["Case"]


def test_date_time_keys_on_a_utc_column(app, db: Session) -> None:
    FrontDesk(app).patient(db, "Recent", "X")
    db.commit()
    rule = DateTime("AcquisitionDateTime", Patient.created_at)
    now = utcnow().astimezone(MADRID)
    request = Dataset()
    request.AcquisitionDateTime = f"{(now - H):%Y%m%d%H%M%S}-"
    assert _names(db, request, rule) == ["Recent"]
    request.AcquisitionDateTime = f"-{(now - H):%Y%m%d%H%M%S}"
    assert _names(db, request, rule) == []
    request.AcquisitionDateTime = f"{now:%Y%m%d}"  # the whole local day
    assert _names(db, request, rule) == ["Recent"]
