"""The DICOM matching rules of PS3.4 C.2.2.2, turned into SQLAlchemy conditions.

One implementation for every DICOM query Placa answers: the Modality Worklist (C-FIND),
later the archive's C-FIND and QIDO-RS. A service describes which attribute of the
request matches which column with a list of :class:`Rule`; :func:`build_conditions` reads
the request's identifier and returns the SQL conditions, plus the keys it ignored.

What each rule does (C.2.2.2.x):

* universal matching: an empty value, or ``*`` alone, matches everything;
* single value matching: equality, case-sensitive except for person names;
* wildcard matching: ``*`` any run of characters, ``?`` one character; SQL's own
  metacharacters in the value are matched literally;
* person names (PN): case-insensitive, on the whole name (``*JOSE*`` finds José anywhere
  in the name) and per component (``DOE^J*``: family name DOE, given name starting with J;
  components the request leaves out match anything);
* DA, TM and DT ranges ``A-B``, ``-B``, ``A-``; a DA key and its TM key together form one
  date-time range (C.2.2.2.5.1), converted from the site's time zone to UTC, the only time
  the schema stores;
* list of UID matching (backslash separated);
* several values of another key (C.2.2.2.8): any value may match;
* sequence matching (C.2.2.2.6): the keys of the single item match the item's attributes.

A stored empty value never matches a non-universal key (K.2.2.1.1.1): equality and LIKE
both fail on NULL and on the empty string.

A malformed value (a date 20261345, a UID with letters) raises :class:`MatchError`, which
the doors answer with a failure status naming the attribute. Keys no rule knows are
reported in :attr:`Match.ignored`: the standard lets an SCP ignore unsupported optional
keys and say so with the warning status 0xFF01.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from sqlalchemy import Boolean, String, and_, false, func, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, literal
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import type_coerce
from sqlalchemy.sql.functions import FunctionElement

IDENTIFIER_DOES_NOT_MATCH = 0xA900  # PS3.4 C.4.1.1.4: the identifier violates the SOP class
DAY = timedelta(days=1)
Condition = ColumnElement[bool]


class MatchError(ValueError):
    """A key's value cannot be read: the request is refused, naming the attribute."""

    def __init__(self, keyword: str, value: object, why: str) -> None:
        super().__init__(f"{keyword}: {why} ({value!r})")
        self.keyword = keyword
        self.status = IDENTIFIER_DOES_NOT_MATCH

    @property
    def comment(self) -> str:
        """For the response's Error Comment (LO: at most 64 characters)."""
        return str(self)[:64]


@dataclass(frozen=True)
class MatchContext:
    """What turns request values into stored values: the site's time zone; and whether a
    date and time pair is one range (combined date-time matching, PS3.4 C.2.2.2.5: what a
    C-FIND requestor negotiates; the worklist and QIDO-RS always combine)."""

    zone: ZoneInfo = ZoneInfo("UTC")
    combined_datetime: bool = True


@dataclass
class Match:
    """The outcome of reading an identifier against a list of rules."""

    conditions: list[Condition] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # keys with a value no rule matches on

    def where(self) -> Condition:
        return and_(true(), *self.conditions)


# --- SQL constructs that differ between SQLite and PostgreSQL -------------------------------


class dicom_like(FunctionElement[bool]):  # noqa: N801 - an SQL function, named like one
    """``expr`` matches a DICOM wildcard pattern, case-sensitively.

    PostgreSQL: LIKE with an escape character. SQLite: GLOB, because SQLite's LIKE ignores
    the case of ASCII letters and GLOB does not (and GLOB prefixes use a BINARY index).
    """

    type = Boolean()
    inherit_cache = True
    name = "dicom_like"
    # A condition in itself: without this SQLite gets "(x GLOB ?) = 1", which its planner
    # cannot serve from an index (a prefix pattern then reads the whole table).
    _is_implicitly_boolean = True


@compiles(dicom_like)
def _like_default(element: dicom_like, compiler: SQLCompiler, **kw: Any) -> str:
    expr, like_pattern, _glob = list(element.clauses)
    return compiler.process(expr.like(like_pattern, escape="\\"), **kw)


@compiles(dicom_like, "sqlite")
def _like_sqlite(element: dicom_like, compiler: SQLCompiler, **kw: Any) -> str:
    expr, _like, glob_pattern = list(element.clauses)
    return f"({compiler.process(expr, **kw)} GLOB {compiler.process(glob_pattern, **kw)})"


class unicode_lower(FunctionElement[str]):  # noqa: N801
    """Lower case that knows accented letters (SQLite's lower() only knows ASCII)."""

    type = String()
    inherit_cache = True
    name = "unicode_lower"


@compiles(unicode_lower)
def _lower_default(element: unicode_lower, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(unicode_lower, "sqlite")
def _lower_sqlite(element: unicode_lower, compiler: SQLCompiler, **kw: Any) -> str:
    # Registered on every SQLite connection by ris.db.
    return f"placa_lower({compiler.process(element.clauses, **kw)})"


class local_time_of_day(FunctionElement[str]):  # noqa: N801
    """A UTC timestamp's wall-clock time in a zone, as text 'HH:MM:SS.ffffff'."""

    type = String()
    inherit_cache = True
    name = "local_time_of_day"


@compiles(local_time_of_day)
def _tod_default(element: local_time_of_day, compiler: SQLCompiler, **kw: Any) -> str:
    column, zone = list(element.clauses)
    inner = f"timezone({compiler.process(zone, **kw)}, {compiler.process(column, **kw)})"
    return f"to_char({inner}, 'HH24:MI:SS.US')"


@compiles(local_time_of_day, "sqlite")
def _tod_sqlite(element: local_time_of_day, compiler: SQLCompiler, **kw: Any) -> str:
    column, zone = list(element.clauses)
    sql_column, sql_zone = compiler.process(column, **kw), compiler.process(zone, **kw)
    return f"placa_local_time({sql_column}, {sql_zone})"


def sqlite_lower(text: str | None) -> str | None:
    """``placa_lower`` for SQLite connections: Python's lower(), like PostgreSQL's."""
    return None if text is None else text.lower()


def sqlite_local_time(stored: str | None, zone: str) -> str | None:
    """``placa_local_time`` for SQLite connections: stored UTC text -> local 'HH:MM:SS.ffffff'."""
    if stored is None:
        return None
    moment = datetime.fromisoformat(stored).replace(tzinfo=UTC).astimezone(ZoneInfo(zone))
    return moment.strftime("%H:%M:%S.%f")


# --- reading request values ---------------------------------------------------------------


def values_of(element: DataElement) -> list[str]:
    """The element's values as stripped text; [] for an empty (universal) key."""
    value = element.value
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    texts = [str(item).strip() for item in items]
    return [] if all(text in ("", "*") or set(text) == {"*"} for text in texts) else texts


def is_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def like_pattern(value: str) -> str:
    """DICOM ``*``/``?`` to SQL LIKE; the value's own ``%``, ``_`` and ``\\`` stay literal."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_pattern(value: str) -> str:
    """DICOM ``*``/``?`` to SQLite GLOB (same wildcards); ``[`` is GLOB's only other one."""
    return value.replace("[", "[[]")


def wildcard_condition(expr: ColumnElement[Any], value: str) -> Condition:
    """Single value or wildcard matching of ``expr`` (case-sensitive)."""
    if not is_wildcard(value):
        return expr == value
    return dicom_like(expr, literal(like_pattern(value)), literal(glob_pattern(value)))


# --- the rules ---------------------------------------------------------------------------


class Rule:
    """How some keys of a request match stored data."""

    keywords: tuple[str, ...] = ()

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        """The SQL condition for this rule's keys in ``request``; None when universal."""
        raise NotImplementedError


@dataclass(frozen=True)
class KeyRule(Rule):
    """A rule for one key of the request."""

    keyword: str

    @property
    def keywords(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.keyword,)


def _any_of(conditions: Sequence[Condition]) -> Condition | None:
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


def _element(request: Dataset, keyword: str) -> DataElement | None:
    return request.data_element(keyword) if keyword in request else None


@dataclass(frozen=True)
class Text(KeyRule):
    """AE, CS, LO, SH...: single value or wildcard, case-sensitive."""

    column: ColumnElement[Any]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        element = _element(request, self.keyword)
        if element is None:
            return None
        # type_coerce: enumeration columns are compared as the text they store.
        expr = type_coerce(self.column, String())
        return _any_of([wildcard_condition(expr, value) for value in values_of(element)])


@dataclass(frozen=True)
class Choice(KeyRule):
    """A coded key whose values map to conditions (e.g. a step status to exam statuses);
    an unknown code matches nothing."""

    choices: dict[str, Callable[[], Condition]]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        element = _element(request, self.keyword)
        if element is None:
            return None
        values = values_of(element)
        if not values:
            return None
        conditions = []
        for value in values:
            matching = [make() for code, make in self.choices.items()
                        if _text_matches(code, value)]  # fmt: skip
            conditions.extend(matching or [false()])
        return _any_of(conditions)


def _text_matches(stored: str, value: str) -> bool:
    pattern = re.escape(value).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(pattern, stored) is not None


PN_COMPONENTS = 5  # family ^ given ^ middle ^ prefix ^ suffix (PS3.5 6.2)


@dataclass(frozen=True)
class PersonName(KeyRule):
    """PN: case-insensitive, on the whole name and component by component.

    ``columns`` is either one column holding the DICOM PN text (``Doe^John``) or the five
    component columns (family, given, middle, prefix, suffix). Only the first component
    group (the alphabetic name) is matched; ideographic and phonetic groups are ignored.
    """

    columns: tuple[ColumnElement[Any], ...]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        element = _element(request, self.keyword)
        if element is None:
            return None
        return _any_of([self._one(value) for value in values_of(element)])

    def _one(self, value: str) -> Condition:
        name = value.split("=")[0].rstrip("^").lower()
        whole = wildcard_condition(unicode_lower(self._whole()), name)
        return or_(whole, self._by_component(name))

    def _whole(self) -> ColumnElement[str]:
        if len(self.columns) == 1:
            return self.columns[0]
        joined: ColumnElement[str] = self.columns[0]
        for column in self.columns[1:]:
            joined = joined + "^" + column
        # Trailing empty components are not part of the name ("Doe^^^^" is "Doe").
        return func.rtrim(joined, "^")

    def _by_component(self, name: str) -> Condition:
        parts = name.split("^")[:PN_COMPONENTS]
        if len(self.columns) == 1:
            # One PN column: the components the request leaves out may hold anything.
            lower = unicode_lower(self.columns[0])
            return wildcard_condition(lower, "^".join(parts) + "^*")
        conditions = [wildcard_condition(unicode_lower(column), part)
                      for column, part in zip(self.columns, parts, strict=False)
                      if part and set(part) != {"*"}]  # fmt: skip
        return and_(*conditions) if conditions else true()


# Dates, times and date-times. A bound is a timedelta from midnight for times.
DateBounds = tuple[date | None, date | None]
TimeBounds = tuple[timedelta | None, timedelta | None]  # [start, end) from midnight

_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")  # YYYYMMDD, or ACR-NEMA YYYY.MM.DD
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")


def _split_range(keyword: str, value: str) -> tuple[str, str, bool]:
    """'A-B' -> (A, B, True); '-B' and 'A-' leave a side empty; 'A' -> (A, A, False)."""
    if value.count("-") > 1:
        raise MatchError(keyword, value, "not a value or a range A-B")
    if "-" not in value:
        return value, value, False
    low, high = value.split("-", 1)
    return low.strip(), high.strip(), True


def _split_datetime_range(keyword: str, value: str) -> tuple[str, str]:
    """DT values may end in a "-HHMM" offset: the range dash is the one that leaves a
    valid date-time (or nothing) on each side."""
    if _is_datetime(value):
        return value, value
    for index, char in enumerate(value):
        low, high = value[:index], value[index + 1 :]
        if char == "-" and (not low or _is_datetime(low)) and (not high or _is_datetime(high)):
            return low, high
    raise MatchError(keyword, value, "not a DICOM date-time or range")


def _is_datetime(text: str) -> bool:
    """A DT value whose offset, if any, is a real one (-1200 to +1400): "2026-2027" is a
    range of years, not 2026 at offset -20:27."""
    match = _DT.match(text)
    if not match:
        return False
    offset = match[8]
    return not offset or (int(offset[1:3]) <= 14 and int(offset[3:5]) < 60)


def parse_date(keyword: str, text: str) -> date:
    match = _DA.match(text)
    try:
        if not match:
            raise ValueError
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise MatchError(keyword, text, "not a DICOM date (YYYYMMDD)") from None


def date_bounds(keyword: str, value: str) -> DateBounds:
    low, high, is_range = _split_range(keyword, value)
    start = parse_date(keyword, low) if low else None
    end = parse_date(keyword, high) if high else None
    if is_range and start and end and start > end:
        raise MatchError(keyword, value, "the range ends before it starts")
    return start, end


def _time_parts(keyword: str, text: str) -> tuple[timedelta, timedelta]:
    """A TM value as [start, end) at its precision: '10' is 10:00 to 11:00."""
    match = _TM.match(text)
    if not match:
        raise MatchError(keyword, text, "not a DICOM time (HHMMSS.FFFFFF)")
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        raise MatchError(keyword, text, "not a DICOM time (HHMMSS.FFFFFF)")
    start = timedelta(hours=int(hours), minutes=int(minutes or 0), seconds=int(seconds or 0))
    if fraction:
        start += timedelta(microseconds=int(fraction.ljust(6, "0")))
        step = timedelta(microseconds=10 ** (6 - len(fraction)))
    elif seconds:
        step = timedelta(seconds=1)
    elif minutes:
        step = timedelta(minutes=1)
    else:
        step = timedelta(hours=1)
    return start, start + step


def time_bounds(keyword: str, value: str) -> TimeBounds:
    low, high, _is_range = _split_range(keyword, value)
    start = _time_parts(keyword, low)[0] if low else None
    end = _time_parts(keyword, high)[1] if high else None
    return start, end


@dataclass(frozen=True)
class Date(KeyRule):
    """DA on a DATE column (a calendar date such as a birth date: no time zone)."""

    column: ColumnElement[Any]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        element = _element(request, self.keyword)
        if element is None:
            return None
        conditions = []
        for value in values_of(element):
            start, end = date_bounds(self.keyword, value)
            parts = [self.column >= start] if start else []
            parts += [self.column <= end] if end else []
            conditions.append(and_(*parts) if parts else true())
        return _any_of(conditions)


@dataclass(frozen=True)
class LocalDateTime(Rule):
    """A DA key and its TM key on one UTC timestamp column, read in the site's zone.

    Both given: one combined range (C.2.2.2.5.1): date 20261201-20261202 with time
    0800-1000 is 1 December 08:00 to 2 December 10:00; or, without combined matching,
    each on its own: 08:00 to 10:00 on 1 or 2 December. The date alone is whole local
    days; the time alone is the local time of day on any date.
    """

    date_keyword: str
    time_keyword: str
    column: ColumnElement[Any]

    @property
    def keywords(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.date_keyword, self.time_keyword)

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        dates = self._values(request, self.date_keyword)
        times = self._values(request, self.time_keyword)
        date_ranges = [date_bounds(self.date_keyword, v) for v in dates]
        time_ranges = [time_bounds(self.time_keyword, v) for v in times]
        if not date_ranges and not time_ranges:
            return None
        times_of_day = [self._time_of_day(t, context.zone) for t in time_ranges]
        if not date_ranges:
            return _any_of(times_of_day)
        if not context.combined_datetime:
            days = _any_of([self._between(d, (None, None), context.zone) for d in date_ranges])
            return and_(days, _any_of(times_of_day)) if times_of_day else days
        conditions = [self._between(d, t, context.zone) for d in date_ranges
                      for t in (time_ranges or [(None, None)])]  # fmt: skip
        return _any_of(conditions)

    @staticmethod
    def _values(request: Dataset, keyword: str) -> list[str]:
        element = _element(request, keyword)
        return values_of(element) if element is not None else []

    def _between(self, dates: DateBounds, times: TimeBounds, zone: ZoneInfo) -> Condition:
        (first_day, last_day), (start_time, end_time) = dates, times
        parts = []
        if first_day is not None:
            parts.append(self.column >= _utc(first_day, start_time or timedelta(0), zone))
        if last_day is not None:
            parts.append(self.column < _utc(last_day, end_time or DAY, zone))
        return and_(*parts) if parts else true()

    def _time_of_day(self, times: TimeBounds, zone: ZoneInfo) -> Condition:
        start, end = times
        local = local_time_of_day(self.column, literal(zone.key))
        after = local >= _clock(start) if start else None
        before = local < _clock(end) if end is not None and end < DAY else None
        if after is not None and before is not None and start is not None and end <= start:
            return or_(after, before)  # 2200-0200: the night, across midnight
        parts = [part for part in (after, before) if part is not None]
        return and_(*parts) if parts else true()


def _utc(day: date, since_midnight: timedelta, zone: ZoneInfo) -> datetime:
    """Local wall-clock time on ``day`` (``since_midnight`` may reach the next day), in UTC."""
    wall = datetime.combine(day, time.min) + since_midnight
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _clock(since_midnight: timedelta) -> str:
    seconds = int(since_midnight.total_seconds())
    micro = since_midnight.microseconds
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{micro:06d}"


def parse_datetime(keyword: str, text: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """A DT value (any precision, optional offset) as the UTC start or end of its span."""
    match = _DT.match(text)
    if not match:
        raise MatchError(keyword, text, "not a DICOM date-time (YYYYMMDDHHMMSS)")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    parts = [int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
             int(second or 0)]  # fmt: skip
    try:
        tz = _offset(offset) if offset else zone
        start = datetime(*parts, int((fraction or "0").ljust(6, "0")), tzinfo=tz)
    except ValueError:
        raise MatchError(keyword, text, "not a DICOM date-time (YYYYMMDDHHMMSS)") from None
    if not end:
        return start.astimezone(UTC)
    return _end_of_span(start, match.groups()).astimezone(UTC)


def _offset(text: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[3:5])))


def _end_of_span(start: datetime, groups: tuple[str | None, ...]) -> datetime:
    _year, month, day, hour, minute, second, fraction, _offset_text = groups
    if fraction:
        return start + timedelta(microseconds=10 ** (6 - len(fraction)))
    for value, step in ((second, timedelta(seconds=1)), (minute, timedelta(minutes=1)),
                        (hour, timedelta(hours=1)), (day, DAY)):  # fmt: skip
        if value:
            return start + step
    if month:
        return start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return start.replace(year=start.year + 1)


@dataclass(frozen=True)
class DateTime(KeyRule):
    """DT on a UTC timestamp column; values without an offset are site local time."""

    column: ColumnElement[Any]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        element = _element(request, self.keyword)
        if element is None:
            return None
        conditions = []
        for value in values_of(element):
            low, high = _split_datetime_range(self.keyword, value)
            parts = []
            if low:
                parts.append(self.column >= parse_datetime(self.keyword, low, context.zone,
                                                           end=False))  # fmt: skip
            if high:
                parts.append(self.column < parse_datetime(self.keyword, high, context.zone,
                                                          end=True))  # fmt: skip
            conditions.append(and_(*parts) if parts else true())
        return _any_of(conditions)


_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@dataclass(frozen=True)
class UIDList(KeyRule):
    """UI: one UID or a backslash-separated list; any of them matches."""

    column: ColumnElement[Any]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        element = _element(request, self.keyword)
        if element is None:
            return None
        uids = [uid.rstrip("\x00") for uid in values_of(element)]
        if not uids:
            return None
        for uid in uids:
            if len(uid) > 64 or not _UID.match(uid):
                raise MatchError(self.keyword, uid, "not a UID")
        return self.column == uids[0] if len(uids) == 1 else self.column.in_(uids)


@dataclass(frozen=True)
class SequenceOf(KeyRule):
    """Sequence matching (C.2.2.2.6): the request's single item matched by ``rules``.

    A zero-length sequence or an empty item is universal matching of the whole sequence.
    """

    rules: tuple[Rule, ...]

    def condition(self, request: Dataset, context: MatchContext) -> Condition | None:
        raise NotImplementedError("sequence rules are read by build_conditions")

    def item(self, request: Dataset) -> Dataset | None:
        element = _element(request, self.keyword)
        if element is None or element.VR != "SQ" or not element.value:
            return None
        if len(element.value) > 1:
            raise MatchError(self.keyword, f"{len(element.value)} items",
                             "a query sequence holds one item")  # fmt: skip
        return element.value[0]


# Keys that are never matched (PS3.4 C.2.2.2, C.4.1.1.3.1), whatever their value.
NEVER_MATCHED = frozenset({
    0x00080005,  # Specific Character Set
    0x00080201,  # Timezone Offset From UTC
    0x00080052,  # Query/Retrieve Level
    0x00080056,  # Instance Availability
})  # fmt: skip


def build_conditions(
    request: Dataset, rules: Iterable[Rule], context: MatchContext, *, prefix: str = ""
) -> Match:
    """Read ``request`` against ``rules``: the conditions, and the keys that were ignored."""
    rules = list(rules)
    match = Match()
    known: set[str] = set()
    for rule in rules:
        known.update(rule.keywords)
        if isinstance(rule, SequenceOf):
            item = rule.item(request)
            if item is not None:
                inner = build_conditions(item, rule.rules, context, prefix=f"{rule.keyword}>")
                match.conditions += inner.conditions
                match.ignored += inner.ignored
            continue
        condition = rule.condition(request, context)
        if condition is not None:
            match.conditions.append(condition)
    match.ignored += [prefix + name for name in _unmatched_keys(request, known)]
    return match


def _unmatched_keys(request: Dataset, known: set[str]) -> list[str]:
    """Keys with a value (or a non-empty sequence) that no rule reads."""
    ignored = []
    for element in request:
        tag: BaseTag = element.tag
        if tag in NEVER_MATCHED or tag.is_private or tag.element == 0:
            continue
        if element.keyword in known:
            continue
        if _has_value(element):
            ignored.append(element.keyword or str(tag))
    return ignored


def _has_value(element: DataElement) -> bool:
    if element.VR == "SQ":
        return any(_has_value(inner) for item in element.value or [] for inner in item)
    return bool(values_of(element))
