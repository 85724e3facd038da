"""What every DICOM service handler answers with: a status with its Error Comment, and the
requesting AE as the actor of the audit trail."""

from __future__ import annotations

import unicodedata
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom.events import Event

from ris.audit import Actor

ERROR_COMMENT_LENGTH = 64  # LO (PS3.7 C.4)


def status_with_comment(code: int, comment: str, keyword: str | None = None) -> Dataset:
    """A status with its Error Comment and, when known, the Offending Element.

    The command set is in the default repertoire: a translated comment's accents are folded,
    and it is cut to the length of an LO."""
    status = Dataset()
    status.Status = code
    ascii_comment = unicodedata.normalize("NFKD", comment).encode("ascii", "ignore").decode()
    status.ErrorComment = ascii_comment[:ERROR_COMMENT_LENGTH]
    tag: Any = tag_for_keyword(keyword.split(">")[-1]) if keyword else None
    if tag is not None:
        status.OffendingElement = [tag]
    return status


def requestor_actor(event: Event) -> Actor:
    """The calling AE of the event's association, as an audit actor."""
    requestor = event.assoc.requestor
    return Actor.dicom(str(requestor.ae_title).strip(), requestor.address)
