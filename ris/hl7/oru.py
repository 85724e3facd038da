"""ORU^R01: a radiology report told to the HIS/EMR when it becomes preliminary, final or amended.

The reports issue fills a :class:`ReportResult` each time a report reaches one of those
states and calls :func:`enqueue_result` in the transaction that changed it; this module is
the transport. One message per report state (HL7 v2.5.1 chapter 7, IHE RAD results):

* MSH, PID, PV1, then ORC (``RE``: observations follow; informational) and OBR, which
  carries everything about the order: OBR-2/OBR-3 placer and filler order numbers (the
  filler number is the accession number), OBR-4 the procedure, OBR-7 when it was performed,
  OBR-18/19/20 accession, requested procedure ID and SPS ID (IHE), OBR-22 when the report
  reached its status, **OBR-25 the result status** and OBR-32 the signing radiologist.
* One OBX per report section: OBX-2 ``TX``, OBX-3 the section (its LOINC code when given,
  else a local one, with the title as text), OBX-5 the text, delimiters escaped, one
  repetition per line (a TX field's repetitions are its hard line breaks; ``FT`` with
  ``\\.br\\`` would say the same, but hl7apy escapes the backslashes of ``\\.br\\``),
  **OBX-11 the same status as OBR-25**, OBX-14 the time of the report, OBX-16 the
  radiologist.
* The PDF of the report, only for destinations that ask for it (``include_pdf``): one more
  OBX of type ``ED``, ``^application^pdf^Base64^<data>`` (base64 uses no HL7 delimiter).
  The whole document goes in that one OBX-5, as receivers expect, so the message is about
  4/3 of the PDF's size: the receiver must accept messages that large.

Statuses (HL7 table 0123 / 0085): ``P`` preliminary, ``F`` final, ``C`` a correction or an
addendum replacing the final result (what most receivers expect for an amended report).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flask_babel import lazy_gettext as _l
from hl7apy.consts import DEFAULT_ENCODING_CHARS, VALIDATION_LEVEL
from hl7apy.core import Group, Message
from sqlalchemy.orm import Session

from ris.errors import Invalid
from ris.hl7.outbound import Envelope, components, enqueue, header_fields
from ris.hl7.segments import fill_pid, fill_pv1, person
from ris.hl7.wire import escape
from ris.models import OutboundMessage, RequestedProcedure

MESSAGE_TYPE = "ORU^R01"
PDF_CODE = ("18748-4", "Diagnostic imaging study", "LN")
DIAGNOSTIC_SERVICE = "RAD"  # OBR-24, HL7 table 0074


class ResultStatus(enum.StrEnum):
    """OBR-25 and OBX-11 of a report state."""

    PRELIMINARY = "P"
    FINAL = "F"
    CORRECTED = "C"  # amended, corrected, or an addendum to a final report


@dataclass(frozen=True)
class ReportSection:
    """One section of a report: its title as the reader sees it, its text, its code."""

    title: str
    text: str
    code: str = ""  # e.g. LOINC 18782-3 for Findings; a local code is made when empty
    code_system: str = "LN"


@dataclass(frozen=True)
class ReportResult:
    """What the reports issue hands over each time a report becomes P, F or C."""

    exam: RequestedProcedure
    status: ResultStatus
    sections: tuple[ReportSection, ...]
    signer: str  # the radiologist who signed this state, "Family^Given"
    observed_at: datetime  # when the exam was performed (OBR-7)
    reported_at: datetime  # when the report reached this status (OBR-22, OBX-14)
    signer_id: str = ""  # the radiologist's identifier (licence number, NPI)
    pdf: bytes | None = None  # the rendered report, sent only where include_pdf is set


def enqueue_result(db: Session, result: ReportResult) -> list[OutboundMessage]:
    """Queue the ORU^R01 of ``result`` for every destination that takes ORU (caller's
    transaction); a report without text is refused."""
    _check(result)

    def build_for(envelope: Envelope) -> str:
        return build(result, envelope)

    exam = result.exam
    return enqueue(db, MESSAGE_TYPE, build_for, patient_id=exam.order.patient_id,
                   exam_id=exam.id)  # fmt: skip


def _check(result: ReportResult) -> None:
    if not any(section.text.strip() for section in result.sections):
        raise Invalid(str(_l("A result needs at least one section with text.")),
                      field="sections")  # fmt: skip
    if not result.signer.strip():
        raise Invalid(str(_l("A result needs the radiologist who signed it.")), field="signer")
    for moment in (result.observed_at, result.reported_at):
        if moment.tzinfo is None:
            raise ValueError("result times must be aware datetimes")


def build(result: ReportResult, envelope: Envelope) -> str:
    """The ER7 text of the ORU^R01 of ``result`` for one destination."""
    message = Message(
        "ORU_R01", version="2.5.1", validation_level=VALIDATION_LEVEL.TOLERANT,
        encoding_chars=DEFAULT_ENCODING_CHARS,
    )  # fmt: skip
    for name, value in header_fields(envelope, "ORU^R01^ORU_R01").items():
        setattr(message.msh, name, value)
    patient_result = message.add_group("ORU_R01_PATIENT_RESULT")
    patient = patient_result.add_group("ORU_R01_PATIENT")
    fill_pid(patient.add_segment("PID"), result.exam.order.patient)
    fill_pv1(patient.add_group("ORU_R01_VISIT").add_segment("PV1"), result.exam.order)
    order = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
    _order(order, result, envelope)
    _observations(order, result, envelope)
    return message.to_er7() + "\r"


def _order(group: Group, result: ReportResult, envelope: Envelope) -> None:
    exam, order = result.exam, result.exam.order
    placer = components(order.placer_order_number, order.placer_issuer or "") if (
        order.placer_order_number) else ""  # fmt: skip
    filler = components(exam.accession_number, envelope.sending_application)
    code = exam.procedure_code
    orc = group.add_segment("ORC")
    orc.orc_1 = "RE"
    if placer:
        orc.orc_2 = placer
    orc.orc_3 = filler
    orc.orc_5 = "CM"
    if order.ordering_physician:
        orc.orc_12 = person(order.ordering_physician)
    obr = group.add_segment("OBR")
    obr.obr_1 = "1"
    if placer:
        obr.obr_2 = placer
    obr.obr_3 = filler
    obr.obr_4 = components(code.code, exam.description or code.description, code.code_system)
    obr.obr_7 = envelope.time(result.observed_at)
    if order.ordering_physician:
        obr.obr_16 = person(order.ordering_physician)
    obr.obr_18 = escape(exam.accession_number)
    obr.obr_19 = escape(exam.requested_procedure_id)
    if exam.steps:
        obr.obr_20 = escape(exam.steps[-1].step_id)
    obr.obr_22 = envelope.time(result.reported_at)
    obr.obr_24 = DIAGNOSTIC_SERVICE
    obr.obr_25 = result.status.value
    obr.obr_32 = _interpreter(result)


def _interpreter(result: ReportResult) -> str:
    """OBR-32 is an NDL whose first component (CNN) is ``ID&Family&Given``."""
    parts = [result.signer_id, *result.signer.split("^")[:5]]
    return "&".join(escape(part) for part in parts).rstrip("&")


def _observations(group: Group, result: ReportResult, envelope: Envelope) -> None:
    texts = [s for s in result.sections if s.text.strip()]
    for index, section in enumerate(texts, start=1):
        identifier = section.code or f"SECTION{index}"
        system = section.code_system if section.code else "L"
        _obx(group, index, "TX", components(identifier, section.title, system),
             text_lines(section.text), result, envelope)  # fmt: skip
    if envelope.include_pdf and result.pdf:
        data = base64.b64encode(result.pdf).decode("ascii")
        _obx(group, len(texts) + 1, "ED", components(*PDF_CODE),
             [f"^application^pdf^Base64^{data}"], result, envelope)  # fmt: skip


def _obx(
    group: Group, index: int, value_type: str, identifier: str, values: list[str],
    result: ReportResult, envelope: Envelope,
) -> None:  # fmt: skip
    obx = group.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
    obx.obx_1 = str(index)
    obx.obx_2 = value_type
    obx.obx_3 = identifier
    for value in values:  # one repetition each
        obx.add_field("obx_5").value = value
    obx.obx_11 = result.status.value
    obx.obx_14 = envelope.time(result.reported_at)
    obx.obx_16 = person(result.signer, result.signer_id)


def text_lines(text: str) -> list[str]:
    """``text`` as the repetitions of a TX value: one escaped line each, blank lines kept."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")
    return [escape(line.rstrip()) for line in lines]


def sections_of(pairs: Sequence[tuple[str, str]]) -> tuple[ReportSection, ...]:
    """``[(title, text), ...]`` as report sections without codes."""
    return tuple(ReportSection(title, text) for title, text in pairs)
