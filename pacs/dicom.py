"""The archive's DICOM services: what the DICOM door offers on the archive's behalf.

For now the Verification service (C-ECHO, PS3.4 Annex A); storage, query/retrieve and
storage commitment join ``SERVICES`` as they are built.
"""

from __future__ import annotations

import logging

from flask import Flask
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification

from ris.dicom_door import DicomService

logger = logging.getLogger(__name__)

SUCCESS = 0x0000


def handle_echo(event: Event, app: Flask) -> int:
    """Answer C-ECHO (PS3.4 A.4): always Success once the association is accepted."""
    requestor = event.assoc.requestor
    logger.info("C-ECHO from %s at %s:%s", requestor.ae_title, requestor.address, requestor.port)
    return SUCCESS


SERVICES = [DicomService((Verification,), {evt.EVT_C_ECHO: handle_echo})]
