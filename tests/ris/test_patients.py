"""Patient services: registration, accent- and case-blind search, merge and its undo."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import patients
from ris.errors import Conflict, Invalid
from ris.models import AuditEvent, Order, PatientNameToken
from tests.factories import ACTOR, SITE, FrontDesk


def test_generated_mrns_are_sequential_and_unique(db: Session, desk: FrontDesk) -> None:
    first, second = desk.patient(db, "Núñez", "Álvaro"), desk.patient(db, "Smith", "Anne")
    assert (first.mrn, second.mrn) == ("PL0000001", "PL0000002")
    assert first.mrn_issuer == "PLACA"


def test_his_identifier_with_issuer_is_kept_and_unique_per_issuer(db: Session) -> None:
    data = patients.PatientData(family_name="Lefèvre", given_name="François")
    patient = patients.register_patient(db, ACTOR, SITE, data, mrn="123456", issuer="HIS")
    assert (patient.mrn, patient.mrn_issuer) == ("123456", "HIS")
    patients.register_patient(db, ACTOR, SITE, data, mrn="123456", issuer="OTHER_HIS")
    with pytest.raises(Conflict, match="already exists"):
        patients.register_patient(db, ACTOR, SITE, data, mrn="123456", issuer="HIS")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (patients.PatientData(family_name="  "), "family_name"),
        (patients.PatientData(family_name="X", birth_date=date(2999, 1, 1)), "birth_date"),
        (patients.PatientData(family_name="Doe^John"), "family_name"),
    ],
)
def test_invalid_demographics_are_refused(db: Session, data, field: str) -> None:
    with pytest.raises(Invalid) as refused:
        patients.register_patient(db, ACTOR, SITE, data)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pena", {"PEÑA, José"}),
        ("PEÑA", {"PEÑA, José"}),
        ("gaelle", {"DURAND, Gaëlle"}),
        ("GAËL", {"DURAND, Gaëlle"}),
        ("garcia lopez", {"GARCÍA LÓPEZ, María"}),
        ("lopez mar", {"GARCÍA LÓPEZ, María"}),
        ("o'brien", {"O'BRIEN, Siobhán"}),
        ("siobhan", {"O'BRIEN, Siobhán"}),
        ("durand", {"DURAND, Gaëlle", "DURAND-MARTIN, Éloïse"}),
        ("eloise", {"DURAND-MARTIN, Éloïse"}),
        ("zzz", set()),
    ],
)
def test_name_search_ignores_case_and_accents(
    db: Session, desk: FrontDesk, query: str, expected
) -> None:
    for family, given in [("Peña", "José"), ("Durand", "Gaëlle"), ("García López", "María"),
                          ("O'Brien", "Siobhán"), ("Durand-Martin", "Éloïse")]:  # fmt: skip
        desk.patient(db, family, given)
    assert {p.display_name for p in patients.search_patients(db, query)} == expected


def test_search_by_mrn_accession_and_birth_date(db: Session, desk: FrontDesk) -> None:
    patient = desk.patient(db, "Núñez", "Inés", birth_date=date(1984, 2, 29))
    code = desk.code(db)
    exam = desk.exam(db, patient, code)
    assert patients.search_patients(db, patient.mrn) == [patient]
    assert patients.search_patients(db, exam.accession_number) == [patient]
    assert patients.search_patients(db, "1984-02-29") == [patient]
    assert patients.search_patients(db, "29/02/1984") == [patient]


def test_renaming_reindexes_the_search(db: Session, desk: FrontDesk) -> None:
    patient = desk.patient(db, "Dupont", "Anne")
    data = patients.PatientData.of(patient)
    data.family_name = "Dupont-Müller"
    patients.update_patient(db, ACTOR, patient, data)
    assert patients.search_patients(db, "muller") == [patient]
    tokens = set(
        db.scalars(select(PatientNameToken.token).where(PatientNameToken.patient_id == patient.id))
    )
    assert tokens == {"dupont", "muller", "anne"}
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "patient.update")).one()
    assert '"family_name"' in event.detail and event.patient_id == patient.id


def test_merge_moves_orders_and_undo_gives_them_back(db: Session, desk: FrontDesk) -> None:
    code = desk.code(db)
    keep, duplicate = desk.patient(db, "Peña", "José"), desk.patient(db, "Pena", "Jose")
    kept_order = desk.order(db, keep, code)
    moved_order = desk.order(db, duplicate, code)
    merge = patients.merge_patients(db, ACTOR, keep, duplicate)
    assert duplicate.merged_into_id == keep.id
    assert db.get(Order, moved_order.id).patient_id == keep.id
    assert {p.id for p in patients.search_patients(db, "pena jose")} == {keep.id}
    events = db.scalars(select(AuditEvent.patient_id).where(AuditEvent.action == "patient.merge"))
    assert set(events) == {keep.id, duplicate.id}
    patients.undo_merge(db, ACTOR, merge)
    assert duplicate.merged_into_id is None
    assert db.get(Order, moved_order.id).patient_id == duplicate.id
    assert db.get(Order, kept_order.id).patient_id == keep.id
    with pytest.raises(Conflict, match="already been undone"):
        patients.undo_merge(db, ACTOR, merge)


def test_merge_refuses_itself_and_merged_records(db: Session, desk: FrontDesk) -> None:
    a, b, c = desk.patient(db, "A"), desk.patient(db, "B"), desk.patient(db, "C")
    with pytest.raises(Invalid):
        patients.merge_patients(db, ACTOR, a, a)
    patients.merge_patients(db, ACTOR, a, b)
    with pytest.raises(Conflict):
        patients.merge_patients(db, ACTOR, c, b)


def test_normalise() -> None:
    assert patients.normalise("Peña Gaëlle STRASSE Straße") == "pena gaelle strasse strasse"
