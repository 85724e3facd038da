"""The DICOM door listening on a free port, for tests that talk to it as a peer would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from ris.dicom_door import DicomDoor
from tests.conftest import build_app, free_port


@dataclass
class Running:
    """The DICOM door listening on a free port, and the application behind it."""

    door: DicomDoor
    app: Flask

    @property
    def address(self) -> tuple[str, int]:
        return self.door.address


def running_door(folder: Path, database_url: str, **settings: object) -> Iterator[Running]:
    """Yield a door with ``settings`` on top of the test configuration; stop it after."""
    app = build_app(folder, database_url, DICOM_HOST="127.0.0.1", DICOM_PORT=free_port(),
                    **settings)  # fmt: skip
    door = DicomDoor(app)
    yield Running(door, app)
    door.stop()
    app.extensions["placa.engine"].dispose()
