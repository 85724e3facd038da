"""Small DICOM test instances made with pydicom, and helpers to encode and write them."""

from __future__ import annotations

import zlib
from array import array
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import dsutils

from pacs.storage import Received

ROOT = "1.2.826.0.1.3680043.10.1426.99."  # test UIDs


def new_uid() -> str:
    return generate_uid(prefix=ROOT)


def make_dataset(
    *, study: str | None = None, series: str | None = None, sop: str | None = None,
    patient_id: str = "PID001", name: str = "DOE^JOHN", accession: str = "A0001",
    modality: str = "CT", number: int = 1, charset: str | None = None, rows: int = 16,
    sop_class: str = CTImageStorage, **extra: object,
) -> Dataset:  # fmt: skip
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop or new_uid()
    ds.StudyDate, ds.StudyTime = "20261130", "101500"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.ReferringPhysicianName = "WILSON^JAMES"
    ds.StudyDescription = "CT ABDOMEN"
    ds.SeriesDescription = "AXIAL"
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.BodyPartExamined = "ABDOMEN"
    ds.StudyInstanceUID = study or new_uid()
    ds.SeriesInstanceUID = series or new_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    pixels = array("H", ((i * (number + 7)) % 4096 for i in range(rows * rows)))
    ds.PixelData = pixels.tobytes()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()  # what a pynetdicom SCU needs to pick the context
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def encode(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The dataset encoded in ``syntax``, as a C-STORE carries it (no file meta)."""
    if syntax == DeflatedExplicitVRLittleEndian:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return compressor.compress(_encoded(ds, False)) + compressor.flush()
    return _encoded(ds, syntax == ImplicitVRLittleEndian)


def _encoded(ds: Dataset, implicit: bool) -> bytes:
    data = dsutils.encode(ds, implicit, True)
    assert data is not None
    return data


def received(
    ds: Dataset, syntax: str = ExplicitVRLittleEndian, calling_ae: str = "MODALITY"
) -> Received:
    return Received(encode(ds, syntax), syntax, str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                    calling_ae)  # fmt: skip


def write_part10(ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Write ``ds`` as a Part 10 file; return its dataset bytes (what must be stored)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.ImplementationClassUID = ROOT + "1"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return dataset_part(path)


def dataset_part(path: Path) -> bytes:
    """A Part 10 file's bytes after its File Meta Information."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(path, "rb") as handle:
        read_preamble(handle, False)
        _read_file_meta_info(handle)
        return handle.read()
