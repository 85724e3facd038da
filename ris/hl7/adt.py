"""ADT from the HIS (v2.3.1 and v2.5.1): patients registered, updated, merged, renumbered.

=========  ==============================================================================
A01 A04    register the PID's patient, or update it when its identifier is known
A05        pre-admit: the same
A08        update a known patient (AE 204 when PID-3 is unknown)
A40        merge: MRG-1 (merged away) into PID-3 (surviving), with the merge service
A47        identifier change: the patient known as MRG-1 is known as PID-3 from now on
=========  ==============================================================================

PID -> patient (:func:`upsert_patient_from_pid`, also used for the PID of orders):

* PID-3: the first CX typed MR (CX.5), else the first repetition; CX.1 is the MRN, CX.4
  the issuer (HD.1, else HD.2; else the sending facility MSH-4; else the site's issuer).
* PID-5 XPN: family^given^middle^suffix^prefix (the legal name, XPN.7 = L, if typed).
  HL7 puts the suffix before the prefix, DICOM PN the other way round.
* PID-7 birth date, PID-8 sex (M F O; U and anything else: unknown).
* PID-11 XAD: street (XAD.1, with XAD.2), city XAD.3, postal code XAD.5, country XAD.6.
* PID-13 XTN: the first phone number; an Internet address (XTN.2 NET or XTN.3 Internet)
  becomes the e-mail.

A field left empty was not sent: the stored value stays. HL7's explicit null ``""`` erases
it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from ris import audit, patients
from ris.errors import Conflict, Invalid, PlacaError
from ris.hl7.errors import HL7ApplicationError
from ris.hl7.fields import Value, date_value, field, is_null, repetitions, segment, segments
from ris.hl7.inbound import ROUTES, Context
from ris.hl7.message import Message, Segment
from ris.models import Patient, Sex
from ris.patients import PatientData

logger = logging.getLogger(__name__)

SEXES = {"M": Sex.MALE, "F": Sex.FEMALE, "O": Sex.OTHER}
# Where the patient services' fields come from, to name them in an ERR segment.
PID_LOCATIONS = {
    "mrn": "PID-3", "family_name": "PID-5", "given_name": "PID-5", "middle_name": "PID-5",
    "name_suffix": "PID-5", "name_prefix": "PID-5", "birth_date": "PID-7", "sex": "PID-8",
    "street": "PID-11", "city": "PID-11", "postal_code": "PID-11", "country": "PID-11",
    "phone": "PID-13", "email": "PID-13",
}  # fmt: skip
# Column sizes of ris.models.Patient: longer values are refused, never cut.
_LIMITS = {
    "mrn": 64, "issuer": 64, "family_name": 64, "given_name": 64, "middle_name": 64,
    "name_suffix": 64, "name_prefix": 64, "phone": 64, "email": 254, "street": 200,
    "city": 100, "postal_code": 20, "country": 64,
}  # fmt: skip
_MAX_MERGE_HOPS = 20


@dataclass(frozen=True)
class PatientIdentifier:
    """An MRN within its issuer, and where in the message it was read."""

    mrn: str
    issuer: str
    location: str  # "PID-3", "MRG-1"

    def __str__(self) -> str:
        return f"{self.mrn} ({self.issuer})"


# --- PID -> patient ---------------------------------------------------------------------


def upsert_patient_from_pid(ctx: Context, pid: Segment) -> Patient:
    """The patient PID-3 names, registered if unknown, else updated with what PID sends.

    Fields the PID leaves empty keep their stored value. A PID-3 that names a patient
    merged away resolves to the surviving record, which is then left as it is (the
    sender still uses a retired identifier; its demographics are not trusted over the
    survivor's). Raises :class:`HL7ApplicationError` naming the PID field at fault.
    """
    identifier = required_identifier(ctx, pid, "PID-3")
    patient = find_patient(ctx, identifier)
    if patient is None:
        return _register(ctx, pid, identifier)
    if patient.is_merged:
        return _surviving(ctx, patient)
    update_patient_from_pid(ctx, patient, pid)
    return patient


def update_patient_from_pid(ctx: Context, patient: Patient, pid: Segment) -> None:
    """Apply what the PID sends to ``patient``; nothing is written when nothing changes."""
    current = PatientData.of(patient)
    data = patient_data(pid, current)
    if data == current:
        return
    with _as_hl7_error():
        patients.update_patient(ctx.db, ctx.actor, patient, data)


def _register(ctx: Context, pid: Segment, identifier: PatientIdentifier) -> Patient:
    data = patient_data(pid, PatientData(family_name=""))
    if not data.family_name:
        raise HL7ApplicationError("PID-5", "The patient's family name is missing", "101")
    with _as_hl7_error():
        return patients.register_patient(
            ctx.db, ctx.actor, ctx.site, data, mrn=identifier.mrn, issuer=identifier.issuer
        )


def _surviving(ctx: Context, patient: Patient) -> Patient:
    live = patient
    for _hop in range(_MAX_MERGE_HOPS):
        if live.merged_into_id is None:
            break
        live = patients.get_patient(ctx.db, live.merged_into_id)
    logger.info(
        "HL7 from %s: patient %s was merged into %s; using the surviving record",
        ctx.sender,
        patient.mrn,
        live.mrn,
    )
    return live


def patient_data(pid: Segment, base: PatientData) -> PatientData:
    """``base`` with what the PID sends: names, birth date, sex, address, phone, e-mail."""
    data = replace(base)
    _read_name(pid, data)
    birth = field(pid, "PID-7.1")
    if birth:
        data.birth_date = date_value(birth, "PID-7")
    sex = field(pid, "PID-8.1")
    if sex:
        data.sex = SEXES.get(sex.upper())
    _read_address(pid, data)
    _read_telecom(pid, data)
    _check_lengths(data)
    return data


def _read_name(pid: Segment, data: PatientData) -> None:
    names = repetitions(pid, "PID-5")
    if not names or is_null(names[0].raw):
        return  # a name cannot be erased
    legal = next((name for name in names if name.component(7).upper() == "L"), names[0])
    data.family_name = legal.component(1)  # FN.1 surname, in 2.5.1 a subcomponent
    data.given_name = legal.component(2)
    data.middle_name = legal.component(3)
    data.name_suffix = legal.component(4)
    data.name_prefix = legal.component(5)


def _read_address(pid: Segment, data: PatientData) -> None:
    addresses = repetitions(pid, "PID-11")
    if not addresses:
        return
    if is_null(addresses[0].raw):
        data.street = data.city = data.postal_code = data.country = None
        return
    home = next((a for a in addresses if a.component(7).upper() == "H"), addresses[0])
    street = ", ".join(part for part in (home.component(1), home.component(2)) if part)
    data.street = street or None
    data.city = home.component(3) or None
    data.postal_code = home.component(5) or None
    data.country = home.component(6) or None


def _read_telecom(pid: Segment, data: PatientData) -> None:
    numbers = repetitions(pid, "PID-13")
    if not numbers:
        return
    if is_null(numbers[0].raw):
        data.phone = None
        return
    phone = next((p for p in map(_phone, numbers) if p), "")
    if phone:
        data.phone = phone
    email = next((n.component(4) for n in numbers if _is_email(n) and n.component(4)), "")
    if email:
        data.email = email


def _is_email(number: Value) -> bool:
    return number.component(2).upper() == "NET" or number.component(3).upper() == "INTERNET"


def _phone(number: Value) -> str:
    if _is_email(number):
        return ""
    # XTN.1 is the whole number up to 2.5 (deprecated since); else country, area, local, ext.
    whole = number.component(1)
    if whole:
        return whole
    country, area, local = number.component(5), number.component(6), number.component(7)
    extension = number.component(8)
    text = " ".join(part for part in (f"+{country}" if country else "", area, local) if part)
    return f"{text} ext. {extension}" if text and extension else text


def _check_lengths(data: PatientData) -> None:
    for name, limit in _LIMITS.items():
        text = getattr(data, name, None)
        if isinstance(text, str) and len(text) > limit:
            raise HL7ApplicationError(
                PID_LOCATIONS[name], f"{name.replace('_', ' ')} longer than {limit} characters",
                "102",
            )  # fmt: skip


@contextmanager
def _as_hl7_error() -> Iterator[None]:
    """Service errors as AE naming the PID field they concern."""
    try:
        yield
    except PlacaError as exc:
        location = PID_LOCATIONS.get(exc.field or "", "PID")
        code = "205" if isinstance(exc, Conflict) else "102" if isinstance(exc, Invalid) else "207"
        raise HL7ApplicationError(location, exc.message, code) from exc


# --- identifiers ------------------------------------------------------------------------


def patient_identifier(
    ctx: Context, seg: Segment | None, location: str
) -> PatientIdentifier | None:
    """The MRN and issuer in a CX list (PID-3, MRG-1): the one typed MR, else the first."""
    ids = [cx for cx in repetitions(seg, location) if cx.component(1)]
    if not ids:
        return None
    chosen = next((cx for cx in ids if cx.component(5).upper() == "MR"), ids[0])
    mrn = chosen.component(1)
    issuer = chosen.component(4, 1) or chosen.component(4, 2) or _sending_facility(ctx)
    issuer = issuer or ctx.site.mrn_issuer
    if len(mrn) > _LIMITS["mrn"] or len(issuer) > _LIMITS["issuer"]:
        raise HL7ApplicationError(location, "Patient identifier or its issuer is too long", "102")
    return PatientIdentifier(mrn, issuer, location)


def required_identifier(ctx: Context, seg: Segment | None, location: str) -> PatientIdentifier:
    identifier = patient_identifier(ctx, seg, location)
    if identifier is None:
        raise HL7ApplicationError(location, "The patient identifier is missing", "101")
    return identifier


def find_patient(ctx: Context, identifier: PatientIdentifier) -> Patient | None:
    return patients.find_by_mrn(ctx.db, identifier.mrn, identifier.issuer)


def known_patient(ctx: Context, identifier: PatientIdentifier) -> Patient:
    patient = find_patient(ctx, identifier)
    if patient is None:
        raise HL7ApplicationError(
            identifier.location, f"Unknown patient identifier {identifier}", "204"
        )
    return patient


def _sending_facility(ctx: Context) -> str:
    return ctx.sender.partition("^")[2]


# --- the routes -------------------------------------------------------------------------


def _pid(message: Message) -> Segment:
    pid = segment(message, "PID")
    if pid is None:
        raise HL7ApplicationError("PID", "The message has no PID segment", "101")
    return pid


def handle_register(ctx: Context, message: Message) -> int:
    """A01, A04, A05: register the patient, or update it when already known."""
    return upsert_patient_from_pid(ctx, _pid(message)).id


def handle_update(ctx: Context, message: Message) -> int:
    """A08: update a patient Placa knows."""
    pid = _pid(message)
    patient = known_patient(ctx, required_identifier(ctx, pid, "PID-3"))
    if patient.is_merged:
        return _surviving(ctx, patient).id
    update_patient_from_pid(ctx, patient, pid)
    return patient.id


def _pairs(message: Message) -> list[tuple[Segment, Segment]]:
    """Each PID with the MRG that follows it (A40 and A47 may carry several pairs)."""
    pairs: list[tuple[Segment, Segment]] = []
    pid: Segment | None = None
    for child in message.children:
        if child.name == "PID":
            pid = child
        elif child.name == "MRG" and pid is not None:
            pairs.append((pid, child))
            pid = None
    if not pairs:
        if not segments(message, "PID"):
            raise HL7ApplicationError("PID", "The message has no PID segment", "101")
        raise HL7ApplicationError("MRG", "The message has no MRG segment after its PID", "101")
    return pairs


def handle_merge(ctx: Context, message: Message) -> int:
    """A40: merge the patient MRG-1 names into the one PID-3 names; both must exist."""
    surviving_ids = [_merge_pair(ctx, pid, mrg) for pid, mrg in _pairs(message)]
    return surviving_ids[0]


def _merge_pair(ctx: Context, pid: Segment, mrg: Segment) -> int:
    merged = known_patient(ctx, required_identifier(ctx, mrg, "MRG-1"))
    surviving = known_patient(ctx, required_identifier(ctx, pid, "PID-3"))
    if merged.merged_into_id == surviving.id:
        logger.info("HL7 from %s: %s already merged into %s", ctx.sender, merged.mrn,
                    surviving.mrn)  # fmt: skip
        return surviving.id
    if merged.id == surviving.id:
        raise HL7ApplicationError("MRG-1", "MRG-1 and PID-3 name the same patient", "205")
    try:
        patients.merge_patients(ctx.db, ctx.actor, surviving, merged)
    except PlacaError as exc:
        raise HL7ApplicationError("MRG-1", exc.message, "205") from exc
    update_patient_from_pid(ctx, surviving, pid)  # the PID carries the survivor's demographics
    return surviving.id


def handle_identifier_change(ctx: Context, message: Message) -> int:
    """A47: the patient known by MRG-1 is known by PID-3 from now on."""
    changed = [_change_identifier(ctx, pid, mrg) for pid, mrg in _pairs(message)]
    return changed[0]


def _change_identifier(ctx: Context, pid: Segment, mrg: Segment) -> int:
    old = required_identifier(ctx, mrg, "MRG-1")
    new = required_identifier(ctx, pid, "PID-3")
    patient = known_patient(ctx, old)
    if (old.mrn, old.issuer) != (new.mrn, new.issuer):
        taken = find_patient(ctx, new)
        if taken is not None:
            raise HL7ApplicationError(
                "PID-3", f"The identifier {new} belongs to another patient", "205"
            )
        change_identifier(ctx, patient, new)
    update_patient_from_pid(ctx, patient, pid)
    return patient.id


def change_identifier(ctx: Context, patient: Patient, new: PatientIdentifier) -> None:
    """Renumber a patient (MRN and issuer), audited with the old and new identifiers."""
    before = {"mrn": patient.mrn, "issuer": patient.mrn_issuer}
    patient.mrn, patient.mrn_issuer = new.mrn, new.issuer
    ctx.db.flush()
    audit.record(
        ctx.db, ctx.actor, "patient.identifier_change", object_type="patient",
        object_id=patient.id, patient_id=patient.id,
        detail={"from": before, "to": {"mrn": new.mrn, "issuer": new.issuer}},
    )  # fmt: skip
    logger.info("HL7 from %s: patient %s renumbered %s", ctx.sender, patient.id, new)


for _event in ("A01", "A04", "A05"):
    ROUTES[f"ADT^{_event}"] = handle_register
ROUTES["ADT^A08"] = handle_update
ROUTES["ADT^A40"] = handle_merge
ROUTES["ADT^A47"] = handle_identifier_change
