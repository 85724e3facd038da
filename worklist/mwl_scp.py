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
from typing import Any

from flask import Flask
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.sop_class import ModalityWorklistInformationFind

from ris.db import read_only
from ris.dicom_door import DicomService
from ris.dicom_encode import EncodeError
from ris.dicom_match import MatchError
from ris.dimse_stream import PendingResponses
from worklist.mwl import (
    Answer,
    WorklistOptions,
    find_worklist_items,
    plan_worklist_query,
    station_room_id,
)

logger = logging.getLogger(__name__)

SUCCESS, CANCEL = 0x0000, 0xFE00
PENDING, PENDING_WITH_WARNING = 0xFF00, 0xFF01  # 0xFF01: optional keys not supported
UNABLE_TO_PROCESS = 0xC000

FindResponse = tuple[int | Dataset, Dataset | None]


def handle_find(event: Event, app: Flask) -> Iterator[FindResponse]:
    """C-FIND handler for the Modality Worklist Information Model - FIND."""
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    try:
        request = event.identifier
    except Exception:  # pynetdicom decodes lazily: a broken identifier fails here
        logger.exception("Worklist C-FIND from %s: the identifier cannot be decoded", calling_ae)
        yield _failure(UNABLE_TO_PROCESS, "The identifier cannot be decoded"), None
        return
    _assume_character_set(request)
    yield from _answers(event, app, calling_ae, request)


def _answers(event: Event, app: Flask, calling_ae: str, request: Dataset) -> Iterator[FindResponse]:
    with read_only(app) as db:
        room_id = station_room_id(db, calling_ae) if app.config["MWL_STATION_ROUTING"] else None
        try:
            query = plan_worklist_query(request, WorklistOptions.of(app, room_id=room_id))
        except MatchError as error:
            logger.warning("Worklist C-FIND from %s refused: %s", calling_ae, error)
            yield _failure(error.status, error.comment, error.keyword), None
            return
        if query.ignored:
            logger.info("Worklist C-FIND from %s: keys not matched on: %s", calling_ae,
                        ", ".join(query.ignored))  # fmt: skip
        pending = PENDING_WITH_WARNING if query.ignored else PENDING
        items = find_worklist_items(db, query)
        stream = PendingResponses.open(event, pending)
        count = 0
        for item in items.answers():
            if event.is_cancelled:
                logger.info("Worklist C-FIND from %s cancelled after %s items", calling_ae, count)
                yield CANCEL, None
                return
            count += 1
            if stream is None or not _streamed(stream, item):
                yield pending, item.dataset()
            if not event.assoc.is_established:
                return  # aborted or released by the peer: nothing more to say
    logger.info("Worklist C-FIND from %s: %s items%s%s, %s", calling_ae, count,
                " (limit reached)" if items.truncated else "",
                " (station routing)" if room_id is not None else "",
                "streamed" if stream else f"through pydicom ({event.context.transfer_syntax})",
                )  # fmt: skip
    yield SUCCESS, None


def _streamed(stream: PendingResponses, item: Answer) -> bool:
    """Send the item as bytes; False if it must go through pynetdicom (pydicom) instead."""
    try:
        stream.send(item.elements, item.charset)
    except EncodeError:
        logger.exception("Worklist item not encoded directly; sent through pydicom")
        return False
    return True


TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _assume_character_set(request: Dataset) -> None:
    """A request with accented text but no Specific Character Set breaks PS3.5 6.1.2.5;
    modalities that do it send UTF-8 or Latin-1. Read it as UTF-8 when its bytes are
    UTF-8, else as Latin-1, instead of as ASCII (which would garble the names)."""
    if str(request.get("SpecificCharacterSet") or "").strip():
        return
    datasets = list(_datasets(request))
    raw = [value for dataset in datasets for value in _raw_text(dataset)]
    if not any(max(value, default=0) > 0x7F for value in raw):
        return
    try:
        for value in raw:
            value.decode("utf-8")
        charset = "ISO_IR 192"
    except UnicodeDecodeError:
        charset = "ISO_IR 100"
    logger.info("Worklist C-FIND without Specific Character Set: read as %s", charset)
    request.SpecificCharacterSet = charset
    for dataset in datasets:  # the text not read yet is decoded with the read encoding
        implicit, little = dataset.original_encoding
        dataset.set_original_encoding(implicit, little, convert_encodings(charset))


def _datasets(dataset: Dataset) -> Iterator[Dataset]:
    """The dataset and the items of its sequences, at every depth."""
    yield dataset
    for tag in list(dataset.keys()):
        if _vr(dataset, tag) == "SQ":
            for item in dataset[tag].value or []:
                yield from _datasets(item)


def _raw_text(dataset: Dataset) -> Iterator[bytes]:
    for tag in list(dataset.keys()):
        element = dataset.get_item(tag)
        if _vr(dataset, tag) in TEXT_VRS and isinstance(element.value, bytes):
            yield element.value


def _vr(dataset: Dataset, tag: int) -> str | None:
    element = dataset.get_item(tag)
    return (element.VR if element is not None else None) or _dictionary_vr(tag)


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:  # private or unknown: not text Placa reads
        return None


def _failure(status: int, comment: str, keyword: str | None = None) -> Dataset:
    """A failure status with its Error Comment and, when known, the Offending Element."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]
    tag: Any = tag_for_keyword(keyword.split(">")[-1]) if keyword else None
    if tag is not None:
        response.OffendingElement = [tag]
    return response


SERVICE = DicomService((ModalityWorklistInformationFind,), {evt.EVT_C_FIND: handle_find})
