"""Original-mode acknowledgements: MSH, MSA and, on error, ERR in the peer's version."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from ris.hl7.errors import ERROR_TEXT
from ris.hl7.wire import CHARSETS, DEFAULT_VERSION, Header, escape

# Up to 2.4, ERR has a single field, ERR-1 "error code and location", and the
# human-readable text goes to MSA-3; from 2.5 on it is ERR-2/3/4/8.
_ERR1_VERSIONS = frozenset({"2.1", "2.2", "2.3", "2.3.1", "2.4"})
# 2.8 withdrew ERR-1 and MSA-3 (hl7apy's 2.8 structures shift every ERR field left),
# so those (rare) peers get a 2.5.1 acknowledgement instead.
_ACK_VERSIONS = _ERR1_VERSIONS | {"2.5", "2.5.1", "2.6", "2.7"}
_TWO_PART_MESSAGE_TYPE = frozenset({"2.1", "2.2", "2.3"})  # no message structure component yet
_MAX_TEXT = 80  # MSA-3 and ERR-8 are 80 characters long in 2.3.1 and 2.5.1
_LOCATION = re.compile(
    r"([A-Z][A-Z0-9]{2})(?:[-.](\d+)(?:[-.](\d+)(?:[-.](\d+))?)?)?", re.IGNORECASE
)


@dataclass(frozen=True)
class Outcome:
    """What became of an inbound message: what its acknowledgement reports."""

    ack_code: str  # AA, AE or AR
    error_code: str = ""  # table 0357; empty means no ERR segment
    text: str = ""
    location: str = ""  # "PID-3" style; empty when unknown


ACCEPTED = Outcome("AA")


def build_ack(header: Header, outcome: Outcome, application: str, facility: str) -> str:
    """The ACK for ``header``'s message, as ER7 text ending in a segment terminator.

    Written as text: an ACK is three short segments, and building it with hl7apy cost
    more than applying a typical order (tests parse it back with hl7apy).
    """
    version = header.version if header.version in _ACK_VERSIONS else DEFAULT_VERSION
    msh = _ack_header(header, version, application, facility)
    msa = {1: outcome.ack_code, 2: escape(header.control_id)}
    err = _error_fields(outcome, version, msa) if outcome.error_code else {}
    segments = [_segment("MSH", msh), _segment("MSA", msa)]
    if err:
        segments.append(_segment("ERR", err))
    return "\r".join(segments) + "\r"


def _segment(name: str, fields: dict[int, str]) -> str:
    """``fields`` by number (SEG-n) joined with ``|``; for MSH, MSH-1 and MSH-2 are implied."""
    first = 3 if name == "MSH" else 1
    last = max((number for number, text in fields.items() if text), default=first - 1)
    values = [fields.get(number, "") for number in range(first, last + 1)]
    head = "MSH|^~\\&" if name == "MSH" else name
    return "|".join([head, *values])


def _ack_header(header: Header, version: str, application: str, facility: str) -> dict[int, str]:
    # Four encoding characters even in 2.7, where the truncation one is optional:
    # nothing we write needs it, and older peers choke on it.
    fields = {
        3: escape(application),
        4: escape(facility),
        5: header.sending_application,  # quoted as sent (still escaped)
        6: header.sending_facility,
        7: _utc_timestamp(),
        9: _ack_message_type(header.event, version),
        10: _new_control_id(),
        11: header.processing_id or "P",
        12: version,
    }
    if header.charset.upper() in CHARSETS:
        fields[18] = header.charset
    return fields


def _error_fields(outcome: Outcome, version: str, msa: dict[int, str]) -> dict[int, str]:
    code = [
        escape(outcome.error_code),
        ERROR_TEXT.get(outcome.error_code, "Application error"),
        "HL70357",
    ]
    location = _location_components(outcome.location)
    text = escape(outcome.text[:_MAX_TEXT])
    if version in _ERR1_VERSIONS:
        # ELD: segment ID ^ sequence ^ field position ^ code (a CE, hence subcomponents)
        if text:
            msa[3] = text
        return {1: "^".join([*(location + ["", "", ""])[:3], "&".join(code)])}
    return {2: "^".join(location), 3: "^".join(code), 4: "E", 8: text}


def _location_components(field: str) -> list[str]:
    """``"PID-3.1"`` -> ERL components ``["PID", "1", "3", "1", "1"]``; [] if not a location."""
    match = _LOCATION.fullmatch(field.strip())
    if match is None:
        return []
    segment, position, component, subcomponent = match.groups(default="")
    parts = [segment.upper(), "1", position, "1" if component else "", component, subcomponent]
    while parts[-1] == "":
        parts.pop()
    return parts


def _ack_message_type(event: str, version: str) -> str:
    if not event:
        return "ACK"
    if version in _TWO_PART_MESSAGE_TYPE:
        return f"ACK^{escape(event)}"
    return f"ACK^{escape(event)}^ACK"


def fallback_ack(header: Header, application: str, facility: str) -> str:
    """A fixed AR written without hl7apy, for when building the real ACK failed."""
    segments = (
        f"MSH|^~\\&|{escape(application)}|{escape(facility)}|||{_utc_timestamp()}||ACK|"
        f"{_new_control_id()}|P|{DEFAULT_VERSION}",
        f"MSA|AR|{escape(header.control_id)}",
        "ERR|||207^Application internal error^HL70357|E",
    )
    return "\r".join(segments) + "\r"


def _utc_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def _new_control_id() -> str:
    # MSH-10 is 20 characters in 2.3.1 and 2.5.1; 80 random bits is plenty.
    return uuid.uuid4().hex[:20].upper()
