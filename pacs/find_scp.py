"""The archive's Query/Retrieve SCP, FIND: C-FIND in Patient Root and Study Root (IHE RAD-14).

The handler reads the request's level, plans it with :mod:`pacs.query` (the service
QIDO-RS shares) and streams one Pending response per matching patient, study, series or
instance (0xFF01 instead of 0xFF00 when it ignored keys it does not match on), from a
read-only session; on implicit and explicit VR little endian the answers are encoded and
sent as bytes by ris.dimse_stream, like the worklist's (ris.dicom_find).

* **Relational queries** (PS3.4 C.4.1.2.2) when the requestor asks for them in the SOP
  Class Extended Negotiation (C.5.1.1, byte 1): any level may then be searched without the
  unique keys of the levels above (studies by Patient's Name, images by Modality across
  studies). Otherwise queries are hierarchical (C.4.1.3.1). Byte 2, combined date-time
  matching, is accepted too: Study Date and Study Time are then one range (20261115-20261130
  with 0800-1000: 15 Nov 08:00 to 30 Nov 10:00), else each is matched on its own, as
  C.2.2.2.5 says (08:00 to 10:00 on any of those days). Byte 3 (fuzzy semantic matching of
  person names) is accepted: Placa always ignores case and accents; byte 4 (timezone query
  adjustment) is not.
* A missing or wrong Query/Retrieve Level, a unique key of a level above missing
  (hierarchical queries) or a malformed key: Failure 0xA900 (Identifier does not match SOP
  Class) with an Error Comment and the Offending Element; an identifier that cannot be
  decoded: 0xC000. Logged; nothing else is answered.
* C-CANCEL: checked before every response; answered 0xFE00 (Cancel).
* Answer limit (PLACA_QR_MAX_ANSWERS): the first N answers, then Success; a warning is
  logged.
* The log names the calling AE, model, level, keys and counts, never a patient's data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Flask
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from pacs.query import Model, QueryOptions, find_archive_entries, plan_archive_query, read_level
from ris.db import read_only
from ris.dicom_door import (
    DicomService,
    ServiceHandler,
    accepted_extended_negotiation,
    answer_options,
)
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

logger = logging.getLogger(__name__)

MODEL_NAMES = {Model.PATIENT_ROOT: "Patient Root", Model.STUDY_ROOT: "Study Root"}


def handle_find(event: Event, app: Flask, model: Model) -> Iterator[FindResponse]:
    """C-FIND handler for one Query/Retrieve information model - FIND."""
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    name = MODEL_NAMES[model]
    try:
        request = event.identifier
    except Exception:  # pynetdicom decodes lazily: a broken identifier fails here
        logger.exception("%s C-FIND from %s: the identifier cannot be decoded", name, calling_ae)
        yield failure(UNABLE_TO_PROCESS, "The identifier cannot be decoded"), None
        return
    assumed = assume_character_set(request)
    if assumed:
        logger.info("%s C-FIND from %s without Specific Character Set: read as %s", name,
                    calling_ae, assumed)  # fmt: skip
    yield from _answers(event, app, model, calling_ae, request)


def _answers(
    event: Event, app: Flask, model: Model, calling_ae: str, request: Dataset
) -> Iterator[FindResponse]:
    name = MODEL_NAMES[model]
    negotiated = accepted_extended_negotiation(event)
    relational = negotiated[:1] == b"\x01"
    combined = negotiated[1:2] == b"\x01"
    try:
        level = read_level(request, model)
        options = QueryOptions.of(app, hierarchical=not relational, combined_datetime=combined)
        query = plan_archive_query(request, model, level, options)
    except MatchError as error:
        logger.warning("%s C-FIND from %s refused: %s", name, calling_ae, error.comment)
        yield failure(error.status, error.comment, error.keyword), None
        return
    if query.ignored:
        logger.info("%s C-FIND from %s: keys not matched on: %s", name, calling_ae,
                    ", ".join(query.ignored))  # fmt: skip
    sent = Outcome()
    with read_only(app) as db:
        entries = find_archive_entries(db, query)
        pending = PENDING_WITH_WARNING if query.ignored else PENDING
        yield from pending_responses(event, entries.answers(), pending, sent)
    if sent.cancelled:
        logger.info("%s C-FIND from %s (%s) cancelled after %s answers", name, calling_ae,
                    level.name, sent.count)  # fmt: skip
        return
    if not event.assoc.is_established:
        return
    if entries.truncated:
        logger.warning("%s C-FIND from %s matched more than %s entries; answered the first %s "
                       "(PLACA_QR_MAX_ANSWERS)", name, calling_ae, sent.count,
                       sent.count)  # fmt: skip
    logger.info("%s C-FIND from %s: %s level%s, %s answers, %s", name, calling_ae, level.name,
                " (relational)" if relational else "", sent.count, "streamed" if sent.streamed
                else f"through pydicom ({event.context.transfer_syntax})")  # fmt: skip
    yield SUCCESS, None


# PS3.4 C.5.1.1: relational queries, combined date-time, fuzzy person names; no time zone
query_options_answer = answer_options((1, 1, 1, 0))


def _handler(model: Model) -> ServiceHandler:
    def handle(event: Event, app: Flask) -> Iterator[FindResponse]:
        return handle_find(event, app, model)

    return handle


SERVICES = [
    DicomService((PatientRootQueryRetrieveInformationModelFind,),
                 {evt.EVT_C_FIND: _handler(Model.PATIENT_ROOT)},
                 extended_negotiation=query_options_answer),
    DicomService((StudyRootQueryRetrieveInformationModelFind,),
                 {evt.EVT_C_FIND: _handler(Model.STUDY_ROOT)},
                 extended_negotiation=query_options_answer),
]  # fmt: skip
