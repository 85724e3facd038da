"""Worklist answers streamed as bytes (ris.dimse_stream) against real peers: hundreds of
items, some longer than a small maximum PDU, arrive intact and in order at DCMTK findscu
and at pynetdicom, in implicit and explicit VR; other transfer syntaxes still get the
pydicom path; C-CANCEL stops the stream. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import subprocess
import time as clock
from collections.abc import Callable
from datetime import time, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import ModalityWorklistInformationFind

import worklist.mwl
from ris.db import sessions
from tests.factories import FrontDesk, at
from tests.ris.test_dicom_encode import normalized
from tests.worklist.test_mwl_findscu import (  # noqa: F401 - open_worklist is a fixture
    RETURN_KEYS,
    SPS,
    STEP_KEYS,
    Worklist,
    open_worklist,
)
from worklist.mwl import WorklistOptions, find_worklist_items, plan_worklist_query

ITEMS = 320  # a day of a busy room, and far more than one query's worth of PDUs
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
BIG_ENDIAN, DEFLATED = "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
FAMILIES = ["Peña Núñez", "Dupont-Lefèvre", "Gonçalves", "Ibáñez", "Lœwy", "Øster", "Doe"]


@pytest.fixture
def busy(open_worklist: Callable[..., Worklist]) -> Worklist:  # noqa: F811
    """The department plus a US room open all day with ITEMS exams on its first day, one a
    minute; every 16th patient with alerts long enough to need several PDUs of 4096 bytes."""
    mwl = open_worklist()
    desk = FrontDesk(mwl.app)
    with sessions(mwl.app)() as db:
        room = desk.room(db, "US1", "US", opens_at=time(0), closes_at=time(0))  # all day
        code = desk.code(db, "76700", "US", minutes=1, rooms=["US1"])
        patients = []
        for n in range(32):
            alerts = "\n".join(f"Alerta {n}.{line}: válvula cardíaca" for line in range(150))
            family, long_alerts = FAMILIES[n % len(FAMILIES)], alerts if n % 16 == 5 else None
            patients.append(desk.patient(db, family, f"Hélène{n}", medical_alerts=long_alerts))
        start = at(mwl.dept.day, 7)
        for n in range(ITEMS):
            desk.booked(db, room, code, start + timedelta(minutes=n), patient=patients[n % 32])
        db.commit()
    return mwl


def request() -> Dataset:
    """What findscu sends for the return keys of test_mwl_findscu, asking for US."""
    ds = Dataset()
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, [] if dictionary_VR(keyword) == "SQ" else None)
    item = Dataset()
    for keyword in STEP_KEYS:
        setattr(item, keyword, [] if dictionary_VR(keyword) == "SQ" else None)
    item.Modality = "US"
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def expected(mwl: Worklist) -> list[list[tuple[int, Any]]]:
    """The same query's items by the pydicom path, as they would arrive."""
    with sessions(mwl.app)() as db:
        query = plan_worklist_query(request(), WorklistOptions.of(mwl.app))
        items = list(find_worklist_items(db, query))
    return [normalized(_arrived(encode(item, True, True))) for item in items]


def _arrived(data: bytes) -> Dataset:
    dataset = decode(BytesIO(data), True, True)
    dataset.decode()
    return dataset


def findscu(mwl: Worklist, *options: str) -> tuple[list[Dataset], str]:
    out = mwl.folder / f"stream{mwl.runs}"
    mwl.runs += 1
    out.mkdir()
    keys = {key: "" for key in RETURN_KEYS} | {f"{SPS}.{k}": "" for k in STEP_KEYS}
    keys[f"{SPS}.Modality"] = "US"
    args = [mwl.findscu, "-W", "-v", *options, "-aet", "MODALITY", "-aec", "PLACA", "-X",
            "-od", str(out)]  # fmt: skip
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    args += ["127.0.0.1", str(mwl.door.address[1])]
    run = subprocess.run(args, capture_output=True, timeout=120, check=False)
    printed = (run.stdout + run.stderr).decode("latin-1")
    return [dcmread(path) for path in sorted(Path(out).glob("rsp*.dcm"))], printed


@pytest.mark.parametrize(
    "options",
    [(), ("--max-pdu", "4096"), ("-xe",), ("-xe", "--max-pdu", "4096")],
    ids=["implicit", "implicit-4096", "explicit", "explicit-4096"],
)
def test_findscu_gets_every_item_intact_and_in_order(
    busy: Worklist, options: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    wanted = expected(busy)
    assert len(wanted) == ITEMS
    caplog.set_level(logging.INFO, logger="worklist.mwl_scp")
    items, printed = findscu(busy, *options)
    assert "Final Find Response (Success)" in printed
    assert f"{ITEMS} items, streamed" in caplog.text
    assert [normalized(item) for item in items] == wanted
    long_items = [item for item in items if len(item.MedicalAlerts) == 150]
    assert long_items and str(long_items[0].PatientName).startswith("Øster^Hélène5")


def pynetdicom_find(
    mwl: Worklist, syntaxes: list[str], max_pdu: int, on_item: Callable[..., None] | None = None
) -> tuple[list[Dataset], list[int]]:
    scu = AE(ae_title="MODALITY")
    scu.maximum_pdu_size = max_pdu
    scu.add_requested_context(ModalityWorklistInformationFind, syntaxes)
    assoc = scu.associate(*mwl.door.address, ae_title="PLACA")
    assert assoc.is_established
    items, statuses = [], []
    try:
        for status, identifier in assoc.send_c_find(request(), ModalityWorklistInformationFind,
                                                    msg_id=9):  # fmt: skip
            statuses.append(int(status.Status))
            if identifier is not None:
                identifier.decode()
                items.append(identifier)
                if on_item:
                    on_item(assoc, len(items))
    finally:
        assoc.release()
    return items, statuses


@pytest.mark.parametrize(
    ("syntax", "max_pdu"),
    [
        (IMPLICIT, 16382),
        (IMPLICIT, 4096),
        (EXPLICIT, 4096),
        (EXPLICIT, 0),
        (BIG_ENDIAN, 4096),
        (DEFLATED, 4096),
    ],  # findscu cannot insist on these two: pynetdicom can  # fmt: skip
)
def test_pynetdicom_gets_every_item_intact_and_in_order(
    busy: Worklist, syntax: str, max_pdu: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worklist.mwl_scp")
    items, statuses = pynetdicom_find(busy, [syntax], max_pdu)
    path = "streamed" if syntax in (IMPLICIT, EXPLICIT) else f"through pydicom ({syntax})"
    assert f"{ITEMS} items, {path}" in caplog.text
    assert statuses == [0xFF00] * ITEMS + [0x0000]
    assert [normalized(item) for item in items] == expected(busy)


def test_c_cancel_stops_the_stream(busy: Worklist, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = worklist.mwl.answer

    def slow_answer(*args: Any) -> Any:
        clock.sleep(0.005)  # 1.6 s for the whole list: the C-CANCEL arrives well before
        return answer(*args)

    monkeypatch.setattr(worklist.mwl, "answer", slow_answer)

    def cancel_at_third(assoc: Any, count: int) -> None:
        if count == 3:
            assoc.send_c_cancel(9, query_model=ModalityWorklistInformationFind)

    items, statuses = pynetdicom_find(busy, [IMPLICIT], 4096, on_item=cancel_at_third)
    assert statuses[-1] == 0xFE00 and set(statuses[:-1]) == {0xFF00}
    assert 3 <= len(items) < ITEMS
    assert [normalized(item) for item in items] == expected(busy)[: len(items)]


def test_ignored_keys_give_pending_with_warning_on_every_streamed_item(busy: Worklist) -> None:
    scu = AE(ae_title="MODALITY")
    scu.add_requested_context(ModalityWorklistInformationFind, [EXPLICIT])
    assoc = scu.associate(*busy.door.address, ae_title="PLACA")
    assert assoc.is_established
    query = request()
    query.PatientWeight = "70"  # Placa does not match on it: 0xFF01 (PS3.4 C.4.1.1.4)
    try:
        answers = list(assoc.send_c_find(query, ModalityWorklistInformationFind))
    finally:
        assoc.release()
    assert [int(status.Status) for status, _ in answers] == [0xFF01] * ITEMS + [0x0000]
    assert all(item.PatientWeight is None for _, item in answers[:-1])  # answered, empty
