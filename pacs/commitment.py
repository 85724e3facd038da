"""Storage commitment (Push Model, PS3.4 Annex J; IHE RAD-10): what the archive commits to.

A modality asks, with an N-ACTION, whether the archive has safely taken the instances it
sent; the archive answers later with an N-EVENT-REPORT listing what it commits to keep and
what it does not, with a reason each (PS3.4 J.3.3). This module is the service behind
:mod:`pacs.commitment_scp` (the DICOM door's side and the sender):

* :func:`record_request` decides each referenced instance at once and keeps the request
  with its decision (:class:`~pacs.models.StorageCommitment`), so a report survives a
  restart and says the same thing on every attempt. An instance is committed when the
  index holds it *with the same SOP class* and its file is in the archive; otherwise it
  fails with 0x0112 (no such object instance), 0x0119 (class-instance conflict) or 0x0110
  (processing failure: indexed, but its file is missing). A Transaction UID the requestor
  is still awaiting a report for fails every instance with 0x0131 (duplicate transaction).
* :func:`event_information` builds the N-EVENT-REPORT's Event Information: Event Type 1
  when every instance is committed, 2 when some failed.
* Delivery bookkeeping: :func:`claim_due` leases the reports due for (another) attempt,
  :func:`report_delivered` and :func:`report_undelivered` record the outcome; an
  undelivered report is retried with back-off (10 s, 20 s, 40 s... at most 10 min) and
  given up (``failed``, logged as an error and audited) after :data:`MAX_ATTEMPTS`.

Like every service, these take ``db`` first, flush, and leave the commit to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacs.models import CommitmentState, Instance, StorageCommitment
from ris import audit
from ris.audit import Actor
from ris.db import utcnow

logger = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
# The one SOP instance of the push model (PS3.4 J.3.1): every N-ACTION and report names it.
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID (PS3.4 J.3.2)
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs (PS3.4 J.3.3)
# Failure Reasons (PS3.3 C.14.1.1) the archive gives.
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
DUPLICATE_TRANSACTION_UID = 0x0131
# More references than this in one request are refused (Resource limitation).
MAX_REFERENCES = 20_000
RETRY_BASE = timedelta(seconds=10)
RETRY_MAX = timedelta(minutes=10)
MAX_ATTEMPTS = 40  # about six hours of attempts, most of them 10 minutes apart
# How long a report being delivered is leased: longer than its slowest first attempt (the
# request's association, then a new one: connect, negotiation, the report's answer), so no
# one else sends it meanwhile.
CLAIM = timedelta(minutes=5)
BATCH = 50  # reports one scheduler run claims
_LOOKUP_CHUNK = 500  # SOP Instance UIDs per IN (...) query


@dataclass(frozen=True)
class Reference:
    """One referenced instance of a request: its SOP class and SOP instance UIDs."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CommitmentRequest:
    """An N-ACTION's Action Information, read and checked by the door."""

    transaction_uid: str
    references: tuple[Reference, ...]


def failure_reason(
    reference: Reference, stored: tuple[str, str] | None, archive: Path
) -> int | None:
    """Why ``reference`` cannot be committed (None: it is), given its index row (class, path)."""
    if stored is None:
        return NO_SUCH_OBJECT_INSTANCE
    sop_class_uid, path = stored
    if sop_class_uid != reference.sop_class_uid:
        return CLASS_INSTANCE_CONFLICT
    if not (archive / path).is_file():
        return PROCESSING_FAILURE
    return None


def decide(db: Session, archive: Path, references: Sequence[Reference]) -> list[dict[str, Any]]:
    """Each reference with its failure reason (None when committed), in request order."""
    stored = _stored(db, {reference.sop_instance_uid for reference in references})
    return [
        {
            "sop_class_uid": reference.sop_class_uid,
            "sop_instance_uid": reference.sop_instance_uid,
            "failure_reason": failure_reason(
                reference, stored.get(reference.sop_instance_uid), archive
            ),
        }
        for reference in references
    ]


def _stored(db: Session, uids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (SOP Class UID, path) of the indexed instances among ``uids``."""
    wanted = sorted(uids)
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        rows = db.execute(
            select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.path).where(
                Instance.sop_instance_uid.in_(chunk)
            )
        )
        found.update({uid: (sop_class, path) for uid, sop_class, path in rows})
    return found


def record_request(
    db: Session, actor: Actor, request: CommitmentRequest, archive: Path,
    first_attempt_at: datetime | None = None,
) -> StorageCommitment:  # fmt: skip
    """Decide a request and keep it, pending, until its report is delivered.

    ``first_attempt_at``: when the scheduler may first send the report; the door, which
    sends it itself at once, leases it (:data:`CLAIM`) so the scheduler does not race it.
    """
    if _in_use(db, actor.name, request.transaction_uid):
        # PS3.3 C.14.1.1: a Transaction UID still awaiting its report fails every instance.
        references = [
            {"sop_class_uid": ref.sop_class_uid, "sop_instance_uid": ref.sop_instance_uid,
             "failure_reason": DUPLICATE_TRANSACTION_UID}
            for ref in request.references
        ]  # fmt: skip
    else:
        references = decide(db, archive, request.references)
    commitment = StorageCommitment(
        transaction_uid=request.transaction_uid,
        calling_ae=actor.name,
        requestor_address=actor.address or "",
        references=references,
        state=CommitmentState.PENDING,
        attempts=0,
        next_attempt_at=first_attempt_at or utcnow(),
    )
    db.add(commitment)
    db.flush()
    failed = len(failures(commitment))
    audit.record(
        db, actor, "storage_commitment.request", object_type="storage_commitment",
        object_id=request.transaction_uid,
        detail={"instances": len(request.references), "failed": failed},
    )  # fmt: skip
    logger.info("Storage commitment %s from %s: %d instances, %d not committed",
                request.transaction_uid, actor.name, len(request.references), failed)  # fmt: skip
    return commitment


def _in_use(db: Session, calling_ae: str, transaction_uid: str) -> bool:
    """Whether this requestor has a request with this Transaction UID still pending."""
    return (
        db.scalar(
            select(StorageCommitment.id)
            .where(
                StorageCommitment.transaction_uid == transaction_uid,
                StorageCommitment.calling_ae == calling_ae,
                StorageCommitment.state == CommitmentState.PENDING,
            )
            .limit(1)
        )
        is not None
    )


def failures(commitment: StorageCommitment) -> list[dict[str, Any]]:
    return [entry for entry in commitment.references if entry["failure_reason"] is not None]


def committed(commitment: StorageCommitment) -> list[dict[str, Any]]:
    return [entry for entry in commitment.references if entry["failure_reason"] is None]


def event_information(commitment: StorageCommitment, retrieve_ae: str) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's Event Type ID and Event Information (PS3.4 J.3.3, Table J.3-2)."""
    info = Dataset()
    info.TransactionUID = commitment.transaction_uid
    successes, failed = committed(commitment), failures(commitment)
    if successes:
        info.RetrieveAETitle = retrieve_ae  # where the committed instances can be retrieved
        info.ReferencedSOPSequence = [_item(entry) for entry in successes]
    if failed:
        info.FailedSOPSequence = [_item(entry, with_reason=True) for entry in failed]
    return (SOME_FAILED if failed else ALL_COMMITTED), info


def _item(entry: dict[str, Any], with_reason: bool = False) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = entry["sop_class_uid"]
    item.ReferencedSOPInstanceUID = entry["sop_instance_uid"]
    if with_reason:
        item.FailureReason = entry["failure_reason"]
    return item


# ----------------------------------------------------------------------------- delivery


def claim_due(db: Session, now: datetime | None = None, limit: int = BATCH) -> list[int]:
    """Lease the pending reports due for an attempt (oldest first); return their ids.

    Rows are locked while claimed (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several
    scheduler processes never send the same report; the lease keeps them off it after.
    """
    now = now or utcnow()
    rows = db.scalars(
        select(StorageCommitment)
        .where(
            StorageCommitment.state == CommitmentState.PENDING,
            StorageCommitment.next_attempt_at <= now,
        )
        .order_by(StorageCommitment.next_attempt_at, StorageCommitment.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for commitment in rows:
        commitment.next_attempt_at = now + CLAIM
    db.flush()
    return [commitment.id for commitment in rows]


def report_delivered(db: Session, commitment_id: int, how: str) -> StorageCommitment:
    """The requestor answered the report with Success: the request is done."""
    commitment = db.get_one(StorageCommitment, commitment_id)
    commitment.attempts += 1
    commitment.state = CommitmentState.REPORTED
    commitment.reported_at = utcnow()
    commitment.next_attempt_at = None
    commitment.last_error = None
    db.flush()
    audit.record(
        db, Actor.system(), "storage_commitment.report", object_type="storage_commitment",
        object_id=commitment.transaction_uid,
        detail={"to": commitment.calling_ae, "on": how, "attempt": commitment.attempts,
                "failed": len(failures(commitment))},
    )  # fmt: skip
    logger.info("Storage commitment %s reported to %s on %s (attempt %d)",
                commitment.transaction_uid, commitment.calling_ae, how,
                commitment.attempts)  # fmt: skip
    return commitment


def report_undelivered(
    db: Session, commitment_id: int, error: str, now: datetime | None = None
) -> StorageCommitment:
    """An attempt failed: try again after the back-off, or give up after the last one."""
    now = now or utcnow()
    commitment = db.get_one(StorageCommitment, commitment_id)
    commitment.attempts += 1
    commitment.last_error = error[:200]
    if commitment.attempts >= MAX_ATTEMPTS:
        commitment.state = CommitmentState.FAILED
        commitment.next_attempt_at = None
        audit.record(
            db, Actor.system(), "storage_commitment.report", object_type="storage_commitment",
            object_id=commitment.transaction_uid, outcome="failure",
            detail={"to": commitment.calling_ae, "attempts": commitment.attempts,
                    "error": commitment.last_error},
        )  # fmt: skip
        logger.error("Storage commitment %s: report to %s given up after %d attempts: %s",
                     commitment.transaction_uid, commitment.calling_ae, commitment.attempts,
                     error)  # fmt: skip
    else:
        commitment.next_attempt_at = now + retry_delay(commitment.attempts)
        logger.warning("Storage commitment %s: report to %s not delivered (attempt %d), "
                       "retried at %s: %s", commitment.transaction_uid, commitment.calling_ae,
                       commitment.attempts, commitment.next_attempt_at.isoformat(),
                       error)  # fmt: skip
    db.flush()
    return commitment


def retry_delay(attempts: int) -> timedelta:
    """Back-off after ``attempts`` failed attempts: 10 s, 20 s, 40 s... at most 10 min."""
    return min(RETRY_BASE * 2 ** min(max(attempts - 1, 0), 10), RETRY_MAX)


def find_commitment(db: Session, transaction_uid: str) -> StorageCommitment | None:
    """The latest request with this Transaction UID."""
    return db.scalars(
        select(StorageCommitment)
        .where(StorageCommitment.transaction_uid == transaction_uid)
        .order_by(StorageCommitment.id.desc())
    ).first()
