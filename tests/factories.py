"""Factories for front-desk records, built through the services (as every door does)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy.orm import Session

from ris import catalog, orders, patients, scheduling
from ris.audit import Actor
from ris.models import Order, Patient, ProcedureCode, RequestedProcedure, Room, Sex
from ris.site import Site

ACTOR = Actor.system("test")
SITE = Site(zone=ZoneInfo("Europe/Madrid"))


def next_weekday(after: date | None = None) -> date:
    """The next Monday-to-Friday day after ``after`` (today by default)."""
    day = (after or date.today()) + timedelta(days=1)
    while day.isoweekday() > 5:
        day += timedelta(days=1)
    return day


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A local time of the test site, as an aware datetime."""
    return datetime.combine(day, time(hour, minute), SITE.zone)


class FrontDesk:
    """Creates rooms, codes, patients, orders and bookings in committed transactions."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def session(self) -> Session:
        from ris.db import sessions

        return sessions(self.app)()

    def room(self, db: Session, code: str = "CT1", modality: str = "CT", **extra: object) -> Room:
        data = catalog.RoomData(code=code, name=f"Room {code}", modality=modality,
                                ae_title=f"{code}_AE", station_name=code, **extra)  # fmt: skip
        return catalog.save_room(db, ACTOR, data)

    def code(
        self, db: Session, code: str = "74177", modality: str = "CT", minutes: int = 20,
        rooms: list[str] | None = None,
    ) -> ProcedureCode:  # fmt: skip
        data = catalog.ProcedureData(
            code_system="CPT", code=code, description=f"{modality} exam {code}", modality=modality,
            duration_minutes=minutes, technical_charge=Decimal("120.50"), room_codes=rooms or [],
        )  # fmt: skip
        return catalog.save_procedure(db, ACTOR, data)

    def patient(
        self, db: Session, family: str = "Peña", given: str = "José", **extra: object
    ) -> Patient:
        defaults: dict[str, object] = {"birth_date": date(1970, 1, 1), "sex": Sex.MALE}
        data = patients.PatientData(family_name=family, given_name=given, **{**defaults, **extra})
        return patients.register_patient(db, ACTOR, SITE, data)

    def order(self, db: Session, patient: Patient, *codes: ProcedureCode) -> Order:
        data = orders.OrderData(
            ordering_physician="House^Gregory", referring_physician="Wilson^James"
        )
        return orders.place_order(db, ACTOR, SITE, patient, data, list(codes))

    def exam(self, db: Session, patient: Patient, code: ProcedureCode) -> RequestedProcedure:
        return self.order(db, patient, code).procedures[0]

    def booked(
        self, db: Session, room: Room, code: ProcedureCode, start: datetime,
        patient: Patient | None = None,
    ) -> RequestedProcedure:  # fmt: skip
        patient = patient or self.patient(db, family=f"Test{uuid.uuid4().hex[:6]}")
        exam = self.exam(db, patient, code)
        scheduling.book(db, ACTOR, SITE, exam, room, start)
        return exam
