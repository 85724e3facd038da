"""Bulk loading for the front-desk benchmarks: many patients and one very busy day.

The catalog and the users go through the services; patients, their name tokens, orders,
exams and steps are inserted with SQLAlchemy Core in batches (the services would take an
hour for 100,000 patients). The name tokens are computed by ris.patients itself, so the
search sees exactly what it would see after registrations through the front desk.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Table, insert, text

from ris import catalog, patients
from ris.audit import Actor
from ris.demo_data import CULTURES, PROCEDURES, Culture
from ris.models import (
    Counter,
    ExamStatus,
    MRISafety,
    Order,
    Patient,
    PatientClass,
    PatientNameToken,
    Priority,
    ProcedureCode,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
    Sex,
)
from ris.site import Site

ACTOR = Actor.system("bench")
BATCH = 5_000
S = ExamStatus
# Surnames beyond the demo's common ones: a long tail, as in any real population.
SYLLABLES = ("ber", "ca", "dan", "e", "fon", "gal", "ha", "ir", "jo", "ker", "lo", "mar", "ne",
             "ol", "pé", "qui", "ro", "san", "tel", "u", "val", "wen", "xa", "yo", "zu", "ña",
             "ès", "ü")  # fmt: skip
ENDINGS = ("do", "ez", "ier", "son", "ton", "ra", "elli", "ová", "sen", "ard")


@dataclass
class Loaded:
    """What was loaded: sizes, and samples the queries are built from."""

    patients: int = 0
    tokens: int = 0
    exams: int = 0
    day_exams: int = 0
    unbooked: int = 0
    rooms: int = 0
    day: date | None = None
    sample_patients: list[dict[str, Any]] = field(default_factory=list)
    sample_accessions: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def rooms_and_codes(db: Any, count: int, slot: int) -> tuple[list[Room], list[ProcedureCode]]:
    """``count`` rooms open day and night (modalities in rough department proportions), and
    the demo catalog with durations no longer than a slot, each code done in every room of its
    modality."""
    modalities = ["CR", "CT", "US", "MR", "CR", "CT", "US", "CR", "MR", "CR"]
    rooms = []
    for n in range(count):
        modality = modalities[n % len(modalities)]
        code = f"{modality}{n + 1:02d}"
        data = catalog.RoomData(code=code, name=f"Room {code}", modality=modality,
                                ae_title=f"{code}_AE", station_name=code, opens_at=time(0),
                                closes_at=time(0), open_days="1234567")  # fmt: skip
        rooms.append(catalog.save_room(db, ACTOR, data))
    codes = []
    for proc in PROCEDURES:
        eligible = [room.code for room in rooms if room.modality == proc.data.modality]
        if eligible:
            data = replace(proc.data, duration_minutes=min(proc.data.duration_minutes, slot),
                           room_codes=eligible)  # fmt: skip
            codes.append(catalog.save_procedure(db, ACTOR, data))
    return rooms, codes


def _surnames(rng: random.Random, count: int) -> list[str]:
    names = set()
    while len(names) < count:
        parts = [rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))] + [rng.choice(ENDINGS)]
        names.add("".join(parts).capitalize())
    return sorted(names)


def _name(rng: random.Random, culture: Culture, tail: list[str], sex: Sex) -> tuple[str, str, str]:
    given = rng.choice(culture.given_female if sex is Sex.FEMALE else culture.given_male)
    pick = (lambda: rng.choice(tail)) if rng.random() < 0.45 else (
        lambda: rng.choice(culture.family)
    )  # fmt: skip
    family = pick()
    if culture.compound_family:
        family = f"{family} {pick()}"
    middle = ""
    if culture.middle_names and rng.random() < 0.3:
        middle = rng.choice(culture.given_female if sex is Sex.FEMALE else culture.given_male)
    return family, given, middle


def patient_rows(site: Site, count: int, seed: int) -> Iterator[dict[str, Any]]:
    """``count`` patients, deterministic for a seed, as rows of the patients table."""
    rng = random.Random(seed)
    tail = _surnames(rng, 6_000)
    now = datetime.now(UTC)
    weights = [culture.weight for culture in CULTURES]
    for n in range(1, count + 1):
        culture = rng.choices(CULTURES, weights)[0]
        sex = Sex.FEMALE if rng.random() < 0.52 else Sex.MALE
        family, given, middle = _name(rng, culture, tail, sex)
        yield {
            "id": n, "mrn": site.mrn_pattern.format(seq=n), "mrn_issuer": site.mrn_issuer,
            "family_name": family, "given_name": given, "middle_name": middle,
            "name_prefix": "", "name_suffix": "",
            "birth_date": date(1930, 1, 1) + timedelta(days=rng.randint(0, 33_000)),
            "sex": sex, "phone": f"+34 6{rng.randint(10**7, 10**8 - 1)}", "email": None,
            "street": None, "city": rng.choice(culture.cities)[0], "postal_code": None,
            "country": culture.cities[0][2], "insurance_payer": rng.choice(culture.insurers),
            "insurance_member_id": None, "contrast_allergy": rng.random() < 0.05,
            "allergies": None, "pregnancy_status": None,
            "mri_safety": MRISafety.SAFE if rng.random() < 0.5 else MRISafety.NOT_SCREENED,
            "medical_alerts": None, "merged_into_id": None, "created_at": now, "updated_at": now,
        }  # fmt: skip


def token_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The patient's name tokens, as ris.patients computes them at registration."""
    person = SimpleNamespace(**{k: row[k] for k in ("family_name", "given_name", "middle_name")})
    return [{"patient_id": row["id"], "token": t} for t in patients._name_tokens(person)]  # type: ignore[arg-type]


def insert_batches(connection: Connection, table: Table, rows: Iterator[dict[str, Any]]) -> int:
    """executemany() in batches: SQLAlchemy 2 sends each as multi-row INSERTs."""
    batch: list[dict[str, Any]] = []
    total = 0
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            connection.execute(insert(table), batch)
            total, batch = total + len(batch), []
    if batch:
        connection.execute(insert(table), batch)
        total += len(batch)
    return total


def load_patients(
    connection: Connection, site: Site, count: int, seed: int, loaded: Loaded
) -> None:
    every = max(1, count // 200)  # about 200 patients to build queries from
    tokens: list[dict[str, Any]] = []
    patient_table: Table = Patient.__table__  # type: ignore[assignment]
    token_table: Table = PatientNameToken.__table__  # type: ignore[assignment]

    def rows() -> Iterator[dict[str, Any]]:
        for row in patient_rows(site, count, seed):
            tokens.extend(token_rows(row))
            if row["id"] % every == 0:
                loaded.sample_patients.append(
                    {k: row[k] for k in ("id", "mrn", "family_name", "given_name", "birth_date")}
                )
            yield row

    loaded.patients = insert_batches(connection, patient_table, rows())
    loaded.tokens = insert_batches(connection, token_table, iter(tokens))


@dataclass
class DayPlan:
    """The busy day: every room full from midnight to midnight, slot after slot."""

    day: date
    exams: int
    rooms: list[Room]
    codes: list[ProcedureCode]
    now: datetime
    slot: int


def _status(start: datetime, end: datetime, now: datetime, rng: random.Random) -> ExamStatus:
    if start <= now < end:
        return S.IN_PROGRESS
    if start > now:
        return S.ARRIVED if start <= now + timedelta(minutes=40) else S.SCHEDULED
    return rng.choices(
        [S.READ, S.COMPLETED, S.NO_SHOW, S.CANCELLED, S.DISCONTINUED], [55, 30, 6, 6, 3]
    )[0]


def load_day(
    connection: Connection, site: Site, plan: DayPlan, patient_count: int, unbooked: int,
    seed: int, loaded: Loaded,
) -> None:  # fmt: skip
    """Orders, exams and steps of the day (and some orders waiting to be booked)."""
    rng = random.Random(seed + 2)
    by_modality: dict[str, list[ProcedureCode]] = {}
    for code in plan.codes:
        by_modality.setdefault(code.modality, []).append(code)
    midnight = datetime.combine(plan.day, time(0), site.zone).astimezone(UTC)
    orders, exams, steps = [], [], []
    every = max(1, (plan.exams + unbooked) // 50)
    patient_ids = rng.sample(range(1, patient_count + 1), plan.exams + unbooked)
    for n in range(plan.exams + unbooked):
        booked = n < plan.exams
        room = plan.rooms[n % len(plan.rooms)]
        code = rng.choice(by_modality[room.modality])
        start = midnight + timedelta(minutes=plan.slot * (n // len(plan.rooms)))
        end = start + timedelta(minutes=code.duration_minutes)
        status = _status(start, end, plan.now, rng) if booked else S.ORDERED
        ordered_at = plan.now - timedelta(hours=rng.randint(2, 200))
        order_id = exam_id = n + 1
        accession = site.accession_pattern.format(seq=n + 1, year=plan.now.year)
        loaded.sample_accessions += [accession] if n % every == 0 else []
        orders.append({
            "id": order_id, "patient_id": patient_ids[n], "placer_order_number": None,
            "placer_issuer": None, "ordering_physician": "Ortega^Lucía",
            "referring_physician": "Santos^Miguel", "reason": "Benchmark", "icd10_codes": "R10.9",
            "priority": Priority.STAT if rng.random() < 0.05 else Priority.ROUTINE,
            "patient_class": PatientClass.OUTPATIENT, "created_at": ordered_at,
            "created_by": "bench",
        })  # fmt: skip
        arrived = status in (S.ARRIVED, S.IN_PROGRESS, S.COMPLETED, S.READ, S.DISCONTINUED)
        exams.append({
            "id": exam_id, "order_id": order_id, "procedure_code_id": code.id,
            "accession_number": accession, "requested_procedure_id": f"RP{n + 1:08d}",
            "study_instance_uid": f"2.25.{uuid.UUID(int=rng.getrandbits(128)).int}",
            "description": code.description, "status": status,
            "status_changed_at": min(plan.now, start), "arrived_at":
            min(plan.now, start - timedelta(minutes=rng.randint(2, 30))) if arrived else None,
        })  # fmt: skip
        if booked:
            steps.append({
                "id": exam_id, "procedure_id": exam_id, "step_id": f"SPS{n + 1:08d}",
                "modality": room.modality, "room_id": room.id,
                "station_ae_title": room.ae_title, "station_name": room.station_name,
                "start_at": start, "end_at": end, "description": code.description,
                "performing_physician": None,
            })  # fmt: skip
    insert_batches(connection, Order.__table__, iter(orders))  # type: ignore[arg-type]
    insert_batches(connection, RequestedProcedure.__table__, iter(exams))  # type: ignore[arg-type]
    insert_batches(connection, ScheduledProcedureStep.__table__, iter(steps))  # type: ignore[arg-type]
    loaded.exams, loaded.day_exams, loaded.unbooked = len(exams), len(steps), unbooked
    _counters(connection, loaded.patients, len(exams), len(steps), plan.now.year)


def _counters(connection: Connection, patients_: int, exams: int, steps: int, year: int) -> None:
    """Leave the sequences where the services expect them, so that later registrations,
    orders and bookings do not collide with the bulk rows."""
    values = {"mrn": patients_, f"accession:{year}": exams, "requested_procedure": exams,
              "scheduled_step": steps}  # fmt: skip
    connection.execute(
        insert(Counter.__table__), [{"name": k, "value": v} for k, v in values.items()]
    )  # type: ignore[arg-type]
    if connection.dialect.name == "postgresql":
        for table in ("patients", "orders", "requested_procedures", "scheduled_procedure_steps"):
            connection.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
            ))  # fmt: skip
