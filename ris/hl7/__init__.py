"""Placa's HL7 v2 side: inbound messages are decoded, split into segments and fields,
dispatched by message type, applied, logged and acknowledged.

Original-mode acknowledgements: ``AA`` when the route succeeds, ``AE`` for an
application error the sender should correct (:class:`HL7ApplicationError`, or a
service's ``PlacaError``), ``AR`` for messages we refuse: unsupported type,
unparsable, too large, or an internal failure (HL7 v2.5.1 section 2.9.2.2 allows
AR for receiver problems unrelated to content). A peer always gets an
acknowledgement.

Routes are registered in :data:`ROUTES` under ``"TYPE^EVENT"`` by the modules
that define them (imported here): a route is ``route(ctx, message) -> patient id
| None`` and runs in the transaction of ``ctx.db`` (:class:`Context`). The HL7
door (:mod:`ris.hl7_door`) hands each message to :func:`ris.hl7.log.process`,
which applies it once per (sender, control id), in one transaction, and keeps
it in the message log with its ACK.

Modules: :mod:`~ris.hl7.wire` (charsets, segments, the MSH header, escaping),
:mod:`~ris.hl7.ack` (building the ACK), :mod:`~ris.hl7.errors` (what routes
raise), :mod:`~ris.hl7.inbound` (decode, parse, dispatch, acknowledge),
:mod:`~ris.hl7.fields` (reading fields tolerantly), :mod:`~ris.hl7.log` (the
message log, idempotency, re-processing), :mod:`~ris.hl7.adt` (patients) and
:mod:`~ris.hl7.orders` (orders).
"""

# The route modules register themselves in ROUTES when imported.
from ris.hl7 import adt, orders
from ris.hl7.errors import HL7ApplicationError, HL7Error, HL7RejectError
from ris.hl7.inbound import ROUTES, Context, RouteHandler, handle_message, reject_oversize
from ris.hl7.wire import DEFAULT_VERSION

__all__ = [
    "DEFAULT_VERSION",
    "ROUTES",
    "Context",
    "HL7ApplicationError",
    "HL7Error",
    "HL7RejectError",
    "RouteHandler",
    "adt",
    "handle_message",
    "orders",
    "reject_oversize",
]
