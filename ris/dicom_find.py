"""What every C-FIND SCP of Placa shares: the Modality Worklist and the archive's Query/Retrieve.

* :class:`Answer`: one response identifier as ris.dicom_encode elements, with the Specific
  Character Set it is sent in (:func:`answer_charset`: ISO_IR 192, or ISO_IR 100 when the
  SCU asked for it and the answer's text fits);
* :func:`assume_character_set`: how a request with accented text but no Specific Character
  Set is read;
* :func:`pending_responses`: the Pending responses of a C-FIND, streamed as bytes by
  ris.dimse_stream where the transfer syntax allows, else through pynetdicom, with C-CANCEL
  checked before each one;
* :func:`failure`: a failure status with its Error Comment and Offending Element.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.events import Event

from ris.dicom_encode import Element, EncodeError, to_dataset
from ris.dimse_status import status_with_comment
from ris.dimse_stream import PendingResponses

logger = logging.getLogger(__name__)

UTF8, LATIN1 = "ISO_IR 192", "ISO_IR 100"
SUCCESS, CANCEL = 0x0000, 0xFE00
PENDING, PENDING_WITH_WARNING = 0xFF00, 0xFF01  # 0xFF01: optional keys not supported
UNABLE_TO_PROCESS = 0xC000
SPECIFIC_CHARACTER_SET = 0x00080005

FindResponse = tuple[int | Dataset, Dataset | None]


class Answer(NamedTuple):
    """One response identifier as elements (ris.dicom_encode), and its character set."""

    charset: str  # its Specific Character Set, also among the elements
    elements: list[Element]

    def dataset(self) -> Dataset:
        return to_dataset(self.elements)


def asks_for_latin1(request: Dataset) -> bool:
    """The request is in ISO_IR 100: answers are sent in it too when their text fits."""
    value = request.get("SpecificCharacterSet")
    values = list(value) if isinstance(value, MultiValue | list) else [value]
    return any(str(v or "").strip().upper() == LATIN1 for v in values)


def answer_of(elements: list[Element], wants_latin1: bool) -> Answer:
    """The elements with their Specific Character Set added (see the module doc)."""
    charset = LATIN1 if wants_latin1 and fits_latin1(elements) else UTF8
    elements.append(Element(SPECIFIC_CHARACTER_SET, "CS", charset))
    return Answer(charset, elements)


def fits_latin1(elements: Iterable[Element]) -> bool:
    for element in elements:
        values = element.value if isinstance(element.value, list | tuple) else [element.value]
        if element.vr == "SQ":
            if not all(fits_latin1(item) for item in values):
                return False
            continue
        for value in values:
            if isinstance(value, str):
                try:
                    value.encode("latin-1")
                except UnicodeEncodeError:
                    return False
    return True


@dataclass
class Outcome:
    """What :func:`pending_responses` sent, for the handler's log line."""

    count: int = 0
    cancelled: bool = False
    streamed: bool = False


def pending_responses(
    event: Event, answers: Iterable[Answer], status: int, outcome: Outcome
) -> Iterator[FindResponse]:
    """The Pending responses (``status``: 0xFF00 or 0xFF01) of ``answers``, then nothing:
    the handler yields the final status. A cancelled request ends with 0xFE00 (Cancel)
    here; an association the peer has gone from ends the responses."""
    stream = PendingResponses.open(event, status)
    outcome.streamed = stream is not None
    for answer in answers:
        if event.is_cancelled:
            outcome.cancelled = True
            yield CANCEL, None
            return
        outcome.count += 1
        if stream is None or not _streamed(stream, answer):
            yield status, answer.dataset()
        if not event.assoc.is_established:
            return  # aborted or released by the peer: nothing more to say


def _streamed(stream: PendingResponses, answer: Answer) -> bool:
    """Send the answer as bytes; False if it must go through pynetdicom (pydicom) instead."""
    try:
        stream.send(answer.elements, answer.charset)
    except EncodeError:
        logger.exception("C-FIND answer not encoded directly; sent through pydicom")
        return False
    return True


failure = status_with_comment  # the name the C-FIND handlers answer with


TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def assume_character_set(request: Dataset) -> str | None:
    """A request with accented text but no Specific Character Set breaks PS3.5 6.1.2.5;
    SCUs that do it send UTF-8 or Latin-1. Read it as UTF-8 when its bytes are UTF-8,
    else as Latin-1, instead of as ASCII (which would garble the names). Returns the
    character set assumed, or None when the request needed none."""
    if str(request.get("SpecificCharacterSet") or "").strip():
        return None
    datasets = list(_datasets(request))
    raw = [value for dataset in datasets for value in _raw_text(dataset)]
    if not any(max(value, default=0) > 0x7F for value in raw):
        return None
    try:
        for value in raw:
            value.decode("utf-8")
        charset = UTF8
    except UnicodeDecodeError:
        charset = LATIN1
    request.SpecificCharacterSet = charset
    for dataset in datasets:  # the text not read yet is decoded with the read encoding
        implicit, little = dataset.original_encoding
        dataset.set_original_encoding(implicit, little, convert_encodings(charset))
    return charset


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
