"""Bulk loading for the worklist benchmark: many scheduled procedure steps over many days.

Rooms, the catalog and patients come from frontdesk_data (rooms and codes through the
catalog services, patients and name tokens with SQLAlchemy Core). Orders, requested
procedures and steps are inserted in batches, one exam per order, every room booked slot
after slot from 07:00 on every day of the period. Statuses follow a clock set to noon of
the measured day, so the answer counts do not depend on when the benchmark runs.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter as Tally
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import frontdesk_data as frontdesk
from sqlalchemy import Connection

from ris.models import (
    ExamStatus,
    Order,
    PatientClass,
    Priority,
    ProcedureCode,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
)
from ris.site import Site

S = ExamStatus
SERVED = frozenset({S.SCHEDULED, S.ARRIVED})  # what the worklist answers by default
FIRST_SLOT = time(7, 0)


@dataclass
class Period:
    """``steps`` steps over ``days`` days around ``day`` (``past`` of them before it)."""

    day: date
    days: int
    past: int
    steps: int
    rooms: list[Room]
    codes: list[ProcedureCode]
    slot: int

    @property
    def first_day(self) -> date:
        return self.day - timedelta(days=self.past)

    @property
    def per_room_and_day(self) -> int:
        return -(-self.steps // (self.days * len(self.rooms)))


@dataclass
class Loaded:
    patients: int = 0
    steps: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    # (modality, local day) -> steps the worklist serves; (station AE, day) likewise
    served_by_modality: Tally[tuple[str, date]] = field(default_factory=Tally)
    served_by_station: Tally[tuple[str, date]] = field(default_factory=Tally)
    seconds: dict[str, float] = field(default_factory=dict)


def status_at(start: datetime, end: datetime, now: datetime, rng: random.Random) -> ExamStatus:
    """The exam's status when the clock reads ``now``: done before, scheduled after."""
    if start <= now < end:
        return S.IN_PROGRESS
    if start > now:
        if rng.random() < 0.04:
            return S.CANCELLED
        return S.ARRIVED if start <= now + timedelta(minutes=40) else S.SCHEDULED
    return rng.choices(
        [S.READ, S.COMPLETED, S.NO_SHOW, S.CANCELLED, S.DISCONTINUED], [60, 25, 6, 6, 3]
    )[0]


def load_steps(
    connection: Connection, site: Site, period: Period, patients: int, seed: int,
    loaded: Loaded,
) -> None:  # fmt: skip
    """Orders, exams and steps for every room, day and slot of the period."""
    rng = random.Random(seed + 5)
    by_modality: dict[str, list[ProcedureCode]] = {}
    for code in period.codes:
        by_modality.setdefault(code.modality, []).append(code)
    now = datetime.combine(period.day, time(12, 0), site.zone).astimezone(UTC)
    orders: list[dict[str, Any]] = []
    exams: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    statuses: Tally[str] = Tally()
    n = 0
    for offset in range(period.days):
        local_day = period.first_day + timedelta(days=offset)
        morning = datetime.combine(local_day, FIRST_SLOT, site.zone).astimezone(UTC)
        for slot in range(period.per_room_and_day):
            for room in period.rooms:
                if n >= period.steps:
                    break
                n += 1
                start = morning + timedelta(minutes=period.slot * slot)
                code = rng.choice(by_modality[room.modality])
                end = start + timedelta(minutes=code.duration_minutes)
                status = status_at(start, end, now, rng)
                statuses[status.value] += 1
                if status in SERVED:
                    loaded.served_by_modality[(room.modality, local_day)] += 1
                    loaded.served_by_station[(str(room.ae_title), local_day)] += 1
                row = _rows(n, site, room, code, start, end, status, now, patients, rng)
                for target, values in zip((orders, exams, steps), row, strict=True):
                    target.append(values)
    frontdesk.insert_batches(connection, Order.__table__, iter(orders))  # type: ignore[arg-type]
    frontdesk.insert_batches(connection, RequestedProcedure.__table__, iter(exams))  # type: ignore[arg-type]
    frontdesk.insert_batches(connection, ScheduledProcedureStep.__table__, iter(steps))  # type: ignore[arg-type]
    loaded.steps, loaded.statuses = n, dict(statuses)
    frontdesk._counters(connection, patients, n, n, now.year)


def _rows(
    n: int, site: Site, room: Room, code: ProcedureCode, start: datetime, end: datetime,
    status: ExamStatus, now: datetime, patients: int, rng: random.Random,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:  # fmt: skip
    ordered_at = min(now, start) - timedelta(hours=rng.randint(2, 400))
    arrived = status in (S.ARRIVED, S.IN_PROGRESS, S.COMPLETED, S.READ, S.DISCONTINUED)
    order = {
        "id": n, "patient_id": rng.randint(1, patients), "placer_order_number": f"HIS{n:08d}",
        "placer_issuer": "HIS", "ordering_physician": "Ortega^Lucía",
        "referring_physician": "Santos^Miguel", "reason": "Benchmark", "icd10_codes": "R10.9",
        "priority": Priority.STAT if rng.random() < 0.05 else Priority.ROUTINE,
        "patient_class": PatientClass.OUTPATIENT, "created_at": ordered_at, "created_by": "bench",
    }  # fmt: skip
    exam = {
        "id": n, "order_id": n, "procedure_code_id": code.id,
        "accession_number": site.accession_pattern.format(seq=n, year=now.year),
        "requested_procedure_id": f"RP{n:08d}",
        "study_instance_uid": f"2.25.{uuid.UUID(int=rng.getrandbits(128)).int}",
        "description": code.description, "status": status,
        "status_changed_at": min(now, start),
        "arrived_at": min(now, start - timedelta(minutes=10)) if arrived else None,
    }  # fmt: skip
    step = {
        "id": n, "procedure_id": n, "step_id": f"SPS{n:08d}", "modality": room.modality,
        "room_id": room.id, "station_ae_title": room.ae_title, "station_name": room.station_name,
        "start_at": start, "end_at": end, "description": code.description,
        "performing_physician": "Ruiz^Ana" if rng.random() < 0.3 else None,
    }  # fmt: skip
    return order, exam, step
