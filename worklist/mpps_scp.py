"""The MPPS SCP: N-CREATE and N-SET of Modality Performed Procedure Step (PS3.4 F.7).

Each request is read into :mod:`worklist.mpps` data (local DICOM dates and times become UTC
here, in the site's zone) and applied in one transaction: a refusal rolls everything back
and answers the DICOM status the service chose (PS3.7 Annex C), with an Error Comment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID
from pydicom.valuerep import DA, TM
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.sop_class import ModalityPerformedProcedureStep
from sqlalchemy.exc import IntegrityError

from ris.audit import Actor
from ris.db import read_only, transaction
from ris.dicom_door import DicomService
from ris.dimse_status import requestor_actor, status_with_comment
from ris.errors import PlacaError
from ris.identifiers import new_uid
from ris.site import site_of
from worklist import mpps
from worklist.models import PerformedStepStatus
from worklist.mpps import (
    InvalidAttributeValue,
    MissingAttribute,
    MissingAttributeValue,
    MppsRefusal,
    PerformedStepChanges,
    PerformedStepReport,
    ScheduledReference,
    SeriesReport,
)

logger = logging.getLogger(__name__)

# Radiation Dose module (PS3.3 C.4.16) and the CT dose a modality may add: kept as sent.
DOSE_KEYWORDS = (
    "TotalTimeOfFluoroscopy", "TotalNumberOfExposures", "EntranceDose", "EntranceDoseInmGy",
    "DistanceSourceToEntrance", "DistanceSourceToDetector", "ExposedArea",
    "ImageAndFluoroscopyAreaDoseProduct", "CommentsOnRadiationDose", "ExposureDoseSequence",
    "OrganDose", "OrganExposed", "CTDIvol",
)  # fmt: skip
CREATE_REQUIRED = (
    "ScheduledStepAttributesSequence", "PerformedProcedureStepID", "PerformedStationAETitle",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepStatus", "Modality",
)  # fmt: skip
Reply = tuple[int | Dataset, Dataset | None]


# ---------------------------------------------------------------------------- handlers


def handle_n_create(event: Event, app: Flask) -> Reply:
    """N-CREATE: the modality starts a performed step (IN PROGRESS)."""
    actor = requestor_actor(event)
    uid = str(event.request.AffectedSOPInstanceUID or "")
    return _answer("N-CREATE", actor, uid, lambda: _create(event, app, actor, uid))


def handle_n_set(event: Event, app: Flask) -> Reply:
    """N-SET: the modality updates, completes or discontinues a performed step."""
    actor = requestor_actor(event)
    uid = str(event.request.RequestedSOPInstanceUID or "")
    return _answer("N-SET", actor, uid, lambda: _set(event, app, actor, uid))


def _create(event: Event, app: Flask, actor: Actor, uid: str) -> Reply:
    attributes = event.attribute_list
    generated = not uid
    uid = uid or new_uid(app.config["UID_ROOT"])
    report = read_create(attributes, uid, actor.name, site_of(app).zone)
    try:
        with transaction(app) as db:
            pps = mpps.create_performed_step(db, actor, report)
            exam = pps.procedure.accession_number if pps.procedure else "unscheduled"
    except IntegrityError:
        # The same N-CREATE on two associations at once: the unique UID let one through.
        with read_only(app) as db:
            if mpps.find_performed_step(db, uid) is not None:
                raise mpps.duplicate_step() from None
        raise
    logger.info("MPPS N-CREATE %s from %s: IN PROGRESS, exam %s", uid, actor.name, exam)
    if generated:  # PS3.7 10.1.5.1.4: the SCP names the instance it created
        attributes.AffectedSOPInstanceUID = uid
    return 0x0000, attributes


def _set(event: Event, app: Flask, actor: Actor, uid: str) -> Reply:
    modifications = event.modification_list
    changes = read_set(modifications, site_of(app).zone)
    with transaction(app) as db:
        pps = mpps.update_performed_step(db, actor, uid, changes)
        status, images = pps.status.value, pps.number_of_images
    logger.info("MPPS N-SET %s from %s: %s, %d images", uid, actor.name, status, images)
    return 0x0000, modifications


def _answer(operation: str, actor: Actor, uid: str, work: Callable[[], Reply]) -> Reply:
    try:
        return work()
    except MppsRefusal as refusal:
        logger.warning("MPPS %s %s from %s refused (0x%04X): %s", operation, uid, actor.name,
                       refusal.dicom_status, refusal.message)  # fmt: skip
        return status_with_comment(refusal.dicom_status, refusal.message), None
    except PlacaError as refusal:
        logger.warning("MPPS %s %s from %s refused: %s", operation, uid, actor.name,
                       refusal.message)  # fmt: skip
        return status_with_comment(mpps.PROCESSING_FAILURE, refusal.message), None
    except Exception:
        logger.exception("MPPS %s %s from %s failed", operation, uid, actor.name)
        return status_with_comment(mpps.PROCESSING_FAILURE, "Processing failure"), None


# ---------------------------------------------------------------------------- reading


def read_create(ds: Dataset, uid: str, calling_ae: str, zone: ZoneInfo) -> PerformedStepReport:
    """The N-CREATE attribute list as a report; refuses missing or invalid values."""
    try:
        return _read_create(ds, uid, calling_ae, zone)
    except MppsRefusal:
        raise
    except Exception as exc:  # pydicom decodes lazily: a malformed element fails on access
        raise InvalidAttributeValue(f"Unreadable attribute: {exc}") from exc


def _read_create(ds: Dataset, uid: str, calling_ae: str, zone: ZoneInfo) -> PerformedStepReport:
    _check_uid("Affected SOP Instance UID", uid)
    for keyword in CREATE_REQUIRED:
        _require(ds, keyword)
    status = _status_value(ds)
    if status is not PerformedStepStatus.IN_PROGRESS:
        raise InvalidAttributeValue("A new step must be IN PROGRESS")
    return PerformedStepReport(
        sop_instance_uid=uid, calling_ae=calling_ae,
        started_at=_moment(ds, "PerformedProcedureStepStart", zone),
        references=[_reference(item) for item in ds.ScheduledStepAttributesSequence],
        performed_step_id=_text(ds, "PerformedProcedureStepID", 16),
        patient_name=_text(ds, "PatientName", 200), patient_id=_text(ds, "PatientID", 64),
        patient_birth_date=_date_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex", 16), modality=_text(ds, "Modality", 16),
        station_ae_title=_text(ds, "PerformedStationAETitle", 16),
        station_name=_text(ds, "PerformedStationName", 16),
        location=_text(ds, "PerformedLocation", 16), description=_description(ds),
        ended_at=_optional_moment(ds, "PerformedProcedureStepEnd", zone),
        series=_series(ds) or (), dose=_dose(ds),
    )  # fmt: skip


def read_set(ds: Dataset, zone: ZoneInfo) -> PerformedStepChanges:
    """The N-SET modification list as changes: only what was sent."""
    try:
        return _read_set(ds, zone)
    except MppsRefusal:
        raise
    except Exception as exc:
        raise InvalidAttributeValue(f"Unreadable attribute: {exc}") from exc


def _read_set(ds: Dataset, zone: ZoneInfo) -> PerformedStepChanges:
    sent = lambda keyword, limit: _text(ds, keyword, limit) if keyword in ds else None  # noqa: E731
    return PerformedStepChanges(
        status=_status_value(ds) if "PerformedProcedureStepStatus" in ds else None,
        patient_name=sent("PatientName", 200), patient_id=sent("PatientID", 64),
        description=_description(ds) if _has_description(ds) else None,
        station_name=sent("PerformedStationName", 16), location=sent("PerformedLocation", 16),
        ended_at=_optional_moment(ds, "PerformedProcedureStepEnd", zone),
        series=_series(ds), dose=_dose(ds),
        discontinuation_reason=_discontinuation_reason(ds),
    )  # fmt: skip


def _require(ds: Dataset, keyword: str) -> None:
    if keyword not in ds:
        raise MissingAttribute(f"{keyword} is missing")
    value = ds[keyword].value
    if value is None or value == "" or (isinstance(value, DicomSequence) and not value):
        raise MissingAttributeValue(f"{keyword} is empty")


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value = ds.get(keyword)
    text = "" if value is None else str(value).strip()
    if len(text) > limit:
        raise InvalidAttributeValue(f"{keyword} is longer than {limit} characters")
    return text


def _status_value(ds: Dataset) -> PerformedStepStatus:
    value = _text(ds, "PerformedProcedureStepStatus", 16)
    try:
        return PerformedStepStatus(value)
    except ValueError:
        raise InvalidAttributeValue(f"Unknown step status {value!r}"[:60]) from None


def _check_uid(what: str, uid: str) -> str:
    if not UID(uid).is_valid:
        raise InvalidAttributeValue(f"{what} is not a valid UID")
    return uid


def _reference(item: Dataset) -> ScheduledReference:
    _require(item, "StudyInstanceUID")
    return ScheduledReference(
        study_instance_uid=_check_uid("Study Instance UID", _text(item, "StudyInstanceUID", 64)),
        accession_number=_text(item, "AccessionNumber", 16),
        requested_procedure_id=_text(item, "RequestedProcedureID", 16),
        scheduled_step_id=_text(item, "ScheduledProcedureStepID", 16),
    )


def _description(ds: Dataset) -> str:
    return _text(ds, "PerformedProcedureStepDescription", 64) or _text(
        ds, "PerformedProcedureTypeDescription", 64
    )


def _has_description(ds: Dataset) -> bool:
    return "PerformedProcedureStepDescription" in ds or "PerformedProcedureTypeDescription" in ds


# ---------------------------------------------------------------------------- dates


def _moment(ds: Dataset, prefix: str, zone: ZoneInfo) -> datetime:
    """A DA + TM pair of the site's local time, as UTC."""
    date_text, time_text = _text(ds, f"{prefix}Date", 18), _text(ds, f"{prefix}Time", 28)
    try:
        day, clock = DA(date_text), TM(time_text)
    except ValueError:
        raise InvalidAttributeValue(f"{prefix}Date/Time is not a valid date and time") from None
    if day is None or clock is None:
        raise MissingAttributeValue(f"{prefix}Date/Time is empty")
    local = datetime.combine(day, clock.replace(tzinfo=None), zone)
    return local.astimezone(UTC)


def _optional_moment(ds: Dataset, prefix: str, zone: ZoneInfo) -> datetime | None:
    """An end date and time, when the modality sent one (both or neither)."""
    date_text, time_text = _text(ds, f"{prefix}Date", 18), _text(ds, f"{prefix}Time", 28)
    if not date_text and not time_text:
        return None
    return _moment(ds, prefix, zone)


def _date_text(ds: Dataset, keyword: str) -> str:
    text = _text(ds, keyword, 8)
    try:
        DA(text)
    except ValueError:
        raise InvalidAttributeValue(f"{keyword} is not a valid date") from None
    return text


# ---------------------------------------------------------------------------- series, dose


def _series(ds: Dataset) -> list[SeriesReport] | None:
    if "PerformedSeriesSequence" not in ds:
        return None
    return [_one_series(item) for item in ds.PerformedSeriesSequence or []]


def _one_series(item: Dataset) -> SeriesReport:
    uid = _text(item, "SeriesInstanceUID", 64)
    if not uid:
        raise MissingAttributeValue("SeriesInstanceUID is empty in a performed series")
    return SeriesReport(
        series_instance_uid=_check_uid("Series Instance UID", uid),
        description=_text(item, "SeriesDescription", 64),
        protocol_name=_text(item, "ProtocolName", 64),
        operator_name=_text(item, "OperatorsName", 200),
        performing_physician=_text(item, "PerformingPhysicianName", 200),
        retrieve_ae_title=_text(item, "RetrieveAETitle", 16),
        number_of_images=len(item.get("ReferencedImageSequence") or []),
        number_of_other_instances=len(
            item.get("ReferencedNonImageCompositeSOPInstanceSequence") or []
        ),
    )


def _dose(ds: Dataset) -> dict[str, Any]:
    return {
        keyword: _json_value(ds[keyword])
        for keyword in DOSE_KEYWORDS
        if keyword in ds and ds[keyword].value not in (None, "")
    }


def _json_value(element: DataElement) -> Any:
    """A DICOM value as JSON: numbers stay numbers, sequences become lists of objects."""
    value = element.value
    if element.VR == "SQ":
        return [
            {e.keyword or str(e.tag): _json_value(e) for e in item if e.value not in (None, "")}
            for item in value
        ]
    if isinstance(value, MultiValue):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, int | float):
        return int(value) if isinstance(value, int) else float(value)
    return str(value)


def _discontinuation_reason(ds: Dataset) -> str | None:
    """The reason code's meaning and code, then the technologist's comment, if any."""
    items = ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []
    parts = [_code_text(items[0])] if items else []
    parts.append(str(ds.get("CommentsOnThePerformedProcedureStep") or "").strip())
    reason = ": ".join(part for part in parts if part)
    return reason[:200] or None


def _code_text(code: Dataset) -> str:
    meaning = str(code.get("CodeMeaning", "")).strip()
    value = " ".join(
        str(code.get(keyword, "")).strip() for keyword in ("CodingSchemeDesignator", "CodeValue")
    ).strip()
    return f"{meaning} ({value})" if meaning and value else meaning or value


SERVICE = DicomService(
    (ModalityPerformedProcedureStep,),
    {evt.EVT_N_CREATE: handle_n_create, evt.EVT_N_SET: handle_n_set},
)
