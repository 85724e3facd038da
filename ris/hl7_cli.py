"""``flask --app wsgi hl7 ...``: the HL7 peers Placa sends to, and a look at their queues."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from ris.audit import Actor
from ris.db import transaction
from ris.errors import PlacaError
from ris.hl7 import outbound

CLI_ACTOR = Actor.system("cli")


@click.group("hl7")
def hl7_group() -> None:
    """HL7 v2 destinations (outbound peers) and the outbox."""


@hl7_group.command("add-destination")
@click.argument("name")
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("--messages", required=True, help="Comma separated: SIU, ORU, DFT.")
@click.option("--application", default="", help="Receiving application (MSH-5).")
@click.option("--facility", default="", help="Receiving facility (MSH-6).")
@click.option("--pdf", is_flag=True, help="Send the report PDF in results (ORU).")
@with_appcontext
def add_destination(
    name: str, host: str, port: int, messages: str, application: str, facility: str, pdf: bool
) -> None:
    """Send the chosen message types to NAME at HOST:PORT over MLLP."""
    try:
        data = outbound.DestinationData(
            name=name, host=host, port=port,
            message_types=outbound.parse_message_types(messages),
            receiving_application=application, receiving_facility=facility, include_pdf=pdf,
        )  # fmt: skip
        with transaction(current_app) as db:
            outbound.save_destination(db, CLI_ACTOR, data)
    except PlacaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Destination {name} added: {host}:{port}, {','.join(data.message_types)}.")


@hl7_group.command("destinations")
@with_appcontext
def list_destinations() -> None:
    """List destinations with their queue: queued, sent, failed, acknowledged."""
    with transaction(current_app) as db:
        counts = outbound.state_counts(db)
        for d in outbound.list_destinations(db):
            state = "active" if d.active else "inactive"
            queue = " ".join(f"{s}={counts.get((d.id, s), 0)}" for s in outbound.STATES)
            pdf = "\tpdf" if d.include_pdf else ""
            click.echo(f"{d.name}\t{d.host}:{d.port}\t{d.message_types}\t{state}\t{queue}{pdf}")


@hl7_group.command("remove-destination")
@click.argument("name")
@with_appcontext
def remove_destination(name: str) -> None:
    """Remove NAME; one that has messages is deactivated instead, keeping its history."""
    with transaction(current_app) as db:
        destination = outbound.find_destination(db, name)
        if destination is None:
            raise click.ClickException(f"No destination named {name!r}.")
        deleted = outbound.remove_destination(db, CLI_ACTOR, destination)
    if deleted:
        click.echo(f"Destination {name} removed.")
    else:
        click.echo(f"Destination {name} has messages: deactivated, its history kept.")


@hl7_group.command("send")
@with_appcontext
def send_now() -> None:
    """Send what is due now (what the scheduler does every few seconds)."""
    report = outbound.send_due(current_app._get_current_object())  # type: ignore[attr-defined]
    dead = f", {report.dead_lettered} dead-lettered" if report.dead_lettered else ""
    click.echo(f"{report.acknowledged} acknowledged, {report.failed} failed{dead}.")
