"""Placa's HL7 v2 side: inbound messages are decoded, parsed with hl7apy,
dispatched by message type and acknowledged.

Original-mode acknowledgements: ``AA`` when the route succeeds, ``AE`` for an
application error the sender should correct (:class:`HL7ApplicationError`),
``AR`` for messages we refuse: unsupported type, unparsable, too large, or an
internal failure (HL7 v2.5.1 section 2.9.2.2 allows AR for receiver problems
unrelated to content). :func:`handle_message` never raises: a peer always gets
an acknowledgement.

Routes are registered in :data:`ROUTES` under ``"TYPE^EVENT"``. Wire it to the
transport with::

    MLLPServer(host, port, lambda raw, peer: handle_message(raw, sender=peer),
               on_oversize=lambda head, peer: reject_oversize(head, sender=peer))

Modules: :mod:`~ris.hl7.wire` (charsets, segments, the MSH header, escaping),
:mod:`~ris.hl7.ack` (building the ACK), :mod:`~ris.hl7.errors` (what routes
raise), :mod:`~ris.hl7.inbound` (decode, parse, dispatch, acknowledge).
"""

from ris.hl7.errors import HL7ApplicationError, HL7Error, HL7RejectError
from ris.hl7.inbound import ROUTES, RouteHandler, handle_message, reject_oversize
from ris.hl7.wire import DEFAULT_VERSION

__all__ = [
    "DEFAULT_VERSION",
    "ROUTES",
    "HL7ApplicationError",
    "HL7Error",
    "HL7RejectError",
    "RouteHandler",
    "handle_message",
    "reject_oversize",
]
