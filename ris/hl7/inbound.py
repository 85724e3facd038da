"""One inbound message: decode, check the header, split and check it, dispatch, acknowledge.

The steps are separate so that the door (:mod:`ris.hl7.log`) can put the database
around them: :func:`receive` (no database), :func:`apply` (the route, in the caller's
transaction), :func:`outcome_of` (an exception as the ACK reports it) and
:func:`acknowledge`. :func:`handle_message` chains them for callers without a message
log (the transport tests); routes then run in whatever :data:`ContextFactory` gives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from ris.audit import Actor
from ris.errors import Conflict, NotFound, PlacaError
from ris.hl7.ack import ACCEPTED, Outcome, build_ack, fallback_ack
from ris.hl7.errors import HL7Error
from ris.hl7.message import Message, ParseError, parse
from ris.hl7.wire import Header, decode, find_header, split_segments
from ris.site import Site

# One logger for the whole HL7 side, named as before the package split, so that
# logging configuration and log filters keep addressing "ris.hl7".
logger = logging.getLogger("ris.hl7")


@dataclass(frozen=True)
class Context:
    """What a route applies a message with."""

    db: Session  # the transaction the message is applied in (the door commits)
    actor: Actor  # Actor.hl7(sender, peer); the admin when a message is re-processed
    site: Site  # the application's site conventions (MRN issuer, patterns, zone...)
    sender: str  # MSH-3^MSH-4 of the message (namespace ids, see sender_of)
    version: str  # MSH-12 as sent ("2.3.1", "2.5.1")
    # What the sender should know although the message was applied (e.g. an order kept
    # unbooked); the message log keeps them with the message.
    warnings: list[str] = field(default_factory=list)


RouteHandler = Callable[[Context, Message], int | None]
"""Applies a parsed message and returns the id of the patient it concerned, if any.

Raises :class:`HL7Error` to shape the ACK; a :class:`PlacaError` from a service becomes
an AE carrying its message; anything else an AR 207 (logged). The caller rolls the
transaction back on any exception."""

ROUTES: dict[str, RouteHandler] = {}
"""``"TYPE^EVENT"`` (e.g. ``"ADT^A01"``) -> route. Routes receive a
:class:`ris.hl7.message.Message`: its segments in order, without groups, read with
:mod:`ris.hl7.fields`."""

OVERSIZE_TEXT = "Message exceeds the maximum accepted size"

ContextFactory = Callable[[Header], AbstractContextManager[Context]]
"""Opens the transaction a route runs in, for :func:`handle_message`."""

_PLACA_ERROR_CODES: tuple[tuple[type[PlacaError], str], ...] = (
    (NotFound, "204"),  # unknown key identifier
    (Conflict, "205"),  # duplicate key identifier
)


@dataclass(frozen=True)
class Received:
    """An inbound message after decoding and parsing, before any database work.

    Either ``message`` and ``route`` are set (the message can be applied) or ``rejection``
    is (what to answer instead: unparsable, unsupported, too large...).
    """

    header: Header
    text: str  # the decoded message, as the message log stores it
    codec: str  # to encode the answer in
    message: Message | None = None
    route: RouteHandler | None = None
    rejection: Outcome | None = None

    @property
    def sender(self) -> str:
        return sender_of(self.header)


def sender_of(header: Header) -> str:
    """``MSH-3^MSH-4`` by namespace id (HD.1, else HD.2), the key of idempotency."""
    return f"{_hd_name(header.sending_application)}^{_hd_name(header.sending_facility)}"


def _hd_name(hd: str) -> str:
    parts = hd.split("^")
    return (parts[0].strip() or (parts[1].strip() if len(parts) > 1 else "")).strip()


def handle_message(
    raw: bytes,
    *,
    sender: str,
    application: str = "PLACA",
    facility: str = "PLACA",
    context: ContextFactory | None = None,
) -> bytes:
    """Process one inbound message (MLLP framing removed) and return its ACK, encoded.

    ``sender`` is the peer address. Without ``context`` no route can run (there is no
    database): a routed message gets AR 207. The door uses :mod:`ris.hl7.log` instead.
    """
    header, codec = Header(), "ascii"
    try:
        received = receive(raw, sender)
        header, codec = received.header, received.codec
        outcome = received.rejection or _run(received, sender, context)
        log_outcome(header, sender, outcome)
        ack = acknowledge(header, outcome, application, facility)
    except Exception:
        # Last resort: the transport must always have a reply to send.
        logger.exception("HL7 from %s: cannot process or acknowledge message", sender)
        ack = fallback_ack(header, application, facility)
    return ack.encode(codec, errors="replace")


def _run(received: Received, peer: str, context: ContextFactory | None) -> Outcome:
    if context is None:
        logger.error("HL7 from %s: no database to apply %s", peer, received.header.message_type)
        return Outcome("AR", "207", "Internal error while processing the message")
    try:
        with context(received.header) as ctx:
            apply(received, ctx)
    except Exception as exc:
        return outcome_of(exc, received.header, peer)
    return ACCEPTED


def reject_oversize(
    head: bytes, *, sender: str, application: str = "PLACA", facility: str = "PLACA"
) -> bytes:
    """Build the AR for a message the transport discarded as too large.

    ``head`` is the start of that message; only complete segments in it are
    trusted, to quote the inbound control id and applications.
    """
    header, codec = Header(), "ascii"
    try:
        received = receive_oversize(head, sender)
        header, codec = received.header, received.codec
        assert received.rejection is not None
        ack = acknowledge(header, received.rejection, application, facility)
    except Exception:
        logger.exception("HL7 from %s: cannot acknowledge an oversize message", sender)
        ack = fallback_ack(header, application, facility)
    return ack.encode(codec, errors="replace")


def receive(raw: bytes, peer: str) -> Received:
    """Decode and parse; never raises (an internal failure becomes an AR 207 rejection)."""
    text, codec = decode(raw)
    return receive_text(text, codec, peer)


def receive_text(text: str, codec: str, peer: str) -> Received:
    """:func:`receive` for text already decoded (a stored message being re-processed)."""
    header = Header()
    try:
        segments = split_segments(text)
        found = find_header(segments)
        if found is None:
            logger.warning(
                "HL7 from %s: no MSH segment (%d characters), rejecting", peer, len(text)
            )
            rejection = Outcome("AR", "100", "No MSH segment found: not an HL7 v2 message")
            return Received(header, text, codec, rejection=rejection)
        header, msh_index = found
        # DEBUG: the outcome line (log_outcome) says the same at INFO, once per message.
        logger.debug(
            "HL7 received %s control_id=%r version=%r from %s",
            header.message_type or "?",
            header.control_id,
            header.version,
            peer,
        )
        rejection = _precheck(header, msh_index)
        if rejection is not None:
            return Received(header, text, codec, rejection=rejection)
        return _parse_and_route(segments, header, text, codec, peer)
    except Exception:
        logger.exception("HL7 from %s: cannot read message", peer)
        rejection = Outcome("AR", "207", "Internal error while processing the message")
        return Received(header, text, codec, rejection=rejection)


def receive_oversize(head: bytes, peer: str) -> Received:
    """The rejection of a message the transport discarded as too large (``head`` is its start)."""
    text, codec = decode(head)
    # The head ends mid-message: drop its last, possibly truncated, segment.
    complete = text[: max(text.rfind("\r"), text.rfind("\n"), 0)]
    found = find_header(split_segments(complete))
    header = found[0] if found else Header()
    logger.warning(
        "HL7 %s control_id=%r from %s: message too large, rejecting",
        header.message_type or "?",
        header.control_id,
        peer,
    )
    rejection = Outcome("AR", "207", OVERSIZE_TEXT)
    return Received(header, text, codec, rejection=rejection)


def apply(received: Received, ctx: Context) -> int | None:
    """Run the message's route in ``ctx``; exceptions propagate (the caller rolls back)."""
    assert received.route is not None and received.message is not None
    return received.route(ctx, received.message)


def outcome_of(exc: BaseException, header: Header, peer: str) -> Outcome:
    """What the ACK says about an exception raised while applying a message."""
    if isinstance(exc, HL7Error):
        text = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
        return Outcome(exc.ack_code, exc.code, text, exc.field)
    if isinstance(exc, PlacaError):
        code = next((code for kind, code in _PLACA_ERROR_CODES if isinstance(exc, kind)), "207")
        return Outcome("AE", code, exc.message)
    logger.error(
        "HL7 %s control_id=%r from %s: route failed",
        header.message_type,
        header.control_id,
        peer,
        exc_info=exc,
    )
    return Outcome("AR", "207", "Internal error while processing the message")


def acknowledge(header: Header, outcome: Outcome, application: str, facility: str) -> str:
    """The ACK text; a fixed AR if building it fails."""
    try:
        return build_ack(header, outcome, application, facility)
    except Exception:
        logger.exception("HL7 control_id=%r: cannot build the acknowledgement", header.control_id)
        return fallback_ack(header, application, facility)


def log_outcome(header: Header, peer: str, outcome: Outcome) -> None:
    logger.info(
        "HL7 %s control_id=%r from %s: %s%s",
        header.message_type or "?",
        header.control_id,
        peer,
        outcome.ack_code,
        f" {outcome.error_code} {outcome.text}" if outcome.error_code else "",
    )


def _precheck(header: Header, msh_index: int) -> Outcome | None:
    if msh_index != 0:
        return Outcome("AR", "100", "MSH must be the first segment", "MSH")
    if not header.message_type:
        return Outcome("AR", "101", "Message type (MSH-9) is missing", "MSH-9")
    return None


def _parse_and_route(
    segments: list[str], header: Header, text: str, codec: str, peer: str
) -> Received:
    try:
        message = parse(segments, header.version)
    except ParseError as exc:
        logger.warning(
            "HL7 %s control_id=%r from %s: cannot parse: %s",
            header.message_type,
            header.control_id,
            peer,
            exc.text,
        )
        rejection = Outcome("AR", exc.code, f"Cannot parse message: {exc.text}", exc.location)
        return Received(header, text, codec, rejection=rejection)
    # Looked up at call time in the one ROUTES dict that ris.hl7 re-exports, so
    # routes registered (or monkeypatched) there after import are seen.
    route = ROUTES.get(header.message_type)
    if route is None:
        rejection = Outcome(
            "AR", "200", f"Message type {header.message_type} is not supported", "MSH-9"
        )
        return Received(header, text, codec, rejection=rejection)
    return Received(header, text, codec, message=message, route=route)
