"""Segments every outbound message shares: the patient (PID), the visit (PV1), people (XCN).

The values are ER7 text, escaped by :func:`ris.hl7.outbound.components`; hl7apy takes them
as they are (SIU, ORU and DFT build their segments through these).
"""

from __future__ import annotations

from hl7apy.core import Segment

from ris.hl7.outbound import components, hl7_date
from ris.models import Order, Patient, PatientClass


def fill_pid(pid: Segment, patient: Patient) -> None:
    """PID-3 MRN with its issuer, PID-5 name, PID-7/8 birth date and sex, address, phones."""
    pid.pid_1 = "1"
    pid.pid_3 = components(patient.mrn, "", "", patient.mrn_issuer, "MR")
    pid.pid_5 = components(patient.family_name, patient.given_name, patient.middle_name,
                           patient.name_suffix, patient.name_prefix, "", "L")  # fmt: skip
    if patient.birth_date:
        pid.pid_7 = hl7_date(patient.birth_date)
    pid.pid_8 = patient.sex.value if patient.sex else "U"
    if any((patient.street, patient.city, patient.postal_code, patient.country)):
        pid.pid_11 = components(patient.street or "", "", patient.city or "", "",
                                patient.postal_code or "", patient.country or "", "H")  # fmt: skip
    phones = []
    if patient.phone:
        phones.append(components(patient.phone, "PRN", "PH"))
    if patient.email:
        phones.append(components("", "NET", "Internet", patient.email))
    for phone in phones:  # one repetition each
        pid.add_field("pid_13").value = phone


def fill_pv1(pv1: Segment, order: Order) -> None:
    """PV1-2 patient class and PV1-8 referring physician of the order."""
    pv1.pv1_1 = "1"
    pv1.pv1_2 = (order.patient_class or PatientClass.OUTPATIENT).value
    if order.referring_physician:
        pv1.pv1_8 = person(order.referring_physician)


def person(name: str, identifier: str = "") -> str:
    """A "Family^Given" name as an XCN: ``ID^Family^Given`` (the ID may be empty)."""
    return components(identifier, *name.split("^")[:5])
