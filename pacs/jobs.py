"""The archive's scheduled jobs, run by the scheduler door (:mod:`ris.scheduler`).

* ``storage-commitment-reports``: every storage commitment report not yet delivered is
  tried again on a new association, with back-off (:mod:`pacs.commitment_scp`).
"""

from __future__ import annotations

from typing import Any

from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask
from sqlalchemy.orm import Session

from ris.scheduler import Job


def send_commitment_reports(app: Flask, _db: Session) -> None:
    # Like the HL7 sender: each report is claimed and recorded in its own transaction, so
    # the network waits hold none; the job's session stays unused.
    from pacs.commitment_scp import send_due_reports

    send_due_reports(app)


# (job id, function, trigger), as ris.scheduler.JOBS.
JOBS: list[tuple[str, Job, Any]] = [
    ("storage-commitment-reports", send_commitment_reports, IntervalTrigger(seconds=10)),
]
