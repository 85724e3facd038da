"""The scheduler door: APScheduler 3 running each package's jobs in its own transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask
from sqlalchemy.orm import Session

from ris.db import transaction

logger = logging.getLogger(__name__)
Job = Callable[[Flask, Session], Any]


def _close_stale_sessions(app: Flask, db: Session) -> None:
    from ris.auth import session_policy
    from ris.jobs import close_stale_sessions

    policy = session_policy(app)
    close_stale_sessions(db, policy.idle, policy.absolute)


def _send_hl7(app: Flask, _db: Session) -> None:
    # The sender commits each message's state on its own (network waits never hold a
    # transaction, hence never SQLite's write lock); the job's session stays unused.
    from ris.hl7.outbound import send_due

    send_due(app)


def _send_commitment_reports(app: Flask, _db: Session) -> None:
    # Like the HL7 sender: each report is claimed and recorded in its own transaction.
    from pacs.commitment_scp import send_due_reports

    send_due_reports(app)


# (job id, function, trigger); later packages add their exports and retries here.
JOBS: list[tuple[str, Job, Any]] = [
    ("close-stale-sessions", _close_stale_sessions, IntervalTrigger(minutes=5)),
    ("hl7-send", _send_hl7, IntervalTrigger(seconds=5)),
    ("storage-commitment-reports", _send_commitment_reports, IntervalTrigger(seconds=10)),
]


def run_job(app: Flask, job_id: str, job: Job) -> None:
    """Run one job in one transaction; an error is logged, never lost or fatal."""
    try:
        with transaction(app) as db:
            job(app, db)
    except Exception:
        logger.exception("Scheduled job %s failed", job_id)


class SchedulerDoor:
    """The running background scheduler."""

    name = "scheduler"

    def __init__(self, app: Flask) -> None:
        self.scheduler = BackgroundScheduler(timezone=UTC)
        for job_id, job, trigger in JOBS:
            self.scheduler.add_job(
                run_job, trigger, args=(app, job_id, job), id=job_id,
                coalesce=True, max_instances=1, misfire_grace_time=60,
            )  # fmt: skip
        self.scheduler.start()
        logger.info("Scheduler: %d jobs", len(JOBS))

    def is_up(self) -> bool:
        return bool(self.scheduler.running)

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
