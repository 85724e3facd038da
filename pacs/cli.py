"""Command line: ``flask --app wsgi import-dicom PATH...`` and ``flask --app wsgi ae ...``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from pacs import remote_aes
from pacs.storage import (
    Duplicates,
    Outcome,
    StoreRefused,
    archive_root,
    discard_file,
    read_part10,
    store_instance,
)
from ris.audit import Actor
from ris.db import read_only, transaction
from ris.errors import PlacaError
from ris.site import site_of

logger = logging.getLogger(__name__)
CLI_ACTOR = Actor.system("cli")
IMPORT_AE = "IMPORT"  # recorded as the calling AE of imported instances


# ------------------------------------------------------------------------- ae


@click.group("ae")
def ae_group() -> None:
    """Remote DICOM nodes: C-MOVE destinations and the calling-AE whitelist."""


@ae_group.command("add")
@click.argument("name")
@click.argument("host")
@click.argument("port", type=int)
@click.option("--description", default="", help="What the node is (a workstation, a PACS...).")
@with_appcontext
def ae_add(name: str, host: str, port: int, description: str) -> None:
    """Register the remote AE NAME at HOST PORT."""
    try:
        with transaction(current_app) as db:
            remote_aes.add_remote_ae(db, CLI_ACTOR, name, host, port, description)
    except PlacaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"AE {name.strip()} added: {host.strip()}:{port}.")


@ae_group.command("list")
@with_appcontext
def ae_list() -> None:
    """List the registered remote AEs."""
    with read_only(current_app) as db:
        nodes = [(n.ae_title, n.host, n.port, n.description)
                 for n in remote_aes.list_remote_aes(db)]  # fmt: skip
    for ae_title, host, port, description in nodes:
        click.echo(f"{ae_title}\t{host}:{port}\t{description}")
    if not nodes:
        click.echo("No remote AEs.")


@ae_group.command("remove")
@click.argument("name")
@with_appcontext
def ae_remove(name: str) -> None:
    """Remove the remote AE NAME."""
    try:
        with transaction(current_app) as db:
            remote_aes.remove_remote_ae(db, CLI_ACTOR, name)
    except PlacaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"AE {name.strip()} removed.")


# ------------------------------------------------------------------------- import-dicom


@dataclass
class ImportSummary:
    imported: int = 0
    already_present: int = 0
    refused: list[tuple[Path, str]] = field(default_factory=list)


def files_under(paths: tuple[Path, ...]) -> Iterator[Path]:
    """The files named and those in the folders named, recursively, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def import_file(app: Flask, path: Path, summary: ImportSummary) -> None:
    """Store one file like a C-STORE would (durably, or not at all) and count the outcome."""
    root = archive_root(app.config["DATA_DIR"])
    written: str | None = None
    try:
        received = read_part10(path.read_bytes(), IMPORT_AE)
        with transaction(app) as db:
            result = store_instance(
                db, root, received, zone=site_of(app).zone,
                duplicates=Duplicates(app.config["ARCHIVE_DUPLICATES"]),
            )  # fmt: skip
            written = result.written_path
        if result.obsolete_path:
            discard_file(root, result.obsolete_path)
    except StoreRefused as refusal:
        _refuse(summary, path, refusal.comment)
        return
    except OSError as exc:
        _refuse(summary, path, exc.strerror or str(exc))
        return
    except Exception as exc:  # the commit failed: the file written for it goes too
        if written:
            discard_file(root, written)
        _refuse(summary, path, f"not indexed: {exc.__class__.__name__}")
        return
    if result.outcome is Outcome.ALREADY_PRESENT:
        summary.already_present += 1
    else:
        summary.imported += 1


def _refuse(summary: ImportSummary, path: Path, reason: str) -> None:
    logger.warning("import-dicom: %s refused: %s", path, reason)
    summary.refused.append((path, reason))


@click.command("import-dicom")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))  # fmt: skip
@with_appcontext
def import_dicom_command(paths: tuple[Path, ...]) -> None:
    """Import DICOM Part 10 files and folders (recursively) into the archive."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    files = list(files_under(paths))
    summary = ImportSummary()
    with click.progressbar(files, label="Importing", file=sys.stderr,
                           item_show_func=lambda p: p.name if p else None) as bar:  # fmt: skip
        for path in bar:
            import_file(app, path, summary)
    click.echo(f"{summary.imported} imported, {summary.already_present} already present, "
               f"{len(summary.refused)} refused.")  # fmt: skip
    for path, reason in summary.refused:
        click.echo(f"refused: {path}: {reason}")
    if summary.refused:
        sys.exit(1)
