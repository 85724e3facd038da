"""Pending C-FIND responses sent as bytes, beside pynetdicom's own DIMSE path.

pynetdicom sends each response by building its command set as a pydicom Dataset,
encoding it and the identifier with pydicom, and queueing one P-DATA for the command and
one for the identifier: for a worklist of 160 items that is most of the answer's time
(bench/README.md). A C-FIND handler that answers many items can instead stream its
Pending responses with :class:`PendingResponses`: the command set comes from a template
encoded once per request (PS3.7 9.3.2.2, implicit VR little endian as every command set,
PS3.7 6.3.1), the identifier from ris.dicom_encode, and each message goes to the peer as
one P-DATA holding its command PDV then its data set PDV (PS3.8 E.1: the PDVs of one
P-DATA belong to one message; a message longer than the peer's maximum PDU length is cut
into even-length fragments over several). The P-DATAs go on pynetdicom's own queue
(``dul.send_pdu``), so the final response the handler then yields to pynetdicom follows
them in order.

Only implicit and explicit VR little endian are encoded here; for any other transfer
syntax :meth:`PendingResponses.open` returns None and the handler yields Datasets to
pynetdicom as usual.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA

from ris.dicom_encode import Element, encode_dataset

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR = {IMPLICIT_VR_LITTLE_ENDIAN: False, EXPLICIT_VR_LITTLE_ENDIAN: True}
C_FIND_RSP = 0x8020
DATA_SET_PRESENT = 0x0001  # anything but 0x0101 (PS3.7 E.1); what pynetdicom sends
MINIMUM_PDU = 256
PDV_OVERHEAD = 6  # item length (4), presentation context ID (1), message control header (1)
# Message control header (PS3.8 E.2): bit 0 command (else data set), bit 1 last fragment.
DATA, DATA_LAST, COMMAND, COMMAND_LAST = 0x00, 0x02, 0x01, 0x03
PDV = list[Any]  # [presentation context ID, header + fragment]: the list pynetdicom checks for


def find_response_command(sop_class_uid: str, message_id: int, status: int) -> bytes:
    """A C-FIND-RSP command set with an identifier (PS3.7 9.3.2.2), implicit VR LE."""
    body = encode_dataset(
        [
            Element(0x00000002, "UI", sop_class_uid),  # Affected SOP Class UID
            Element(0x00000100, "US", C_FIND_RSP),  # Command Field
            Element(0x00000120, "US", message_id),  # Message ID Being Responded To
            Element(0x00000800, "US", DATA_SET_PRESENT),  # Command Data Set Type
            Element(0x00000900, "US", status),  # Status
        ],
        explicit_vr=False,
        charset="",
    )
    group_length = struct.pack("<HHII", 0x0000, 0x0000, 4, len(body))  # (0000,0000) UL
    return group_length + body


def message_pdvs(
    context_id: int, command: bytes, data_set: bytes, max_length: int
) -> list[list[PDV]]:
    """One message as the PDV lists of its P-DATAs: within ``max_length`` (the peer's
    maximum PDU length; 0 means no limit), fragments of even length (PS3.8 E.1)."""
    if 0 < max_length < PDV_OVERHEAD + 2:
        raise ValueError(f"a maximum PDU length of {max_length} holds no fragment")
    pdata_lists: list[list[PDV]] = []
    current: list[PDV] = []
    room = max_length or None  # bytes left in the current P-DATA's PDV list
    for more, last, data in ((COMMAND, COMMAND_LAST, command), (DATA, DATA_LAST, data_set)):
        position = 0
        while True:
            if room is None:
                size = len(data) - position
            else:
                size = min(len(data) - position, (room - PDV_OVERHEAD) & ~1)
                if size <= 0:  # no room for a fragment: the next P-DATA
                    pdata_lists.append(current)
                    current, room = [], max_length
                    continue
            fragment = data[position : position + size]
            position += size
            done = position >= len(data)
            current.append([context_id, bytes((last if done else more,)) + fragment])
            if room is not None:
                room -= PDV_OVERHEAD + size
            if done:
                break
            pdata_lists.append(current)
            current, room = [], max_length
    pdata_lists.append(current)
    return pdata_lists


@dataclass
class PendingResponses:
    """Sends one C-FIND request's Pending responses on pynetdicom's queue."""

    event: Event
    context_id: int
    explicit_vr: bool
    command: bytes
    max_length: int
    sent: int = 0

    @classmethod
    def open(cls, event: Event, status: int) -> PendingResponses | None:
        """For a request on an implicit or explicit VR little endian context; else None."""
        context = event.context
        explicit_vr = EXPLICIT_VR.get(str(context.transfer_syntax))
        if explicit_vr is None:
            return None
        request: Any = event.request
        command = find_response_command(
            str(request.AffectedSOPClassUID), int(request.MessageID), status
        )
        max_length = int(event.assoc.dimse.maximum_pdu_size or 0)  # the peer's, to send
        if 0 < max_length < MINIMUM_PDU:
            return None  # not a real peer's; pynetdicom copes with it
        return cls(event, int(context.context_id), explicit_vr, command, max_length)

    def send(self, elements: Sequence[Element], charset: str) -> bool:
        """Queue one Pending response with this identifier; False if the association is
        gone. Raises ris.dicom_encode.EncodeError for a value not encoded here."""
        data_set = encode_dataset(elements, explicit_vr=self.explicit_vr, charset=charset)
        assoc = self.event.assoc
        if not assoc.is_established:
            return False
        for pdvs in message_pdvs(self.context_id, self.command, data_set, self.max_length):
            primitive = P_DATA()
            primitive.presentation_data_value_list = pdvs
            assoc.dul.send_pdu(primitive)
        self.sent += 1
        if self.sent == 1:
            # Let pynetdicom's DUL thread send the first answer now: this thread, busy
            # building the next ones, would otherwise keep the GIL for a switch interval
            # (5 ms). Only the first: yielding after each one costs more than it saves.
            time.sleep(0)
        return True
