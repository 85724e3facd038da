"""The catalog: procedure codes and rooms, edited by admins or imported from CSV."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal, InvalidOperation

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, lazyload

from ris import audit
from ris.audit import Actor
from ris.config import AE_TITLE_PATTERN
from ris.errors import Invalid, NotFound, PlacaError
from ris.models import ProcedureCode, Room

logger = logging.getLogger(__name__)
MODALITIES = ("CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "OT")


@dataclass
class RoomData:
    code: str
    name: str
    modality: str
    ae_title: str | None = None
    station_name: str | None = None
    opens_at: time = time(8, 0)
    closes_at: time = time(20, 0)
    open_days: str = "12345"
    active: bool = True
    # Where HL7 orders with a start time but no station (IPC-9) are booked; at most one
    # room per modality: saving one clears the others of its modality.
    default_for_modality: bool = False


@dataclass
class ProcedureData:
    code_system: str
    code: str
    description: str
    modality: str
    body_part: str | None = None
    duration_minutes: int = 15
    technical_charge: Decimal = Decimal("0")
    professional_charge: Decimal = Decimal("0")
    active: bool = True
    room_codes: list[str] = field(default_factory=list)


def _check_room(data: RoomData) -> None:
    if not data.code.strip() or len(data.code.strip()) > 16:
        raise Invalid(str(_l("A room code has 1 to 16 characters.")), field="code")
    if data.modality not in MODALITIES:
        raise Invalid(str(_l("Unknown modality %(m)s.", m=data.modality)), field="modality")
    if data.ae_title and not AE_TITLE_PATTERN.match(data.ae_title):
        raise Invalid(
            str(_l("%(ae)s is not a DICOM AE title.", ae=data.ae_title)), field="ae_title"
        )
    if data.opens_at >= data.closes_at and data.closes_at != time(0):
        raise Invalid(str(_l("The room must open before it closes.")), field="closes_at")
    if not data.open_days or not set(data.open_days) <= set("1234567"):
        raise Invalid(str(_l("Opening days are digits 1 (Monday) to 7.")), field="open_days")
    if data.default_for_modality and not data.active:
        raise Invalid(str(_l("An inactive room cannot be the default room of its modality.")),
                      field="default_for_modality")  # fmt: skip


def save_room(db: Session, actor: Actor, data: RoomData, room: Room | None = None) -> Room:
    """Create a room, or change one; the AE title identifies its device."""
    _check_room(data)
    clash = db.scalar(select(Room).where(Room.code == data.code.strip()))
    if clash is not None and clash is not room:
        raise Invalid(str(_l("The room %(code)s exists.", code=data.code)), field="code")
    if data.ae_title:
        owner = db.scalar(select(Room).where(Room.ae_title == data.ae_title))
        if owner is not None and owner is not room:
            raise Invalid(str(_l("%(ae)s belongs to %(room)s.", ae=data.ae_title, room=owner.code)),
                          field="ae_title")  # fmt: skip
    room = room or Room()
    for key, value in vars(data).items():
        setattr(room, key, value.strip() if isinstance(value, str) else value)
    room.ae_title = room.ae_title or None
    db.add(room)
    db.flush()
    replaced = _clear_other_defaults(db, room) if room.default_for_modality else []
    detail: dict[str, object] = {"code": room.code}
    if replaced:
        detail["default_replaced"] = replaced
    audit.record(db, actor, "room.save", object_type="room", object_id=room.id,
                 detail=detail)  # fmt: skip
    return room


def _clear_other_defaults(db: Session, room: Room) -> list[str]:
    """Make ``room`` the only default room of its modality; return the codes it replaced."""
    query = select(Room).where(Room.modality == room.modality, Room.default_for_modality,
                               Room.id != room.id)  # fmt: skip
    others = list(db.scalars(query))
    for other in others:
        other.default_for_modality = False
        logger.info("Room %s replaces %s as the default %s room", room.code, other.code,
                    room.modality)  # fmt: skip
    db.flush()
    return [other.code for other in others]


def default_room(db: Session, modality: str) -> Room | None:
    """The active default room of ``modality``, if one is set."""
    query = select(Room).where(Room.modality == modality, Room.default_for_modality, Room.active)
    return db.scalars(query.order_by(Room.code).limit(1)).first()


def save_procedure(
    db: Session, actor: Actor, data: ProcedureData, code: ProcedureCode | None = None
) -> ProcedureCode:
    """Create or change a procedure code with its eligible rooms."""
    if data.modality not in MODALITIES:
        raise Invalid(str(_l("Unknown modality %(m)s.", m=data.modality)), field="modality")
    if not 1 <= data.duration_minutes <= 24 * 60:
        raise Invalid(str(_l("The duration is 1 to 1440 minutes.")), field="duration_minutes")
    if not data.code.strip() or not data.code_system.strip() or not data.description.strip():
        raise Invalid(str(_l("Code system, code and description are required.")), field="code")
    clash = find_procedure(db, data.code_system, data.code)
    if clash is not None and clash is not code:
        raise Invalid(str(_l("The code %(code)s exists.", code=data.code)), field="code")
    code = code or ProcedureCode()
    for key, value in vars(data).items():
        if key != "room_codes":
            setattr(code, key, value.strip() if isinstance(value, str) else value)
    code.rooms = [get_room_by_code(db, room_code) for room_code in data.room_codes]
    db.add(code)
    db.flush()
    audit.record(db, actor, "procedure_code.save", object_type="procedure_code",
                 object_id=code.id, detail={"code": f"{code.code_system}:{code.code}"})  # fmt: skip
    return code


def find_procedure(db: Session, code_system: str, code: str) -> ProcedureCode | None:
    return db.scalar(_PROCEDURE, {"system": code_system.strip(), "code": code.strip()})


# Built once (every HL7 order looks its codes up). Rooms load when asked for: most HL7
# orders never book (no start time), so the eager load of the rooms would be wasted.
_PROCEDURE = (
    select(ProcedureCode).options(lazyload(ProcedureCode.rooms))
    .where(ProcedureCode.code_system == bindparam("system"),
           ProcedureCode.code == bindparam("code"))
)  # fmt: skip


def procedure_for_order(
    db: Session, actor: Actor, code_system: str, code: str, text: str, modality: str | None
) -> ProcedureCode:
    """The catalog code an order from the HIS names, or a new one made from what it sent.

    An order is never refused for want of a catalog entry: the unknown code is created
    active, with the text and modality sent, and flagged ``needs_mapping`` so that an admin
    completes it (duration, rooms, charges) before its charge is captured. A code sent
    without its coding system matches a catalog code of any system when only one has it.
    """
    code, code_system = code.strip(), code_system.strip()
    if not code:
        raise Invalid(str(_l("The procedure code is missing.")), field="code")
    found = _known_procedure(db, code_system, code)
    if found is not None:
        return found
    data = ProcedureData(
        code_system=code_system or "L", code=code, description=(text.strip() or code)[:200],
        modality=modality if modality in MODALITIES else "OT",
    )  # fmt: skip
    if len(data.code_system) > 16 or len(code) > 32:
        raise Invalid(str(_l("The code %(code)s is too long.", code=code)), field="code")
    created = save_procedure(db, actor, data)
    created.needs_mapping = True
    db.flush()
    logger.warning("Procedure %s:%s received unknown: created, to be mapped by an admin",
                   data.code_system, code)  # fmt: skip
    return created


def _known_procedure(db: Session, code_system: str, code: str) -> ProcedureCode | None:
    if code_system:
        return find_procedure(db, code_system, code)
    matches = list(db.scalars(select(ProcedureCode).where(ProcedureCode.code == code).limit(2)))
    if len(matches) == 1:
        return matches[0]
    return find_procedure(db, "L", code)


def get_procedure(db: Session, code_id: int) -> ProcedureCode:
    code = db.get(ProcedureCode, code_id)
    if code is None:
        raise NotFound(str(_l("No such procedure.")))
    return code


def get_room(db: Session, room_id: int) -> Room:
    room = db.get(Room, room_id)
    if room is None:
        raise NotFound(str(_l("No such room.")))
    return room


def get_room_by_code(db: Session, code: str) -> Room:
    room = db.scalar(select(Room).where(Room.code == code.strip()))
    if room is None:
        raise Invalid(str(_l("No room %(code)s.", code=code)), field="rooms")
    return room


def list_rooms(db: Session, active_only: bool = False) -> list[Room]:
    query = select(Room).order_by(Room.code)
    return list(db.scalars(query.where(Room.active) if active_only else query))


def list_procedures(db: Session, active_only: bool = False) -> list[ProcedureCode]:
    query = select(ProcedureCode).order_by(ProcedureCode.modality, ProcedureCode.description)
    return list(db.scalars(query.where(ProcedureCode.active) if active_only else query))


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[str] = field(default_factory=list)


ROOM_COLUMNS = ("code", "name", "modality", "ae_title", "station_name", "opens_at", "closes_at",
                "open_days", "active", "default_for_modality")  # fmt: skip
PROCEDURE_COLUMNS = ("code_system", "code", "description", "modality", "body_part",
                     "duration_minutes", "technical_charge", "professional_charge", "rooms",
                     "active")  # fmt: skip


def import_rooms(db: Session, actor: Actor, text: str) -> ImportResult:
    """Import rooms from CSV (header: the ROOM_COLUMNS); all or nothing.

    Without a ``default_for_modality`` column, rooms keep their default flag; a file that
    makes two rooms the default of one modality is refused.
    """
    defaults: dict[str, str] = {}  # modality -> the room code the file makes its default
    return _import(db, text, ROOM_COLUMNS[:3],
                   lambda row: _import_room(db, actor, row, defaults))  # fmt: skip


def import_procedures(db: Session, actor: Actor, text: str) -> ImportResult:
    """Import procedure codes from CSV (header: the PROCEDURE_COLUMNS); all or nothing."""
    required = PROCEDURE_COLUMNS[:4]
    return _import(db, text, required, lambda row: _import_procedure(db, actor, row))


def _import(db: Session, text: str, required: tuple[str, ...], apply: object) -> ImportResult:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [name for name in required if name not in (reader.fieldnames or [])]
    if missing:
        raise Invalid(str(_l("The CSV lacks the columns: %(cols)s.", cols=", ".join(missing))))
    result = ImportResult()
    with db.begin_nested():
        for line, row in enumerate(reader, start=2):
            try:
                created = apply(row)  # type: ignore[operator]
            except (PlacaError, ValueError, InvalidOperation) as exc:
                result.errors.append(f"{line}: {getattr(exc, 'message', exc)}")
                continue
            result.created += created
            result.updated += not created
        if result.errors:
            raise Invalid("; ".join(result.errors[:20]))
    return result


def _import_room(db: Session, actor: Actor, row: dict[str, str],
                 defaults: dict[str, str]) -> bool:  # fmt: skip
    code = row["code"].strip()
    existing = db.scalar(select(Room).where(Room.code == code))
    data = RoomData(
        code=row["code"].strip(), name=row["name"].strip(),
        modality=row["modality"].strip().upper(),
        ae_title=(row.get("ae_title") or "").strip() or None,
        station_name=(row.get("station_name") or "").strip() or None,
        opens_at=time.fromisoformat(row.get("opens_at") or "08:00"),
        closes_at=time.fromisoformat(row.get("closes_at") or "20:00"),
        open_days=(row.get("open_days") or "12345").strip(),
        active=_yes(row.get("active", "1")),
        default_for_modality=_flag(row.get("default_for_modality"),
                                   existing.default_for_modality if existing else False),
    )  # fmt: skip
    if data.default_for_modality:
        other = defaults.setdefault(data.modality, data.code)
        if other != data.code:
            raise Invalid(str(_l("%(room)s and %(other)s cannot both be the default %(modality)s "
                                 "room.", room=data.code, other=other, modality=data.modality)),
                          field="default_for_modality")  # fmt: skip
    save_room(db, actor, data, existing)
    return existing is None


def _import_procedure(db: Session, actor: Actor, row: dict[str, str]) -> bool:
    data = ProcedureData(
        code_system=row["code_system"].strip(), code=row["code"].strip(),
        description=row["description"].strip(), modality=row["modality"].strip().upper(),
        body_part=(row.get("body_part") or "").strip() or None,
        duration_minutes=int(row.get("duration_minutes") or 15),
        technical_charge=Decimal(row.get("technical_charge") or "0"),
        professional_charge=Decimal(row.get("professional_charge") or "0"),
        room_codes=[c for c in (row.get("rooms") or "").replace(";", " ").split() if c],
        active=_yes(row.get("active", "1")),
    )  # fmt: skip
    existing = find_procedure(db, data.code_system, data.code)
    save_procedure(db, actor, data, existing)
    return existing is None


def _yes(value: str | None) -> bool:
    return (value or "1").strip().lower() in {"1", "true", "yes", "y", "on", "x"}


def _flag(value: str | None, missing: bool) -> bool:
    """A yes/no cell that defaults to no when empty, and to ``missing`` without the column."""
    if value is None:
        return missing
    return value.strip().lower() in {"1", "true", "yes", "y", "on", "x"}
