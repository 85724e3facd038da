"""Booking rules: opening hours, eligible rooms, no double booking (also under concurrency),
free slots, rescheduling, check-in, cancellation and no-shows."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ris import scheduling
from ris.db import transaction
from ris.errors import Conflict, Invalid
from ris.models import ExamStatus, RequestedProcedure, Room, ScheduledProcedureStep, StatusChange
from tests.factories import ACTOR, SITE, FrontDesk, at, next_weekday


@pytest.fixture
def ct(db: Session, desk: FrontDesk):
    room = desk.room(db, "CT1", "CT")
    desk.room(db, "CT2", "CT")
    desk.room(db, "MR1", "MR")
    code = desk.code(db, "74177", "CT", minutes=20)
    db.commit()
    return room, code


def test_booking_fills_the_worklist_data(db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    day = next_weekday()
    exam = desk.booked(db, room, code, at(day, 9))
    step = exam.steps[0]
    assert exam.status is ExamStatus.SCHEDULED
    assert (step.station_ae_title, step.station_name, step.modality) == ("CT1_AE", "CT1", "CT")
    assert step.end_at - step.start_at == timedelta(minutes=20)
    assert step.step_id.startswith("SPS") and exam.accession_number and exam.study_instance_uid
    ladder = db.scalars(select(StatusChange.to_status).where(StatusChange.procedure_id == exam.id))
    assert list(ladder) == [ExamStatus.ORDERED, ExamStatus.SCHEDULED]


def test_room_double_booking_is_refused(db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    day = next_weekday()
    desk.booked(db, room, code, at(day, 9))
    other = desk.exam(db, desk.patient(db, "Durand", "Gaëlle"), code)
    with pytest.raises(Conflict, match="CT1 is already booked from 09:00 to 09:20"):
        scheduling.book(db, ACTOR, SITE, other, room, at(day, 9, 10))
    scheduling.book(db, ACTOR, SITE, other, room, at(day, 9, 20))  # back to back is fine


def test_patient_double_booking_is_refused(db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    day = next_weekday()
    patient = desk.patient(db)
    desk.booked(db, room, code, at(day, 10), patient=patient)
    second = desk.exam(db, patient, code)
    ct2 = scheduling.eligible_rooms(db, code)[1]
    with pytest.raises(Conflict, match="The patient already has an exam in CT1"):
        scheduling.book(db, ACTOR, SITE, second, ct2, at(day, 10, 5))


def test_cancelled_and_no_show_free_the_slot(db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    day = next_weekday()
    first = desk.booked(db, room, code, at(day, 11))
    scheduling.cancel(db, ACTOR, first, "patient asked")
    second = desk.booked(db, room, code, at(day, 11))
    scheduling.no_show(db, ACTOR, second)
    desk.booked(db, room, code, at(day, 11))
    assert first.status is ExamStatus.CANCELLED and second.status is ExamStatus.NO_SHOW


def test_opening_hours_room_modality_and_past_are_checked(db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    day = next_weekday()
    exam = desk.exam(db, desk.patient(db), code)
    with pytest.raises(Invalid, match="closed"):
        scheduling.book(db, ACTOR, SITE, exam, room, at(day, 19, 50))  # ends after 20:00
    saturday = day + timedelta(days=(6 - day.isoweekday()) % 7)
    with pytest.raises(Invalid, match="closed"):
        scheduling.book(db, ACTOR, SITE, exam, room, at(saturday, 10))
    mr = next(r for r in scheduling.eligible_rooms(db, desk.code(db, "70551", "MR")))
    with pytest.raises(Invalid, match="not a CT room"):
        scheduling.book(db, ACTOR, SITE, exam, mr, at(day, 10))
    with pytest.raises(Invalid, match="in the past"):
        scheduling.book(db, ACTOR, SITE, exam, room, at(day - timedelta(days=7), 10))
    assert exam.status is ExamStatus.ORDERED


def test_eligible_rooms_restrict_a_procedure(db: Session, desk: FrontDesk, ct) -> None:
    _room, _code = ct
    cardiac = desk.code(db, "75574", "CT", minutes=30, rooms=["CT2"])
    ct1 = scheduling.eligible_rooms(db, desk.code(db, "70450", "CT"))[0]
    exam = desk.exam(db, desk.patient(db), cardiac)
    with pytest.raises(Invalid, match="is not done in CT1"):
        scheduling.book(db, ACTOR, SITE, exam, ct1, at(next_weekday(), 9))
    assert [r.code for r in scheduling.eligible_rooms(db, cardiac)] == ["CT2"]


def test_free_slots_skip_booked_time_across_rooms(db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    day = next_weekday()
    ct2 = scheduling.eligible_rooms(db, code)[1]
    desk.booked(db, room, code, at(day, 8))
    desk.booked(db, ct2, code, at(day, 8))
    desk.booked(db, ct2, code, at(day, 8, 20))
    slots = scheduling.free_slots(db, SITE, code, at(day, 7), count=3)
    assert [(s.room.code, s.start) for s in slots] == [
        ("CT1", at(day, 8, 20)), ("CT1", at(day, 8, 40)), ("CT2", at(day, 8, 40)),
    ]  # fmt: skip


def test_free_slots_avoid_the_patients_own_exams(db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    day = next_weekday()
    patient = desk.patient(db)
    desk.booked(db, room, code, at(day, 8), patient=patient)
    slots = scheduling.free_slots(db, SITE, code, at(day, 7), count=2, patient_id=patient.id)
    assert all(s.start >= at(day, 8, 20) for s in slots)


def test_reschedule_keeps_the_step_and_checks_conflicts(db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    day = next_weekday()
    exam = desk.booked(db, room, code, at(day, 9))
    step_id = exam.steps[0].step_id
    desk.booked(db, room, code, at(day, 10))
    with pytest.raises(Conflict):
        scheduling.reschedule(db, ACTOR, SITE, exam, room, at(day, 9, 50))
    scheduling.reschedule(db, ACTOR, SITE, exam, room, at(day, 9, 5))  # overlaps only itself
    step = scheduling.current_step(exam)
    assert step.step_id == step_id and step.start_at == at(day, 9, 5)
    assert db.scalar(select(func.count()).select_from(ScheduledProcedureStep)) == 2


def test_check_in_starts_the_wait_clock_and_ladder_is_enforced(
    db: Session, desk: FrontDesk, ct
) -> None:
    room, code = ct
    exam = desk.booked(db, room, code, at(next_weekday(), 9))
    scheduling.check_in(db, ACTOR, exam)
    assert exam.status is ExamStatus.ARRIVED and exam.arrived_at is not None
    with pytest.raises(Conflict, match="Arrived cannot become No-show"):
        scheduling.no_show(db, ACTOR, exam)
    with pytest.raises(Invalid, match="reason"):
        scheduling.cancel(db, ACTOR, exam, " ")


def _race(app: Flask, attempts: list) -> list[BaseException | None]:
    barrier = threading.Barrier(len(attempts))
    outcomes: list[BaseException | None] = [None] * len(attempts)

    def run(index: int) -> None:
        exam_id, room_id, start = attempts[index]
        try:
            barrier.wait(timeout=10)  # both transactions start together
            with transaction(app) as db:
                exam, room = db.get(RequestedProcedure, exam_id), db.get(Room, room_id)
                scheduling.book(db, ACTOR, SITE, exam, room, start)
        except BaseException as exc:  # reported to the test
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_two_concurrent_bookings_of_one_room_let_exactly_one_win(
    app: Flask, db: Session, desk: FrontDesk, ct
) -> None:
    room, code = ct
    first = desk.exam(db, desk.patient(db, "Martin", "Léa"), code)
    second = desk.exam(db, desk.patient(db, "Smith", "John"), code)
    db.commit()
    start = at(next_weekday(), 14)
    outcomes = _race(
        app, [(first.id, room.id, start), (second.id, room.id, start + timedelta(minutes=5))]
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "NoneType"]
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(ScheduledProcedureStep)) == 1


def test_two_concurrent_bookings_of_one_patient_let_exactly_one_win(
    app: Flask, db: Session, desk: FrontDesk, ct
) -> None:
    room, code = ct
    patient = desk.patient(db, "García", "Lucía")
    first, second = desk.exam(db, patient, code), desk.exam(db, patient, code)
    ct2 = scheduling.eligible_rooms(db, code)[1]
    db.commit()
    start = at(next_weekday(), 15)
    outcomes = _race(app, [(first.id, room.id, start), (second.id, ct2.id, start)])
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "NoneType"]
