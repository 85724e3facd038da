"""DICOM services of the archive, listed in :data:`SERVICES` for :mod:`pacs.dicom`."""

from __future__ import annotations

from ris.dicom_door import DicomService

SERVICES: list[DicomService] = []
