"""The DICOM door: one pynetdicom application entity for every DICOM service Placa offers.

Services live in their packages (``pacs.dicom``, ``worklist.dicom``); each lists
:class:`DicomService` entries, and this module assembles them on one AE title and port,
with the socket and timeout settings every association needs.

pynetdicom binds one handler per event (one for every C-FIND, one for every N-SET...),
whatever the SOP class. The door binds a dispatcher per event instead, which hands the
request to the service registered for its SOP class: the Modality Worklist and the
archive's Query/Retrieve both answer C-FIND, MPPS and Storage Commitment both use
N-services, without knowing of each other.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.events import Event, EventType
from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)

ACSE_TIMEOUT = 30
DIMSE_TIMEOUT = 60
NETWORK_TIMEOUT = 60
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.5.4 (refused: SOP Class not supported)

ServiceHandler = Callable[[Event, Flask], Any]
"""A service's handler: pynetdicom's event, and the application (database, settings)."""


@dataclass(frozen=True)
class DicomService:
    """The SOP classes a service answers and its handler for each DIMSE event."""

    sop_classes: tuple[str, ...]
    handlers: Mapping[EventType, ServiceHandler]
    # SCP/SCU role selection to accept for these classes (C-GET needs the requestor as SCP).
    scu_role: bool | None = None
    scp_role: bool | None = None
    # Transfer syntaxes accepted; None: pynetdicom's default (the three uncompressed ones).
    # Storage accepts compressed syntaxes too, since it stores datasets as received.
    transfer_syntaxes: tuple[str, ...] | None = None


AssociationHook = Callable[[Event, Flask], None]
"""Called on EVT_REQUESTED, before negotiation: may reject the association
(``event.assoc.acse.send_reject``), e.g. the archive's calling-AE whitelist."""


def set_nodelay(event: Event) -> None:
    """Disable Nagle on the association's socket (see ../shared/bench/BASELINE.md).

    pynetdicom never sets TCP_NODELAY; without it every small response waits for a
    delayed ACK (about 40 ms), which caps a store at a few dozen instances a second.
    """
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _log_association(event: Event) -> None:
    requestor = event.assoc.requestor
    logger.info(
        "Association %s from %s (%s:%s)",
        "accepted" if event.event == evt.EVT_ACCEPTED else "rejected",
        requestor.ae_title, requestor.address, requestor.port,
    )  # fmt: skip


def requested_sop_class(event: Event) -> str:
    """The SOP class a DIMSE request is for (N-SET/N-ACTION/N-GET name it "Requested")."""
    request = event.request
    uid = getattr(request, "AffectedSOPClassUID", None) or getattr(
        request, "RequestedSOPClassUID", None
    )
    return str(uid or "")


def _dispatcher(app: Flask, table: dict[str, ServiceHandler]) -> Callable[[Event], Any]:
    def dispatch(event: Event) -> Any:
        uid = requested_sop_class(event)
        handler = table.get(uid)
        if handler is None:
            logger.warning("%s for SOP class %s: no service", event.event.name, uid)
            return _refusal(event)
        return handler(event, app)

    return dispatch


def _refusal(event: Event) -> Any:
    if event.event in (evt.EVT_C_FIND, evt.EVT_C_GET, evt.EVT_C_MOVE):
        return iter([(SOP_CLASS_NOT_SUPPORTED, None)])
    if event.event in (evt.EVT_N_CREATE, evt.EVT_N_SET, evt.EVT_N_ACTION, evt.EVT_N_GET):
        return SOP_CLASS_NOT_SUPPORTED, None
    return SOP_CLASS_NOT_SUPPORTED


def _services() -> list[DicomService]:
    from pacs import dicom as pacs_dicom
    from worklist import dicom as worklist_dicom

    return [*pacs_dicom.SERVICES, *worklist_dicom.SERVICES]


def _association_hooks() -> list[AssociationHook]:
    from pacs import dicom as pacs_dicom

    return list(pacs_dicom.ASSOCIATION_HOOKS)


def _on_requested(app: Flask, hooks: list[AssociationHook]) -> Callable[[Event], None]:
    def requested(event: Event) -> None:
        for hook in hooks:
            if event.assoc.is_rejected or event.assoc.is_aborted:
                return
            hook(event, app)

    return requested


def build_ae(
    app: Flask, services: Iterable[DicomService] | None = None
) -> tuple[AE, list[tuple[Any, Any]]]:
    """The application entity with every service's presentation contexts and handlers."""
    # pynetdicom writes each C-FIND/C-MOVE request identifier to the log at INFO and formats
    # each response identifier for DEBUG even when DEBUG is off: patient names in the log,
    # and a quarter of the CPU of a worklist answer (bench/bench_worklist.py).
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    ae = AE(ae_title=app.config["AE_TITLE"])
    ae.maximum_pdu_size = app.config["DICOM_MAX_PDU"]
    ae.require_called_aet = True
    ae.acse_timeout, ae.dimse_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT
    ae.network_timeout = NETWORK_TIMEOUT
    # pynetdicom's default (10 at once) is a workstation's: a department's modalities,
    # viewers and archives together open more.
    ae.maximum_associations = 64
    tables: dict[EventType, dict[str, ServiceHandler]] = {}
    for service in _services() if services is None else services:
        for uid in service.sop_classes:
            syntaxes = list(service.transfer_syntaxes or DEFAULT_TRANSFER_SYNTAXES)
            ae.add_supported_context(
                uid, syntaxes, scu_role=service.scu_role, scp_role=service.scp_role
            )
            for event_type, handler in service.handlers.items():
                tables.setdefault(event_type, {})[uid] = handler
    handlers: list[tuple[Any, Any]] = [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_ACCEPTED, _log_association),
        (evt.EVT_REJECTED, _log_association),
        (evt.EVT_REQUESTED, _on_requested(app, _association_hooks())),
    ]
    handlers.extend((event_type, _dispatcher(app, table)) for event_type, table in tables.items())
    return ae, handlers


class DicomDoor:
    """The running DICOM listener."""

    name = "dicom"

    def __init__(self, app: Flask) -> None:
        ae, handlers = build_ae(app)
        address = (app.config["DICOM_HOST"], app.config["DICOM_PORT"])
        self.server: ThreadedAssociationServer = ae.start_server(
            address, block=False, evt_handlers=handlers
        )
        self.ae = ae
        logger.info("DICOM door: AE %s on %s:%s", ae.ae_title, *self.address)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def is_up(self) -> bool:
        return self.server.socket is not None and self.server.socket.fileno() != -1

    def stop(self) -> None:
        if self.is_up():
            self.ae.shutdown()  # shuts the server down and aborts open associations
