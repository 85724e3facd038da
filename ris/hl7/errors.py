"""What a route raises to shape the acknowledgement, and the HL7 table 0357 texts."""

from __future__ import annotations

ERROR_TEXT = {  # HL7 table 0357, message error condition codes
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
