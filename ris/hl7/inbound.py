"""One inbound message: decode, check the header, parse with hl7apy, dispatch, acknowledge."""

from __future__ import annotations

import logging
from collections.abc import Callable

from hl7apy import SUPPORTED_LIBRARIES
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
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

from ris.hl7.ack import ACCEPTED, Outcome, build_ack, fallback_ack
from ris.hl7.errors import HL7Error
from ris.hl7.wire import DEFAULT_VERSION, Header, decode, find_header, split_segments, with_version

# One logger for the whole HL7 side, named as before the package split, so that
# logging configuration and log filters keep addressing "ris.hl7".
logger = logging.getLogger("ris.hl7")

RouteHandler = Callable[[Message], None]
"""Applies a parsed message; returns on success, raises :class:`HL7Error` to shape the ACK."""

ROUTES: dict[str, RouteHandler] = {}
"""``"TYPE^EVENT"`` (e.g. ``"ADT^A01"``) -> route. Routes receive an hl7apy Message
parsed with ``find_groups=False``: segments are direct children (``msg.pid``,
``msg.obr`` lists every OBR), whatever groups the structure would define."""

_DATA_ERRORS = (
    InvalidDataType,
    InvalidDateFormat,
    InvalidDateOffset,
    InvalidEncodingChars,
    InvalidMicrosecondsPrecision,
    MaxLengthReached,
    ValidationError,
)

_Processor = Callable[[str, str], tuple[Header, Outcome]]


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
    header, codec = Header(), "ascii"
    try:
        text, codec = decode(raw)
        header, outcome = process(text, sender)
        ack = build_ack(header, outcome, application, facility)
    except Exception:
        # Last resort: the transport must always have a reply to send.
        logger.exception("HL7 from %s: cannot process or acknowledge message", sender)
        ack = fallback_ack(header, application, facility)
    return ack.encode(codec, errors="replace")


def _process(text: str, sender: str) -> tuple[Header, Outcome]:
    segments = split_segments(text)
    found = find_header(segments)
    if found is None:
        logger.warning("HL7 from %s: no MSH segment (%d characters), rejecting", sender, len(text))
        return Header(), Outcome("AR", "100", "No MSH segment found: not an HL7 v2 message")
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


def _process_oversize(text: str, sender: str) -> tuple[Header, Outcome]:
    # The head ends mid-message: drop its last, possibly truncated, segment.
    complete = text[: max(text.rfind("\r"), text.rfind("\n"), 0)]
    found = find_header(split_segments(complete))
    header = found[0] if found else Header()
    logger.warning(
        "HL7 %s control_id=%r from %s: message too large, rejecting",
        header.message_type or "?",
        header.control_id,
        sender,
    )
    return header, Outcome("AR", "207", "Message exceeds the maximum accepted size")


def _precheck(header: Header, msh_index: int) -> Outcome | None:
    if msh_index != 0:
        return Outcome("AR", "100", "MSH must be the first segment", "MSH")
    if not header.message_type:
        return Outcome("AR", "101", "Message type (MSH-9) is missing", "MSH-9")
    return None


def _parse_and_dispatch(segments: list[str], header: Header, sender: str) -> Outcome:
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


def _parse(segments: list[str], header: Header) -> Message:
    if header.version not in SUPPORTED_LIBRARIES:
        # hl7apy refuses unknown versions outright; read them as the default
        # rather than rejecting a peer over a label.
        segments = [with_version(segments[0], DEFAULT_VERSION), *segments[1:]]
    return parse_message(
        "\r".join(segments), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False
    )


def _parse_failure(exc: Exception) -> Outcome:
    code = "102" if isinstance(exc, _DATA_ERRORS) else "100"
    location = "MSH-2" if isinstance(exc, InvalidEncodingChars) else ""
    return Outcome("AR", code, f"Cannot parse message: {exc}", location)


def _dispatch(message: Message, header: Header, sender: str) -> Outcome:
    # Looked up at call time in the one ROUTES dict that ris.hl7 re-exports, so
    # routes registered (or monkeypatched) there after import are seen.
    route = ROUTES.get(header.message_type)
    if route is None:
        return Outcome("AR", "200", f"Message type {header.message_type} is not supported", "MSH-9")
    try:
        route(message)
    except HL7Error as exc:
        text = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
        return Outcome(exc.ack_code, exc.code, text, exc.field)
    except Exception:
        logger.exception(
            "HL7 %s control_id=%r from %s: route failed",
            header.message_type,
            header.control_id,
            sender,
        )
        return Outcome("AR", "207", "Internal error while processing the message")
    return ACCEPTED
