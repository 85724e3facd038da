"""The DICOM door's receive path: P-DATA read into one buffer, data sets hashed on arrival."""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from pacs import storage
from pacs.models import Instance
from ris.db import transaction
from ris.dicom_door import set_nodelay
from ris.dicom_receive import presentation_data_values
from tests.pacs.dicom_data import dataset_part, encode, make_dataset
from tests.pacs.running_door import Running, running_door


@pytest.fixture
def door(tmp_path: Path, database_url: str) -> Iterator[Running]:
    # Small PDUs: a 128 x 128 image arrives in a dozen P-DATA-TF PDUs.
    yield from running_door(tmp_path, database_url, DICOM_MAX_PDU=4096)


def _associate(door: Running, *contexts: str):
    scu = AE(ae_title="RECVTEST")
    for context in contexts:
        scu.add_requested_context(context, ExplicitVRLittleEndian)
    assoc = scu.associate(*door.address, ae_title="PLACA",
                          evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])  # fmt: skip
    assert assoc.is_established
    return assoc


def test_an_instance_in_many_pdus_is_stored_whole_and_hashed_on_arrival(
    door: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed_by_the_store_path: list[int] = []
    real_sha1 = hashlib.sha1

    def watched_sha1(data: bytes = b"") -> object:
        hashed_by_the_store_path.append(len(data))
        return real_sha1(data)

    monkeypatch.setattr(storage.hashlib, "sha1", watched_sha1)  # the module pacs.storage uses
    sent = [make_dataset(number=n, rows=128) for n in range(3)]
    assoc = _associate(door, CTImageStorage)
    statuses = [int(assoc.send_c_store(ds).Status) for ds in sent]
    assoc.release()
    assert statuses == [0, 0, 0]
    assert all(length < 1000 for length in hashed_by_the_store_path)  # UIDs only, no data set
    root = storage.archive_root(door.app.config["DATA_DIR"])
    with transaction(door.app) as db:
        stored = dict(db.execute(select(Instance.sop_instance_uid, Instance.sha1)).all())
        paths = dict(db.execute(select(Instance.sop_instance_uid, Instance.path)).all())
    for ds in sent:
        data = dataset_part(root / paths[ds.SOPInstanceUID])
        assert data == encode(ds)  # stored as received, every fragment in order
        assert stored[ds.SOPInstanceUID] == real_sha1(data).hexdigest()


def test_a_p_data_pdu_whose_items_do_not_add_up_aborts_the_association(door: Running) -> None:
    assoc = _associate(door, Verification)
    item = struct.pack(">LB", 50, 1) + b"\x03" + b"\0" * 10  # announces 50 bytes, holds 12
    assoc.dul.socket.send(struct.pack(">BBL", 0x04, 0, len(item)) + item)
    deadline = time.monotonic() + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.02)
    assert assoc.is_aborted
    fresh = _associate(door, Verification)  # the door itself is fine
    assert int(fresh.send_c_echo().Status) == 0
    fresh.release()


def test_presentation_data_values_are_views_of_the_pdu() -> None:
    body = bytearray(
        struct.pack(">LB", 4, 1) + b"\x01ab" + struct.pack(">LB", 3, 3) + b"\x02c"
    )  # two items: context 1 "\x01ab", context 3 "\x02c"
    values = presentation_data_values(body)
    assert values is not None
    assert [(context, bytes(data)) for context, data in values] == [(1, b"\x01ab"), (3, b"\x02c")]
    assert all(isinstance(data, memoryview) for _context, data in values)


@pytest.mark.parametrize(
    "body",
    [
        struct.pack(">LB", 9, 1) + b"\x01ab",  # an item longer than the PDU
        struct.pack(">LB", 1, 1),  # an item too short for its message control header
        struct.pack(">LB", 4, 1) + b"\x01ab" + b"\0\0",  # bytes left that are no item
        b"",  # no item at all
    ],
    ids=["overrun", "too-short", "trailing", "empty"],
)
def test_malformed_presentation_data_values_are_refused(body: bytes) -> None:
    assert presentation_data_values(bytearray(body)) is None


def _c_store_pdus(assoc, ds) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE-RQ for ``ds``, as pynetdicom would send them."""
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu import P_DATA_TF

    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 0x0002
    request.DataSet = BytesIO(encode(ds))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context_id = assoc.accepted_contexts[0].context_id
    pdus = []
    for primitive in message.encode_msg(context_id, 4096):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


def _instances(door: Running) -> int:
    with transaction(door.app) as db:
        return len(db.scalars(select(Instance.id)).all())


def _closed_by_the_door(assoc, within: float) -> bool:
    sock = assoc.dul.socket.socket
    sock.settimeout(within)
    try:
        while sock.recv(65536):  # an A-ABORT may come first, then the close
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset


def test_an_abort_in_the_middle_of_a_data_set_stores_nothing(door: Running) -> None:
    ds = make_dataset(rows=128)
    assoc = _associate(door, CTImageStorage)
    pdus = _c_store_pdus(assoc, ds)
    assert len(pdus) > 6
    assoc.dul.socket.socket.sendall(b"".join(pdus[: len(pdus) // 2]))
    assoc.dul.socket.socket.sendall(struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0))  # A-ABORT
    assert _closed_by_the_door(assoc, within=5)
    assert _instances(door) == 0
    fresh = _associate(door, CTImageStorage)  # the door itself is fine
    assert int(fresh.send_c_store(ds).Status) == 0
    fresh.release()
    assert _instances(door) == 1


def test_a_peer_silent_in_the_middle_of_a_data_set_is_cut_off(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A modality that stops sending mid-image (a cable pulled: no FIN, no RST) does not
    hold its association's threads: after the network timeout the door closes it."""
    from ris import dicom_door

    monkeypatch.setattr(dicom_door, "NETWORK_TIMEOUT", 1)
    for running in running_door(tmp_path, database_url, DICOM_MAX_PDU=4096):
        ds = make_dataset(rows=128)
        assoc = _associate(running, CTImageStorage)
        pdus = _c_store_pdus(assoc, ds)
        assoc.dul.socket.socket.sendall(b"".join(pdus[: len(pdus) // 2]))
        assert _closed_by_the_door(assoc, within=10)
        assert _instances(running) == 0
        fresh = _associate(running, CTImageStorage)
        assert int(fresh.send_c_store(ds).Status) == 0
        fresh.release()
