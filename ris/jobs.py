"""Scheduled housekeeping of the RIS shell."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session

from ris.db import utcnow
from ris.models import UserSession

logger = logging.getLogger(__name__)
KEEP_ENDED_SESSIONS = timedelta(days=90)


def close_stale_sessions(db: Session, idle: timedelta, lifetime: timedelta) -> int:
    """Mark sessions past their idle or absolute limit as ended; drop very old ones."""
    now = utcnow()
    ended = db.execute(
        update(UserSession)
        .where(
            UserSession.ended_at.is_(None),
            or_(UserSession.last_seen_at < now - idle, UserSession.created_at < now - lifetime),
        )
        .values(ended_at=now, end_reason="expired")
    ).rowcount
    db.execute(delete(UserSession).where(UserSession.ended_at < now - KEEP_ENDED_SESSIONS))
    if ended:
        logger.info("Closed %d stale sessions", ended)
    return ended
