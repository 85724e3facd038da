"""Storage commitment (IHE RAD-10): a pynetdicom modality stores, asks, and is answered.

DCMTK has no storage commitment SCU, so pynetdicom is the peer: it stores instances through
the DICOM door (the real store path), sends the N-ACTION and receives the N-EVENT-REPORT on
the same association, or on a new one to its own listener registered with ``ae add``.
Both backends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, StorageCommitmentPushModel
from sqlalchemy import select, update

from pacs import commitment, remote_aes
from pacs.commitment import WELL_KNOWN_INSTANCE, CommitmentRequest, Reference
from pacs.commitment_scp import send_due_reports
from pacs.jobs import JOBS
from pacs.models import CommitmentState, Instance, StorageCommitment
from pacs.storage import archive_root
from ris.audit import Actor
from ris.db import transaction, utcnow
from ris.dicom_door import set_nodelay
from ris.models import AuditEvent
from ris.scheduler import run_job
from tests.conftest import build_app, free_port
from tests.pacs.dicom_data import make_dataset, new_uid
from tests.pacs.running_door import Running, running_door

WAIT = 30.0  # seconds a test waits for a report before it fails
MODALITY = "CT01"


@pytest.fixture
def door(tmp_path: Path, database_url: str) -> Iterator[Running]:
    yield from running_door(tmp_path / "placa", database_url)


@pytest.fixture
def new_association_door(tmp_path: Path, database_url: str) -> Iterator[Running]:
    yield from running_door(tmp_path / "placa", database_url, COMMITMENT_NEW_ASSOCIATION=True)


@dataclass
class Reports:
    """N-EVENT-REPORTs a peer received, with the role it was given for each."""

    received: list[tuple[int, Dataset, bool]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def handler(self, event: Event) -> tuple[int, None]:
        [context] = [cx for cx in event.assoc.accepted_contexts
                     if cx.context_id == event.context.context_id]  # fmt: skip
        self.received.append((int(event.event_type or 0), event.event_information,
                              bool(context.as_scu)))  # fmt: skip
        self.arrived.set()
        return 0x0000, None

    def one(self) -> tuple[int, Dataset]:
        assert self.arrived.wait(WAIT), "no N-EVENT-REPORT arrived"
        [(event_type, info, _role)] = self.received
        return event_type, info


def modality(door: Running, reports: Reports | None = None) -> Association:
    """An association as a modality opens it: storage, then commitment on the same one."""
    ae = AE(ae_title=MODALITY)
    for sop_class in (CTImageStorage, MRImageStorage, StorageCommitmentPushModel):
        ae.add_requested_context(sop_class)
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, set_nodelay)]
    if reports is not None:
        handlers.append((evt.EVT_N_EVENT_REPORT, reports.handler))
    assoc = ae.associate(*door.address, ae_title="PLACA", evt_handlers=handlers)
    assert assoc.is_established
    return assoc


def store(assoc: Association, count: int) -> list[Dataset]:
    study = new_uid()
    sent = [make_dataset(study=study, number=n) for n in range(count)]
    for ds in sent:
        assert int(assoc.send_c_store(ds).Status) == 0x0000
    return sent


BAD_UID = b"../not-a-uid"


def request(transaction_uid: str | bytes, references: list[tuple[str, str | bytes]]) -> Dataset:
    """Action Information; an empty Transaction UID or reference list is left out."""
    info = Dataset()
    if isinstance(transaction_uid, bytes):  # as a careless peer sends it, unchecked
        tag = Tag("TransactionUID")
        info[tag] = RawDataElement(tag, "UI", len(transaction_uid), transaction_uid, 0,
                                   False, True)  # fmt: skip
    elif transaction_uid:
        info.TransactionUID = transaction_uid
    if references:
        info.ReferencedSOPSequence = [_item(sop_class, uid) for sop_class, uid in references]
    return info


def _item(sop_class: str, uid: str | bytes) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    if isinstance(uid, bytes):  # unchecked, as a careless peer sends it
        tag = Tag("ReferencedSOPInstanceUID")
        item[tag] = RawDataElement(tag, "UI", len(uid), uid, 0, False, True)
    else:
        item.ReferencedSOPInstanceUID = uid
    return item


def ask(assoc: Association, info: Dataset, action_type: int = 1) -> Dataset:
    status, _reply = assoc.send_n_action(info, action_type, StorageCommitmentPushModel,
                                         WELL_KNOWN_INSTANCE)  # fmt: skip
    return status


def referenced(info: Dataset) -> set[tuple[str, str]]:
    return {(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
            for item in info.get("ReferencedSOPSequence", [])}  # fmt: skip


def failed(info: Dataset) -> dict[str, int]:
    return {str(item.ReferencedSOPInstanceUID): int(item.FailureReason)
            for item in info.get("FailedSOPSequence", [])}  # fmt: skip


def kept(app: Flask) -> list[StorageCommitment]:
    with transaction(app) as db:
        return list(db.scalars(select(StorageCommitment).order_by(StorageCommitment.id)))


def wait_for(app: Flask, check: Any) -> list[StorageCommitment]:
    """Poll the kept requests until ``check`` holds (the report thread works on its own)."""
    stop = threading.Event()
    for _ in range(int(WAIT / 0.05)):
        rows = kept(app)
        if check(rows):
            return rows
        stop.wait(0.05)
    raise AssertionError(f"never reached: {[(r.state, r.attempts) for r in kept(app)]}")


@pytest.fixture
def listener() -> Iterator[tuple[int, Reports, Any]]:
    """The modality's own SCU-role listener: started on demand, on a port fixed up front."""
    port, reports, servers = free_port(), Reports(), []

    def start() -> None:
        ae = AE(ae_title=MODALITY)
        # Accept Placa's role proposal: Placa (the requestor) is the SCP, this AE the SCU.
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        servers.append(ae.start_server(("127.0.0.1", port), block=False,
                                       evt_handlers=[(evt.EVT_N_EVENT_REPORT,
                                                      reports.handler)]))  # fmt: skip

    yield port, reports, start
    for server in servers:
        server.shutdown()


def register(app: Flask, port: int) -> None:
    with transaction(app) as db:
        remote_aes.add_remote_ae(db, Actor.system("test"), MODALITY, "127.0.0.1", port)


# ---------------------------------------------------------------------------------- tests


def test_report_on_the_same_association_with_present_unknown_and_mismatched_instances(
    door: Running,
) -> None:
    reports = Reports()
    assoc = modality(door, reports)
    present = store(assoc, 4)
    # One stored instance whose file has gone: indexed, yet not safely kept.
    with transaction(door.app) as db:
        lost_path = db.scalar(select(Instance.path).where(
            Instance.sop_instance_uid == present[3].SOPInstanceUID))  # fmt: skip
    (archive_root(door.app.config["DATA_DIR"]) / str(lost_path)).unlink()
    unknown, mismatched, lost = new_uid(), present[2].SOPInstanceUID, present[3].SOPInstanceUID
    transaction_uid = new_uid()
    status = ask(assoc, request(transaction_uid, [
        *((CTImageStorage, ds.SOPInstanceUID) for ds in present[:2]),
        (CTImageStorage, unknown), (MRImageStorage, mismatched), (CTImageStorage, lost),
    ]))  # fmt: skip
    assert int(status.Status) == 0x0000
    event_type, info = reports.one()
    assoc.release()

    assert event_type == 2  # some failures
    assert info.TransactionUID == transaction_uid
    assert info.RetrieveAETitle == "PLACA"
    assert referenced(info) == {(CTImageStorage, ds.SOPInstanceUID) for ds in present[:2]}
    assert failed(info) == {unknown: 0x0112, mismatched: 0x0119, lost: 0x0110}
    [row] = wait_for(door.app, lambda rows: rows and rows[0].state == CommitmentState.REPORTED)
    assert (row.calling_ae, row.attempts, row.transaction_uid) == (MODALITY, 1, transaction_uid)
    with transaction(door.app) as db:
        actions = db.scalars(select(AuditEvent.action).where(
            AuditEvent.object_id == transaction_uid).order_by(AuditEvent.id)).all()  # fmt: skip
    assert actions == ["storage_commitment.request", "storage_commitment.report"]


def test_all_committed_is_event_type_1_on_the_same_association(door: Running) -> None:
    reports = Reports()
    assoc = modality(door, reports)
    present = store(assoc, 3)
    status = ask(assoc, request(new_uid(), [(CTImageStorage, ds.SOPInstanceUID)
                                            for ds in present]))  # fmt: skip
    assert int(status.Status) == 0x0000
    event_type, info = reports.one()
    assoc.release()
    assert event_type == 1
    assert referenced(info) == {(CTImageStorage, ds.SOPInstanceUID) for ds in present}
    assert "FailedSOPSequence" not in info


def test_report_on_a_new_association_with_placa_as_scp(
    new_association_door: Running, listener: tuple[int, Reports, Any]
) -> None:
    port, reports, start = listener
    register(new_association_door.app, port)
    start()
    assoc = modality(new_association_door)  # no report handler: it must not come here
    present = store(assoc, 2)
    transaction_uid = new_uid()
    status = ask(assoc, request(transaction_uid, [
        (CTImageStorage, present[0].SOPInstanceUID), (CTImageStorage, new_uid()),
    ]))  # fmt: skip
    assert int(status.Status) == 0x0000
    assoc.release()
    event_type, info = reports.one()
    assert event_type == 2 and info.TransactionUID == transaction_uid
    assert referenced(info) == {(CTImageStorage, present[0].SOPInstanceUID)}
    assert list(failed(info).values()) == [0x0112]
    [(_type, _info, listener_is_scu)] = reports.received
    assert listener_is_scu  # role selection: the listener took the SCU role, Placa the SCP
    [row] = wait_for(new_association_door.app,
                     lambda rows: rows and rows[0].state == CommitmentState.REPORTED)  # fmt: skip
    assert row.attempts == 1


def test_a_requestor_that_releases_at_once_gets_its_report_on_a_new_association(
    door: Running, listener: tuple[int, Reports, Any]
) -> None:
    port, reports, start = listener
    register(door.app, port)
    start()
    assoc = modality(door)  # releases as soon as the N-ACTION is answered, as many do
    present = store(assoc, 1)
    transaction_uid = new_uid()
    ask(assoc, request(transaction_uid, [(CTImageStorage, present[0].SOPInstanceUID)]))
    assoc.release()
    assert assoc.is_released
    event_type, info = reports.one()
    assert event_type == 1 and info.TransactionUID == transaction_uid
    [row] = wait_for(door.app, lambda rows: rows and rows[0].state == CommitmentState.REPORTED)
    assert row.attempts == 1


def test_a_report_for_an_unregistered_requestor_waits_for_its_registration(
    door: Running,
) -> None:
    assoc = modality(door)
    present = store(assoc, 1)
    ask(assoc, request(new_uid(), [(CTImageStorage, present[0].SOPInstanceUID)]))
    assoc.release()
    [row] = wait_for(door.app, lambda rows: rows and rows[0].attempts == 1)
    assert row.state == CommitmentState.PENDING
    assert f"requestor AE {MODALITY} is not registered" in str(row.last_error)


def test_a_requestor_that_releases_instead_of_answering_gets_the_report_again(
    door: Running, listener: tuple[int, Reports, Any]
) -> None:
    """The report reached the requestor's association, which released without answering
    it: Placa stops waiting at once, and sends it again on a new association."""
    port, reports, start = listener
    register(door.app, port)
    start()
    arrived, released = threading.Event(), threading.Event()

    def unanswered(_event: Event) -> tuple[int, None]:
        arrived.set()
        released.wait(WAIT)
        return 0x0000, None

    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(*door.address, ae_title="PLACA",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, unanswered)])  # fmt: skip
    present = store(assoc, 1)
    ask(assoc, request(new_uid(), [(CTImageStorage, present[0].SOPInstanceUID)]))
    assert arrived.wait(WAIT)
    assoc.release()
    released.set()
    assert assoc.is_released
    event_type, _info = reports.one()
    assert event_type == 1
    [row] = wait_for(door.app, lambda rows: rows and rows[0].state == CommitmentState.REPORTED)
    assert row.attempts == 1


@pytest.mark.parametrize(
    ("info", "action_type", "status_code", "comment"),
    [
        (request("", [(CTImageStorage, "1.2.3")]), 1, 0x0115, "TransactionUID missing"),
        (request("1.2.3", []), 1, 0x0115, "ReferencedSOPSequence missing or empty"),
        pytest.param(
            request(BAD_UID, [(CTImageStorage, "1.2.3")]),
            1,
            0x0115,
            "not a UID",
            # pydicom, encoding it on the peer's side, warns about the value: it is meant.
            marks=pytest.mark.filterwarnings("ignore:Invalid value for VR UI"),
        ),  # fmt: skip
        (request("1.2.3", [("", "1.2.3")]), 1, 0x0115, "item 1 lacks a UID"),
        pytest.param(
            request("1.2.3", [(CTImageStorage, "1.2.3"), (CTImageStorage, b"1.02.x")]),
            1,
            0x0115,
            "item 2: invalid UID",
            marks=pytest.mark.filterwarnings("ignore:Invalid value for VR UI"),
        ),  # fmt: skip
        (request("1.2.3", [(CTImageStorage, "1.2.3")]), 2, 0x0123, "Action Type 2 is not 1"),
    ],
    ids=[
        "no-transaction",
        "no-references",
        "bad-transaction",
        "no-item-uid",
        "bad-item-uid",
        "action-type",
    ],  # fmt: skip
)
def test_a_malformed_n_action_is_refused_and_leaves_nothing(
    door: Running, info: Dataset, action_type: int, status_code: int, comment: str
) -> None:
    reports = Reports()
    assoc = modality(door, reports)
    status = ask(assoc, info, action_type)
    assoc.release()
    assert int(status.Status) == status_code
    assert comment in str(status.ErrorComment)
    assert kept(door.app) == []
    assert reports.received == []


# pynetdicom 3.0.4 drops the socket of a refused connection without closing it
# (transport.AssociationSocket.connect: shutdown() of an unconnected socket raises, close()
# is skipped); the garbage collector closes it, with a ResourceWarning.
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_an_undelivered_report_is_kept_and_retried_after_a_restart(
    new_association_door: Running, listener: tuple[int, Reports, Any], tmp_path: Path,
    database_url: str,
) -> None:  # fmt: skip
    port, reports, start = listener
    register(new_association_door.app, port)  # registered, but not listening yet
    assoc = modality(new_association_door)
    present = store(assoc, 2)
    transaction_uid = new_uid()
    ask(assoc, request(transaction_uid, [(CTImageStorage, ds.SOPInstanceUID) for ds in present]))
    assoc.release()
    [row] = wait_for(new_association_door.app, lambda rows: rows and rows[0].attempts == 1)
    assert row.state == CommitmentState.PENDING and row.last_error
    assert row.next_attempt_at is not None and row.next_attempt_at > row.created_at
    new_association_door.door.stop()

    # A restart: a new process on the same database, once the back-off has elapsed.
    app = build_app(tmp_path / "placa", database_url)
    try:
        with transaction(app) as db:
            db.execute(update(StorageCommitment).values(next_attempt_at=utcnow()))
        start()
        [job] = [job for job_id, job, _trigger in JOBS if job_id == "storage-commitment-reports"]
        run_job(app, "storage-commitment-reports", job)  # as the scheduler door runs it
        event_type, info = reports.one()
        assert event_type == 1 and info.TransactionUID == transaction_uid
        [row] = kept(app)
        assert (row.state, row.attempts, row.last_error) == (CommitmentState.REPORTED, 2, None)
        assert send_due_reports(app) == 0  # delivered once, never again
        assert len(reports.received) == 1
    finally:
        app.extensions["placa.engine"].dispose()


def test_a_report_never_delivered_is_given_up_after_the_last_attempt(app: Flask) -> None:
    archive = archive_root(app.config["DATA_DIR"])
    with transaction(app) as db:
        actor = Actor.dicom(MODALITY, "127.0.0.1")
        request_ = CommitmentRequest(new_uid(), (Reference(CTImageStorage, new_uid()),))
        commitment_id = commitment.record_request(db, actor, request_, archive).id
    delays = []
    for attempt in range(1, commitment.MAX_ATTEMPTS + 1):
        with transaction(app) as db:
            now = utcnow()
            row = commitment.report_undelivered(db, commitment_id, "connection refused", now)
            delays.append(row.next_attempt_at - now if row.next_attempt_at else None)
            assert row.attempts == attempt
    assert delays[:4] == [timedelta(seconds=s) for s in (10, 20, 40, 80)]
    assert delays[-2] == commitment.RETRY_MAX and delays[-1] is None
    with transaction(app) as db:
        row = db.get_one(StorageCommitment, commitment_id)
        assert row.state == CommitmentState.FAILED
        assert commitment.claim_due(db, utcnow() + timedelta(days=1)) == []
        outcome = db.scalar(select(AuditEvent.outcome).where(
            AuditEvent.action == "storage_commitment.report"))  # fmt: skip
    assert outcome == "failure"


def test_a_transaction_uid_still_pending_fails_every_instance_of_the_new_request(
    app: Flask,
) -> None:
    archive = archive_root(app.config["DATA_DIR"])
    actor = Actor.dicom(MODALITY, "127.0.0.1")
    same = CommitmentRequest(new_uid(), (Reference(CTImageStorage, new_uid()),
                                         Reference(CTImageStorage, new_uid())))  # fmt: skip
    with transaction(app) as db:
        first = commitment.record_request(db, actor, same, archive)
        second = commitment.record_request(db, actor, same, archive)
        elsewhere = commitment.record_request(db, Actor.dicom("MR01", None), same, archive)
        event_type, info = commitment.event_information(second, "PLACA")
        assert [e["failure_reason"] for e in first.references] == [0x0112, 0x0112]
        assert [e["failure_reason"] for e in elsewhere.references] == [0x0112, 0x0112]
    assert event_type == 2 and "ReferencedSOPSequence" not in info
    assert list(failed(info).values()) == [0x0131, 0x0131]


def test_the_scheduler_door_of_serve_runs_the_retry_job(app: Flask) -> None:
    from ris.serve import _start

    door = _start(app, "scheduler")
    try:
        assert "storage-commitment-reports" in {job.id for job in door.scheduler.get_jobs()}
    finally:
        door.stop()
