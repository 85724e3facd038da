"""Orders, identifiers and the status ladder."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import orders, status
from ris.errors import Conflict, Invalid
from ris.models import ExamStatus, StatusChange
from ris.site import Site
from tests.factories import ACTOR, SITE, FrontDesk

S = ExamStatus


def test_each_procedure_gets_its_worklist_identifiers(db: Session, desk: FrontDesk) -> None:
    patient = desk.patient(db)
    order = desk.order(db, patient, desk.code(db, "74177"), desk.code(db, "71260"))
    first, second = order.procedures
    year = str(first.status_changed_at.year)
    assert first.accession_number == f"{year}000001" and second.accession_number == f"{year}000002"
    assert first.requested_procedure_id != second.requested_procedure_id
    assert first.study_instance_uid.startswith("2.25.") and len(first.study_instance_uid) <= 64
    assert {first.status, second.status} == {S.ORDERED}
    assert first.description == "CT exam 74177"


def test_uid_root_is_used(db: Session, desk: FrontDesk) -> None:
    site = Site(uid_root="1.2.826.0.1.3680043.10.999", zone=SITE.zone)
    data = orders.OrderData(ordering_physician="House^Gregory")
    order = orders.place_order(db, ACTOR, site, desk.patient(db), data, [desk.code(db)])
    uid = order.procedures[0].study_instance_uid
    assert uid.startswith("1.2.826.0.1.3680043.10.999.") and len(uid) <= 64


@pytest.mark.parametrize(
    ("text", "codes"), [("J18.9, r05", ["J18.9", "R05"]), ("S72.001A", ["S72.001A"]), ("", [])]
)
def test_icd10_codes_are_parsed(text: str, codes: list[str]) -> None:
    assert orders.parse_icd10(text) == codes


def test_bad_icd10_code_is_refused_with_its_name() -> None:
    with pytest.raises(Invalid, match="HELLO is not an ICD-10 code"):
        orders.parse_icd10("J18.9 HELLO")


def test_order_needs_physician_and_procedures(db: Session, desk: FrontDesk) -> None:
    patient = desk.patient(db)
    with pytest.raises(Invalid) as refused:
        orders.place_order(
            db, ACTOR, SITE, patient, orders.OrderData(ordering_physician=" "), [desk.code(db)]
        )
    assert refused.value.field == "ordering_physician"
    with pytest.raises(Invalid):
        orders.place_order(db, ACTOR, SITE, patient, orders.OrderData(ordering_physician="X"), [])


LEGAL = [
    (S.ORDERED, S.SCHEDULED), (S.SCHEDULED, S.ARRIVED), (S.ARRIVED, S.IN_PROGRESS),
    (S.IN_PROGRESS, S.COMPLETED), (S.COMPLETED, S.READ), (S.SCHEDULED, S.CANCELLED),
    (S.SCHEDULED, S.NO_SHOW), (S.IN_PROGRESS, S.DISCONTINUED), (S.DISCONTINUED, S.SCHEDULED),
]  # fmt: skip
ILLEGAL = [
    (S.ORDERED, S.COMPLETED), (S.READ, S.SCHEDULED), (S.CANCELLED, S.SCHEDULED),
    (S.COMPLETED, S.CANCELLED), (S.IN_PROGRESS, S.SCHEDULED), (S.NO_SHOW, S.ARRIVED),
]  # fmt: skip


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_legal_transitions_are_logged(db: Session, desk: FrontDesk, current, target) -> None:
    exam = desk.exam(db, desk.patient(db), desk.code(db))
    exam.status = current
    status.change_status(db, ACTOR, exam, target, reason="why not")
    change = db.scalars(select(StatusChange).where(StatusChange.to_status == target)).one()
    assert (change.from_status, change.actor, change.reason) == (current, "test", "why not")
    assert exam.status is target


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transitions_are_refused(db: Session, desk: FrontDesk, current, target) -> None:
    exam = desk.exam(db, desk.patient(db), desk.code(db))
    exam.status = current
    with pytest.raises(Conflict, match="cannot become"):
        status.change_status(db, ACTOR, exam, target)
    assert exam.status is current


def test_every_status_has_a_label_and_a_row_in_the_ladder() -> None:
    assert set(status.LABELS) == set(S) == set(status.TRANSITIONS)
