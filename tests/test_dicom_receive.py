"""The DICOM door's receive path: P-DATA read into one buffer, data sets hashed on arrival."""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Iterator
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
