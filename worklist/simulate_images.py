"""Images a simulated modality acquires: the right IOD for its modality, a synthetic phantom.

Each image copies what the Modality Worklist gave (IHE Scheduled Workflow, RAD TF-2 4.8:
patient, accession number, Study Instance UID, requested procedure, scheduled step) and
references the performed procedure step (MPPS) it belongs to. Pixel data are built row
by row with ``array``/``bytes`` slices (no NumPy): a body with lungs, spine and a lesion for
CT, a head for MR, a speckled sector for US, a chest for CR/DX, a gradient for the rest.
"""

from __future__ import annotations

import math
import random
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ModalityPerformedProcedureStep,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

CHARACTER_SET = "ISO_IR 192"  # UTF-8: Spanish and French names whatever the worklist used
MANUFACTURER = "Placa"
MODEL = "simulate-modality"
VERSION_NAME = "PLACA_SIM_1"

SOP_CLASSES: dict[str, str] = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "US": UltrasoundImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}
# (series, images per series) a real exam of each modality roughly has, scaled down.
DEFAULT_SHAPE: dict[str, tuple[int, int]] = {
    "CT": (2, 32), "MR": (2, 24), "US": (1, 6), "CR": (1, 2), "DX": (1, 2),
}  # fmt: skip
OTHER_SHAPE = (1, 4)
SERIES_NAMES: dict[str, tuple[str, ...]] = {
    "CT": ("Axial 5mm soft tissue", "Axial 1mm bone", "Coronal MPR"),
    "MR": ("T1 SE axial", "T2 TSE axial", "FLAIR axial", "DWI axial"),
    "US": ("B-mode",),
    "CR": ("PA", "Lateral"),
    "DX": ("PA", "Lateral"),
}


def sop_class_for(modality: str) -> str:
    """The storage SOP class of ``modality``; Secondary Capture for the ones not modelled."""
    return SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)


def default_shape(modality: str) -> tuple[int, int]:
    return DEFAULT_SHAPE.get(modality, OTHER_SHAPE)


@dataclass(frozen=True)
class PerformedStep:
    """The procedure step the modality performs: its MPPS identity and when it started."""

    modality: str
    station_ae_title: str
    station_name: str
    started: datetime  # aware, in the site's zone
    pps_id: str  # Performed Procedure Step ID (0040,0253)
    mpps_uid: str | None  # None: the modality sends no MPPS
    study_instance_uid: str
    protocol_name: str


@dataclass(frozen=True)
class SeriesPlan:
    number: int
    uid: str
    description: str
    images: int
    frame_of_reference_uid: str


def series_description(modality: str, number: int) -> str:
    names = SERIES_NAMES.get(modality, ("Series",))
    name = names[(number - 1) % len(names)]
    return name if number <= len(names) else f"{name} {number}"


# ---------------------------------------------------------------------------- attributes


def dicom_date(moment: datetime) -> str:
    return moment.strftime("%Y%m%d")


def dicom_time(moment: datetime) -> str:
    return moment.strftime("%H%M%S.%f")[:13]


def timezone_offset(moment: datetime) -> str:
    """Timezone Offset From UTC (0008,0201): ``&ZZXX``."""
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _copy(source: Dataset, target: Dataset, keywords: Sequence[str]) -> None:
    for keyword in keywords:
        if keyword in source:
            target[keyword] = source[keyword]


def scheduled_step(item: Dataset) -> Dataset:
    """The worklist item's (first) Scheduled Procedure Step Sequence item."""
    steps = item.get("ScheduledProcedureStepSequence") or [Dataset()]
    return steps[0]


PATIENT_STUDY_KEYWORDS = ("PatientWeight", "PatientSize", "PregnancyStatus")


def patient_attributes(item: Dataset) -> Dataset:
    """Patient identification as the worklist gave it (Type 2: present even when empty)."""
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, item.get(keyword))  # Type 2: empty when the worklist had none
    _copy(item, ds, ("IssuerOfPatientID",))
    return ds


REQUEST_KEYWORDS = ("AccessionNumber", "StudyInstanceUID", "RequestedProcedureID",
                    "RequestedProcedureDescription", "RequestedProcedureCodeSequence")  # fmt: skip


def request_attributes(item: Dataset) -> Dataset:
    """One Request Attributes Sequence item (0040,0275): which order this series fulfils."""
    sps = scheduled_step(item)
    request = Dataset()
    _copy(item, request, REQUEST_KEYWORDS)
    _copy(sps, request, ("ScheduledProcedureStepID", "ScheduledProcedureStepDescription",
                         "ScheduledProtocolCodeSequence"))  # fmt: skip
    return request


def _study(ds: Dataset, item: Dataset, step: PerformedStep) -> None:
    ds.StudyInstanceUID = step.study_instance_uid
    ds.StudyDate, ds.StudyTime = dicom_date(step.started), dicom_time(step.started)
    ds.AccessionNumber = item.get("AccessionNumber", "")
    ds.ReferringPhysicianName = item.get("ReferringPhysicianName", "")
    ds.StudyID = str(item.get("RequestedProcedureID", "") or "")[:16]
    ds.StudyDescription = str(item.get("RequestedProcedureDescription", "") or "")[:64]
    if item.get("RequestedProcedureCodeSequence"):
        ds.ProcedureCodeSequence = item.RequestedProcedureCodeSequence
    _copy(item, ds, PATIENT_STUDY_KEYWORDS)


def _series(ds: Dataset, item: Dataset, step: PerformedStep, series: SeriesPlan) -> None:
    ds.Modality = step.modality
    ds.SeriesInstanceUID = series.uid
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.ProtocolName = step.protocol_name[:64]
    ds.SeriesDate, ds.SeriesTime = ds.StudyDate, ds.StudyTime
    ds.OperatorsName = "Tech^Simulated"
    ds.RequestAttributesSequence = DicomSequence([request_attributes(item)])
    ds.PerformedProcedureStepID = step.pps_id
    ds.PerformedProcedureStepStartDate = dicom_date(step.started)
    ds.PerformedProcedureStepStartTime = dicom_time(step.started)
    ds.PerformedProcedureStepDescription = ds.StudyDescription
    sps = scheduled_step(item)
    if sps.get("ScheduledProtocolCodeSequence"):
        ds.PerformedProtocolCodeSequence = sps.ScheduledProtocolCodeSequence
    if step.mpps_uid:
        reference = Dataset()
        reference.ReferencedSOPClassUID = ModalityPerformedProcedureStep
        reference.ReferencedSOPInstanceUID = step.mpps_uid
        ds.ReferencedPerformedProcedureStepSequence = DicomSequence([reference])
    if step.modality in ("CT", "MR"):
        ds.PatientPosition = "HFS"  # Type 2C: required for CT and MR


def _equipment(ds: Dataset, step: PerformedStep) -> None:
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL
    ds.StationName = step.station_name[:16]
    ds.DeviceSerialNumber = step.station_ae_title
    ds.SoftwareVersions = VERSION_NAME


def image_dataset(
    item: Dataset, step: PerformedStep, series: SeriesPlan, index: int, sop_instance_uid: str,
    now: datetime,
) -> Dataset:  # fmt: skip
    """Image ``index`` (1-based) of ``series``: a complete instance with its file meta."""
    sop_class = sop_class_for(step.modality)
    ds = Dataset()
    ds.SpecificCharacterSet = CHARACTER_SET
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = dicom_date(now), dicom_time(now)
    ds.TimezoneOffsetFromUTC = timezone_offset(now)
    ds.update(patient_attributes(item))
    _study(ds, item, step)
    _series(ds, item, step, series)
    _equipment(ds, step)
    ds.InstanceNumber = index
    ds.ContentDate, ds.ContentTime = dicom_date(now), dicom_time(now)
    ds.AcquisitionDate, ds.AcquisitionTime = ds.ContentDate, ds.ContentTime
    ds.AcquisitionNumber = 1
    PIXELS.get(step.modality, _secondary_capture)(ds, series, index)
    ds.file_meta = file_meta(ds)
    return ds


def file_meta(ds: Dataset) -> FileMetaDataset:
    """File Meta Information (PS3.10 7.1) for ``ds``, Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = VERSION_NAME
    return meta


# ---------------------------------------------------------------------------------- pixels

Shape = tuple[float, float, float, float, int]  # centre x, centre y, radius x, radius y, value


def raster(width: int, height: int, background: int, shapes: Sequence[Shape],
           typecode: str, seed: int) -> bytes:  # fmt: skip
    """Filled ellipses painted in order over ``background``, with a little texture.

    Each shape is filled from a pre-built noisy run of its value, sliced at an offset that
    moves with the row: a textured image for the cost of one slice assignment per shape
    and row.
    """
    rng = random.Random(seed)
    runs = {value: array(typecode, (max(0, value + rng.randint(-6, 6)) for _ in range(2 * width)))
            for value in {shape[4] for shape in shapes}}  # fmt: skip
    pixels = array(typecode)
    blank = array(typecode, [background]) * width
    for y in range(height):
        row = array(typecode, blank)
        for cx, cy, rx, ry, value in shapes:
            dy = (y - cy) / ry
            if abs(dy) >= 1:
                continue
            half = rx * math.sqrt(1 - dy * dy)
            x0, x1 = max(0, int(cx - half)), min(width, int(cx + half) + 1)
            offset = (y * 37 + x0) % width
            row[x0:x1] = runs[value][offset : offset + x1 - x0]
        pixels.extend(row)
    if pixels.itemsize > 1 and sys.byteorder == "big":
        pixels.byteswap()  # DICOM Little Endian
    return pixels.tobytes()


def _monochrome(ds: Dataset, rows: int, columns: int, bits: int, stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = 0


def _plane(ds: Dataset, series: SeriesPlan, index: int, spacing: float, thickness: float) -> None:
    z = -100.0 + (index - 1) * thickness
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PixelSpacing = [spacing, spacing]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-spacing * ds.Columns / 2, -spacing * ds.Rows / 2, z]
    ds.SliceThickness = thickness
    ds.SliceLocation = z


def _ct(ds: Dataset, series: SeriesPlan, index: int) -> None:
    """512×512, 12 bits stored, HU = value − 1024: a body with lungs, spine and a lesion."""
    _monochrome(ds, 512, 512, 16, 12)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.KVP, ds.XRayTubeCurrent, ds.ExposureTime = 120, 250, 500
    ds.ConvolutionKernel = "STANDARD" if series.number % 2 else "BONE"
    _plane(ds, series, index, 0.7, 5.0 if series.number % 2 else 1.0)
    phase = math.sin(index / 6)
    shapes: list[Shape] = [
        (256, 256, 210, 160, 1064),  # soft tissue, 40 HU
        (170, 230, 60 + 10 * phase, 90, 224),  # lungs, -800 HU
        (342, 230, 60 + 10 * phase, 90, 224),
        (256, 350, 28, 28, 2024),  # vertebra, 1000 HU
        (256, 350, 10, 10, 1064),  # spinal canal
        (200 + index % 40, 200, 12, 12, 1104),  # a lesion that moves through the slices
    ]
    ds.PixelData = raster(512, 512, 0, shapes, "H", index)


def _mr(ds: Dataset, series: SeriesPlan, index: int) -> None:
    """256×256, 12 bits stored: a head (scalp, brain, ventricles)."""
    _monochrome(ds, 256, 256, 16, 12)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    t2 = series.number % 2 == 0
    ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
    ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
    ds.RepetitionTime, ds.EchoTime = (4000, 90) if t2 else (500, 12)
    ds.EchoTrainLength = 12 if t2 else 1
    ds.MagneticFieldStrength, ds.ImagedNucleus = 1.5, "1H"
    ds.WindowCenter, ds.WindowWidth = 900, 1800
    _plane(ds, series, index, 0.9, 5.0)
    brain, csf = (900, 1800) if t2 else (1300, 300)
    size = 80 + 20 * math.sin(index / 8)
    shapes: list[Shape] = [
        (128, 128, 100, 120, 1600),  # scalp
        (128, 128, 90, 110, 200),  # skull
        (128, 128, size, size * 1.2, brain),
        (115, 120, 8, 25, csf),  # ventricles
        (141, 120, 8, 25, csf),
    ]
    ds.PixelData = raster(256, 256, 0, shapes, "H", index)


def _us(ds: Dataset, series: SeriesPlan, index: int) -> None:
    """640×480, 8 bits: a speckled sector."""
    _monochrome(ds, 480, 640, 8, 8)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    ds.PatientOrientation = None  # Type 2C (no Image Plane module): present, unknown
    rng = random.Random(index)
    speckle = bytes(rng.randrange(40, 160) for _ in range(2048))
    rows = bytearray()
    for y in range(480):
        row = bytearray(640)
        half = int(40 + y * 0.55)
        offset = (y * 131 + index * 17) % 1024
        row[320 - half : 320 + half] = speckle[offset : offset + 2 * half]
        rows += row
    ds.PixelData = bytes(rows)


def _chest(ds: Dataset, index: int) -> None:
    """1024×1024, 12 bits stored: a chest (body, lungs, mediastinum)."""
    _monochrome(ds, 1024, 1024, 16, 12)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA" if index % 2 else "LL"
    ds.PatientOrientation = ["L", "F"]
    shapes: list[Shape] = [
        (512, 560, 440, 480, 2600),  # body
        (330, 480, 150, 300, 900),  # lungs
        (694, 480, 150, 300, 900),
        (512, 520, 60, 320, 3000),  # mediastinum and spine
    ]
    ds.PixelData = raster(1024, 1024, 4000, shapes, "H", index)


def _cr(ds: Dataset, series: SeriesPlan, index: int) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.KVP = 110
    ds.ImagerPixelSpacing = [0.4, 0.4]
    _chest(ds, index)


def _dx(ds: Dataset, series: SeriesPlan, index: int) -> None:
    """The DX For Presentation modules' Type 1 attributes (PS3.3 C.8.11)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.ImageLaterality = "U"
    ds.ImagerPixelSpacing = [0.4, 0.4]
    ds.DetectorType = "DIRECT"
    ds.KVP = 110
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = (
        "43799004", "SCT", "Chest"
    )  # fmt: skip
    ds.AnatomicRegionSequence = DicomSequence([region])
    ds.AcquisitionContextSequence = DicomSequence()
    _chest(ds, index)


def _secondary_capture(ds: Dataset, series: SeriesPlan, index: int) -> None:
    """256×256, 8 bits: concentric rings (SC Equipment module: Conversion Type WSD)."""
    ds.ConversionType = "WSD"
    ds.PatientOrientation = None  # Type 2C, as for US
    _monochrome(ds, 256, 256, 8, 8)
    shapes: list[Shape] = [(128, 128, r, r, 255 - r) for r in range(120, 0, -20)]
    ds.PixelData = raster(256, 256, 0, shapes, "B", index)


PIXELS = {"CT": _ct, "MR": _mr, "US": _us, "CR": _cr, "DX": _dx}
