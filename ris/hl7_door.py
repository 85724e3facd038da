"""The HL7 door: Placa's MLLP listener handing each message to the message log.

Every message is applied (once) and logged by :mod:`ris.hl7.log` in the database of
``app``; the listener only frames and unframes.
"""

from __future__ import annotations

import logging
from functools import partial

from flask import Flask

from ris import hl7  # noqa: F401  (registers the routes)
from ris.hl7 import log
from ris.mllp import MLLPServer

logger = logging.getLogger(__name__)


class HL7Door:
    """The running MLLP listener."""

    name = "hl7"

    def __init__(self, app: Flask) -> None:
        config = app.config
        names = log.Names(config["HL7_APPLICATION"], config["HL7_FACILITY"])
        self.server = MLLPServer(
            config["HL7_HOST"],
            config["HL7_PORT"],
            partial(_handle, app, names=names),
            max_message_bytes=config["HL7_MAX_MESSAGE_BYTES"],
            max_connections=config["HL7_MAX_CONNECTIONS"],
            idle_timeout=config["HL7_IDLE_TIMEOUT"],
            on_oversize=partial(_reject_oversize, app, names=names),
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


def _handle(app: Flask, raw: bytes, peer: str, *, names: log.Names) -> bytes:
    return log.process(app, raw, peer, names)


def _reject_oversize(app: Flask, head: bytes, peer: str, *, names: log.Names) -> bytes:
    return log.process_oversize(app, head, peer, names)
