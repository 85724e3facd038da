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


# (job id, function, trigger): the RIS shell's own. Other packages list theirs in their
# ``jobs.py`` (``pacs.jobs.JOBS``), handed to the door by the composition root (ris.serve).
JOBS: list[tuple[str, Job, Any]] = [
    ("close-stale-sessions", _close_stale_sessions, IntervalTrigger(minutes=5)),
    ("hl7-send", _send_hl7, IntervalTrigger(seconds=5)),
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

    def __init__(self, app: Flask, jobs: list[tuple[str, Job, Any]] | None = None) -> None:
        self.scheduler = BackgroundScheduler(timezone=UTC)
        jobs = JOBS if jobs is None else jobs
        for job_id, job, trigger in jobs:
            self.scheduler.add_job(
                run_job, trigger, args=(app, job_id, job), id=job_id,
                coalesce=True, max_instances=1, misfire_grace_time=60,
            )  # fmt: skip
        self.scheduler.start()
        logger.info("Scheduler: %d jobs", len(jobs))

    def is_up(self) -> bool:
        return bool(self.scheduler.running)

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
