"""API tokens: bearer credentials a user gives a program (a viewer, a script).

A token is 32 random bytes, shown once when created; only its SHA-256 is stored, so the
table cannot be used to sign in. It acts with its user's roles while the user is active,
until it expires or is revoked. Services take ``db`` first, flush, never commit.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import audit
from ris.audit import Actor
from ris.db import utcnow
from ris.errors import NotFound
from ris.models import ApiToken, User

logger = logging.getLogger(__name__)

PREFIX = "placa_"  # makes a leaked token recognisable by secret scanners
# last_used_at is refreshed at most this often, so reads do not write on every request.
LAST_USED_GRANULARITY = timedelta(minutes=1)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    db: Session, actor: Actor, user: User, label: str = "", expires_in: timedelta | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user``: the row and the token text (never stored, shown once)."""
    token = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        token_hash=token_hash(token), user_id=user.id, label=label.strip()[:100],
        created_at=now, expires_at=now + expires_in if expires_in else None,
    )  # fmt: skip
    db.add(row)
    db.flush()
    audit.record(
        db, actor, "api_token.create", object_type="api_token", object_id=row.id,
        detail={"user": user.username, "label": row.label},
    )  # fmt: skip
    return row, token


def tokens_of(db: Session, user: User) -> list[ApiToken]:
    return list(
        db.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    )


def revoke_token(db: Session, actor: Actor, token_id: int) -> ApiToken:
    row = db.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"No API token {token_id}.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.flush()
        audit.record(
            db, actor, "api_token.revoke", object_type="api_token", object_id=row.id,
            detail={"user": row.user.username},
        )  # fmt: skip
    return row


def state_of(row: ApiToken, now: datetime | None = None) -> str:
    """``active``, ``revoked`` or ``expired``."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def user_for_token(db: Session, token: str) -> User | None:
    """The active user a presented token acts for, or None (unknown, revoked, expired)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    now = utcnow()
    if row is None or state_of(row, now) != "active" or not row.user.active:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY:
        row.last_used_at = now
    return row.user
