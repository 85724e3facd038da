"""The archive's DICOM services: what the DICOM door offers on the archive's behalf.

* Verification (C-ECHO, PS3.4 Annex A);
* Storage (C-STORE SCP, PS3.4 Annex B, IHE RAD-8) for every storage SOP class pynetdicom
  knows, in the uncompressed, deflated and common compressed transfer syntaxes, each
  stored as received (:mod:`pacs.ingest`);
* the calling-AE whitelist (``PLACA_AE_WHITELIST=1``): an association from an AE title that
  is not a registered :class:`pacs.models.RemoteAE` is rejected (the called AE title is
  checked by the door).

Query (:mod:`pacs.find_scp`), retrieve (:mod:`pacs.retrieve_scp`) and storage commitment
(:mod:`pacs.commitment_scp`) list their own services.
"""

from __future__ import annotations

import logging

from flask import Flask
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from pacs.commitment_scp import SERVICES as COMMITMENT
from pacs.find_scp import SERVICES as QUERY
from pacs.ingest import ingest
from pacs.models import RemoteAE
from pacs.retrieve_scp import SERVICES as RETRIEVE
from pacs.storage import Outcome, Received, StoreRefused
from ris.db import read_only
from ris.dicom_door import AssociationHook, DicomService
from ris.dicom_receive import received_sha1
from ris.dimse_status import status_with_comment

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110

STORAGE_SOP_CLASSES = tuple(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)
STORAGE_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
    JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless,
)  # fmt: skip

# A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected permanent / transient, by the service user.
REJECTED_PERMANENT, REJECTED_TRANSIENT, SERVICE_USER = 0x01, 0x02, 0x01
NO_REASON, CALLING_AE_NOT_RECOGNISED = 0x01, 0x03


def handle_echo(event: Event, app: Flask) -> int:
    """Answer C-ECHO (PS3.4 A.4): always Success once the association is accepted."""
    requestor = event.assoc.requestor
    logger.info("C-ECHO from %s at %s:%s", requestor.ae_title, requestor.address, requestor.port)
    return SUCCESS


def handle_store(event: Event, app: Flask) -> int | Dataset:
    """C-STORE (PS3.4 B.2.3): Success only once the file and its index row are durable."""
    request = event.request
    data_set = request.DataSet
    dataset = data_set.getvalue()
    received = Received(
        dataset=dataset,
        transfer_syntax_uid=str(event.context.transfer_syntax),
        sop_class_uid=str(request.AffectedSOPClassUID or ""),
        sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
        calling_ae=str(event.assoc.requestor.ae_title).strip(),
        sha1=received_sha1(data_set, len(dataset)),
    )
    try:
        result = ingest(app, received)
    except StoreRefused as refusal:
        logger.warning("C-STORE %s from %s refused (0x%04X): %s", received.sop_instance_uid,
                       received.calling_ae, refusal.status, refusal.comment)  # fmt: skip
        return status_with_comment(refusal.status, refusal.comment)
    except Exception:
        logger.exception("C-STORE %s from %s failed", received.sop_instance_uid,
                         received.calling_ae)  # fmt: skip
        return status_with_comment(PROCESSING_FAILURE, "processing failure")
    if result.outcome is Outcome.ALREADY_PRESENT:
        logger.info("C-STORE %s from %s: already present, kept", received.sop_instance_uid,
                    received.calling_ae)  # fmt: skip
    return SUCCESS


def check_calling_ae(event: Event, app: Flask) -> None:
    """With PLACA_AE_WHITELIST=1, reject an association from an unregistered calling AE."""
    if not app.config["AE_WHITELIST"]:
        return
    requestor = event.assoc.requestor
    # Before negotiation only the A-ASSOCIATE-RQ primitive holds the calling AE title.
    primitive = requestor.primitive
    calling = str(primitive.calling_ae_title if primitive else requestor.ae_title).strip()
    try:
        with read_only(app) as db:
            known = db.scalar(select(RemoteAE.id).where(RemoteAE.ae_title == calling))
    except Exception:
        logger.exception("Cannot check calling AE %s: association rejected (transient)", calling)
        _reject(event, REJECTED_TRANSIENT, NO_REASON)
        return
    if known is None:
        logger.warning("Association from unregistered AE %r at %s rejected", calling,
                       requestor.address)  # fmt: skip
        _reject(event, REJECTED_PERMANENT, CALLING_AE_NOT_RECOGNISED)


def _reject(event: Event, result: int, diagnostic: int) -> None:
    """Send A-ASSOCIATE-RJ and end the association as pynetdicom's own rejections do (the
    kill lets the DUL send the PDU before the socket closes)."""
    event.assoc.acse.send_reject(result, SERVICE_USER, diagnostic)
    evt.trigger(event.assoc, evt.EVT_REJECTED, {})
    event.assoc.kill()


SERVICES = [
    DicomService((Verification,), {evt.EVT_C_ECHO: handle_echo}),
    DicomService(
        STORAGE_SOP_CLASSES,
        {evt.EVT_C_STORE: handle_store},
        # A C-GET requestor proposes these contexts with the SCP role (PS3.4 C.4.3.1):
        # accepting it lets the archive send the instances back as Storage SCU.
        scu_role=True,
        scp_role=True,
        transfer_syntaxes=STORAGE_TRANSFER_SYNTAXES,
    ),  # fmt: skip
    *QUERY,
    *RETRIEVE,
    *COMMITMENT,
]
ASSOCIATION_HOOKS: list[AssociationHook] = [check_calling_ae]
