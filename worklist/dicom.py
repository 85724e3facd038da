"""The modalities' DICOM services: Modality Worklist (C-FIND) and MPPS (N-CREATE/N-SET).

Each service module lists its :class:`ris.dicom_door.DicomService` entries; the DICOM
door assembles them with the archive's.
"""

from __future__ import annotations

from ris.dicom_door import DicomService
from worklist.mpps_scp import SERVICE as MPPS
from worklist.mwl_scp import SERVICE as MWL

SERVICES: list[DicomService] = [MWL, MPPS]
