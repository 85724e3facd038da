"""Command line: ``flask --app wsgi db ...`` and ``flask --app wsgi users ...``."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import api_tokens, migrate, users
from ris.audit import Actor
from ris.db import transaction
from ris.errors import PlacaError
from ris.models import ROLES, User

CLI_ACTOR = Actor.system("cli")
INITIAL_PASSWORD_FILE = "initial-admin-password"


@click.group("db")
def db_group() -> None:
    """Database schema migrations (Alembic)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    migrate.upgrade(current_app, revision)
    click.echo(f"Database at {revision}.")


@db_group.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ('base' empties the database)."""
    migrate.downgrade(current_app, revision)
    click.echo(f"Database at {revision}.")


@db_group.command("revision")
@click.option("-m", "--message", required=True, help="What the migration does.")
@with_appcontext
def db_revision(message: str) -> None:
    """Autogenerate a migration from the models (for developers; review it before committing)."""
    migrate.revision(current_app, message)


@db_group.command("current")
@with_appcontext
def db_current() -> None:
    """Show the database's revision."""
    migrate.current(current_app)


@click.group("users")
def users_group() -> None:
    """User accounts."""


@users_group.command("create")
@click.argument("name")
@click.option("--role", "role_names", multiple=True, required=True, type=click.Choice(ROLES))
@click.option("--full-name", default="")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def users_create(
    name: str, role_names: tuple[str, ...], full_name: str, password_stdin: bool
) -> None:
    """Create user NAME. Without --password-stdin a one-time password is generated and printed."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else users.generate_password()
    try:
        with transaction(current_app) as db:
            users.create_user(
                db, CLI_ACTOR, name, password, role_names, full_name=full_name,
                must_change_password=not password_stdin,
            )  # fmt: skip
    except PlacaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"User {name.strip().lower()} created with roles {', '.join(role_names)}.")
    if not password_stdin:
        click.echo(f"One-time password (to be changed at first sign-in): {password}")


@users_group.command("list")
@with_appcontext
def users_list() -> None:
    """List accounts with their roles and state."""
    with transaction(current_app) as db:
        for user in db.scalars(select(User).order_by(User.username)):
            state = "active" if user.active else "disabled"
            roles = ",".join(sorted(user.role_names))
            click.echo(f"{user.username}\t{state}\t{roles}\t{user.full_name}")


@users_group.command("disable")
@click.argument("name")
@with_appcontext
def users_disable(name: str) -> None:
    """Disable NAME: it can no longer sign in and its sessions end."""
    _set_active(name, False)
    click.echo(f"User {name} disabled.")


@users_group.command("enable")
@click.argument("name")
@with_appcontext
def users_enable(name: str) -> None:
    """Enable NAME again."""
    _set_active(name, True)
    click.echo(f"User {name} enabled.")


def _set_active(name: str, active: bool) -> None:
    with transaction(current_app) as db:
        user = users.find_user(db, name)
        if user is None:
            raise click.ClickException(f"No user named {name!r}.")
        users.set_active(db, CLI_ACTOR, user, active)


@users_group.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def users_set_password(name: str, password_stdin: bool) -> None:
    """Give NAME a new password (generated and printed unless read from stdin)."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else users.generate_password()
    try:
        with transaction(current_app) as db:
            user = users.find_user(db, name)
            if user is None:
                raise click.ClickException(f"No user named {name!r}.")
            users.set_password(db, CLI_ACTOR, user, password, must_change=not password_stdin)
    except PlacaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Password of {name} changed; its sessions have ended.")
    if not password_stdin:
        click.echo(f"One-time password: {password}")


@users_group.group("token")
def token_group() -> None:
    """API tokens (bearer credentials for DICOMweb and /api) of a user."""


@token_group.command("create")
@click.argument("name")
@click.option("--label", default="", help="What the token is for (a viewer, a script).")
@click.option("--expires-days", type=click.IntRange(min=1), help="Valid this many days.")
@with_appcontext
def token_create(name: str, label: str, expires_days: int | None) -> None:
    """Create an API token for user NAME and print it (once: only its hash is kept)."""
    expires = timedelta(days=expires_days) if expires_days else None
    with transaction(current_app) as db:
        user = _existing_user(db, name)
        row, token = api_tokens.create_token(db, CLI_ACTOR, user, label, expires)
        token_id = row.id
    click.echo(f"API token {token_id} for {name} (shown once, keep it secret):")
    click.echo(token)


@token_group.command("list")
@click.argument("name")
@with_appcontext
def token_list(name: str) -> None:
    """List the API tokens of user NAME (id, state, label, created, last used, expires)."""
    with transaction(current_app) as db:
        for row in api_tokens.tokens_of(db, _existing_user(db, name)):
            dates = [_when(row.created_at), _when(row.last_used_at), _when(row.expires_at)]
            click.echo("\t".join([str(row.id), api_tokens.state_of(row), row.label, *dates]))


@token_group.command("revoke")
@click.argument("token_id", type=int)
@with_appcontext
def token_revoke(token_id: int) -> None:
    """Revoke API token TOKEN_ID: it stops working at once."""
    try:
        with transaction(current_app) as db:
            api_tokens.revoke_token(db, CLI_ACTOR, token_id)
    except PlacaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"API token {token_id} revoked.")


def _existing_user(db: Session, name: str) -> User:
    user = users.find_user(db, name)
    if user is None:
        raise click.ClickException(f"No user named {name!r}.")
    return user


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


@users_group.command("bootstrap-admin")
@with_appcontext
def users_bootstrap_admin() -> None:
    """Create the first admin if there is none; print its password once and keep it 0600."""
    with transaction(current_app) as db:
        created = users.bootstrap_admin(db)
    if created is None:
        return
    user, password = created
    path = Path(current_app.config["DATA_DIR"]) / INITIAL_PASSWORD_FILE
    _write_private(path, password)
    click.echo(
        f"\nFirst administrator account created.\n  user name: {user.username}\n"
        f"  password:  {password}\n(also in {path}, readable by you only; "
        "you will be asked to change it at first sign-in)\n"
    )


def _write_private(path: Path, text: str) -> None:
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
