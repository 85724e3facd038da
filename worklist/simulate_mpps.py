"""What a simulated modality reports over MPPS (PS3.4 F.7): the N-CREATE of a step that has
just started, and the final N-SET, COMPLETED with its series or DISCONTINUED with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from worklist.simulate_images import (
    CHARACTER_SET,
    PerformedStep,
    SeriesPlan,
    dicom_date,
    dicom_time,
    patient_attributes,
    scheduled_step,
)

# CID 9301 Modality PPS Discontinuation Reason (PS3.16), DCM codes.
DISCONTINUATION_REASONS: dict[str, str] = {
    "110500": "Doctor canceled procedure",
    "110501": "Equipment failure",
    "110502": "Incorrect procedure ordered",
    "110503": "Patient allergic to media/contrast",
    "110504": "Patient died",
    "110505": "Patient refused to continue procedure",
    "110506": "Patient taken for treatment or surgery",
    "110507": "Patient did not arrive",
    "110508": "Patient pregnant",
    "110509": "Change of procedure for correct charging",
    "110510": "Duplicate order",
    "110511": "Nursing unit cancel",
    "110512": "Incorrect side ordered",
    "110513": "Discontinued for unspecified reason",
    "110514": "Incorrect worklist entry selected",
    "110515": "Patient condition prevented continuing",
    "110516": "Equipment change",
}
UNSPECIFIED_REASON = "110513"
EQUIPMENT_FAILURE = "110501"


@dataclass
class StoredSeries:
    plan: SeriesPlan
    instances: list[tuple[str, str]] = field(default_factory=list)  # SOP class, instance UID


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def discontinuation_reason(text: str) -> tuple[Dataset, str]:
    """A CID 9301 code for ``text`` (a code value or the start of a meaning) and a comment.

    Text that names no code becomes "Discontinued for unspecified reason", with the text
    kept as the step's comment.
    """
    wanted = text.strip().lower()
    for value, meaning in DISCONTINUATION_REASONS.items():
        if wanted and (wanted == value or meaning.lower().startswith(wanted)):
            return _code(value, "DCM", meaning), ""
    return _code(UNSPECIFIED_REASON, "DCM", DISCONTINUATION_REASONS[UNSPECIFIED_REASON]), text


def dose_keywords(modality: str) -> tuple[str, ...]:
    """The Radiation Dose module attributes (PS3.3 C.4.16) this modality reports."""
    if modality == "CT":
        return ("TotalNumberOfExposures", "CommentsOnRadiationDose")
    if modality in ("CR", "DX"):
        return ("TotalNumberOfExposures", "ImageAndFluoroscopyAreaDoseProduct")
    return ()


def mpps_in_progress(item: Dataset, step: PerformedStep) -> Dataset:
    """N-CREATE attributes (PS3.4 F.7.2.1, Table F.7.2-1) of a step that has just started.

    Everything the final N-SET will fill is created here empty, as the SCU may only set
    attributes it created.
    """
    sps = scheduled_step(item)
    ds = Dataset()
    ds.SpecificCharacterSet = CHARACTER_SET
    scheduled = Dataset()
    scheduled.StudyInstanceUID = step.study_instance_uid
    scheduled.ReferencedStudySequence = item.get("ReferencedStudySequence", DicomSequence())
    for keyword in ("AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription"):
        setattr(scheduled, keyword, item.get(keyword, ""))
    for keyword in ("ScheduledProcedureStepID", "ScheduledProcedureStepDescription"):
        setattr(scheduled, keyword, sps.get(keyword, ""))
    scheduled.ScheduledProtocolCodeSequence = sps.get("ScheduledProtocolCodeSequence",
                                                      DicomSequence())  # fmt: skip
    ds.ScheduledStepAttributesSequence = DicomSequence([scheduled])
    ds.update(patient_attributes(item))
    ds.ReferencedPatientSequence = DicomSequence()
    ds.PerformedProcedureStepID = step.pps_id
    ds.PerformedStationAETitle = step.station_ae_title
    ds.PerformedStationName = step.station_name[:16]
    ds.PerformedLocation = step.station_name[:16]
    ds.PerformedProcedureStepStartDate = dicom_date(step.started)
    ds.PerformedProcedureStepStartTime = dicom_time(step.started)
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = str(item.get("RequestedProcedureDescription", ""))[:64]
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = item.get("RequestedProcedureCodeSequence", DicomSequence())
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = None
    ds.Modality = step.modality
    ds.StudyID = str(item.get("RequestedProcedureID", ""))[:16]
    ds.PerformedProtocolCodeSequence = sps.get("ScheduledProtocolCodeSequence", DicomSequence())
    ds.PerformedSeriesSequence = DicomSequence()
    ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = DicomSequence()
    ds.CommentsOnThePerformedProcedureStep = ""
    for keyword in dose_keywords(step.modality):
        setattr(ds, keyword, None)
    return ds


def performed_series(item: Dataset, step: PerformedStep, stored: StoredSeries,
                     retrieve_ae: str) -> Dataset:  # fmt: skip
    """One Performed Series Sequence item: the series and the images it holds."""
    physician = scheduled_step(item).get("ScheduledPerformingPhysicianName", "")
    series = Dataset()
    series.PerformingPhysicianName = physician
    series.ProtocolName = step.protocol_name[:64]
    series.OperatorsName = "Tech^Simulated"
    series.SeriesInstanceUID = stored.plan.uid
    series.SeriesDescription = stored.plan.description
    series.RetrieveAETitle = retrieve_ae
    references = []
    for sop_class, sop_instance in stored.instances:
        reference = Dataset()
        reference.ReferencedSOPClassUID = sop_class
        reference.ReferencedSOPInstanceUID = sop_instance
        references.append(reference)
    series.ReferencedImageSequence = DicomSequence(references)
    series.ReferencedNonImageCompositeSOPInstanceSequence = DicomSequence()
    return series


def mpps_final(item: Dataset, step: PerformedStep, stored: list[StoredSeries], retrieve_ae: str,
               ended: datetime, reason: str | None = None) -> Dataset:  # fmt: skip
    """The last N-SET (PS3.4 F.7.2.2): COMPLETED, or DISCONTINUED with ``reason``."""
    ds = Dataset()
    ds.SpecificCharacterSet = CHARACTER_SET
    ds.PerformedProcedureStepStatus = "COMPLETED" if reason is None else "DISCONTINUED"
    ds.PerformedProcedureStepEndDate = dicom_date(ended)
    ds.PerformedProcedureStepEndTime = dicom_time(ended)
    ds.PerformedSeriesSequence = DicomSequence(
        [performed_series(item, step, series, retrieve_ae) for series in stored]
    )
    if reason is not None:
        code, comment = discontinuation_reason(reason)
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = DicomSequence([code])
        ds.CommentsOnThePerformedProcedureStep = comment[:10240]
    images = sum(len(series.instances) for series in stored)
    for keyword in dose_keywords(step.modality):
        setattr(ds, keyword, _dose(keyword, images))
    return ds


def _dose(keyword: str, images: int) -> object:
    if keyword == "TotalNumberOfExposures":
        return images
    if keyword == "CommentsOnRadiationDose":
        return f"CTDIvol 12.4 mGy; DLP {12.4 * images * 0.5:.1f} mGy.cm (simulated)"
    return round(0.12 * images, 3)  # DAP in dGy.cm2
