"""The Modality Worklist (PS3.4 Annex K, IHE RAD-5): which steps a modality sees, and how.

:func:`plan_worklist_query` reads a C-FIND identifier into one SQL statement (the matching
rules are ris.dicom_match's); :func:`find_worklist_items` runs it and yields one response
identifier per scheduled procedure step, as it reads the rows: a pydicom Dataset, or the
same item as ris.dicom_encode elements (:meth:`WorklistItems.answers`), which the SCP
encodes to bytes itself. One set of fillers (:func:`compile_response`) builds both.

A worklist item is an exam (requested procedure) whose status is one of the configured
ones (scheduled and arrived by default), with its current step (the latest booking: an
exam booked again after a no-show keeps its old step, which must not reappear).

Each response answers every key of the request, in the request's structure, with the
stored value, or empty when Placa does not know it; a requested sequence with no item
keys is answered with all the attributes Placa has for it. Times are site local time.
Text is sent in ISO_IR 192 (UTF-8), or in ISO_IR 100 (Latin-1) when the modality asked
for it and the item's text fits, so Spanish and French names arrive intact either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from sqlalchemy import Boolean, Row, Select, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from ris.dicom_encode import Element
from ris.dicom_find import Answer, answer_of, asks_for_latin1
from ris.dicom_match import (
    Choice,
    Date,
    LocalDateTime,
    MatchContext,
    PersonName,
    Rule,
    SequenceOf,
    Text,
    UIDList,
    build_conditions,
    values_of,
)
from ris.models import (
    ExamStatus,
    MRISafety,
    Order,
    Patient,
    ProcedureCode,
    RequestedProcedure,
    Room,
    ScheduledProcedureStep,
)
from ris.site import site_of

logger = logging.getLogger(__name__)

SPS_SEQUENCE = "ScheduledProcedureStepSequence"
# Scheduled Procedure Step Status (0040,0020) defined terms for the exam statuses served.
STEP_STATUS = {
    ExamStatus.SCHEDULED: "SCHEDULED",
    ExamStatus.ARRIVED: "ARRIVED",
    ExamStatus.IN_PROGRESS: "STARTED",
}
# DICOM coding scheme designators (PS3.16 8) of the catalog's HL7 coding systems.
CODING_SCHEMES = {"CPT": "C4", "CPT4": "C4", "CPT-4": "C4", "LN": "LN", "SNM": "SRT"}
LO, SH = 64, 16  # value lengths of LO and SH (PS3.5 6.2)

Step, Exam, Code = ScheduledProcedureStep, RequestedProcedure, ProcedureCode


@dataclass(frozen=True)
class WorklistOptions:
    """The site's worklist settings, and the room a calling device is limited to."""

    zone: ZoneInfo = ZoneInfo("UTC")
    statuses: frozenset[ExamStatus] = frozenset({ExamStatus.SCHEDULED, ExamStatus.ARRIVED})
    max_answers: int = 500
    room_id: int | None = None  # station routing: only this room's steps

    @classmethod
    def of(cls, app: Flask, room_id: int | None = None) -> WorklistOptions:
        config = app.config
        return cls(
            zone=site_of(app).zone,
            statuses=frozenset(ExamStatus(value) for value in config["MWL_STATUSES"]),
            max_answers=config["MWL_MAX_ANSWERS"],
            room_id=room_id,
        )


@dataclass(frozen=True)
class WorklistQuery:
    """A C-FIND identifier read into SQL: what to run and how to answer."""

    request: Dataset
    statement: Select[Any]
    options: WorklistOptions
    fillers: tuple[Filler, ...] = ()  # how each response is built (compile_response)
    ignored: tuple[str, ...] = ()  # keys with a value Placa does not match on (0xFF01)
    wants_latin1: bool = False


def _status_is(status: ExamStatus) -> Callable[[], Any]:
    return lambda: Exam.status == status


MATCHING_RULES: tuple[Rule, ...] = (
    PersonName("PatientName", (Patient.family_name, Patient.given_name, Patient.middle_name,
                               Patient.name_prefix, Patient.name_suffix)),
    Text("PatientID", Patient.mrn),
    Text("IssuerOfPatientID", Patient.mrn_issuer),
    Date("PatientBirthDate", Patient.birth_date),
    Text("PatientSex", Patient.sex),
    Text("AccessionNumber", Exam.accession_number),
    Text("RequestedProcedureID", Exam.requested_procedure_id),
    UIDList("StudyInstanceUID", Exam.study_instance_uid),
    Text("RequestedProcedurePriority", Order.priority),
    PersonName("ReferringPhysicianName", (Order.referring_physician,)),
    PersonName("RequestingPhysician", (Order.ordering_physician,)),
    Text("PlacerOrderNumberImagingServiceRequest", Order.placer_order_number),
    SequenceOf(SPS_SEQUENCE, (
        Text("Modality", Step.modality),
        Text("ScheduledStationAETitle", Step.station_ae_title),
        Text("ScheduledStationName", Step.station_name),
        LocalDateTime("ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
                      Step.start_at),
        PersonName("ScheduledPerformingPhysicianName", (Step.performing_physician,)),
        Text("ScheduledProcedureStepID", Step.step_id),
        Choice("ScheduledProcedureStepStatus",
               {code: _status_is(status) for status, code in STEP_STATUS.items()}),
    )),
)  # fmt: skip

_COLUMNS = (
    Patient.family_name, Patient.given_name, Patient.middle_name, Patient.name_prefix,
    Patient.name_suffix, Patient.mrn, Patient.mrn_issuer, Patient.birth_date, Patient.sex,
    Patient.medical_alerts, Patient.allergies, Patient.contrast_allergy,
    Patient.pregnancy_status, Patient.mri_safety, Order.referring_physician,
    Order.ordering_physician, Order.reason, Order.priority, Order.placer_order_number,
    Exam.accession_number, Exam.requested_procedure_id, Exam.study_instance_uid,
    Exam.description.label("procedure_description"), Exam.status, Code.code, Code.code_system,
    Code.description.label("code_meaning"), Step.step_id, Step.modality,
    Step.station_ae_title, Step.station_name, Step.start_at, Step.end_at,
    Step.description.label("step_description"), Step.performing_physician,
    Room.code.label("room_code"),
)  # fmt: skip


class often_true(FunctionElement[bool]):  # noqa: N801 - an SQL construct, named like one
    """A condition SQLite's planner should expect to hold for many rows.

    Without statistics SQLite takes "status IN (scheduled, arrived)" for the most selective
    condition and reads every active exam, where the date's or the patient's index finds
    the few rows asked for; likelihood() corrects the guess, and the status index still
    serves a query that has nothing better. PostgreSQL's planner has statistics.
    """

    type = Boolean()
    inherit_cache = True
    name = "often_true"


@compiles(often_true)
def _plain_condition(element: often_true, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(often_true, "sqlite")
def _likely_condition(element: often_true, compiler: SQLCompiler, **kw: Any) -> str:
    return f"likelihood({compiler.process(element.clauses, **kw)}, 0.5)"


# Keys with an index of their own: with one of them, the status is no way to find rows.
INDEXED_KEYS = frozenset({"PatientID", "AccessionNumber", "RequestedProcedureID",
                          "StudyInstanceUID"})  # fmt: skip
INDEXED_STEP_KEYS = frozenset({"Modality", "ScheduledStationAETitle", "ScheduledProcedureStepID",
                               "ScheduledProcedureStepStartDate"})  # fmt: skip


def _status_condition(request: Dataset, options: WorklistOptions) -> ColumnElement[bool]:
    served = Exam.status.in_(sorted(options.statuses))
    if options.room_id is not None or _has_indexed_key(request):
        return often_true(served)
    return served  # a broad or name-only query: the few active exams are the way in


def _has_indexed_key(request: Dataset) -> bool:
    def given(dataset: Dataset, keywords: frozenset[str]) -> bool:
        return any(k in dataset and values_of(dataset.data_element(k)) for k in keywords)

    items = request.get(SPS_SEQUENCE) or []
    step = items[0] if len(items) == 1 else Dataset()
    return given(request, INDEXED_KEYS) or given(step, INDEXED_STEP_KEYS)


def _later_step(later: Any) -> Select[Any]:
    return (
        select(later.id).where(later.procedure_id == Step.procedure_id, later.id > Step.id)
        .correlate(Step).offset(0)
    )  # fmt: skip


def plan_worklist_query(request: Dataset, options: WorklistOptions) -> WorklistQuery:
    """Read a worklist C-FIND identifier; raises ris.dicom_match.MatchError if malformed."""
    match = build_conditions(request, MATCHING_RULES, MatchContext(zone=options.zone))
    later = aliased(Step)
    statement = (
        select(*_COLUMNS)
        .select_from(Step)
        .join(Exam, Step.procedure_id == Exam.id)
        .join(Order, Exam.order_id == Order.id)
        .join(Patient, Order.patient_id == Patient.id)
        .join(Code, Exam.procedure_code_id == Code.id)
        .join(Room, Step.room_id == Room.id)
        .where(_status_condition(request, options))
        # The exam's current step only: a later booking replaces an earlier one. OFFSET 0
        # keeps PostgreSQL from turning NOT EXISTS into an anti-join that reads every step;
        # each row is checked in the procedure_id index instead.
        .where(~_later_step(later).exists())
        .where(match.where())
        .order_by(Step.start_at, Step.id)
        .limit(options.max_answers + 1)
    )
    if options.room_id is not None:
        statement = statement.where(Step.room_id == options.room_id)
    return WorklistQuery(
        request=request, statement=statement, options=options,
        fillers=compile_response(request), ignored=tuple(match.ignored),
        wants_latin1=asks_for_latin1(request),
    )  # fmt: skip


class WorklistItems:
    """The response identifiers of a query, built as the modality takes them: iterated,
    pydicom Datasets; :meth:`answers`, the same items as elements, for encoders.

    ``truncated`` becomes True when more steps matched than the answer limit allows.
    """

    def __init__(self, db: Session, query: WorklistQuery) -> None:
        self.db, self.query, self.truncated = db, query, False

    def __iter__(self) -> Iterator[Dataset]:
        return (item.dataset() for item in self.answers())

    def answers(self) -> Iterator[Answer]:
        query, limit = self.query, self.query.options.max_answers
        rows = self.db.execute(query.statement.execution_options(yield_per=100))
        try:
            for count, row in enumerate(rows):
                if count == limit:
                    self.truncated = True
                    logger.warning("Worklist query matched more than %s items; answered the "
                                   "first %s (PLACA_MWL_MAX_ANSWERS)", limit, limit)  # fmt: skip
                    return
                yield answer(query, row)
        finally:
            rows.close()


def find_worklist_items(db: Session, query: WorklistQuery) -> WorklistItems:
    """One response identifier per matching step, read and built as the modality takes them."""
    return WorklistItems(db, query)


def station_room_id(db: Session, calling_ae: str) -> int | None:
    """The room whose device has this AE title, for station routing."""
    return db.scalar(select(Room.id).where(Room.ae_title == calling_ae.strip()))


# --- building responses -------------------------------------------------------------------

Provider = Callable[[Row[Any], ZoneInfo], Any]


def _text(value: str | None, size: int = LO) -> str | None:
    """Stored text as one DICOM value: no backslash (the value separator), at most ``size``."""
    if not value:
        return None
    return " ".join(value.replace("\\", "/").split())[:size] or None


def _lines(*texts: str | None) -> list[str]:
    """Free text as several LO values, one per line."""
    return [line for text in texts if text for line in
            (_text(part) for part in text.splitlines()) if line]  # fmt: skip


def _da(value: date | datetime | None, zone: ZoneInfo | None = None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.astimezone(zone)
    return value.strftime("%Y%m%d")


def _tm(value: datetime | None, zone: ZoneInfo) -> str | None:
    return value.astimezone(zone).strftime("%H%M%S") if value else None


def _patient_name(row: Row[Any], zone: ZoneInfo) -> str:
    parts = (row.family_name, row.given_name, row.middle_name, row.name_prefix, row.name_suffix)
    return "^".join(part or "" for part in parts).rstrip("^")


def _alerts(row: Row[Any], zone: ZoneInfo) -> list[str]:
    alerts = _lines(row.medical_alerts)
    if row.mri_safety in (MRISafety.CONDITIONAL, MRISafety.UNSAFE):
        alerts.append(f"MRI {row.mri_safety.value.upper()}")
    return alerts


def _allergies(row: Row[Any], zone: ZoneInfo) -> list[str]:
    contrast = ["CONTRAST MEDIA"] if row.contrast_allergy else []
    return contrast + _lines(row.allergies)


def _code_item(row: Row[Any], zone: ZoneInfo) -> list[list[Element]]:
    scheme = CODING_SCHEMES.get(row.code_system.upper(), row.code_system)
    return [[Element(0x00080100, "SH", _text(row.code, SH)),  # Code Value
             Element(0x00080102, "SH", scheme),  # Coding Scheme Designator
             Element(0x00080104, "LO", _text(row.code_meaning))]]  # Code Meaning  # fmt: skip


def _enum(value: Any) -> Any:
    return value.value if value is not None else None


TOP_LEVEL: dict[str, Provider] = {
    "PatientName": _patient_name,
    "PatientID": lambda r, z: r.mrn,
    "IssuerOfPatientID": lambda r, z: r.mrn_issuer,
    "PatientBirthDate": lambda r, z: _da(r.birth_date),
    "PatientSex": lambda r, z: _enum(r.sex),
    "MedicalAlerts": _alerts,
    "Allergies": _allergies,
    "PregnancyStatus": lambda r, z: int(r.pregnancy_status.value) if r.pregnancy_status else None,
    "AccessionNumber": lambda r, z: r.accession_number,
    "RequestedProcedureID": lambda r, z: r.requested_procedure_id,
    "RequestedProcedureDescription": lambda r, z: _text(r.procedure_description),
    "RequestedProcedureCodeSequence": _code_item,
    "StudyInstanceUID": lambda r, z: r.study_instance_uid,
    "RequestedProcedurePriority": lambda r, z: _enum(r.priority),
    "ReferringPhysicianName": lambda r, z: r.referring_physician or None,
    "RequestingPhysician": lambda r, z: r.ordering_physician or None,
    "ReasonForTheRequestedProcedure": lambda r, z: _text(r.reason),
    "PlacerOrderNumberImagingServiceRequest": lambda r, z: r.placer_order_number,
    "FillerOrderNumberImagingServiceRequest": lambda r, z: r.accession_number,
    "ReferencedStudySequence": lambda r, z: [],
    "ReferencedPatientSequence": lambda r, z: [],
}
STEP_LEVEL: dict[str, Provider] = {
    "Modality": lambda r, z: r.modality,
    "ScheduledStationAETitle": lambda r, z: r.station_ae_title,
    "ScheduledStationName": lambda r, z: r.station_name,
    "ScheduledProcedureStepStartDate": lambda r, z: _da(r.start_at, z),
    "ScheduledProcedureStepStartTime": lambda r, z: _tm(r.start_at, z),
    "ScheduledProcedureStepEndDate": lambda r, z: _da(r.end_at, z),
    "ScheduledProcedureStepEndTime": lambda r, z: _tm(r.end_at, z),
    "ScheduledPerformingPhysicianName": lambda r, z: r.performing_physician or None,
    "ScheduledProcedureStepID": lambda r, z: r.step_id,
    "ScheduledProcedureStepDescription": lambda r, z: _text(r.step_description),
    "ScheduledProtocolCodeSequence": _code_item,
    "ScheduledProcedureStepLocation": lambda r, z: _text(r.room_code, SH),
    "ScheduledProcedureStepStatus": lambda r, z: STEP_STATUS.get(r.status),
}
Filler = Callable[[Row[Any], ZoneInfo], Element]
"""Builds one element of a response from a row; a request is compiled into a list of them."""


def compile_response(request: Dataset) -> tuple[Filler, ...]:
    """What to answer for a request, worked out once per query rather than once per item."""
    return _fillers(request, TOP_LEVEL)


def answer(query: WorklistQuery, row: Row[Any]) -> Answer:
    """The response identifier for one row: every requested key, in the request's shape."""
    return answer_of(_build(query.fillers, row, query.options.zone), query.wants_latin1)


def _build(fillers: tuple[Filler, ...], row: Row[Any], zone: ZoneInfo) -> list[Element]:
    return [fill(row, zone) for fill in fillers]


def _fillers(request: Dataset, table: dict[str, Provider]) -> tuple[Filler, ...]:
    fillers: list[Filler] = []
    for element in request:
        tag = element.tag
        if tag.is_private or tag.element == 0 or tag == 0x00080005:
            continue
        keyword = element.keyword
        if keyword == SPS_SEQUENCE and table is TOP_LEVEL:
            fillers.append(_sequence_filler(int(tag), _step_fillers(element)))
        elif keyword in table:
            fillers.append(_value_filler(int(tag), table[keyword], _requested_item(element)))
        else:
            fillers.append(_empty_filler(int(tag), element.VR))
    return tuple(fillers)


def _step_fillers(requested: DataElement) -> tuple[Filler, ...]:
    item = _requested_item(requested)
    if item is not None:
        return _fillers(item, STEP_LEVEL)
    # A zero-length sequence (or an empty item) asks for the whole item.
    return tuple(_value_filler(tag_for_keyword(keyword), provide, None)
                 for keyword, provide in STEP_LEVEL.items())  # fmt: skip


def _requested_item(element: DataElement) -> Dataset | None:
    """The item keys a sequence key asks for; None when it asks for the whole item."""
    if element.VR != "SQ" or not element.value or not len(element.value[0]):
        return None
    return element.value[0]


def _sequence_filler(tag: int, fillers: tuple[Filler, ...]) -> Filler:
    return lambda row, zone: Element(tag, "SQ", [_build(fillers, row, zone)])


def _value_filler(tag: int, provide: Provider, wanted: Dataset | None) -> Filler:
    vr = dictionary_VR(tag)
    keys = [(int(element.tag), _one_vr(element.VR)) for element in wanted] if wanted else None

    def fill(row: Row[Any], zone: ZoneInfo) -> Element:
        value = provide(row, zone)
        if keys is not None:  # item keys asked for inside a code sequence: exactly those
            value = [_only(item, keys) for item in value]
        return Element(tag, vr, value)

    return fill


def _empty_filler(tag: int, vr: str) -> Filler:
    """A key Placa knows nothing about: answered empty (zero length)."""
    empty = Element(tag, _one_vr(vr), [] if vr == "SQ" else None)
    return lambda row, zone: empty


def _one_vr(vr: str) -> str:
    """A dictionary's "US or SS" (a VR that depends on other attributes): the first."""
    return vr.split(" or ")[0]


def _only(item: list[Element], keys: list[tuple[int, str]]) -> list[Element]:
    present = {element.tag: element for element in item}
    return [present.get(tag) or Element(tag, vr, None) for tag, vr in keys]
