"""Command line: ``flask --app wsgi simulate-modality`` (a modality emulator for go-live tests)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from zoneinfo import ZoneInfo

import click
from flask import current_app
from flask.cli import with_appcontext

from worklist.simulate import Peer, Settings, SimulationError, StepResult, parse_peer, simulate

logger = logging.getLogger(__name__)
ANY_ADDRESS = {"", "0.0.0.0", "::"}  # a listening address: connect to this machine instead


class PeerType(click.ParamType):
    name = "AE@HOST:PORT"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None
                ) -> Peer:  # fmt: skip
        if isinstance(value, Peer):
            return value
        try:
            return parse_peer(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DayType(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None
                ) -> date:  # fmt: skip
        if isinstance(value, date):
            return value
        text = str(value).strip()
        for pattern in ("%Y-%m-%d", "%Y%m%d"):
            try:
                return datetime.strptime(text, pattern).date()
            except ValueError:
                continue
        self.fail(f"{text!r} is not a date (YYYY-MM-DD)", param, ctx)


@click.command("simulate-modality")
@click.option(
    "--ae",
    "ae_title",
    required=True,
    help="The modality's calling AE title: a room's AE (Scheduled Station AE Title).",
)
@click.option("--host", help="Placa's DICOM door (default: this machine, PLACA_DICOM_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Default: PLACA_DICOM_PORT.")
@click.option("--called-ae", help="Placa's AE title (default: PLACA_AE_TITLE).")
@click.option(
    "--store-to", type=PeerType(), help="Where images go, AE@HOST:PORT (default: Placa's own door)."
)
@click.option("--date", "day", type=DayType(), help="The worklist day (default: today).")
@click.option("--modality", default="", help="Ask only for this modality (default: any).")
@click.option(
    "--images",
    type=click.IntRange(0, 5000),
    help="Images per series (default by modality: CT 32, MR 24, US 6, CR/DX 2).",
)
@click.option(
    "--series",
    type=click.IntRange(1, 50),
    help="Series per step (default by modality: CT/MR 2, others 1).",
)
@click.option("--accession", default="", help="Perform the step with this accession number.")
@click.option("--all", "every_step", is_flag=True, help="Perform every step of the worklist.")
@click.option("--no-mpps", is_flag=True, help="Send no MPPS (a modality without MPPS).")
@click.option("--discontinue", metavar="REASON",
              help="End with MPPS DISCONTINUED: a CID 9301 code (110501) or its meaning "
                   "('equipment failure'); other text is sent as the comment.")  # fmt: skip
@click.option("--verbose", is_flag=True, help="Also log pynetdicom's messages (every PDU).")
@with_appcontext
def simulate_modality_command(
    ae_title: str, host: str | None, port: int | None, called_ae: str | None,
    store_to: Peer | None, day: date | None, modality: str, images: int | None,
    series: int | None, accession: str, every_step: bool, no_mpps: bool,
    discontinue: str | None, verbose: bool,
) -> None:  # fmt: skip
    """Act as modality AE: query the worklist, send MPPS and images, as a scanner would."""
    if every_step and accession:
        raise click.UsageError("--all and --accession exclude each other.")
    if no_mpps and discontinue:
        raise click.UsageError("--discontinue needs MPPS (drop --no-mpps).")
    config = current_app.config
    zone = ZoneInfo(config["TIMEZONE"])
    host = host or _connectable(config["DICOM_HOST"])
    placa = Peer(called_ae or config["AE_TITLE"], host, port or config["DICOM_PORT"])
    settings = Settings(
        station_ae_title=ae_title.strip(), placa=placa, store_to=store_to or placa,
        day=day or datetime.now(zone).date(), zone=zone, uid_root=config["UID_ROOT"],
        modality=modality.strip().upper(), accession=accession.strip(), every_step=every_step,
        series=series, images=images, mpps=not no_mpps, discontinue=discontinue,
    )  # fmt: skip
    try:
        with _quiet_pynetdicom(not verbose):
            results = simulate(settings, click.echo)
    except SimulationError as exc:
        logger.error("simulate-modality %s: %s", ae_title, exc)
        raise click.ClickException(str(exc)) from None
    _summary(results)


@contextmanager
def _quiet_pynetdicom(quiet: bool) -> Iterator[None]:
    """pynetdicom logs every association step and dataset at INFO: keep its warnings only."""
    library = logging.getLogger("pynetdicom")
    level = library.level
    if quiet:
        library.setLevel(logging.WARNING)
    try:
        yield
    finally:
        library.setLevel(level)


def _connectable(listening_host: str) -> str:
    return "127.0.0.1" if listening_host.strip() in ANY_ADDRESS else listening_host


def _summary(results: list[StepResult]) -> None:
    images = sum(result.images for result in results)
    click.echo(f"Done: {len(results)} step(s), {images} image(s).")
    for result in results:
        status = result.final_status or "no MPPS"
        click.echo(f"  {result.accession_number}\t{result.patient_name}\t{result.images} images"
                   f"\t{status}\tStudy {result.study_instance_uid}")  # fmt: skip
