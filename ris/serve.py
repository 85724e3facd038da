"""``flask --app wsgi serve``: the four doors in one process until SIGINT or SIGTERM.

web (waitress), DICOM (pynetdicom), HL7 (Placa's MLLP listener) and the scheduler
(APScheduler). ``--only`` runs a subset, so a larger site can run several processes
around one database and one archive.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable
from typing import Protocol

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

logger = logging.getLogger(__name__)

DOORS = ("web", "dicom", "hl7", "scheduler")
# The web door opens last and closes first: once /healthz answers, every other door is up.
START_ORDER = ("dicom", "hl7", "scheduler", "web")


class Door(Protocol):
    name: str

    def is_up(self) -> bool: ...

    def stop(self) -> None: ...


def _start(app: Flask, name: str, dicom_handoff_fd: int | None = None) -> Door:
    # Imported on demand: a process that runs only the web door never loads pynetdicom.
    if name == "web":
        from ris.web_door import WebDoor

        return WebDoor(app)
    if name == "dicom":
        from ris.dicom_door import DicomDoor

        if dicom_handoff_fd is not None:  # a helper process of another serve's DICOM door
            return DicomDoor(app, handoff_fd=dicom_handoff_fd)
        return DicomDoor(app, processes=app.config["DICOM_PROCESSES"])
    if name == "hl7":
        from ris.hl7_door import HL7Door

        return HL7Door(app)
    from pacs.jobs import JOBS as ARCHIVE_JOBS
    from ris.scheduler import JOBS, SchedulerDoor

    return SchedulerDoor(app, [*JOBS, *ARCHIVE_JOBS])


def selected_doors(app: Flask, only: tuple[str, ...]) -> list[str]:
    """The doors to open: those named by --only, else all (the scheduler unless turned off)."""
    if only:
        return [name for name in START_ORDER if name in only]
    return [name for name in START_ORDER if name != "scheduler" or app.config["SCHEDULER"]]


def run_doors(
    app: Flask, names: list[str], stop_requested: threading.Event,
    dicom_handoff_fd: int | None = None,
) -> None:  # fmt: skip
    """Open the doors, wait for ``stop_requested``, close them in reverse order."""
    doors: dict[str, Door] = {}
    app.extensions["placa.doors"] = doors
    try:
        for name in names:
            doors[name] = _start(app, name, dicom_handoff_fd)
        _freeze_start_up_objects()
        logger.info("Placa is ready: %s", ", ".join(names))
        stop_requested.wait()
    finally:
        for name in reversed(list(doors)):
            _stop(doors[name])
        logger.info("Placa stopped")


def _freeze_start_up_objects() -> None:
    """Leave what start-up built (modules, the application, pydicom's and pynetdicom's
    dictionaries: over 100,000 objects) out of the garbage collector's later passes. Each
    full pass walked them all (tens of ms of a door's CPU, every few thousand stored
    instances, with every association of the process waiting)."""
    gc.collect()
    gc.freeze()


def _stop(door: Door) -> None:
    try:
        door.stop()
        logger.info("%s door closed", door.name)
    except Exception:
        logger.exception("Error while closing the %s door", door.name)


def _on_signals(stop_requested: threading.Event) -> Callable[[], None]:
    """Turn SIGINT/SIGTERM into a stop request; return a function restoring the old handlers."""

    def handler(signum: int, _frame: object) -> None:
        logger.info("Received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


@click.command("serve")
@click.option(
    "--only", multiple=True, type=click.Choice(DOORS), help="Run only these doors (repeatable)."
)
# Internal: how the DICOM door starts its helper processes (PLACA_DICOM_PROCESSES).
@click.option("--dicom-handoff-fd", type=int, hidden=True)
@with_appcontext
def serve_command(only: tuple[str, ...], dicom_handoff_fd: int | None) -> None:
    """Run the web, DICOM, HL7 and scheduler doors until SIGINT or SIGTERM."""
    from ris import migrate

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not migrate.is_current(app):
        raise click.ClickException(
            "The database schema is not up to date: run `flask --app wsgi db upgrade` first."
        )
    stop_requested = threading.Event()
    restore = _on_signals(stop_requested)
    try:
        run_doors(app, selected_doors(app, only), stop_requested, dicom_handoff_fd)
    except OSError as exc:
        raise click.ClickException(f"A door could not open: {exc}") from None
    finally:
        restore()
