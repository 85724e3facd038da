"""``flask --app wsgi demo``: a realistic demo department in a database without patients.

Everything goes through the services a person would use (register, order, book, check in,
the status ladder), so every rule holds and the status history and the audit are real.
Only the clock is staged: status changes and order times are set to when they would have
happened during the week, so that boards and histories read naturally; the audit log keeps
the moment of the load. The random generator is seeded, so two loads on the same day look
the same. CT1 is open day and night for the emergency department, so whatever the time of
the load, the department has something going on right now.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import catalog, orders, patients, scheduling, status, users
from ris.audit import Actor
from ris.db import transaction, utcnow
from ris.demo_data import (
    ALLERGIES,
    CANCEL_REASONS,
    CONTRAST_ALLERGY_NOTES,
    CULTURES,
    DISCONTINUE_REASONS,
    EMERGENCY_PHYSICIANS,
    MRI_CONDITIONAL_NOTES,
    MRI_UNSAFE_NOTES,
    ORDERING_PHYSICIANS,
    OTHER_ALERTS,
    PROCEDURES,
    ROOMS,
    Culture,
    DemoProcedure,
    DemoRoom,
)
from ris.errors import Conflict, PlacaError
from ris.models import (
    ExamStatus,
    MRISafety,
    Order,
    Patient,
    PatientClass,
    PregnancyStatus,
    Priority,
    ProcedureCode,
    RequestedProcedure,
    Room,
    Sex,
    StatusChange,
)
from ris.site import Site, site_of

logger = logging.getLogger(__name__)
S = ExamStatus
ACTOR = Actor.system("demo")
SEED = 3  # issue 3: the front desk
PATIENT_COUNT = 200
UNBOOKED_ORDERS = 16
ARRIVAL_WINDOW = timedelta(minutes=40)  # patients due within it are mostly in the waiting room
NEXT_WEEK_SHARE = 0.3  # the front desk has already booked part of next week
AGE_REFERENCE = date(2025, 1, 1)  # birth dates do not move with the day of the load
DEMO_ACCOUNTS = (
    ("frontdesk", "front_desk", "Front desk (demo)"),
    ("tech", "technologist", "Technologist (demo)"),
    ("radiologist", "radiologist", "Radiologist (demo)"),
    ("billing", "billing", "Billing (demo)"),
)  # fmt: skip
PAST_WEIGHTS = {S.READ: 60, S.COMPLETED: 20, S.NO_SHOW: 7, S.CANCELLED: 8, S.DISCONTINUED: 5}
TODAY_WEIGHTS = {S.READ: 35, S.COMPLETED: 45, S.NO_SHOW: 7, S.CANCELLED: 8, S.DISCONTINUED: 5}
EMERGENCY_WEIGHTS = {S.READ: 70, S.COMPLETED: 20, S.CANCELLED: 5, S.DISCONTINUED: 5}
PAST_STATUSES = (S.READ, S.COMPLETED, S.NO_SHOW, S.CANCELLED, S.DISCONTINUED)
PATHS = {
    S.SCHEDULED: (),
    S.ARRIVED: (S.ARRIVED,),
    S.IN_PROGRESS: (S.ARRIVED, S.IN_PROGRESS),
    S.COMPLETED: (S.ARRIVED, S.IN_PROGRESS, S.COMPLETED),
    S.READ: (S.ARRIVED, S.IN_PROGRESS, S.COMPLETED, S.READ),
    S.NO_SHOW: (S.NO_SHOW,),
    S.CANCELLED: (S.CANCELLED,),
    S.DISCONTINUED: (S.ARRIVED, S.IN_PROGRESS, S.DISCONTINUED),
}  # after ordered -> scheduled


@dataclass
class Booking:
    """A planned exam: where, when, for whom, and the status it should end the load in."""

    room: Room
    procedure: DemoProcedure
    code: ProcedureCode
    start: datetime
    end: datetime
    emergency: bool = False
    patient: Patient | None = None
    target: ExamStatus = S.SCHEDULED


@dataclass
class DemoSummary:
    rooms: list[str]
    procedures: int
    patients: int
    exams: Counter[ExamStatus]
    days: list[date]
    accounts: list[tuple[str, str, str]] = field(default_factory=list)  # name, role, password


def load_demo(db: Session, site: Site, now: datetime | None = None) -> DemoSummary:
    """Load the demo department; refuses a database that already holds patients."""
    if db.scalar(select(Patient.id).limit(1)) is not None:
        raise Conflict(
            "The database already holds patients: the demo loads only into a database "
            "without patients."
        )
    now = (now or utcnow()).astimezone(UTC).replace(second=0, microsecond=0)
    rooms, codes = load_catalog(db)
    people = _register_patients(db, site)
    bookings, days = plan_bookings(db, site, rooms, codes, now)
    _assign_patients(bookings, people, site, random.Random(SEED + 1))
    rng = random.Random(SEED + 2)
    exams = Counter(_carry_out(db, site, booking, now, rng) for booking in bookings)
    exams.update(_unbooked_orders(db, site, codes, people, now, rng))
    summary = DemoSummary(sorted(rooms), len(codes), len(people), exams, days)
    summary.accounts = _accounts(db)
    return summary


# --- catalog --------------------------------------------------------------------------------


def load_catalog(db: Session) -> tuple[dict[str, Room], dict[str, ProcedureCode]]:
    """The demo's rooms and procedure codes by code; those already in the catalog are kept
    as they are."""
    return _rooms(db), _procedures(db)


def _rooms(db: Session) -> dict[str, Room]:
    """The demo rooms; a room of the same code already in the catalog is kept as it is."""
    found: dict[str, Room] = {}
    for demo_room in ROOMS:
        existing = db.scalar(select(Room).where(Room.code == demo_room.data.code))
        found[demo_room.data.code] = existing or catalog.save_room(db, ACTOR, demo_room.data)
    return found


def _procedures(db: Session) -> dict[str, ProcedureCode]:
    found: dict[str, ProcedureCode] = {}
    for proc in PROCEDURES:
        data = proc.data
        existing = catalog.find_procedure(db, data.code_system, data.code)
        found[data.code] = existing or catalog.save_procedure(db, ACTOR, data)
    return found


# --- patients -------------------------------------------------------------------------------


def _register_patients(db: Session, site: Site) -> list[Patient]:
    rng = random.Random(SEED)
    people = [_person(rng, rng.choices(CULTURES, [c.weight for c in CULTURES])[0])
              for _ in range(PATIENT_COUNT - 2)]  # fmt: skip
    people += _homonyms()
    return [patients.register_patient(db, ACTOR, site, data) for data in people]


def _homonyms() -> list[patients.PatientData]:
    """One woman registered twice, once without accents (as an old HIS sent her): a merge
    waiting for the front desk."""
    first = patients.PatientData(
        family_name="Núñez García", given_name="Begoña", birth_date=date(1962, 3, 14),
        sex=Sex.FEMALE, phone="+34 655 201 733", city="Madrid", country="Spain",
        insurance_payer="Sanitas", insurance_member_id="SAN-0488213",
    )  # fmt: skip
    second = replace(first, family_name="NUNEZ GARCIA", given_name="BEGONA",
                     insurance_payer=None, insurance_member_id=None)  # fmt: skip
    return [first, second]


def _person(rng: random.Random, culture: Culture) -> patients.PatientData:
    sex = Sex.FEMALE if rng.random() < 0.52 else Sex.MALE
    given = rng.choice(culture.given_female if sex is Sex.FEMALE else culture.given_male)
    family = _family_name(rng, culture)
    birth = AGE_REFERENCE - timedelta(days=int(_age(rng) * 365.25) + rng.randint(0, 364))
    city, postal, country = rng.choice(culture.cities)
    data = patients.PatientData(
        family_name=family, given_name=given, birth_date=birth, sex=sex,
        middle_name=_middle_name(rng, culture, sex, given), phone=_digits(rng, culture.phone),
        email=_email(rng, given, family), street=_street(rng, culture), city=city,
        postal_code=_postal_code(rng, postal), country=country,
        insurance_payer=rng.choice(culture.insurers),
        insurance_member_id=f"{culture.insurers[0][:3].upper()}-{rng.randint(10**6, 10**7 - 1)}",
    )  # fmt: skip
    _alerts(rng, data)
    return data


def _family_name(rng: random.Random, culture: Culture) -> str:
    first = rng.choice(culture.family)
    if not culture.compound_family:
        return first
    if rng.random() < 0.06:
        return f"{first} {rng.choice(culture.particles)}"
    second = rng.choice([name for name in culture.family if name != first])
    return f"{first}-{second}" if rng.random() < 0.05 else f"{first} {second}"


def _middle_name(rng: random.Random, culture: Culture, sex: Sex, given: str) -> str:
    if not culture.middle_names or rng.random() > 0.4:
        return ""
    names = culture.given_female if sex is Sex.FEMALE else culture.given_male
    return rng.choice([name for name in names if name != given])


def _age(rng: random.Random) -> int:
    band = rng.random()
    if band < 0.08:
        return rng.randint(3, 17)
    if band < 0.3:
        return rng.randint(18, 39)
    return rng.randint(40, 90)


def _postal_code(rng: random.Random, prefix: str) -> str:
    if prefix.isdigit():
        return f"{prefix}{rng.randint(1, 99):02d}"
    return f"{prefix} {rng.randint(1, 9)}{rng.choice('ABDEFGHJ')}{rng.choice('LNPQRSTU')}"


def _digits(rng: random.Random, pattern: str) -> str:
    return "".join(str(rng.randint(0, 9)) if ch == "#" else ch for ch in pattern)


def _email(rng: random.Random, given: str, family: str) -> str | None:
    if rng.random() < 0.55:
        return None
    words = [patients.search_tokens(given)[0], patients.search_tokens(family)[0]]
    return f"{'.'.join(words)}{rng.randint(1, 99)}@example.com"


def _street(rng: random.Random, culture: Culture) -> str:
    return rng.choice(culture.streets).format(n=rng.randint(1, 180), f=rng.randint(1, 8))


def _alerts(rng: random.Random, data: patients.PatientData) -> None:
    """A few patients the front desk must be careful with: contrast allergy, pregnancy,
    implants, kidney function."""
    notes: list[str] = []
    if rng.random() < 0.07:
        data.contrast_allergy = True
        notes.append(rng.choice(CONTRAST_ALLERGY_NOTES))
    if rng.random() < 0.1:
        notes.append(rng.choice(ALLERGIES))
    data.allergies = "; ".join(notes) or None
    data.mri_safety, implant = _mri_safety(rng)
    alerts = [implant] if implant else []
    if rng.random() < 0.1:
        alerts.append(rng.choice(OTHER_ALERTS))
    data.medical_alerts = "; ".join(alerts) or None
    age = (AGE_REFERENCE - data.birth_date).days // 365 if data.birth_date else 0
    if data.sex is Sex.FEMALE and 15 <= age <= 50:
        draw = rng.random()
        data.pregnancy_status = (
            PregnancyStatus.DEFINITELY_PREGNANT if draw < 0.05
            else PregnancyStatus.POSSIBLY_PREGNANT if draw < 0.1
            else PregnancyStatus.NOT_PREGNANT if draw < 0.7 else None
        )  # fmt: skip


def _mri_safety(rng: random.Random) -> tuple[MRISafety, str | None]:
    draw = rng.random()
    if draw < 0.06:
        return MRISafety.CONDITIONAL, rng.choice(MRI_CONDITIONAL_NOTES)
    if draw < 0.08:
        return MRISafety.UNSAFE, rng.choice(MRI_UNSAFE_NOTES)
    return (MRISafety.SAFE, None) if draw < 0.6 else (MRISafety.NOT_SCREENED, None)


# --- the week's plan ------------------------------------------------------------------------


def plan_bookings(
    db: Session, site: Site, rooms: dict[str, Room], codes: dict[str, ProcedureCode],
    now: datetime,
) -> tuple[list[Booking], list[date]]:  # fmt: skip
    """Bookings of this week (Monday to Friday) and part of the next, with the emergency
    department's exams in CT1 over the last day; every status decided from the clock."""
    rng = random.Random(SEED + 3)
    monday = now.astimezone(site.zone).date() - timedelta(days=now.astimezone(site.zone).weekday())
    days = [monday + timedelta(days=n) for n in (*range(5), *range(7, 12))]
    bookings = _emergency(db, site, rooms["CT1"], codes, now, rng)
    for demo_room in ROOMS:
        room = rooms[demo_room.data.code]
        menu = _menu(db, room, codes)
        reserved = [(b.start, b.end) for b in bookings if b.room is room]
        for day in days:
            share = 1.0 if day < monday + timedelta(days=7) else NEXT_WEEK_SHARE
            bookings += _day(rng, site, demo_room, room, day, menu, reserved, share)
    bookings.sort(key=lambda b: (b.start, b.room.code))
    for booking in bookings:
        booking.target = _target(rng, booking, site, now)
    _cover_past_statuses(rng, bookings, now)
    return bookings, days[:5]


def _menu(
    db: Session, room: Room, codes: dict[str, ProcedureCode]
) -> list[tuple[DemoProcedure, ProcedureCode]]:
    """The procedures this room does (as the catalog says)."""
    return [(proc, codes[proc.data.code]) for proc in PROCEDURES
            if room in scheduling.eligible_rooms(db, codes[proc.data.code])]  # fmt: skip


def _day(
    rng: random.Random, site: Site, demo_room: DemoRoom, room: Room, day: date,
    menu: list[tuple[DemoProcedure, ProcedureCode]], reserved: list[tuple[datetime, datetime]],
    share: float,
) -> list[Booking]:  # fmt: skip
    """A room's routine bookings for a day, spread over its booking hours with gaps."""
    if not menu or not room.is_open_on(day.isoweekday()):
        return []
    first, last = demo_room.booking_hours
    begin = datetime.combine(day, time(first), site.zone).astimezone(UTC)
    finish = datetime.combine(day, time(last), site.zone).astimezone(UTC)
    wanted = max(1, round(demo_room.per_day * share))
    average = sum(code.duration_minutes for _, code in menu) / len(menu)
    spare = (finish - begin).total_seconds() / 60 - wanted * average
    max_gap = max(0, int(2 * spare / wanted) // 5)
    found: list[Booking] = []
    moment = begin
    while len(found) < wanted:
        moment += timedelta(minutes=5 * rng.randint(0, max_gap))
        proc, code = rng.choice(menu)
        end = moment + timedelta(minutes=code.duration_minutes)
        if end > finish:
            break
        clash = next((r for r in reserved if r[0] < end and r[1] > moment), None)
        if clash is not None:
            moment = clash[1]
        elif scheduling.within_opening_hours(room, moment, end, site):
            found.append(Booking(room, proc, code, moment, end))
            moment = end
        else:
            moment = end
    return found


def _emergency(
    db: Session, site: Site, room: Room, codes: dict[str, ProcedureCode], now: datetime,
    rng: random.Random,
) -> list[Booking]:  # fmt: skip
    """The emergency department's CT: one exam on the table now, one patient waiting, and
    one every two or three hours over the last day (where the room is open)."""
    menu = [(p, c) for p, c in _menu(db, room, codes) if p.emergency]
    if not menu:
        return []
    anchor = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    found: list[Booking] = []

    def add(start: datetime, accept: Callable[[Booking], bool]) -> Booking | None:
        slot = _emergency_slot(site, room, rng.choice(menu), start, accept)
        found.extend([slot] if slot is not None else [])
        return slot

    current = add(anchor - timedelta(minutes=5), lambda b: b.start <= now < b.end)
    if current is not None:
        soon = now + ARRIVAL_WINDOW
        add(
            current.end + timedelta(minutes=10), lambda b: now < b.start <= soon and _free(b, found)
        )
    moment = anchor - timedelta(minutes=rng.randint(20, 40) * 5)
    while moment > now - timedelta(days=1):
        add(moment, lambda b: b.end <= now and _free(b, found))
        moment -= timedelta(minutes=rng.randint(20, 36) * 5)
    return found


def _free(slot: Booking, taken: list[Booking]) -> bool:
    return not any(b.start < slot.end and b.end > slot.start for b in taken)


def _emergency_slot(
    site: Site, room: Room, choice: tuple[DemoProcedure, ProcedureCode], start: datetime,
    accept: Callable[[Booking], bool],
) -> Booking | None:  # fmt: skip
    """An emergency slot at ``start`` or, if that straddles midnight, just before or after it
    (the nearer first); None if the room is closed or ``accept`` refuses them."""
    proc, code = choice
    length = timedelta(minutes=code.duration_minutes)
    local = start.astimezone(site.zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), site.zone)
    candidates = [start, midnight - length, midnight]
    if start >= midnight - length / 2:
        candidates = [start, midnight, midnight - length]
    for moment in (candidate.astimezone(UTC) for candidate in candidates):
        slot = Booking(room, proc, code, moment, moment + length, emergency=True)
        if scheduling.within_opening_hours(room, slot.start, slot.end, site) and accept(slot):
            return slot
    return None


def _target(rng: random.Random, booking: Booking, site: Site, now: datetime) -> ExamStatus:
    """Where an exam stands at ``now``: done (or not) in the past, under way now, booked later."""
    if booking.start <= now < booking.end:
        return S.IN_PROGRESS
    if booking.start > now:
        if booking.start <= now + ARRIVAL_WINDOW:
            return S.ARRIVED if booking.emergency or rng.random() < 0.8 else S.SCHEDULED
        return S.CANCELLED if rng.random() < 0.03 else S.SCHEDULED
    today = booking.start.astimezone(site.zone).date() == now.astimezone(site.zone).date()
    weights = EMERGENCY_WEIGHTS if booking.emergency else TODAY_WEIGHTS if today else PAST_WEIGHTS
    target = rng.choices(list(weights), list(weights.values()))[0]
    if target is S.READ and booking.end + timedelta(minutes=30) > now:
        return S.COMPLETED  # not read yet
    return target


def _cover_past_statuses(rng: random.Random, bookings: list[Booking], now: datetime) -> None:
    """However early in the week the load runs, every ending of an exam appears once."""
    past = [b for b in bookings if b.end <= now]
    present = {b.target for b in past}
    for wanted in PAST_STATUSES:
        spare = [b for b in past if b.target in (S.READ, S.COMPLETED)]
        if wanted not in present and len(spare) > 1:
            rng.choice(spare).target = wanted
            present = {b.target for b in past}


# --- patients for the bookings --------------------------------------------------------------


def _assign_patients(
    bookings: list[Booking], people: list[Patient], site: Site, rng: random.Random
) -> None:
    """A suitable patient for each booking, at most one exam a day each."""
    queue = people[:]
    rng.shuffle(queue)
    busy: dict[int, set[date]] = {}
    position = 0
    for booking in bookings:
        day = booking.start.astimezone(site.zone).date()
        for offset in range(len(queue)):
            patient = queue[(position + offset) % len(queue)]
            if day not in busy.get(patient.id, set()) and suits(patient, booking.procedure):
                booking.patient = patient
                busy.setdefault(patient.id, set()).add(day)
                position = (position + offset + 1) % len(queue)
                break
        else:
            raise Conflict(f"No demo patient is free for {booking.code.code} on {day}.")


def suits(patient: Patient, proc: DemoProcedure) -> bool:
    """Whether a careful front desk would book this procedure for this patient."""
    if proc.sex and patient.sex != proc.sex:
        return False
    pregnant = patient.pregnancy_status in (
        PregnancyStatus.POSSIBLY_PREGNANT, PregnancyStatus.DEFINITELY_PREGNANT
    )  # fmt: skip
    if pregnant and (proc.ionising or proc.contrast):
        return False
    if proc.contrast and patient.contrast_allergy:
        return False
    return not (proc.data.modality == "MR" and patient.mri_safety is MRISafety.UNSAFE)


# --- carrying the plan out through the services ---------------------------------------------


def _carry_out(
    db: Session, site: Site, booking: Booking, now: datetime, rng: random.Random
) -> ExamStatus:
    """Order, book and move one exam up the ladder, then stage the times of its history."""
    assert booking.patient is not None
    timeline = _timeline(rng, site, booking, now)
    order = orders.place_order(db, ACTOR, site, booking.patient,
                               _order_data(rng, booking.procedure, booking.emergency),
                               [booking.code])  # fmt: skip
    exam = order.procedures[0]
    scheduling.book(db, ACTOR, site, exam, booking.room, booking.start, now=timeline[1][1])
    for target, _at, reason in timeline[2:]:
        _move(db, exam, target, reason)
    _stage_times(db, order, exam, timeline)
    return exam.status


def _move(db: Session, exam: RequestedProcedure, target: ExamStatus, reason: str | None) -> None:
    if target is S.ARRIVED:
        scheduling.check_in(db, ACTOR, exam)
    elif target is S.NO_SHOW:
        scheduling.no_show(db, ACTOR, exam)
    elif target is S.CANCELLED:
        scheduling.cancel(db, ACTOR, exam, reason or CANCEL_REASONS[0])
    else:
        status.change_status(db, ACTOR, exam, target, reason)


Step = tuple[ExamStatus, datetime, str | None]


def _timeline(rng: random.Random, site: Site, booking: Booking, now: datetime) -> list[Step]:
    """When each status change of the exam happened, none later than ``now``."""
    start, end = booking.start, booking.end
    if booking.emergency:
        ordered = min(start - timedelta(minutes=rng.randint(15, 45)), now - timedelta(minutes=5))
        booked = ordered + timedelta(minutes=rng.randint(2, 6))
    else:
        latest = min(start - timedelta(days=1), now - timedelta(minutes=10))
        ordered = _office_moment(rng, site, latest, 20)
        booked = ordered + timedelta(minutes=rng.randint(3, 240))
    moments = {
        S.ARRIVED: start - timedelta(minutes=rng.randint(3, 25)),
        S.IN_PROGRESS: start + timedelta(minutes=rng.randint(0, 4)),
        S.COMPLETED: end + timedelta(minutes=rng.randint(0, 5)),
        S.READ: end + timedelta(minutes=rng.randint(30, 26 * 60)),
        S.NO_SHOW: start + timedelta(minutes=20),
        S.CANCELLED: start - timedelta(minutes=rng.randint(60, 3 * 24 * 60)),
        S.DISCONTINUED: start + timedelta(minutes=rng.randint(5, 12)),
    }
    steps: list[Step] = [(S.ORDERED, ordered, None), (S.SCHEDULED, booked, None)]
    for target in PATHS[booking.target]:
        steps.append((target, moments[target], _reason(rng, target)))
    return _in_order(steps, now)


def _office_moment(rng: random.Random, site: Site, latest: datetime, days: int) -> datetime:
    """A moment in office hours (08:00 to 19:00, local) in the ``days`` before ``latest``."""
    day = latest.astimezone(site.zone).date() - timedelta(days=rng.randint(0, days))
    moment = datetime.combine(day, time(rng.randint(8, 18), 5 * rng.randint(0, 11)), site.zone)
    while moment > latest:
        moment -= timedelta(days=1)
    return moment.astimezone(UTC)


def _in_order(steps: list[Step], now: datetime) -> list[Step]:
    """Each change after the previous one and none in the future."""
    fixed: list[Step] = []
    for target, moment, reason in steps:
        if fixed:
            moment = max(moment, fixed[-1][1] + timedelta(minutes=1))
        fixed.append((target, min(moment, now), reason))
    return fixed


def _reason(rng: random.Random, target: ExamStatus) -> str | None:
    if target is S.CANCELLED:
        return rng.choice(CANCEL_REASONS)
    if target is S.DISCONTINUED:
        return rng.choice(DISCONTINUE_REASONS)
    return None


def _stage_times(db: Session, order: Order, exam: RequestedProcedure, steps: list[Step]) -> None:
    """Date the order and the status history as the timeline says (the audit keeps the load)."""
    db.flush()
    order.created_at = steps[0][1]
    changes = db.scalars(
        select(StatusChange).where(StatusChange.procedure_id == exam.id).order_by(StatusChange.id)
    )
    for change, (_target, moment, _reason) in zip(changes, steps, strict=True):
        change.at = moment
    exam.status_changed_at = steps[-1][1]
    arrivals = [moment for target, moment, _ in steps if target is S.ARRIVED]
    exam.arrived_at = arrivals[-1] if arrivals else None


def _order_data(rng: random.Random, proc: DemoProcedure, emergency: bool) -> orders.OrderData:
    reason, icd10 = rng.choice(proc.reasons) if proc.reasons else ("", "")
    if emergency:
        priority, patient_class = Priority.STAT, PatientClass.EMERGENCY
        physician = rng.choice(EMERGENCY_PHYSICIANS)
    elif rng.random() < 0.12:
        priority = Priority.HIGH if rng.random() < 0.5 else Priority.ROUTINE
        patient_class, physician = PatientClass.INPATIENT, rng.choice(ORDERING_PHYSICIANS)
    else:
        priority, patient_class = Priority.ROUTINE, PatientClass.OUTPATIENT
        physician = rng.choice(ORDERING_PHYSICIANS)
    placer = f"HIS{rng.randint(10**6, 10**7 - 1)}" if rng.random() < 0.7 else None
    return orders.OrderData(
        ordering_physician=physician, referring_physician=rng.choice(ORDERING_PHYSICIANS),
        reason=reason, icd10_codes=[icd10] if icd10 else [], priority=priority,
        patient_class=patient_class, placer_order_number=placer,
        placer_issuer="HIS" if placer else None,
    )  # fmt: skip


def _unbooked_orders(
    db: Session, site: Site, codes: dict[str, ProcedureCode], people: list[Patient],
    now: datetime, rng: random.Random,
) -> list[ExamStatus]:  # fmt: skip
    """Orders that arrived over the last days and wait for the front desk to book them."""
    statuses: list[ExamStatus] = []
    routine = [proc for proc in PROCEDURES if not proc.emergency]
    for n in range(UNBOOKED_ORDERS):
        proc = rng.choice(routine)
        patient = rng.choice([p for p in people if suits(p, proc)])
        chosen = [codes[proc.data.code]]
        if n % 5 == 0:  # some orders ask for two exams of the same modality
            extra = [p for p in routine if p.data.modality == proc.data.modality and p is not proc]
            chosen.append(codes[rng.choice(extra).data.code])
        data = _order_data(rng, proc, emergency=False)
        data.priority = Priority.HIGH if n % 7 == 3 else data.priority
        order = orders.place_order(db, ACTOR, site, patient, data, chosen)
        created = _office_moment(rng, site, now - timedelta(minutes=10), 5)
        for exam in order.procedures:
            _stage_times(db, order, exam, [(S.ORDERED, created, None)])
            statuses.append(exam.status)
    return statuses


# --- accounts -------------------------------------------------------------------------------


def _accounts(db: Session) -> list[tuple[str, str, str]]:
    """The demo's staff accounts that do not exist yet, with one-time passwords."""
    created = []
    for name, role, full_name in DEMO_ACCOUNTS:
        if users.find_user(db, name) is None:
            password = users.generate_password()
            users.create_user(db, ACTOR, name, password, [role], full_name=full_name,
                              must_change_password=True)  # fmt: skip
            created.append((name, role, password))
    return created


# --- the command ----------------------------------------------------------------------------


@click.command("demo")
@with_appcontext
def demo_command() -> None:
    """Load a demo department (rooms, catalog, staff, 200 patients, a week of exams) into a
    database without patients."""
    from ris import migrate

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not migrate.is_current(app):
        raise click.ClickException(
            "The database schema is not up to date: run `flask --app wsgi db upgrade` first."
        )
    site = site_of(app)
    try:
        with _quietly("ris.status", "ris.users"), transaction(app) as db:
            summary = load_demo(db, site)
    except PlacaError as exc:
        raise click.ClickException(exc.message) from None
    logger.info("Demo department loaded: %d exams", sum(summary.exams.values()))
    click.echo(_describe(summary, site))


@contextmanager
def _quietly(*names: str) -> Iterator[None]:
    """Keep the services' one-line-per-change logs out of the way: a thousand status
    changes would bury the summary and the passwords."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def _describe(summary: DemoSummary, site: Site) -> str:
    lines = [
        f"Demo department loaded (site time zone {site.zone.key}).",
        f"  rooms: {', '.join(summary.rooms)}",
        f"  procedure codes: {summary.procedures}",
        f"  patients: {summary.patients}",
        f"  exams: {sum(summary.exams.values())} "
        f"({', '.join(f'{s.value} {summary.exams[s]}' for s in ExamStatus if summary.exams[s])})",
        f"  booked week: {summary.days[0]:%a %d %b %Y} to {summary.days[-1]:%a %d %b %Y}, "
        "part of the next week, and the emergency CT of the last day",
    ]
    if summary.accounts:
        lines.append("Demo accounts (one-time passwords, shown only now; change at first sign-in):")
        lines += [
            f"  {name:<12} {role:<13} {password}" for name, role, password in summary.accounts
        ]
    else:
        lines.append("The demo accounts existed already; their passwords are unchanged.")
    return "\n".join(lines)
