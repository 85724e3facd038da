"""The DICOM door: one pynetdicom application entity for every DICOM service Placa offers.

Services live in their packages (``pacs.dicom``, later ``worklist.dicom``); this module
only assembles them on one AE title and port, with the socket and timeout settings that
every association needs.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from flask import Flask
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)

ACSE_TIMEOUT = 30
DIMSE_TIMEOUT = 60
NETWORK_TIMEOUT = 60


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


def build_ae(app: Flask) -> tuple[AE, list[tuple[Any, Any]]]:
    """The application entity with every service's presentation contexts and handlers."""
    from pacs import dicom as pacs_dicom

    ae = AE(ae_title=app.config["AE_TITLE"])
    ae.maximum_pdu_size = app.config["DICOM_MAX_PDU"]
    ae.require_called_aet = True
    ae.acse_timeout, ae.dimse_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT
    ae.network_timeout = NETWORK_TIMEOUT
    handlers: list[tuple[Any, Any]] = [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_ACCEPTED, _log_association),
        (evt.EVT_REJECTED, _log_association),
    ]
    for module in (pacs_dicom,):
        for uid in module.CONTEXTS:
            ae.add_supported_context(uid)
        handlers.extend(module.HANDLERS.items())
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
