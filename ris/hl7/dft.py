"""DFT^P03: charges posted to the HIS or the billing system (IHE RAD-35 "Charge Posted").

The billing issue decides what is charged and when (technical component when the exam is
completed, professional component when its report is final, credits for corrections), fills
:class:`ChargeLine` objects and calls :func:`enqueue_charges` in the transaction that
releases them; this module is the transport.

One message per order (its patient and visit), one FT1 per charge line (HL7 v2.5.1 chapter
6): MSH, EVN, PID, PV1, then for each line FT1 with

* FT1-2 the line's transaction ID (stable: receivers use it to recognise a line sent twice),
  FT1-4 the date of service, FT1-5 the posting time, **FT1-6 ``CG`` charge or ``CD``
  credit** (table 0017), FT1-7 the transaction code (the procedure code),
* FT1-10 quantity, FT1-11 extended and FT1-12 unit amount (``250.00&EUR`` when a currency
  is given), FT1-18 patient type, **FT1-19 the diagnosis codes** (ICD-10, most important
  first), **FT1-20 performed by** (the rendering radiologist), **FT1-21 ordered by**,
* **FT1-23 the filler order number** (the accession number), **FT1-25 the procedure code**
  and **FT1-26 its modifiers** (``26`` professional, ``TC`` technical component...).

Amounts are given per line: a credit carries ``CD`` with the amount it reverses, never an
edited earlier line.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from hl7apy.consts import DEFAULT_ENCODING_CHARS, VALIDATION_LEVEL
from hl7apy.core import Message
from sqlalchemy.orm import Session

from ris.errors import Invalid
from ris.hl7.outbound import Envelope, components, enqueue, header_fields, hl7_date
from ris.hl7.segments import fill_pid, fill_pv1, person
from ris.hl7.wire import escape
from ris.models import Order, OutboundMessage, PatientClass, RequestedProcedure

MESSAGE_TYPE = "DFT^P03"
TRANSACTION_ID_LENGTH = 12  # FT1-2 in HL7 v2.5.1
DIAGNOSIS_SYSTEM = "I10"  # HL7 table 0396: ICD-10


class TransactionType(enum.StrEnum):
    """FT1-6, HL7 table 0017."""

    CHARGE = "CG"
    CREDIT = "CD"


@dataclass(frozen=True)
class ChargeLine:
    """One charge (or credit) of one exam, as the billing issue releases it."""

    exam: RequestedProcedure  # gives the patient, the order and the accession number
    transaction_id: str  # unique and stable, at most 12 characters (FT1-2)
    service_date: date  # the local clinical date of service (FT1-4)
    code: str  # CPT, HCPCS, CCAM... (FT1-7, FT1-25)
    code_system: str
    unit_amount: Decimal
    description: str = ""
    quantity: int = 1
    transaction_type: TransactionType = TransactionType.CHARGE
    modifiers: tuple[str, ...] = ()  # 26, TC, RT, LT... (FT1-26)
    diagnosis_codes: tuple[str, ...] = ()  # ICD-10, most important first; default: the order's
    performed_by: str = ""  # rendering radiologist, "Family^Given" (FT1-20)
    performed_by_id: str = ""  # their identifier (NPI, RPPS...)
    ordered_by: str = ""  # default: the order's ordering physician (FT1-21)
    ordered_by_id: str = ""
    currency: str = ""  # ISO 4217, e.g. EUR
    posted_at: datetime | None = None  # FT1-5
    batch_id: str = ""  # FT1-3

    @property
    def extended_amount(self) -> Decimal:
        return self.unit_amount * self.quantity


def enqueue_charges(db: Session, lines: Sequence[ChargeLine]) -> list[OutboundMessage]:
    """Queue one DFT^P03 per order of ``lines`` for every destination that takes DFT, in the
    caller's transaction; a line that cannot be sent refuses them all."""
    for line in lines:
        _check(line)
    ids = [line.transaction_id for line in lines]
    if len(set(ids)) != len(ids):
        raise Invalid(str(_l("Two charge lines have the same transaction ID.")),
                      field="transaction_id")  # fmt: skip
    queued: list[OutboundMessage] = []
    for order_lines in _by_order(lines):
        exam = order_lines[0].exam

        def build_for(envelope: Envelope, chosen: tuple[ChargeLine, ...] = order_lines) -> str:
            return build(chosen, envelope)

        queued += enqueue(db, MESSAGE_TYPE, build_for, patient_id=exam.order.patient_id,
                          exam_id=exam.id)  # fmt: skip
    return queued


def _check(line: ChargeLine) -> None:
    if not 0 < len(line.transaction_id.strip()) <= TRANSACTION_ID_LENGTH:
        raise Invalid(str(_l("A charge's transaction ID has 1 to 12 characters.")),
                      field="transaction_id")  # fmt: skip
    if not line.code.strip() or not line.code_system.strip():
        raise Invalid(str(_l("A charge needs its procedure code and coding system.")),
                      field="code")  # fmt: skip
    if line.quantity < 1:
        raise Invalid(str(_l("A charge's quantity is at least 1.")), field="quantity")
    if line.unit_amount < 0:
        raise Invalid(str(_l("A charge's amount cannot be negative; send a credit.")),
                      field="unit_amount")  # fmt: skip


def _by_order(lines: Sequence[ChargeLine]) -> list[tuple[ChargeLine, ...]]:
    groups: dict[int, list[ChargeLine]] = {}
    for line in lines:
        groups.setdefault(line.exam.order_id, []).append(line)
    return [tuple(group) for group in groups.values()]


def build(lines: Sequence[ChargeLine], envelope: Envelope) -> str:
    """The ER7 text of one DFT^P03 carrying ``lines`` (all of one order)."""
    order: Order = lines[0].exam.order
    if any(line.exam.order_id != order.id for line in lines):
        raise ValueError("one DFT^P03 carries the charges of one order")
    message = Message(
        "DFT_P03", version="2.5.1", validation_level=VALIDATION_LEVEL.TOLERANT,
        encoding_chars=DEFAULT_ENCODING_CHARS,
    )  # fmt: skip
    for name, value in header_fields(envelope, "DFT^P03^DFT_P03").items():
        setattr(message.msh, name, value)
    evn = message.add_segment("EVN")
    evn.evn_2 = envelope.time(envelope.created_at)
    fill_pid(message.add_segment("PID"), order.patient)
    fill_pv1(message.add_segment("PV1"), order)
    for index, line in enumerate(lines, start=1):
        _ft1(message, index, line, envelope)
    return message.to_er7() + "\r"


def _ft1(message: Message, index: int, line: ChargeLine, envelope: Envelope) -> None:
    exam, order = line.exam, line.exam.order
    code = components(line.code, line.description or exam.description, line.code_system)
    ft1 = message.add_group("DFT_P03_FINANCIAL").add_segment("FT1")
    ft1.ft1_1 = str(index)
    ft1.ft1_2 = escape(line.transaction_id.strip())
    if line.batch_id:
        ft1.ft1_3 = escape(line.batch_id)
    ft1.ft1_4 = hl7_date(line.service_date)
    if line.posted_at is not None:
        ft1.ft1_5 = envelope.time(line.posted_at)
    ft1.ft1_6 = line.transaction_type.value
    ft1.ft1_7 = code
    ft1.ft1_10 = str(line.quantity)
    ft1.ft1_11 = _amount(line.extended_amount, line.currency)
    ft1.ft1_12 = _amount(line.unit_amount, line.currency)
    ft1.ft1_18 = (order.patient_class or PatientClass.OUTPATIENT).value
    for diagnosis in line.diagnosis_codes or _order_diagnoses(order):
        ft1.add_field("ft1_19").value = components(diagnosis, "", DIAGNOSIS_SYSTEM)
    if line.performed_by:
        ft1.ft1_20 = person(line.performed_by, line.performed_by_id)
    ordered_by = line.ordered_by or order.ordering_physician
    if ordered_by:
        ft1.ft1_21 = person(ordered_by, line.ordered_by_id)
    ft1.ft1_23 = components(exam.accession_number, envelope.sending_application)
    ft1.ft1_25 = code
    for modifier in line.modifiers:
        ft1.add_field("ft1_26").value = components(modifier)


def _amount(amount: Decimal, currency: str) -> str:
    """A CP value: the price (MO, ``quantity&denomination``)."""
    value = f"{amount:.2f}"
    return f"{value}&{escape(currency)}" if currency else value


def _order_diagnoses(order: Order) -> list[str]:
    return [code.strip() for code in order.icd10_codes.split(",") if code.strip()]
