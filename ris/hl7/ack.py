"""Original-mode acknowledgements: MSH, MSA and, on error, ERR in the peer's version."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy.consts import DEFAULT_ENCODING_CHARS, VALIDATION_LEVEL
from hl7apy.core import Message, Segment

from ris.hl7.errors import ERROR_TEXT
from ris.hl7.wire import CHARSETS, DEFAULT_VERSION, Header, escape

# Up to 2.4, ERR has a single field, ERR-1 "error code and location", and the
# human-readable text goes to MSA-3; from 2.5 on it is ERR-2/3/4/8.
_ERR1_VERSIONS = frozenset({"2.1", "2.2", "2.3", "2.3.1", "2.4"})
# hl7apy drops ERR-1 from its 2.8.x ERR structure and shifts every field left,
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
    """The ACK for ``header``'s message, as ER7 text ending in a segment terminator."""
    version = header.version if header.version in _ACK_VERSIONS else DEFAULT_VERSION
    # Four encoding characters even in 2.7, where the truncation one is optional:
    # nothing we write needs it, and older peers choke on it.
    ack = Message(
        "ACK",
        version=version,
        validation_level=VALIDATION_LEVEL.TOLERANT,
        encoding_chars=DEFAULT_ENCODING_CHARS,
    )
    _fill_ack_header(ack.msh, header, version, application, facility)
    ack.msa.msa_1 = outcome.ack_code
    if header.control_id:
        ack.msa.msa_2 = header.control_id
    if outcome.error_code:
        _add_error(ack, outcome, version)
    return ack.to_er7() + "\r"


def _fill_ack_header(
    msh: Segment, header: Header, version: str, application: str, facility: str
) -> None:
    msh.msh_3 = escape(application)
    msh.msh_4 = escape(facility)
    if header.sending_application:
        msh.msh_5 = header.sending_application
    if header.sending_facility:
        msh.msh_6 = header.sending_facility
    msh.msh_7 = _utc_timestamp()
    msh.msh_9 = _ack_message_type(header.event, version)
    msh.msh_10 = _new_control_id()
    msh.msh_11 = header.processing_id or "P"
    msh.msh_12 = version
    if header.charset.upper() in CHARSETS:
        msh.msh_18 = header.charset


def _add_error(ack: Message, outcome: Outcome, version: str) -> None:
    err = ack.add_segment("ERR")
    code = [
        escape(outcome.error_code),
        ERROR_TEXT.get(outcome.error_code, "Application error"),
        "HL70357",
    ]
    location = _location_components(outcome.location)
    text = escape(outcome.text[:_MAX_TEXT])
    if version in _ERR1_VERSIONS:
        # ELD: segment ID ^ sequence ^ field position ^ code (a CE, hence subcomponents)
        err.err_1 = "^".join([*(location + ["", "", ""])[:3], "&".join(code)])
        if text:
            ack.msa.msa_3 = text
        return
    if location:
        err.err_2 = "^".join(location)
    err.err_3 = "^".join(code)
    err.err_4 = "E"
    if text:
        err.err_8 = text


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
