"""The archive's query service: what C-FIND (PS3.4 C.6) and QIDO-RS (PS3.18 10.6) find.

:func:`plan_archive_query` reads a request identifier at one level of an information model
into one SQL statement on the index (:mod:`pacs.models`), with ris.dicom_match's matching
rules; :func:`find_archive_entries` runs it and yields one answer per matching patient,
study, series or instance, as ris.dicom_encode elements (which the C-FIND door encodes to
bytes itself) or as a pydicom Dataset. Both doors call the same two functions.

**Models and levels.** Patient Root (PATIENT, STUDY, SERIES, IMAGE; PS3.4 C.6.1) and
Study Root (STUDY, SERIES, IMAGE; C.6.2).

**Hierarchical queries** (C.4.1.3.1), as C-FIND is unless the requestor negotiated
relational queries (:mod:`pacs.find_scp`): the unique keys of the levels above the query level
must be given, with a value and no wildcard (Patient ID in Patient Root below PATIENT,
Study Instance UID below STUDY, Series Instance UID at IMAGE); a request that lacks one is
refused (0xA900, naming the key). Where it is safe, Placa is more flexible than a strict
hierarchy: any attribute of the levels above the query level may also be a matching key
and a return key (a STUDY-level query in Study Root matches on Patient's Name; an
IMAGE-level answer can carry the Modality), since it is one join away. QIDO-RS asks with
``hierarchical=False``, as does a C-FIND with relational queries negotiated: the same
query without the unique keys above (a relational search of series or instances across
studies, PS3.4 C.4.1.2.2, PS3.18 10.6.1.2).

**Matching** (C.2.2.2): universal, single value, wildcards, DA/TM ranges (Study Date and
Study Time together form one range in the site's time zone, unless a C-FIND requestor did
not negotiate combined date-time matching: then each is matched on its own), lists of
UIDs, several values; person names ignore case and accents (they are matched on the
stored search keys of :func:`pacs.storage.pn_key`); Modalities in Study matches the
modality of any of the study's series. Keys Placa does not match on are reported in
:attr:`ArchiveQuery.ignored` (the door answers 0xFF01).

**Answers** hold every key of the request (empty when unknown or below the query level),
plus Query/Retrieve Level, Retrieve AE Title and Specific Character Set; the counts
(Number of Patient/Study/Series Related ...), Modalities in Study and SOP Classes in
Study are computed by the same statement, only when asked for. Instance Availability is
ONLINE. Nothing is read from the files: only the index answers.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from sqlalchemy import Select, String, Subquery, and_, exists, func, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from pacs.models import ArchivePatient, Instance, Series, Study
from pacs.storage import pn_key
from ris.dicom_encode import Element
from ris.dicom_find import Answer, answer_of, asks_for_latin1
from ris.dicom_match import (
    Condition,
    Date,
    KeyRule,
    LocalDateTime,
    MatchContext,
    MatchError,
    Rule,
    Text,
    UIDList,
    build_conditions,
    date_bounds,
    is_wildcard,
    values_of,
    wildcard_condition,
)
from ris.site import site_of

logger = logging.getLogger(__name__)


class Level(enum.IntEnum):
    """Query/Retrieve Level (0008,0052), in the order of the hierarchy."""

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    IMAGE = 3


class Model(enum.Enum):
    """The Query/Retrieve information models, with the levels each has."""

    PATIENT_ROOT = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
    STUDY_ROOT = (Level.STUDY, Level.SERIES, Level.IMAGE)

    @property
    def levels(self) -> tuple[Level, ...]:
        return self.value


@dataclass(frozen=True)
class QueryOptions:
    """The site's query settings, and how far a search may reach."""

    zone: ZoneInfo = ZoneInfo("UTC")
    ae_title: str = "PLACA"  # Retrieve AE Title (0008,0054)
    max_answers: int = 10000
    offset: int = 0  # answers skipped first (QIDO-RS ``offset``)
    hierarchical: bool = True  # C-FIND; QIDO-RS searches relationally
    combined_datetime: bool = True  # StudyDate with StudyTime one range (ris.dicom_match)

    @classmethod
    def of(cls, app: Flask, **changes: Any) -> QueryOptions:
        config = app.config
        options = cls(zone=site_of(app).zone, ae_title=config["AE_TITLE"],
                      max_answers=config["QR_MAX_ANSWERS"])  # fmt: skip
        return replace(options, **changes) if changes else options


# --- SQL -------------------------------------------------------------------------------------

P, S, R, I = ArchivePatient, Study, Series, Instance  # noqa: E741 - the four levels


class distinct_values(FunctionElement[str]):  # noqa: N801 - an SQL aggregate, named like one
    """The distinct values of a column, joined by commas (not in any UID)."""

    type = String()
    inherit_cache = True
    name = "distinct_values"


@compiles(distinct_values)
def _distinct_values_pg(element: distinct_values, compiler: SQLCompiler, **kw: Any) -> str:
    return f"string_agg(DISTINCT {compiler.process(element.clauses, **kw)}, ',')"


@compiles(distinct_values, "sqlite")
def _distinct_values_sqlite(element: distinct_values, compiler: SQLCompiler, **kw: Any) -> str:
    return f"group_concat(DISTINCT {compiler.process(element.clauses, **kw)})"


# Aliases for the correlated subqueries, made once: a new alias per query costs more than
# the query itself.
_PATIENT_STUDY, _STUDY_SERIES, _STUDY_INSTANCE = aliased(Study), aliased(Series), aliased(Instance)
_MODALITY_SERIES = aliased(Series)


def _patient_studies() -> ColumnElement[Any]:
    inner = _PATIENT_STUDY
    return (
        select(func.count()).select_from(inner).where(inner.patient_fk == P.id)
        .correlate(P).scalar_subquery()
    )  # fmt: skip


def _patient_sum(column: str) -> ColumnElement[Any]:
    inner = _PATIENT_STUDY
    return (
        select(func.coalesce(func.sum(getattr(inner, column)), 0))
        .where(inner.patient_fk == P.id).correlate(P).scalar_subquery()
    )  # fmt: skip


def _sop_classes_in_study() -> ColumnElement[Any]:
    series, instance = _STUDY_SERIES, _STUDY_INSTANCE
    return (
        select(distinct_values(instance.sop_class_uid))
        .select_from(instance).join(series, instance.series_fk == series.id)
        .where(series.study_fk == S.id).correlate(S).scalar_subquery()
    )  # fmt: skip


# --- matching rules that the index needs beyond ris.dicom_match's -----------------------------


@dataclass(frozen=True)
class NameKey(KeyRule):
    """PN on a stored search key (pacs.storage.pn_key): case and accents ignored, on the
    whole name and component by component (``DOE^J*``: family name DOE, given name J...;
    components the request leaves out match anything). Plain comparisons and prefixes,
    so the key's index serves them."""

    column: ColumnElement[Any]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        if self.keyword not in request:
            return None
        values = values_of(request.data_element(self.keyword))
        conditions = [self._one(value) for value in values]
        return _any(conditions)

    def _one(self, value: str) -> Condition:
        key = pn_key(value)
        whole = self._like(key)
        if key.endswith("*"):
            return whole  # the whole-name pattern already lets any components follow
        return whole | self._like(key + "^*")

    def _like(self, pattern: str) -> Condition:
        return wildcard_condition(self.column, pattern)


@dataclass(frozen=True)
class Integer(KeyRule):
    """IS on an integer column: single values (several: any of them)."""

    column: ColumnElement[Any]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        if self.keyword not in request:
            return None
        numbers = []
        for value in values_of(request.data_element(self.keyword)):
            try:
                numbers.append(int(value))
            except ValueError:
                raise MatchError(self.keyword, value, "not an integer") from None
        if not numbers:
            return None
        return self.column == numbers[0] if len(numbers) == 1 else self.column.in_(numbers)


@dataclass(frozen=True)
class TextDate(KeyRule):
    """DA stored as sent (YYYYMMDD text): single dates and ranges compare as text."""

    column: ColumnElement[Any]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        if self.keyword not in request:
            return None
        conditions = []
        for value in values_of(request.data_element(self.keyword)):
            start, end = date_bounds(self.keyword, value)
            parts = [self.column >= _da(start)] if start else []
            parts += [self.column <= _da(end), self.column != ""] if end else []
            conditions.append(and_(*parts))
        return _any(conditions)


@dataclass(frozen=True)
class AnySeries(KeyRule):
    """A study-level key on the study's series: Modalities in Study (C.6.2.1.2) matches
    when any series of the study has a matching modality."""

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        series = _MODALITY_SERIES
        matching = Text(self.keyword, series.modality).condition(request, context)
        if matching is None:
            return None
        return exists().where(series.study_fk == S.id, matching)


def _any(conditions: Sequence[Condition]) -> Condition | None:
    if not conditions:
        return None
    if len(conditions) == 1:
        return conditions[0]
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined | condition
    return combined


def _da(day: date) -> str:
    return day.strftime("%Y%m%d")


# --- the attributes of each level --------------------------------------------------------------

Convert = Callable[[Any], Any]


def _as_is(value: Any) -> Any:
    return value if value != "" else None


def _date(value: date | None) -> str | None:
    return value.strftime("%Y%m%d") if value else None


def _values(value: str | None) -> list[str] | None:
    return value.split("\\") if value else None


def _commas(value: str | None) -> list[str] | None:
    return sorted(value.split(",")) if value else None


@dataclass(frozen=True)
class Attribute:
    """A key the index answers: at which level, from which column (or SQL expression)."""

    level: Level
    column: Callable[[], ColumnElement[Any]]
    convert: Convert = _as_is


ATTRIBUTES: dict[str, Attribute] = {
    "PatientName": Attribute(Level.PATIENT, lambda: P.patient_name),
    "PatientID": Attribute(Level.PATIENT, lambda: P.patient_id),
    "IssuerOfPatientID": Attribute(Level.PATIENT, lambda: P.issuer_of_patient_id),
    "PatientBirthDate": Attribute(Level.PATIENT, lambda: P.patient_birth_date, _date),
    "PatientSex": Attribute(Level.PATIENT, lambda: P.patient_sex),
    "NumberOfPatientRelatedStudies": Attribute(Level.PATIENT, _patient_studies),
    "NumberOfPatientRelatedSeries": Attribute(
        Level.PATIENT, lambda: _patient_sum("number_of_study_related_series")
    ),
    "NumberOfPatientRelatedInstances": Attribute(
        Level.PATIENT, lambda: _patient_sum("number_of_study_related_instances")
    ),
    "StudyInstanceUID": Attribute(Level.STUDY, lambda: S.study_instance_uid),
    "StudyDate": Attribute(Level.STUDY, lambda: S.study_date),
    "StudyTime": Attribute(Level.STUDY, lambda: S.study_time),
    "AccessionNumber": Attribute(Level.STUDY, lambda: S.accession_number),
    "StudyID": Attribute(Level.STUDY, lambda: S.study_id),
    "StudyDescription": Attribute(Level.STUDY, lambda: S.study_description),
    "ReferringPhysicianName": Attribute(Level.STUDY, lambda: S.referring_physician_name),
    "ModalitiesInStudy": Attribute(Level.STUDY, lambda: S.modalities_in_study, _values),
    "NumberOfStudyRelatedSeries": Attribute(
        Level.STUDY, lambda: S.number_of_study_related_series
    ),
    "NumberOfStudyRelatedInstances": Attribute(
        Level.STUDY, lambda: S.number_of_study_related_instances
    ),
    "SOPClassesInStudy": Attribute(Level.STUDY, _sop_classes_in_study, _commas),
    "SeriesInstanceUID": Attribute(Level.SERIES, lambda: R.series_instance_uid),
    "Modality": Attribute(Level.SERIES, lambda: R.modality),
    "SeriesNumber": Attribute(Level.SERIES, lambda: R.series_number),
    "SeriesDescription": Attribute(Level.SERIES, lambda: R.series_description),
    "BodyPartExamined": Attribute(Level.SERIES, lambda: R.body_part_examined),
    "PerformedProcedureStepStartDate": Attribute(
        Level.SERIES, lambda: R.performed_procedure_step_start_date
    ),
    "PerformedProcedureStepStartTime": Attribute(
        Level.SERIES, lambda: R.performed_procedure_step_start_time
    ),
    "NumberOfSeriesRelatedInstances": Attribute(
        Level.SERIES, lambda: R.number_of_series_related_instances
    ),
    "SOPInstanceUID": Attribute(Level.IMAGE, lambda: I.sop_instance_uid),
    "SOPClassUID": Attribute(Level.IMAGE, lambda: I.sop_class_uid),
    "InstanceNumber": Attribute(Level.IMAGE, lambda: I.instance_number),
    "AvailableTransferSyntaxUID": Attribute(Level.IMAGE, lambda: I.transfer_syntax_uid),
}  # fmt: skip

RULES: dict[Level, tuple[Rule, ...]] = {
    Level.PATIENT: (
        NameKey("PatientName", P.patient_name_key),
        Text("PatientID", P.patient_id),
        Text("IssuerOfPatientID", P.issuer_of_patient_id),
        Date("PatientBirthDate", P.patient_birth_date),
        Text("PatientSex", P.patient_sex),
    ),
    Level.STUDY: (
        UIDList("StudyInstanceUID", S.study_instance_uid),
        LocalDateTime("StudyDate", "StudyTime", S.study_at),
        Text("AccessionNumber", S.accession_number),
        Text("StudyID", S.study_id),
        Text("StudyDescription", S.study_description),
        NameKey("ReferringPhysicianName", S.referring_physician_key),
        AnySeries("ModalitiesInStudy"),
    ),
    Level.SERIES: (
        UIDList("SeriesInstanceUID", R.series_instance_uid),
        Text("Modality", R.modality),
        Integer("SeriesNumber", R.series_number),
        Text("SeriesDescription", R.series_description),
        Text("BodyPartExamined", R.body_part_examined),
        TextDate("PerformedProcedureStepStartDate", R.performed_procedure_step_start_date),
    ),
    Level.IMAGE: (
        UIDList("SOPInstanceUID", I.sop_instance_uid),
        UIDList("SOPClassUID", I.sop_class_uid),
        Integer("InstanceNumber", I.instance_number),
    ),
}  # fmt: skip

# Unique keys (C.6.1.1, C.6.2.1): the key a level's entities are told apart by.
UNIQUE_KEYS = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
               Level.SERIES: "SeriesInstanceUID", Level.IMAGE: "SOPInstanceUID"}  # fmt: skip
TABLES = {Level.PATIENT: P, Level.STUDY: S, Level.SERIES: R, Level.IMAGE: I}
LEVEL_NAMES = {level.name: level for level in Level}

QUERY_RETRIEVE_LEVEL, RETRIEVE_AE_TITLE = 0x00080052, 0x00080054
INSTANCE_AVAILABILITY, SPECIFIC_CHARACTER_SET = 0x00080056, 0x00080005
ALWAYS_ANSWERED = frozenset({QUERY_RETRIEVE_LEVEL, RETRIEVE_AE_TITLE, SPECIFIC_CHARACTER_SET})


# --- planning a query ---------------------------------------------------------------------------

Filler = Callable[[Sequence[Any]], Element]
"""Builds one element of an answer from a row of the statement."""


@dataclass(frozen=True)
class ArchiveQuery:
    """A request read into SQL: what to run and how to answer."""

    request: Dataset
    model: Model
    level: Level
    statement: Select[Any]
    options: QueryOptions
    fillers: tuple[Filler, ...] = ()
    ignored: tuple[str, ...] = ()  # keys with a value Placa does not match on (0xFF01)
    wants_latin1: bool = False
    keywords: tuple[str, ...] = ()  # the keys the index answers, in the request's order


def read_level(request: Dataset, model: Model) -> Level:
    """The request's Query/Retrieve Level, which must be one of the model's."""
    text = str(request.get("QueryRetrieveLevel") or "").strip().upper()
    level = LEVEL_NAMES.get(text)
    if level is None or level not in model.levels:
        names = ", ".join(level.name for level in model.levels)
        why = f"missing; one of {names}" if not text else f"not one of {names}"
        raise MatchError("QueryRetrieveLevel", text, why)
    return level


def plan_archive_query(
    request: Dataset, model: Model, level: Level, options: QueryOptions
) -> ArchiveQuery:
    """Read a request at ``level`` of ``model``; raises ris.dicom_match.MatchError when a key
    is malformed, the level is not the model's or (hierarchical) a unique key above is missing."""
    if level not in model.levels:
        raise MatchError("QueryRetrieveLevel", level.name, f"not a level of {model.name}")
    if options.hierarchical:
        _check_keys_above(request, model, level)
    rules = [rule for above in Level if above <= level for rule in RULES[above]]
    context = MatchContext(zone=options.zone, combined_datetime=options.combined_datetime)
    match = build_conditions(request, rules, context)
    ignored = [key for key in match.ignored if key != "RetrieveAETitle"]
    wanted = _answered_keywords(request, level)
    columns = [ATTRIBUTES[keyword].column().label(f"c{n}") for n, keyword in enumerate(wanted)]
    page = _page(level, match.conditions, options)
    key = TABLES[level].id
    statement = _from(select(*columns, key), level, page).order_by(page.c.id)
    return ArchiveQuery(
        request=request, model=model, level=level, statement=statement, options=options,
        fillers=_compile_fillers(request, level, wanted, options),
        ignored=tuple(ignored), wants_latin1=asks_for_latin1(request), keywords=tuple(wanted),
    )  # fmt: skip


def _check_keys_above(request: Dataset, model: Model, level: Level) -> None:
    for above in model.levels:
        if above >= level:
            return
        keyword = UNIQUE_KEYS[above]
        values = values_of(request.data_element(keyword)) if keyword in request else []
        if not values or any(is_wildcard(value) for value in values):
            raise MatchError(keyword, "", f"required at {level.name} level (hierarchical)")


def _answered_keywords(request: Dataset, level: Level) -> list[str]:
    """The request's keys the index answers at this level (once each, in tag order)."""
    wanted = []
    for element in request:
        keyword = element.keyword
        attribute = ATTRIBUTES.get(keyword)
        if attribute is not None and attribute.level <= level:
            wanted.append(keyword)
    return wanted


def _page(level: Level, conditions: list[Condition], options: QueryOptions) -> Subquery:
    """The ids of the matching entities, in order, limited (and offset): the statement's
    inner query. Only ids are sorted; the answers' columns (and the counts, which are
    subqueries) are read for the rows of the page alone."""
    key = TABLES[level].id
    # With conditions, +0 keeps SQLite from walking the ids in order to spare a sort, where
    # an index finds the few rows asked for; without, the walk is the best way.
    order = key + 0 if conditions else key
    statement = _joined(select(key.label("id")), level).where(and_(true(), *conditions))
    statement = statement.order_by(order).offset(options.offset or None)
    return statement.limit(options.max_answers + 1).subquery("page")


def _joined(statement: Select[Any], level: Level) -> Select[Any]:
    """The level's table joined to the tables of the levels above it."""
    if level is Level.PATIENT:
        return statement.select_from(P)
    if level is Level.STUDY:
        return statement.select_from(S).join(P, S.patient_fk == P.id)
    if level is Level.SERIES:
        return statement.select_from(R).join(S, R.study_fk == S.id).join(P, S.patient_fk == P.id)
    return (
        statement.select_from(I).join(R, I.series_fk == R.id).join(S, R.study_fk == S.id)
        .join(P, S.patient_fk == P.id)
    )  # fmt: skip


def _from(statement: Select[Any], level: Level, page: Subquery) -> Select[Any]:
    """The page's rows, joined from the level's table up to the patient's."""
    statement = statement.select_from(page)
    if level is Level.PATIENT:
        return statement.join(P, P.id == page.c.id)
    if level is Level.STUDY:
        return statement.join(S, S.id == page.c.id).join(P, S.patient_fk == P.id)
    if level is Level.SERIES:
        return (
            statement.join(R, R.id == page.c.id).join(S, R.study_fk == S.id)
            .join(P, S.patient_fk == P.id)
        )  # fmt: skip
    return (
        statement.join(I, I.id == page.c.id).join(R, I.series_fk == R.id)
        .join(S, R.study_fk == S.id).join(P, S.patient_fk == P.id)
    )  # fmt: skip


def _compile_fillers(
    request: Dataset, level: Level, wanted: list[str], options: QueryOptions
) -> tuple[Filler, ...]:
    """How each answer is built, worked out once per query rather than once per answer."""
    columns = {keyword: n for n, keyword in enumerate(wanted)}
    fillers: list[Filler] = []
    for element in request:
        tag = int(element.tag)
        if element.tag.is_private or element.tag.element == 0 or tag in ALWAYS_ANSWERED:
            continue
        keyword = element.keyword
        if keyword in columns:
            fillers.append(_column_filler(tag, columns[keyword], ATTRIBUTES[keyword].convert))
        elif tag == INSTANCE_AVAILABILITY:
            fillers.append(_constant(tag, "CS", "ONLINE"))
        else:
            vr = _vr_of(tag, element.VR)
            fillers.append(_constant(tag, vr, [] if vr == "SQ" else None))
    fillers.append(_constant(QUERY_RETRIEVE_LEVEL, "CS", level.name))
    fillers.append(_constant(RETRIEVE_AE_TITLE, "AE", options.ae_title))
    return tuple(fillers)


def _vr_of(tag: int, requested: str) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = requested or "UN"
    return vr.split(" or ")[0]  # "US or SS": the first


def _column_filler(tag: int, index: int, convert: Convert) -> Filler:
    vr = _vr_of(tag, "")
    return lambda row: Element(tag, vr, convert(row[index]))


def _constant(tag: int, vr: str, value: Any) -> Filler:
    element = Element(tag, vr, value)
    return lambda row: element


# --- running it ---------------------------------------------------------------------------------


class ArchiveEntries:
    """The answers of a query, built as the SCU takes them: iterated, pydicom Datasets;
    :meth:`answers`, the same answers as elements, for encoders.

    ``truncated`` becomes True when more entries matched than the answer limit allows.
    """

    def __init__(self, db: Session, query: ArchiveQuery) -> None:
        self.db, self.query, self.truncated = db, query, False

    def __iter__(self) -> Iterator[Dataset]:
        return (answer.dataset() for answer in self.answers())

    def answers(self) -> Iterator[Answer]:
        query, limit = self.query, self.query.options.max_answers
        fillers, wants_latin1 = query.fillers, query.wants_latin1
        rows = self.db.connection().execute(query.statement)
        try:
            for count, row in enumerate(rows):
                if count == limit:
                    self.truncated = True
                    return
                yield answer_of([fill(row) for fill in fillers], wants_latin1)
        finally:
            rows.close()


def find_archive_entries(db: Session, query: ArchiveQuery) -> ArchiveEntries:
    """One answer per matching entity of the query's level, read as the SCU takes them."""
    return ArchiveEntries(db, query)
