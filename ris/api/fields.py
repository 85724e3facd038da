"""The request bodies and query strings of /api, as specs (see ris.api_schemas).

The routes parse with these and /api/openapi.json documents them, so both say the same.
Text fields are as long as their columns allow.
"""

from __future__ import annotations

from ris.api_schemas import (
    CODE_REF_FIELDS,
    LONG_TEXT,
    Boolean,
    Choice,
    Date,
    DateTime,
    Field,
    Integer,
    ListOf,
    Money,
    ProcedureRef,
    RoomRef,
    Spec,
    Text,
    Time,
    text_of,
)
from ris.catalog import MODALITIES
from ris.models import (
    MRISafety,
    Order,
    Patient,
    PatientClass,
    PregnancyStatus,
    Priority,
    ProcedureCode,
    Room,
    Sex,
)

PATIENT_FIELDS: Spec = {
    "family_name": text_of(Patient.family_name, required=True),
    **{name: text_of(getattr(Patient, name))
       for name in ("given_name", "middle_name", "name_prefix", "name_suffix")},
    "birth_date": Field(Date(), nullable=True),
    "sex": Field(Choice(Sex), nullable=True, description="DICOM Patient's Sex: M, F or O."),
    **{name: text_of(getattr(Patient, name), nullable=True)
       for name in ("phone", "email", "street", "city", "postal_code", "country",
                    "insurance_payer", "insurance_member_id")},
    "contrast_allergy": Field(Boolean()),
    "allergies": text_of(Patient.allergies, nullable=True),
    "pregnancy_status": Field(Choice(PregnancyStatus), nullable=True,
                              description="DICOM Pregnancy Status: 1 not pregnant, 2 possibly, "
                                          "3 definitely, 4 unknown."),
    "mri_safety": Field(Choice(MRISafety)),
    "medical_alerts": text_of(Patient.medical_alerts, nullable=True),
}  # fmt: skip
NEW_PATIENT_FIELDS: Spec = {
    **PATIENT_FIELDS,
    "mrn": text_of(Patient.mrn, description="The HIS's identifier; Placa issues one when absent."),
    "mrn_issuer": text_of(
        Patient.mrn_issuer, description="Assigning authority; this site's by default."
    ),
}
MERGE_FIELDS: Spec = {
    "merged_id": Field(Integer(), required=True, description="The duplicate record, merged "
                                                             "into the path's patient."),
}  # fmt: skip

ORDER_FIELDS: Spec = {
    "patient_id": Field(Integer(), required=True),
    "procedures": Field(ListOf(ProcedureRef(), 20), required=True,
                        description="Procedure codes by id or by {code_system, code}; one exam "
                                    "each."),
    "ordering_physician": text_of(Order.ordering_physician, required=True),
    "referring_physician": text_of(Order.referring_physician),
    "reason": text_of(Order.reason),
    "icd10_codes": Field(ListOf(Text(16), 20), description="ICD-10 codes, e.g. J18.9."),
    "priority": Field(Choice(Priority)),
    "patient_class": Field(Choice(PatientClass), description="HL7 PV1-2: O, I or E."),
    "placer_order_number": text_of(Order.placer_order_number, nullable=True),
    "placer_issuer": text_of(Order.placer_issuer, nullable=True),
}  # fmt: skip

BOOKING_FIELDS: Spec = {
    "room": Field(RoomRef(), required=True, description="Room id or room code."),
    "start": Field(DateTime(), required=True, description="ISO 8601 with an offset."),
}
CANCEL_FIELDS: Spec = {"reason": Field(Text(LONG_TEXT), required=True)}
NO_FIELDS: Spec = {}

ROOM_FIELDS: Spec = {
    "code": text_of(Room.code, required=True),
    "name": text_of(Room.name, required=True),
    "modality": Field(Choice(MODALITIES), required=True),
    "ae_title": text_of(Room.ae_title, nullable=True, description="The device's DICOM AE title."),
    "station_name": text_of(Room.station_name, nullable=True),
    "opens_at": Field(Time(), description="Local time of the site."),
    "closes_at": Field(Time(), description="Local time of the site; 00:00 is midnight."),
    "open_days": text_of(Room.open_days, description="ISO weekdays, 1 = Monday: 12345."),
    "active": Field(Boolean()),
    "default_for_modality": Field(Boolean(), description=(
        "Where HL7 orders with a start time but no station are booked; one room per "
        "modality: setting it clears the modality's other rooms.")),
}  # fmt: skip
PROCEDURE_FIELDS: Spec = {
    **CODE_REF_FIELDS,
    "description": text_of(ProcedureCode.description, required=True),
    "modality": Field(Choice(MODALITIES), required=True),
    "body_part": text_of(ProcedureCode.body_part, nullable=True),
    "duration_minutes": Field(Integer(1, 24 * 60)),
    "technical_charge": Field(Money()),
    "professional_charge": Field(Money()),
    "active": Field(Boolean()),
    "rooms": Field(ListOf(Text(16)), description="Codes of the rooms it is done in; none: any "
                                                 "room of its modality."),
}  # fmt: skip

SEARCH_QUERY: Spec = {
    "q": Field(Text(200), required=True,
               description="Name words (prefixes; case and accents ignored), MRN, accession "
                           "number, or birth date (YYYY-MM-DD or DD/MM/YYYY)."),
    "limit": Field(Integer(1, 50), description="At most this many patients (default 50)."),
}  # fmt: skip
ACCESSION_QUERY: Spec = {"accession": Field(Text(16), required=True)}
LIST_QUERY: Spec = {"active": Field(Boolean(), description="true: only those in service.")}
SLOTS_QUERY: Spec = {
    "after": Field(DateTime(), description="Earliest start (default: now)."),
    "count": Field(Integer(1, 50), description="How many slots (default 5)."),
    "patient_id": Field(Integer(), description="Also avoid this patient's other bookings."),
}
BOARD_QUERY: Spec = {
    "date": Field(Date(), description="The site's calendar day (default: today)."),
    "room": Field(Text(16), description="Only this room (its code)."),
}
