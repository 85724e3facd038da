"""The HL7 door: Placa's MLLP listener handing each message to ``ris.hl7``."""

from __future__ import annotations

import logging
from functools import partial

from flask import Flask

from ris import hl7
from ris.mllp import MLLPServer

logger = logging.getLogger(__name__)


class HL7Door:
    """The running MLLP listener."""

    name = "hl7"

    def __init__(self, app: Flask) -> None:
        config = app.config
        names = {"application": config["HL7_APPLICATION"], "facility": config["HL7_FACILITY"]}
        self.server = MLLPServer(
            config["HL7_HOST"],
            config["HL7_PORT"],
            partial(_handle, **names),
            max_message_bytes=config["HL7_MAX_MESSAGE_BYTES"],
            max_connections=config["HL7_MAX_CONNECTIONS"],
            idle_timeout=config["HL7_IDLE_TIMEOUT"],
            on_oversize=partial(_reject_oversize, **names),
        )
        self.server.start()
        self._up = True
        logger.info("HL7 door: MLLP on %s:%s", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def is_up(self) -> bool:
        return self._up

    def stop(self) -> None:
        self._up = False
        self.server.shutdown()


def _handle(raw: bytes, peer: str, *, application: str, facility: str) -> bytes:
    return hl7.handle_message(raw, sender=peer, application=application, facility=facility)


def _reject_oversize(head: bytes, peer: str, *, application: str, facility: str) -> bytes:
    return hl7.reject_oversize(head, sender=peer, application=application, facility=facility)
