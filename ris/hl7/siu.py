"""SIU^S12/S13/S14/S15: the appointments of the front desk, told to the HIS (HL7 v2.5.1).

One appointment is one scheduled procedure step: its SPS ID is the filler appointment ID
(SCH-2) and stays the same when the exam is rescheduled (S13), modified (S14: arrival,
start, completion, discontinuation) or cancelled (S15, also for a no-show with SCH-25
``Noshow``). Booking the exam again after a no-show makes a new step, hence a new
appointment (S12). The exam's accession number is the filler order number (SCH-27); the
HIS's placer order number, when the order came from it, SCH-26.

Times are the site's local time with their UTC offset (``20261124093000+0100``).

Structure (SIU_S12, the same for the four events): MSH, SCH, TQ1, PID, PV1, RGS, AIS, AIL,
and AIP when the step names a performing physician.
"""

from __future__ import annotations

from hl7apy.consts import DEFAULT_ENCODING_CHARS, VALIDATION_LEVEL
from hl7apy.core import Message

from ris.hl7.outbound import Envelope, components, header_fields
from ris.hl7.segments import fill_pid, fill_pv1, person
from ris.models import ExamStatus, Priority, RequestedProcedure, ScheduledProcedureStep

S = ExamStatus
TRIGGERS = ("S12", "S13", "S14", "S15")
# HL7 table 0278, filler status codes.
FILLER_STATUS = {
    S.ORDERED: "Deleted", S.SCHEDULED: "Booked", S.ARRIVED: "Started", S.IN_PROGRESS: "Started",
    S.COMPLETED: "Complete", S.READ: "Complete", S.CANCELLED: "Cancelled", S.NO_SHOW: "Noshow",
    S.DISCONTINUED: "Dc",
}  # fmt: skip
EVENT_TEXT = {"S12": "Booked", "S13": "Rescheduled", "S14": "Modified", "S15": "Cancelled"}
STATUS_TEXT = {
    S.ORDERED: "Unbooked", S.SCHEDULED: "Booked", S.ARRIVED: "Arrived",
    S.IN_PROGRESS: "In progress", S.COMPLETED: "Completed", S.READ: "Read",
    S.CANCELLED: "Cancelled", S.NO_SHOW: "No-show", S.DISCONTINUED: "Discontinued",
}  # fmt: skip
BOOKED = frozenset({S.SCHEDULED, S.ARRIVED})
MODIFIED = frozenset({S.ARRIVED, S.IN_PROGRESS, S.COMPLETED, S.DISCONTINUED})


def trigger_for_status(before: ExamStatus, after: ExamStatus) -> str | None:
    """The SIU event a status change of a booked exam means, or None.

    A move *to* scheduled from ordered/no-show/discontinued is a booking, told by the
    ``exam.booked`` event (S12); reading a report is not an appointment matter.
    """
    if before in BOOKED and after in (S.CANCELLED, S.NO_SHOW, S.ORDERED):
        return "S15"
    if after in MODIFIED or (before is S.ARRIVED and after is S.SCHEDULED):
        return "S14"
    return None


def build(
    trigger: str, exam: RequestedProcedure, step: ScheduledProcedureStep, envelope: Envelope,
    *, reason: str = "", entered_by: str = "",
) -> str:  # fmt: skip
    """The ER7 text of SIU^``trigger`` for ``exam``'s appointment ``step``."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unsupported SIU event {trigger!r}")
    message = Message(
        "SIU_S12", version="2.5.1", validation_level=VALIDATION_LEVEL.TOLERANT,
        encoding_chars=DEFAULT_ENCODING_CHARS,
    )  # fmt: skip
    for name, value in header_fields(envelope, f"SIU^{trigger}^SIU_S12").items():
        setattr(message.msh, name, value)
    _schedule(message, trigger, exam, step, envelope, reason, entered_by)
    _patient(message, exam)
    _resources(message, exam, step, envelope)
    return message.to_er7() + "\r"


def _schedule(
    message: Message, trigger: str, exam: RequestedProcedure, step: ScheduledProcedureStep,
    envelope: Envelope, reason: str, entered_by: str,
) -> None:  # fmt: skip
    order = exam.order
    minutes = _minutes(step)
    start, end = envelope.time(step.start_at), envelope.time(step.end_at)
    status = FILLER_STATUS[exam.status]
    sch = message.sch
    sch.sch_2 = components(step.step_id, envelope.sending_application)
    sch.sch_6 = components(trigger, _event_text(trigger, exam.status, reason))
    sch.sch_7 = "EMERGENCY^Emergency^HL70276" if order.priority is Priority.STAT else (
        "ROUTINE^Routine^HL70276")  # fmt: skip
    sch.sch_8 = "Normal^Normal^HL70277"
    sch.sch_9 = str(minutes)
    sch.sch_10 = "min"
    sch.sch_11 = f"^^M{minutes}^{start}^{end}"
    sch.sch_16 = components(entered_by or envelope.sending_application)
    sch.sch_20 = components(entered_by or envelope.sending_application)
    sch.sch_25 = components(status, status, "HL70278")
    if order.placer_order_number:
        sch.sch_26 = components(order.placer_order_number, order.placer_issuer or "")
    sch.sch_27 = components(exam.accession_number, envelope.sending_application)
    tq1 = message.add_segment("TQ1")
    tq1.tq1_1 = "1"
    tq1.tq1_6 = f"{minutes}^min"
    tq1.tq1_7 = start
    tq1.tq1_8 = end
    tq1.tq1_9 = "S^Stat^HL70485" if order.priority is Priority.STAT else "R^Routine^HL70485"


def _event_text(trigger: str, status: ExamStatus, reason: str) -> str:
    text = STATUS_TEXT[status] if trigger in ("S14", "S15") else EVENT_TEXT[trigger]
    return f"{text}: {reason}"[:199] if reason else text


def _patient(message: Message, exam: RequestedProcedure) -> None:
    group = message.add_group("SIU_S12_PATIENT")
    fill_pid(group.pid, exam.order.patient)
    fill_pv1(group.pv1, exam.order)


def _resources(
    message: Message, exam: RequestedProcedure, step: ScheduledProcedureStep, envelope: Envelope
) -> None:
    minutes, start = _minutes(step), envelope.time(step.start_at)
    status = components(FILLER_STATUS[exam.status], FILLER_STATUS[exam.status], "HL70278")
    resources = message.add_group("SIU_S12_RESOURCES")
    resources.rgs.rgs_1 = "1"
    code = exam.procedure_code
    ais = resources.add_group("SIU_S12_SERVICE").ais
    ais.ais_1 = "1"
    ais.ais_3 = components(code.code, exam.description or code.description, code.code_system)
    ais.ais_4 = start
    ais.ais_7 = str(minutes)
    ais.ais_8 = "min"
    ais.ais_10 = status
    room = step.room
    ail = resources.add_group("SIU_S12_LOCATION_RESOURCE").ail
    ail.ail_1 = "1"
    ail.ail_3 = components(room.code, step.station_name or "", "", envelope.sending_facility,
                           "", "", "", "", room.name)  # fmt: skip
    ail.ail_4 = components(step.modality, step.modality, "DCM")
    ail.ail_6 = start
    ail.ail_9 = str(minutes)
    ail.ail_10 = "min"
    ail.ail_12 = status
    if step.performing_physician:
        aip = resources.add_group("SIU_S12_PERSONNEL_RESOURCE").aip
        aip.aip_1 = "1"
        aip.aip_3 = person(step.performing_physician)
        aip.aip_4 = "PERF^Performing^HL70182"
        aip.aip_6 = start
        aip.aip_9 = str(minutes)
        aip.aip_10 = "min"


def _minutes(step: ScheduledProcedureStep) -> int:
    return max(int((step.end_at - step.start_at).total_seconds() // 60), 0)
