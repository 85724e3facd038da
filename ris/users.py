"""User accounts, passwords, sign-in throttling and server-side sessions.

Services in the house style: they take ``db`` first, flush, never commit, and record
what they did in the audit log with the actor they are given.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ris import audit
from ris.audit import Actor
from ris.db import utcnow
from ris.errors import Conflict, Invalid, NotFound
from ris.models import ROLES, AuditEvent, Role, User, UserSession

logger = logging.getLogger(__name__)

# argon2id with the library's defaults (RFC 9106 "second recommended" profile).
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("placa-timing-equaliser")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")
LOGIN_ACTION = "auth.login"


@dataclass(frozen=True)
class LoginPolicy:
    """How many failed sign-ins are tolerated, and for how long they count."""

    max_per_account: int
    max_per_address: int
    window: timedelta


@dataclass(frozen=True)
class SessionPolicy:
    """How long a sign-in lasts: since the last request, and in all."""

    idle: timedelta
    absolute: timedelta


class LoginThrottled(Exception):
    """Too many failed sign-ins for this account or address; wait before retrying."""

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__("too many failed sign-ins")
        self.retry_after = retry_after


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_policy(password: str, username: str) -> None:
    """Refuse passwords that are too short, too long, or the username itself."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(
            str(_l("The password must have at least %(n)d characters.", n=MIN_PASSWORD_LENGTH)),
            field="password",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Invalid(str(_l("The password is too long.")), field="password")
    if password.strip().lower() == username.lower():
        raise Invalid(str(_l("The password must not be the user name.")), field="password")


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not 1 <= len(name) <= 64 or not set(name) <= USERNAME_CHARS:
        raise Invalid(
            str(_l("A user name has 1 to 64 letters, digits or . _ - @ characters.")),
            field="username",
        )
    return name


def generate_password() -> str:
    """A random password a person can type: 20 URL-safe characters (about 120 bits)."""
    return secrets.token_urlsafe(15)


def find_user(db: Session, username: str) -> User | None:
    return db.scalar(select(User).where(User.username == username.strip().lower()))


def get_user(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound(str(_l("No such user.")))
    return user


def roles_named(db: Session, names: list[str] | tuple[str, ...]) -> list[Role]:
    unknown = set(names) - set(ROLES)
    if unknown or not names:
        raise Invalid(
            str(_l("Choose roles among: %(roles)s.", roles=", ".join(ROLES))),
            field="roles",
        )
    return list(db.scalars(select(Role).where(Role.name.in_(names)).order_by(Role.name)))


def create_user(
    db: Session,
    actor: Actor,
    username: str,
    password: str,
    role_names: list[str] | tuple[str, ...],
    *,
    full_name: str = "",
    email: str | None = None,
    locale: str | None = None,
    must_change_password: bool = False,
) -> User:
    """Create an account; the password is checked against the policy and hashed."""
    name = normalise_username(username)
    if find_user(db, name) is not None:
        raise Conflict(str(_l("The user name %(name)s is taken.", name=name)), field="username")
    check_password_policy(password, name)
    user = User(
        username=name,
        full_name=full_name.strip(),
        email=(email or "").strip() or None,
        locale=locale or None,
        password_hash=hash_password(password),
        must_change_password=must_change_password,
        roles=roles_named(db, role_names),
    )
    db.add(user)
    db.flush()
    audit.record(
        db, actor, "user.create", object_type="user", object_id=user.id,
        detail={"username": name, "roles": sorted(role_names)},
    )  # fmt: skip
    logger.info("User %s created by %s", name, actor.name)
    return user


def update_user(
    db: Session,
    actor: Actor,
    user: User,
    *,
    full_name: str,
    email: str | None,
    locale: str | None,
    role_names: list[str] | tuple[str, ...],
    active: bool,
) -> None:
    """Change an account's profile, roles or active flag; disabling ends its sessions."""
    if actor.user_id == user.id and (not active or "admin" not in role_names):
        raise Invalid(str(_l("You cannot disable yourself or remove your own admin role.")))
    before = _snapshot(user)
    user.full_name = full_name.strip()
    user.email = (email or "").strip() or None
    user.locale = locale or None
    user.roles = roles_named(db, role_names)
    user.active = active
    if not active:
        end_all_sessions(db, user, "disabled")
    db.flush()
    audit.record(
        db, actor, "user.update", object_type="user", object_id=user.id,
        detail={"before": before, "after": _snapshot(user)},
    )  # fmt: skip


def _snapshot(user: User) -> dict[str, object]:
    return {
        "full_name": user.full_name,
        "email": user.email,
        "locale": user.locale,
        "roles": sorted(user.role_names),
        "active": user.active,
    }


def set_active(db: Session, actor: Actor, user: User, active: bool) -> None:
    """Enable or disable an account (a disabled account keeps its history)."""
    update_user(
        db, actor, user, full_name=user.full_name, email=user.email, locale=user.locale,
        role_names=sorted(user.role_names), active=active,
    )  # fmt: skip


def set_password(
    db: Session, actor: Actor, user: User, password: str, *, must_change: bool = False
) -> None:
    """Replace a password; every session of the account ends with it."""
    check_password_policy(password, user.username)
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    user.must_change_password = must_change
    end_all_sessions(db, user, "password_change")
    db.flush()
    audit.record(db, actor, "user.password", object_type="user", object_id=user.id)


def authenticate(
    db: Session, username: str, password: str, address: str | None, policy: LoginPolicy
) -> User | None:
    """The account these credentials open, or None; raises LoginThrottled when locked."""
    name = username.strip().lower()[:64]
    user = find_user(db, name) if name else None
    now = utcnow()
    retry = _throttled_for(db, name, user, address, policy, now)
    if retry is not None:
        audit.record(db, Actor.anonymous(name, address), LOGIN_ACTION, outcome="throttled")
        raise LoginThrottled(retry)
    if not _verify(user, password):
        reason = "unknown user" if user is None else "disabled" if not user.active else "password"
        audit.record(
            db, Actor.anonymous(name, address), LOGIN_ACTION, outcome="failure",
            detail={"reason": reason},
        )  # fmt: skip
        logger.warning("Failed sign-in for %r from %s (%s)", name, address, reason)
        return None
    assert user is not None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = now
    audit.record(db, Actor.person(user, address), LOGIN_ACTION)
    return user


def verify_password(user: User, password: str) -> bool:
    """Whether ``password`` is this active user's password."""
    return _verify(user, password)


def _verify(user: User | None, password: str) -> bool:
    try:
        if user is None or not user.active:
            # Hash anyway so that timing does not tell which accounts exist.
            _hasher.verify(_DUMMY_HASH, password + "x")
            return False
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _throttled_for(
    db: Session,
    name: str,
    user: User | None,
    address: str | None,
    policy: LoginPolicy,
    now: datetime,
) -> timedelta | None:
    """How long until another try is allowed, or None when it is allowed now."""
    since = now - policy.window
    account_since = max(since, user.last_login_at) if user and user.last_login_at else since
    for column, value, limit, start in (
        (AuditEvent.actor, name, policy.max_per_account, account_since),
        (AuditEvent.address, address, policy.max_per_address, since),
    ):
        if value is None:
            continue
        count, oldest = _failures(db, column, value, start)
        if count >= limit and oldest is not None:
            return max(oldest + policy.window - now, timedelta(seconds=1))
    return None


def _failures(
    db: Session, column: object, value: str, since: datetime
) -> tuple[int, datetime | None]:
    row = db.execute(
        select(func.count(), func.min(AuditEvent.at)).where(
            AuditEvent.action == LOGIN_ACTION,
            AuditEvent.outcome == "failure",
            column == value,  # type: ignore[operator]
            AuditEvent.at >= since,
        )
    ).one()
    return int(row[0]), row[1]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(db: Session, user: User, address: str | None, user_agent: str | None) -> str:
    """Start a server-side session and return the token the cookie will carry."""
    token = secrets.token_urlsafe(32)
    db.add(
        UserSession(
            token_hash=_token_hash(token),
            user=user,
            address=address,
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    db.flush()
    return token


def resume_session(db: Session, token: str, policy: SessionPolicy) -> UserSession | None:
    """The live session behind a cookie token, or None if it ended or expired."""
    row = db.scalar(select(UserSession).where(UserSession.token_hash == _token_hash(token)))
    if row is None or row.ended_at is not None:
        return None
    now = utcnow()
    reason = _expiry_reason(row, now, policy)
    if reason:
        row.ended_at, row.end_reason = now, reason
        return None
    if now - row.last_seen_at > timedelta(seconds=30):
        row.last_seen_at = now  # coarse, so that reads do not all write
    return row


def _expiry_reason(row: UserSession, now: datetime, policy: SessionPolicy) -> str | None:
    if not row.user.active:
        return "disabled"
    if now - row.created_at > policy.absolute:
        return "lifetime"
    if now - row.last_seen_at > policy.idle:
        return "idle"
    return None


def end_session(db: Session, token: str, reason: str) -> None:
    db.execute(
        update(UserSession)
        .where(UserSession.token_hash == _token_hash(token), UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason)
    )


def end_all_sessions(db: Session, user: User, reason: str) -> None:
    db.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason)
    )


def bootstrap_admin(db: Session) -> tuple[User, str] | None:
    """Create the first admin with a generated password, if there is no admin yet."""
    has_admin = db.scalar(select(User.id).join(User.roles).where(Role.name == "admin").limit(1))
    if has_admin is not None:
        return None
    password = generate_password()
    name = "admin" if find_user(db, "admin") is None else f"admin-{secrets.token_hex(3)}"
    user = create_user(
        db, Actor.system("bootstrap"), name, password, ["admin"],
        full_name="Administrator", must_change_password=True,
    )  # fmt: skip
    return user, password
