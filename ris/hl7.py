"""Inbound HL7 v2: decode, parse with hl7apy, dispatch by message type, acknowledge.

Original-mode acknowledgements: ``AA`` when the route succeeds, ``AE`` for an
application error the sender should correct (:class:`HL7ApplicationError`),
``AR`` for messages we refuse: unsupported type, unparsable, too large, or an
internal failure (HL7 v2.5.1 section 2.9.2.2 allows AR for receiver problems
unrelated to content). :func:`handle_message` never raises: a peer always gets
an acknowledgement.

Wire it to the transport with::

    MLLPServer(host, port, lambda raw, peer: handle_message(raw, sender=peer),
               on_oversize=lambda head, peer: reject_oversize(head, sender=peer))
"""

from __future__ import annotations

import codecs
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy import SUPPORTED_LIBRARIES
from hl7apy.consts import DEFAULT_ENCODING_CHARS, VALIDATION_LEVEL
from hl7apy.core import Message, Segment
from hl7apy.exceptions import (
    InvalidDataType,
    InvalidDateFormat,
    InvalidDateOffset,
    InvalidEncodingChars,
    InvalidMicrosecondsPrecision,
    MaxLengthReached,
    ValidationError,
)
from hl7apy.parser import parse_message

logger = logging.getLogger(__name__)

RouteHandler = Callable[[Message], None]
"""Applies a parsed message; returns on success, raises :class:`HL7Error` to shape the ACK."""

ROUTES: dict[str, RouteHandler] = {}
"""``"TYPE^EVENT"`` (e.g. ``"ADT^A01"``) -> route. Routes receive an hl7apy Message
parsed with ``find_groups=False``: segments are direct children (``msg.pid``,
``msg.obr`` lists every OBR), whatever groups the structure would define."""

DEFAULT_VERSION = "2.5.1"

_ERROR_TEXT = {  # HL7 table 0357, message error condition codes
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
# Up to 2.4, ERR has a single field, ERR-1 "error code and location", and the
# human-readable text goes to MSA-3; from 2.5 on it is ERR-2/3/4/8.
_ERR1_VERSIONS = frozenset({"2.1", "2.2", "2.3", "2.3.1", "2.4"})
# hl7apy drops ERR-1 from its 2.8.x ERR structure and shifts every field left,
# so those (rare) peers get a 2.5.1 acknowledgement instead.
_ACK_VERSIONS = _ERR1_VERSIONS | {"2.5", "2.5.1", "2.6", "2.7"}
_TWO_PART_MESSAGE_TYPE = frozenset({"2.1", "2.2", "2.3"})  # no message structure component yet
_DATA_ERRORS = (
    InvalidDataType,
    InvalidDateFormat,
    InvalidDateOffset,
    InvalidEncodingChars,
    InvalidMicrosecondsPrecision,
    MaxLengthReached,
    ValidationError,
)
_MAX_TEXT = 80  # MSA-3 and ERR-8 are 80 characters long in 2.3.1 and 2.5.1
_CHARSETS = {  # HL7 table 0211 -> Python codec; delimiters must stay single bytes
    "ASCII": "ascii",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    **{f"8859/{n}": f"iso8859_{n}" for n in range(1, 10)},
    "8859/15": "iso8859_15",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc_kr",
}
_CHARSET_SNIFF_BYTES = 65536
_LOCATION = re.compile(
    r"([A-Z][A-Z0-9]{2})(?:[-.](\d+)(?:[-.](\d+)(?:[-.](\d+))?)?)?", re.IGNORECASE
)
_ESCAPES = str.maketrans(
    {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\r": " ", "\n": " "}
)


class HL7Error(Exception):
    """Raised by a route to turn the acknowledgement into an error.

    ``field`` names the offending location (``"PID-3"``, ``"OBR-4.1"``; free
    text is accepted, it then only appears in the message text), ``code`` is
    an HL7 table 0357 error code.
    """

    ack_code = "AE"

    def __init__(self, field: str, reason: str, code: str = "207") -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason
        self.code = code


class HL7ApplicationError(HL7Error):
    """The message was understood but cannot be applied: MSA-1 ``AE``."""

    ack_code = "AE"


class HL7RejectError(HL7Error):
    """The message is refused outright: MSA-1 ``AR``."""

    ack_code = "AR"


@dataclass(frozen=True)
class _Header:
    """What the acknowledgement needs from the inbound MSH, read without hl7apy
    so that it survives messages hl7apy refuses."""

    sending_application: str = ""
    sending_facility: str = ""
    message_type: str = ""  # normalised TYPE^EVENT
    event: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    charset: str = ""


@dataclass(frozen=True)
class _Outcome:
    ack_code: str  # AA, AE or AR
    error_code: str = ""  # table 0357; empty means no ERR segment
    text: str = ""
    location: str = ""  # "PID-3" style; empty when unknown


_ACCEPTED = _Outcome("AA")

_Processor = Callable[[str, str], tuple[_Header, _Outcome]]


def handle_message(
    raw: bytes, *, sender: str, application: str = "PLACA", facility: str = "PLACA"
) -> bytes:
    """Process one inbound message (MLLP framing removed) and return its ACK, encoded."""
    return _acknowledge(raw, sender, application, facility, _process)


def reject_oversize(
    head: bytes, *, sender: str, application: str = "PLACA", facility: str = "PLACA"
) -> bytes:
    """Build the AR for a message the transport discarded as too large.

    ``head`` is the start of that message; only complete segments in it are
    trusted, to quote the inbound control id and applications.
    """
    return _acknowledge(head, sender, application, facility, _process_oversize)


def _acknowledge(
    raw: bytes, sender: str, application: str, facility: str, process: _Processor
) -> bytes:
    header, codec = _Header(), "ascii"
    try:
        text, codec = _decode(raw)
        header, outcome = process(text, sender)
        ack = _build_ack(header, outcome, application, facility)
    except Exception:
        # Last resort: the transport must always have a reply to send.
        logger.exception("HL7 from %s: cannot process or acknowledge message", sender)
        ack = _fallback_ack(header, application, facility)
    return ack.encode(codec, errors="replace")


def _process(text: str, sender: str) -> tuple[_Header, _Outcome]:
    segments = _segments(text)
    found = _find_header(segments)
    if found is None:
        logger.warning("HL7 from %s: no MSH segment (%d characters), rejecting", sender, len(text))
        return _Header(), _Outcome("AR", "100", "No MSH segment found: not an HL7 v2 message")
    header, msh_index = found
    logger.info(
        "HL7 received %s control_id=%r version=%r from %s",
        header.message_type or "?",
        header.control_id,
        header.version,
        sender,
    )
    outcome = _precheck(header, msh_index)
    if outcome is None:
        outcome = _parse_and_dispatch(segments, header, sender)
    logger.info(
        "HL7 %s control_id=%r from %s: %s%s",
        header.message_type or "?",
        header.control_id,
        sender,
        outcome.ack_code,
        f" {outcome.error_code} {outcome.text}" if outcome.error_code else "",
    )
    return header, outcome


def _process_oversize(text: str, sender: str) -> tuple[_Header, _Outcome]:
    # The head ends mid-message: drop its last, possibly truncated, segment.
    complete = text[: max(text.rfind("\r"), text.rfind("\n"), 0)]
    found = _find_header(_segments(complete))
    header = found[0] if found else _Header()
    logger.warning(
        "HL7 %s control_id=%r from %s: message too large, rejecting",
        header.message_type or "?",
        header.control_id,
        sender,
    )
    return header, _Outcome("AR", "207", "Message exceeds the maximum accepted size")


def _precheck(header: _Header, msh_index: int) -> _Outcome | None:
    if msh_index != 0:
        return _Outcome("AR", "100", "MSH must be the first segment", "MSH")
    if not header.message_type:
        return _Outcome("AR", "101", "Message type (MSH-9) is missing", "MSH-9")
    return None


def _parse_and_dispatch(segments: list[str], header: _Header, sender: str) -> _Outcome:
    try:
        message = _parse(segments, header)
    except Exception as exc:  # hl7apy raises its own and built-in errors on malformed input
        logger.warning(
            "HL7 %s control_id=%r from %s: cannot parse: %s: %s",
            header.message_type,
            header.control_id,
            sender,
            type(exc).__name__,
            exc,
        )
        return _parse_failure(exc)
    return _dispatch(message, header, sender)


def _parse(segments: list[str], header: _Header) -> Message:
    if header.version not in SUPPORTED_LIBRARIES:
        # hl7apy refuses unknown versions outright; read them as the default
        # rather than rejecting a peer over a label.
        segments = [_with_version(segments[0], DEFAULT_VERSION), *segments[1:]]
    return parse_message(
        "\r".join(segments), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False
    )


def _parse_failure(exc: Exception) -> _Outcome:
    code = "102" if isinstance(exc, _DATA_ERRORS) else "100"
    location = "MSH-2" if isinstance(exc, InvalidEncodingChars) else ""
    return _Outcome("AR", code, f"Cannot parse message: {exc}", location)


def _dispatch(message: Message, header: _Header, sender: str) -> _Outcome:
    route = ROUTES.get(header.message_type)
    if route is None:
        return _Outcome(
            "AR", "200", f"Message type {header.message_type} is not supported", "MSH-9"
        )
    try:
        route(message)
    except HL7Error as exc:
        text = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
        return _Outcome(exc.ack_code, exc.code, text, exc.field)
    except Exception:
        logger.exception(
            "HL7 %s control_id=%r from %s: route failed",
            header.message_type,
            header.control_id,
            sender,
        )
        return _Outcome("AR", "207", "Internal error while processing the message")
    return _ACCEPTED


# --- decoding and the salvaged header -------------------------------------------------


def _decode(raw: bytes) -> tuple[str, str]:
    """Return the text and the codec to answer in: MSH-18, then UTF-8, then latin-1."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    for codec in (_declared_codec(raw), "utf-8"):
        if codec:
            try:
                return raw.decode(codec), codec
            except UnicodeDecodeError:
                continue
    return raw.decode("latin-1"), "latin-1"


def _declared_codec(raw: bytes) -> str | None:
    # latin-1 maps bytes one to one, enough to read the ASCII header.
    found = _find_header(_segments(raw[:_CHARSET_SNIFF_BYTES].decode("latin-1")))
    return _CHARSETS.get(found[0].charset.upper()) if found else None


def _segments(text: str) -> list[str]:
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return [line.lstrip() for line in lines if line.strip()]


def _find_header(segments: list[str]) -> tuple[_Header, int] | None:
    for index, segment in enumerate(segments):
        if segment.startswith("MSH"):
            return _read_header(segment), index
    return None


def _read_header(segment: str) -> _Header:
    if len(segment) < 4:
        return _Header()
    fields = segment.split(segment[3])  # fields[n - 1] is MSH-n, MSH-1 being the separator
    encoding = fields[1] if len(fields) > 1 else ""
    component, repetition = encoding[:1] or "^", encoding[1:2] or "~"

    def field(number: int) -> str:
        value = fields[number - 1].strip() if len(fields) >= number else ""
        return value.replace(component, "^") if component != "^" else value

    def first(number: int) -> str:
        return field(number).split(repetition)[0].split("^")[0].strip()

    kind, _, rest = field(9).partition("^")
    event = rest.partition("^")[0].strip().upper()
    kind = kind.strip().upper()
    return _Header(
        sending_application=field(3),
        sending_facility=field(4),
        message_type=f"{kind}^{event}" if event else kind,
        event=event,
        control_id=field(10),
        processing_id=field(11),
        version=first(12),
        charset=first(18),
    )


def _with_version(msh: str, version: str) -> str:
    fields = msh.split(msh[3])
    fields += [""] * (12 - len(fields))
    fields[11] = version
    return msh[3].join(fields)


# --- the acknowledgement --------------------------------------------------------------


def _build_ack(header: _Header, outcome: _Outcome, application: str, facility: str) -> str:
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
    msh: Segment, header: _Header, version: str, application: str, facility: str
) -> None:
    msh.msh_3 = _escape(application)
    msh.msh_4 = _escape(facility)
    if header.sending_application:
        msh.msh_5 = header.sending_application
    if header.sending_facility:
        msh.msh_6 = header.sending_facility
    msh.msh_7 = _utc_timestamp()
    msh.msh_9 = _ack_message_type(header.event, version)
    msh.msh_10 = _new_control_id()
    msh.msh_11 = header.processing_id or "P"
    msh.msh_12 = version
    if header.charset.upper() in _CHARSETS:
        msh.msh_18 = header.charset


def _add_error(ack: Message, outcome: _Outcome, version: str) -> None:
    err = ack.add_segment("ERR")
    code = [
        _escape(outcome.error_code),
        _ERROR_TEXT.get(outcome.error_code, "Application error"),
        "HL70357",
    ]
    location = _location_components(outcome.location)
    text = _escape(outcome.text[:_MAX_TEXT])
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
        return f"ACK^{_escape(event)}"
    return f"ACK^{_escape(event)}^ACK"


def _fallback_ack(header: _Header, application: str, facility: str) -> str:
    segments = (
        f"MSH|^~\\&|{_escape(application)}|{_escape(facility)}|||{_utc_timestamp()}||ACK|"
        f"{_new_control_id()}|P|{DEFAULT_VERSION}",
        f"MSA|AR|{_escape(header.control_id)}",
        "ERR|||207^Application internal error^HL70357|E",
    )
    return "\r".join(segments) + "\r"


def _escape(text: str) -> str:
    return text.translate(_ESCAPES)


def _utc_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def _new_control_id() -> str:
    # MSH-10 is 20 characters in 2.3.1 and 2.5.1; 80 random bits is plenty.
    return uuid.uuid4().hex[:20].upper()
