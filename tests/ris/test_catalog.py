"""Catalog services: rooms and procedure codes, validated, importable from CSV all or nothing."""

from __future__ import annotations

import json
from datetime import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ris import catalog
from ris.errors import Invalid
from ris.models import AuditEvent, ProcedureCode, Room
from tests.factories import ACTOR

ROOMS_CSV = """code,name,modality,ae_title,station_name,opens_at,closes_at,open_days,active
CT1,Scanner 1,CT,CT1_AE,CT1,07:30,21:00,123456,1
US1,Echo 1,US,US1_AE,US1,08:00,18:00,12345,yes
"""
PROCEDURES_CSV = (
    ",".join(catalog.PROCEDURE_COLUMNS)
    + """
CPT,74177,CT abdomen and pelvis with contrast,CT,ABDOMEN,20,310.00,95.50,CT1,1
CPT,76700,US abdomen complete,US,ABDOMEN,30,120,60,US1,1
"""
)


def test_import_rooms_and_procedures(db: Session) -> None:
    rooms = catalog.import_rooms(db, ACTOR, ROOMS_CSV)
    codes = catalog.import_procedures(db, ACTOR, "\ufeff" + PROCEDURES_CSV)  # Excel's BOM
    assert (rooms.created, rooms.updated, codes.created) == (2, 0, 2)
    ct1 = catalog.get_room_by_code(db, "CT1")
    assert (ct1.opens_at, ct1.closes_at, ct1.open_days, ct1.ae_title) == (
        time(7, 30), time(21), "123456", "CT1_AE")  # fmt: skip
    abdomen = catalog.find_procedure(db, "CPT", "74177")
    assert abdomen.technical_charge == Decimal("310.00") and [r.code for r in abdomen.rooms] == [
        "CT1"
    ]
    again = catalog.import_rooms(db, ACTOR, ROOMS_CSV.replace("Scanner 1", "Scanner One"))
    assert (again.created, again.updated) == (0, 2)
    assert catalog.get_room_by_code(db, "CT1").name == "Scanner One"


def test_a_bad_line_imports_nothing_and_names_the_line(db: Session) -> None:
    bad = ROOMS_CSV + "XR1,X-ray,XX,XR1_AE,XR1,08:00,18:00,12345,1\n"
    with pytest.raises(Invalid, match="4: Unknown modality XX"):
        catalog.import_rooms(db, ACTOR, bad)
    assert db.scalar(select(func.count()).select_from(Room)) == 0


def test_missing_columns_are_named(db: Session) -> None:
    with pytest.raises(Invalid, match="modality"):
        catalog.import_procedures(db, ACTOR, "code_system,code,description\nCPT,1,x\n")
    assert db.scalar(select(func.count()).select_from(ProcedureCode)) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"modality": "XYZ"}, "modality"),
        ({"ae_title": "WAY_TOO_LONG_AE_TITLE"}, "ae_title"),
        ({"opens_at": time(20), "closes_at": time(8)}, "closes_at"),
        ({"open_days": "89"}, "open_days"),
    ],
)
def test_room_validation(db: Session, change: dict, field: str) -> None:
    data = catalog.RoomData(**{"code": "MR1", "name": "MR", "modality": "MR", **change})
    with pytest.raises(Invalid) as refused:
        catalog.save_room(db, ACTOR, data)
    assert refused.value.field == field


def test_ae_title_belongs_to_one_room(db: Session) -> None:
    catalog.save_room(
        db, ACTOR, catalog.RoomData(code="MR1", name="MR", modality="MR", ae_title="MR_AE")
    )
    with pytest.raises(Invalid, match="MR_AE belongs to MR1"):
        catalog.save_room(
            db, ACTOR, catalog.RoomData(code="MR2", name="MR", modality="MR", ae_title="MR_AE")
        )


# The default room of a modality ----------------------------------------------------------


def _room(db: Session, code: str, modality: str = "CT", **extra: object) -> Room:
    data = catalog.RoomData(code=code, name=f"Room {code}", modality=modality, **extra)  # type: ignore[arg-type]
    return catalog.save_room(db, ACTOR, data)


def test_one_default_room_per_modality_the_last_saved_wins(db: Session) -> None:
    ct1 = _room(db, "CT1", default_for_modality=True)
    mr1 = _room(db, "MR1", "MR", default_for_modality=True)
    assert catalog.default_room(db, "CT") is ct1
    ct2 = _room(db, "CT2", default_for_modality=True)
    assert (ct1.default_for_modality, ct2.default_for_modality) == (False, True)
    assert mr1.default_for_modality  # another modality is left alone
    assert catalog.default_room(db, "CT") is ct2 and catalog.default_room(db, "US") is None
    # Moving the default room to another modality replaces that modality's default.
    catalog.save_room(db, ACTOR, catalog.RoomData(code="CT2", name="Now MR", modality="MR",
                                                  default_for_modality=True), ct2)  # fmt: skip
    assert catalog.default_room(db, "MR") is ct2 and not mr1.default_for_modality
    assert catalog.default_room(db, "CT") is None
    saves = select(AuditEvent).where(AuditEvent.action == "room.save").order_by(AuditEvent.id)
    details = [json.loads(e.detail) for e in db.scalars(saves)]
    assert [d.get("default_replaced") for d in details] == [None, None, ["CT1"], ["MR1"]]


def test_an_inactive_room_cannot_be_the_default(db: Session) -> None:
    with pytest.raises(Invalid) as refused:
        _room(db, "CT1", active=False, default_for_modality=True)
    assert refused.value.field == "default_for_modality"
    ct1 = _room(db, "CT1", default_for_modality=True)
    with pytest.raises(Invalid):  # deactivating it asks to choose another default first
        catalog.save_room(db, ACTOR, catalog.RoomData(code="CT1", name="x", modality="CT",
                                                      active=False,
                                                      default_for_modality=True), ct1)  # fmt: skip


def test_import_sets_keeps_and_refuses_defaults(db: Session) -> None:
    header = ",".join(catalog.ROOM_COLUMNS)
    assert header.endswith(",active,default_for_modality")
    catalog.import_rooms(db, ACTOR, f"{header}\nCT1,CT 1,CT,,,08:00,20:00,12345,1,1\n"
                                    "CT2,CT 2,CT,,,08:00,20:00,12345,1,0\n"
                                    "US1,US 1,US,,,08:00,20:00,12345,1,\n")  # fmt: skip
    assert catalog.default_room(db, "CT").code == "CT1" and catalog.default_room(db, "US") is None
    # A file of the earlier format (no such column) leaves the defaults as they are.
    catalog.import_rooms(db, ACTOR, ROOMS_CSV)
    assert catalog.default_room(db, "CT").code == "CT1"
    # A later row taking the default from the database is fine; two rows in one file are not.
    catalog.import_rooms(db, ACTOR, f"{header}\nCT2,CT 2,CT,,,08:00,20:00,12345,1,yes\n")
    assert catalog.default_room(db, "CT").code == "CT2"
    two = f"{header}\nCT1,CT 1,CT,,,08:00,20:00,12345,1,1\nCT3,CT 3,CT,,,08:00,20:00,12345,1,1\n"
    with pytest.raises(Invalid, match="3: CT3 and CT1 cannot both be the default CT room"):
        catalog.import_rooms(db, ACTOR, two)
    assert catalog.default_room(db, "CT").code == "CT2"  # nothing of the refused file stays
    assert catalog.get_room_by_code(db, "CT1").default_for_modality is False
