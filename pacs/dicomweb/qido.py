"""QIDO-RS (PS3.18 10.6): search for studies, series and instances, on pacs.query.

The query parameters become the identifier of a Study Root query at the resource's level
(the same service, rules and SQL as C-FIND), searched relationally: ``/series`` and
``/instances`` need no Study or Series Instance UID.

* Matching: ``{attributeID}={value}``, the attribute by keyword (``PatientID``) or tag
  (``00100020``); the C-FIND rules (universal, single value, ``*``/``?`` wildcards, DA/TM
  ranges, lists of UIDs with ``\\`` or ``,``). Person names always match without regard to
  case or accents, on the whole name or per component: ``fuzzymatching=true`` asks for
  nothing more, ``false`` for nothing less.
* Return attributes: the defaults of PS3.18 Table 10.6.3-3/4/5 (the study's with a search
  of series or instances across studies, the series' with instances across series), plus
  each ``includefield`` (repeatable, comma-separated; ``all`` adds every attribute the
  index holds). An attribute the index does not hold is answered empty.
* ``limit`` and ``offset``: at most ``limit`` answers (and never more than
  PLACA_QR_MAX_ANSWERS) after skipping ``offset``; when more matched than were sent, a
  ``Warning: 299`` header says so. Keys Placa does not match on are named in a Warning too.
* The answer is ``application/dicom+json`` (Annex F; written straight from pacs.query's
  answer elements, which hold only text, numbers and empty values), also to
  an Accept of ``application/json`` or ``*/*``; other media types (the XML one) get 406. A
  malformed parameter gets 400 with the reason in a JSON body. No match: 200 with ``[]``
  (PS3.18 as amended by CP-2473: a search with no results is a success, 200 OK; ``[]``
  rather than no body, so that every JSON client reads an empty list).
* Every search is audited: who searched, at which level, with which keys, how many answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

from flask import Response, current_app, json, request
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from pacs.dicomweb import blueprint
from pacs.dicomweb.common import DICOM_JSON, DicomWebError, base_url, check_uid, parse_accept
from pacs.query import (
    ATTRIBUTES,
    Level,
    Model,
    QueryOptions,
    find_archive_entries,
    plan_archive_query,
)
from ris import audit
from ris.auth import IMAGE_READERS, current_actor, roles
from ris.db import get_db
from ris.dicom_encode import Element
from ris.dicom_match import MatchError

logger = logging.getLogger(__name__)

RESERVED = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
ACCEPTABLE = frozenset({DICOM_JSON, "application/json", "application/*", "*/*"})
RETRIEVE_URL = 0x00081190

# PS3.18 Table 10.6.3-3 (study), 10.6.3-4 (series), 10.6.3-5 (instance): returned by default.
STUDY_DEFAULTS = (
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
    "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)  # fmt: skip
SERIES_DEFAULTS = (
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription",
    "RetrieveURL", "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)  # fmt: skip
INSTANCE_DEFAULTS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability",
    "TimezoneOffsetFromUTC", "RetrieveURL", "InstanceNumber", "Rows", "Columns",
    "BitsAllocated", "NumberOfFrames",
)  # fmt: skip
# VRs whose request values stay text as sent (the matching rules read text); values of the
# others (IS, DS, US...) are kept as text too, but not converted by pydicom on the way.
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                      "UI", "UR", "UT"})  # fmt: skip


# --- routes ------------------------------------------------------------------------------------


@blueprint.get("/studies")
@roles(*IMAGE_READERS)
def search_studies() -> Response:
    return _search(Level.STUDY, {})


@blueprint.get("/series")
@roles(*IMAGE_READERS)
def search_series() -> Response:
    return _search(Level.SERIES, {})


@blueprint.get("/instances")
@roles(*IMAGE_READERS)
def search_instances() -> Response:
    return _search(Level.IMAGE, {})


@blueprint.get("/studies/<study>/series")
@roles(*IMAGE_READERS)
def search_study_series(study: str) -> Response:
    return _search(Level.SERIES, {"StudyInstanceUID": check_uid(study, "Study Instance UID")})


@blueprint.get("/studies/<study>/instances")
@roles(*IMAGE_READERS)
def search_study_instances(study: str) -> Response:
    return _search(Level.IMAGE, {"StudyInstanceUID": check_uid(study, "Study Instance UID")})


@blueprint.get("/studies/<study>/series/<series>/instances")
@roles(*IMAGE_READERS)
def search_series_instances(study: str, series: str) -> Response:
    scope = {"StudyInstanceUID": check_uid(study, "Study Instance UID"),
             "SeriesInstanceUID": check_uid(series, "Series Instance UID")}  # fmt: skip
    return _search(Level.IMAGE, scope)


# --- the search --------------------------------------------------------------------------------


def _search(level: Level, scope: dict[str, str]) -> Response:
    if not any(media.mime in ACCEPTABLE for media in parse_accept(request.headers.get("Accept"))):
        raise DicomWebError(406, f"search results are available as {DICOM_JSON} only")
    cap = current_app.config["QR_MAX_ANSWERS"]
    limit = _number("limit", cap)
    offset = _number("offset", 0)
    _fuzzy_matching()
    identifier = _identifier(level, scope)
    options = QueryOptions.of(current_app, max_answers=min(limit, cap), offset=offset,
                              hierarchical=False)  # fmt: skip
    try:
        query = plan_archive_query(identifier, Model.STUDY_ROOT, level, options)
    except MatchError as error:
        raise DicomWebError(400, str(error)) from None
    db = get_db()
    entries = find_archive_entries(db, query)
    urls = _retrieve_urls(level)
    answers = [_json(answer.elements, urls) for answer in entries.answers()]
    _audit(level, identifier, scope, len(answers))
    warnings = []
    if entries.truncated:
        next_offset = offset + len(answers)
        warnings.append(f"The number of results exceeded the limit; additional results can be "
                        f"requested with offset={next_offset}")  # fmt: skip
    if query.ignored:
        warnings.append("The following attributes are not supported for matching: "
                        + ", ".join(query.ignored))  # fmt: skip
    body = json.dumps(answers, ensure_ascii=False)
    response = Response(body, status=200, content_type=DICOM_JSON)
    for warning in warnings:  # PS3.18 8.3.4.4.1: 299 {service}: text
        response.headers.add("Warning", f'299 {base_url()}: "{warning}"')
    return response


def _number(name: str, default: int) -> int:
    text = request.args.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise DicomWebError(400, f"{name} must be a non-negative integer, not {text[:20]!r}")
    return int(text)


def _fuzzy_matching() -> None:
    value = request.args.get("fuzzymatching", "false").strip().lower()
    if value not in ("true", "false"):
        raise DicomWebError(400, f"fuzzymatching must be true or false, not {value[:20]!r}")


def _identifier(level: Level, scope: dict[str, str]) -> Dataset:
    """The query parameters as a C-FIND identifier: matching keys, then return keys."""
    identifier = Dataset()
    identifier.SpecificCharacterSet = "ISO_IR 192"  # URLs carry UTF-8 (PS3.18 8.3.4.1)
    for keyword in _return_keys(level, scope):
        _add(identifier, tag_for_keyword(keyword), "")
    for name, values in request.args.lists():
        if name in RESERVED:
            continue
        tag = _tag(name)
        _add(identifier, tag, "\\".join(_uid_list(tag, value) for value in values))
    for keyword, value in scope.items():
        _add(identifier, tag_for_keyword(keyword), value)
    return identifier


def _return_keys(level: Level, scope: dict[str, str]) -> list[str]:
    keys = list(STUDY_DEFAULTS if level is Level.STUDY else
                SERIES_DEFAULTS if level is Level.SERIES else INSTANCE_DEFAULTS)  # fmt: skip
    if level is Level.SERIES and "StudyInstanceUID" not in scope:
        keys += STUDY_DEFAULTS
    if level is Level.IMAGE:
        keys += [] if "SeriesInstanceUID" in scope else SERIES_DEFAULTS
        keys += [] if "StudyInstanceUID" in scope else STUDY_DEFAULTS
    keys += ["StudyInstanceUID"] + (["SeriesInstanceUID"] if level >= Level.SERIES else [])
    for field in _include_fields():
        if field == "all":
            keys += [keyword for keyword, attribute in ATTRIBUTES.items()
                     if attribute.level <= level]  # fmt: skip
        else:
            keys.append(keyword_for_tag(_tag(field)) or field)
    return keys


def _include_fields() -> Iterable[str]:
    for value in request.args.getlist("includefield"):
        for field in value.split(","):
            if field.strip():
                yield field.strip()


def _tag(name: str) -> int:
    """An attribute named by keyword or by tag (eight hex digits); 400 otherwise."""
    tag = tag_for_keyword(name)
    if tag is None and len(name) == 8:
        try:
            tag = int(name, 16)
            dictionary_VR(tag)
        except (ValueError, KeyError):
            tag = None
    if tag is None:
        raise DicomWebError(400, f"unknown attribute {name[:64]!r} (a keyword or a tag)")
    return int(tag)


def _uid_list(tag: int, value: str) -> str:
    """UI lists may also be comma-separated in a URL (PS3.18 8.3.4.1)."""
    return value.replace(",", "\\") if dictionary_VR(tag) == "UI" else value


def _add(identifier: Dataset, tag: int, value: str) -> None:
    vr = dictionary_VR(tag).split(" or ")[0]
    if vr == "SQ":
        identifier.add(DataElement(tag, "SQ", []))
        return
    vr = vr if vr in TEXT_VRS else "LO"  # matched as text; answered with its own VR
    identifier.add(DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE))


# --- answers and the audit -----------------------------------------------------------------------


STUDY_UID, SERIES_UID, SOP_UID = 0x0020000D, 0x0020000E, 0x00080018
C_FIND_ONLY = frozenset({0x00080052, 0x00080054})  # Query/Retrieve Level, Retrieve AE Title
NUMBER_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _retrieve_urls(level: Level) -> Callable[[dict[int, Any]], str]:
    base = base_url()

    def url(values: dict[int, Any]) -> str:
        parts = [f"{base}/studies/{values[STUDY_UID]}"]
        if level >= Level.SERIES:
            parts.append(f"series/{values[SERIES_UID]}")
        if level is Level.IMAGE:
            parts.append(f"instances/{values[SOP_UID]}")
        return "/".join(parts)

    return url


def _json(elements: list[Element], url: Callable[[dict[int, Any]], str]) -> dict[str, Any]:
    """One answer as DICOM JSON (Annex F), straight from its elements: the values pacs.query
    answers with (text, numbers, empty values and empty sequences) need no pydicom Dataset,
    which would cost more than the query."""
    values = {tag: value for tag, _vr, value in elements}
    out: dict[str, Any] = {}
    for tag, vr, value in sorted(elements, key=itemgetter(0)):
        if tag in C_FIND_ONLY:
            continue
        if tag == RETRIEVE_URL:
            value = url(values)
        entry: dict[str, Any] = {"vr": vr}
        items = _json_values(vr, value)
        if items:
            entry["Value"] = items
        out[f"{tag:08X}"] = entry
    return out


def _json_values(vr: str, value: Any) -> list[Any]:
    if value is None or value == "" or vr == "SQ":
        return []  # pacs.query answers sequences empty
    texts = value if isinstance(value, list) else [value]
    if vr in NUMBER_VRS:
        return [_json_number(v) for v in texts]
    if isinstance(value, str) and vr not in ("LT", "ST", "UT", "UR"):
        texts = value.split("\\")
    if vr == "PN":
        return [_person_name(text) for text in texts]
    return [text if text != "" else None for text in texts]


def _json_number(value: Any) -> int | float | None:
    if isinstance(value, int | float) or value is None:
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return float(text) if text else None


def _person_name(text: str) -> dict[str, str] | None:
    groups = {name: part for name, part in zip(PN_GROUPS, text.split("="), strict=False) if part}
    return groups or None


def _audit(level: Level, identifier: Dataset, scope: dict[str, str], count: int) -> None:
    keys = {name: values for name, values in request.args.lists()}
    db = get_db()
    audit.record(
        db, current_actor(), "dicomweb.search", object_type=level.name.lower(),
        object_id=scope.get("SeriesInstanceUID") or scope.get("StudyInstanceUID"),
        detail={"path": request.path, "query": keys, "answers": count},
    )  # fmt: skip
    db.commit()
