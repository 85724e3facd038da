"""The JSON the API answers with: one function per resource, matching the OpenAPI schemas.

Instants are UTC in ISO 8601 with ``Z``, dates ISO, enumerations their values, money a
string with two decimals (a float would round it).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from enum import Enum
from typing import Any

from ris.models import (
    Order,
    Patient,
    PatientMerge,
    ProcedureCode,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
)
from ris.patients import PatientData
from ris.scheduling import Slot, current_step


def instant(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def clock(value: time) -> str:
    return value.strftime("%H:%M")


def value(member: str | None) -> str | None:
    """An enumeration's value; str() because a service may have stored the bare string."""
    return None if member is None else str(member)


def patient_summary(patient: Patient) -> dict[str, Any]:
    """Enough to recognise a patient in a list, without contact or clinical details."""
    return {
        "id": patient.id,
        "mrn": patient.mrn,
        "mrn_issuer": patient.mrn_issuer,
        "family_name": patient.family_name,
        "given_name": patient.given_name,
        "display_name": patient.display_name,
        "birth_date": day(patient.birth_date),
        "sex": value(patient.sex),
        "has_alerts": patient.has_alerts,
        "merged_into_id": patient.merged_into_id,
    }


def patient(record: Patient) -> dict[str, Any]:
    data = {key: value(item) if isinstance(item, Enum) else item
            for key, item in vars(PatientData.of(record)).items()}  # fmt: skip
    return {
        **patient_summary(record),
        **data,
        "birth_date": day(record.birth_date),
        "created_at": instant(record.created_at),
        "updated_at": instant(record.updated_at),
    }


def merge(record: PatientMerge) -> dict[str, Any]:
    return {
        "id": record.id,
        "surviving_id": record.surviving_id,
        "merged_id": record.merged_id,
        "merged_at": instant(record.merged_at),
        "merged_by": record.merged_by,
        "moved": json.loads(record.moved),
        "undone_at": instant(record.undone_at),
        "undone_by": record.undone_by,
    }


def order(record: Order) -> dict[str, Any]:
    return {
        "id": record.id,
        "patient_id": record.patient_id,
        "placer_order_number": record.placer_order_number,
        "placer_issuer": record.placer_issuer,
        "ordering_physician": record.ordering_physician,
        "referring_physician": record.referring_physician,
        "reason": record.reason,
        "icd10_codes": [code for code in record.icd10_codes.split(",") if code],
        "priority": record.priority.value,
        "patient_class": record.patient_class.value,
        "created_at": instant(record.created_at),
        "created_by": record.created_by,
        "exams": [exam(e) for e in record.procedures],
    }


def exam(record: RequestedProcedure, step: ScheduledProcedureStep | None = None) -> dict[str, Any]:
    """An exam with its patient, procedure and booking (``step``: the board already has it)."""
    code = record.procedure_code
    step = step or current_step(record)
    return {
        "id": record.id,
        "order_id": record.order_id,
        "accession_number": record.accession_number,
        "requested_procedure_id": record.requested_procedure_id,
        "study_instance_uid": record.study_instance_uid,
        "description": record.description,
        "status": record.status.value,
        "status_changed_at": instant(record.status_changed_at),
        "arrived_at": instant(record.arrived_at),
        "priority": record.order.priority.value,
        "patient": patient_summary(record.order.patient),
        "procedure_code": {
            "id": code.id,
            "code_system": code.code_system,
            "code": code.code,
            "description": code.description,
            "modality": code.modality,
        },
        "booking": booking(step) if step else None,
    }


def booking(step: ScheduledProcedureStep) -> dict[str, Any]:
    return {
        "step_id": step.step_id,
        "room_id": step.room_id,
        "room_code": step.room.code,
        "modality": step.modality,
        "station_ae_title": step.station_ae_title,
        "station_name": step.station_name,
        "start": instant(step.start_at),
        "end": instant(step.end_at),
    }


def slot(free: Slot) -> dict[str, Any]:
    return {
        "room_id": free.room.id,
        "room_code": free.room.code,
        "start": instant(free.start),
        "end": instant(free.end),
    }


def room(record: Room) -> dict[str, Any]:
    return {
        "id": record.id,
        "code": record.code,
        "name": record.name,
        "modality": record.modality,
        "ae_title": record.ae_title,
        "station_name": record.station_name,
        "opens_at": clock(record.opens_at),
        "closes_at": clock(record.closes_at),
        "open_days": record.open_days,
        "active": record.active,
        "default_for_modality": record.default_for_modality,
    }


def procedure_code(record: ProcedureCode) -> dict[str, Any]:
    return {
        "id": record.id,
        "code_system": record.code_system,
        "code": record.code,
        "description": record.description,
        "modality": record.modality,
        "body_part": record.body_part,
        "duration_minutes": record.duration_minutes,
        "technical_charge": f"{record.technical_charge:.2f}",
        "professional_charge": f"{record.professional_charge:.2f}",
        "active": record.active,
        "rooms": [r.code for r in record.rooms],
    }
