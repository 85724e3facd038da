"""The Modality Worklist SCP: C-FIND on the Modality Worklist Information Model (IHE RAD-5).

The handler reads the request, then streams one Pending response per worklist item
(0xFF01 instead of 0xFF00 when it ignored keys it does not match on), from a read-only
session: on SQLite a modality reading a long worklist never holds the write lock.
On implicit and explicit VR little endian contexts (what modalities propose) the items
are encoded and sent as bytes by ris.dimse_stream, and only the final status goes
through pynetdicom: its per-response path (pydicom encoding, command set) costs several
times the rest of the answer. Other transfer syntaxes get pydicom Datasets as before.

* C-CANCEL: checked before every response; answered 0xFE00 (Cancel).
* Answer limit (PLACA_MWL_MAX_ANSWERS): the first N items, then Success, as modalities
  expect (many treat a failure status as "no worklist"); a warning is logged.
* Station routing (PLACA_MWL_STATION_ROUTING=1): a calling AE that is a room's device AE
  title sees only that room's steps; other callers (workstations, a RIS console) see all.
* A malformed key (a date 20261345, a UID with letters): Failure 0xA900 with an Error
  Comment and the Offending Element, logged; nothing else is answered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Flask
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.sop_class import ModalityWorklistInformationFind

from ris.db import read_only
from ris.dicom_door import DicomService
from ris.dicom_find import (
    PENDING,
    PENDING_WITH_WARNING,
    SUCCESS,
    UNABLE_TO_PROCESS,
    FindResponse,
    Outcome,
    assume_character_set,
    failure,
    pending_responses,
)
from ris.dicom_match import MatchError
from worklist.mwl import (
    WorklistOptions,
    find_worklist_items,
    plan_worklist_query,
    station_room_id,
)

logger = logging.getLogger(__name__)


def handle_find(event: Event, app: Flask) -> Iterator[FindResponse]:
    """C-FIND handler for the Modality Worklist Information Model - FIND."""
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    try:
        request = event.identifier
    except Exception:  # pynetdicom decodes lazily: a broken identifier fails here
        logger.exception("Worklist C-FIND from %s: the identifier cannot be decoded", calling_ae)
        yield failure(UNABLE_TO_PROCESS, "The identifier cannot be decoded"), None
        return
    assumed = assume_character_set(request)
    if assumed:
        logger.info("Worklist C-FIND without Specific Character Set: read as %s", assumed)
    yield from _answers(event, app, calling_ae, request)


def _answers(event: Event, app: Flask, calling_ae: str, request: Dataset) -> Iterator[FindResponse]:
    with read_only(app) as db:
        room_id = station_room_id(db, calling_ae) if app.config["MWL_STATION_ROUTING"] else None
        try:
            query = plan_worklist_query(request, WorklistOptions.of(app, room_id=room_id))
        except MatchError as error:
            logger.warning("Worklist C-FIND from %s refused: %s", calling_ae, error)
            yield failure(error.status, error.comment, error.keyword), None
            return
        if query.ignored:
            logger.info("Worklist C-FIND from %s: keys not matched on: %s", calling_ae,
                        ", ".join(query.ignored))  # fmt: skip
        pending = PENDING_WITH_WARNING if query.ignored else PENDING
        items = find_worklist_items(db, query)
        sent = Outcome()
        yield from pending_responses(event, items.answers(), pending, sent)
        if sent.cancelled:
            logger.info("Worklist C-FIND from %s cancelled after %s items", calling_ae,
                        sent.count)  # fmt: skip
            return
        if not event.assoc.is_established:
            return
    logger.info("Worklist C-FIND from %s: %s items%s%s, %s", calling_ae, sent.count,
                " (limit reached)" if items.truncated else "",
                " (station routing)" if room_id is not None else "",
                "streamed" if sent.streamed else
                f"through pydicom ({event.context.transfer_syntax})",
                )  # fmt: skip
    yield SUCCESS, None


SERVICE = DicomService((ModalityWorklistInformationFind,), {evt.EVT_C_FIND: handle_find})
