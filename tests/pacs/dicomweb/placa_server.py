"""A running Placa for DICOMweb tests: the web door (waitress) and the DICOM door on free
ports in this process, on a fresh database of each backend, with users, tokens and helpers
to talk to it with dicomweb-client, requests and DCMTK."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from flask import Flask
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from ris import api_tokens, users
from ris.audit import Actor
from ris.db import transaction
from ris.web_door import WebDoor
from tests.conftest import PASSWORD, build_app, free_port
from tests.pacs.dicom_data import ROOT, write_part10

ORIGIN = "https://viewer.example.org"


@dataclass
class Placa:
    app: Flask
    web: WebDoor
    dicom: Any = None  # ris.dicom_door.DicomDoor when asked for
    accounts: dict[str, str] = field(default_factory=dict)  # role → username

    @property
    def base(self) -> str:
        host, port = self.web.address
        return f"http://{host}:{port}/dicomweb"

    def user(self, *roles: str) -> str:
        name = f"{'-'.join(roles)}-{uuid.uuid4().hex[:6]}".replace("_", "-")
        with transaction(self.app) as db:
            users.create_user(db, Actor.system("test"), name, PASSWORD, list(roles))
        return name

    def token(self, username: str) -> tuple[int, str]:
        with transaction(self.app) as db:
            user = users.find_user(db, username)
            assert user is not None
            row, token = api_tokens.create_token(db, Actor.system("test"), user, "test")
            return row.id, token

    def session(self, *roles: str, bearer: bool = False) -> requests.Session:
        session = requests.Session()
        name = self.user(*roles)
        if bearer:
            session.headers["Authorization"] = f"Bearer {self.token(name)[1]}"
        else:
            session.auth = (name, PASSWORD)
        return session

    def client(self, *roles: str, bearer: bool = True) -> DICOMwebClient:
        return DICOMwebClient(self.base, session=self.session(*roles, bearer=bearer))


def start(tmp_path: Path, database_url: str, dicom: bool = False) -> Iterator[Placa]:
    app = build_app(tmp_path / "placa", database_url, HTTP_HOST="127.0.0.1",
                    HTTP_PORT=free_port(), DICOM_HOST="127.0.0.1", DICOM_PORT=free_port(),
                    CORS_ORIGINS=ORIGIN, HTTP_THREADS=4)  # fmt: skip
    web = WebDoor(app)
    door = None
    if dicom:
        from ris.dicom_door import DicomDoor  # only the tests that use DICOM import it

        door = DicomDoor(app)
    try:
        yield Placa(app, web, door)
    finally:
        web.stop()
        if door is not None:
            door.stop()
        app.extensions["placa.engine"].dispose()


def with_meta(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """``ds`` with the File Meta Information a Part 10 file of it has."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.ImplementationClassUID = ROOT + "1"
    return ds


def part10(ds: Dataset, folder: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    write_part10(ds, path, syntax)
    return path


def multipart_parts(response: requests.Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/related answer: (Content-Type, payload)."""
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["Content-Type"])
    assert boundary, response.headers["Content-Type"]
    body, found = response.content, []
    for chunk in body.split(b"--" + boundary.group(1).encode())[1:-1]:
        head, _, payload = chunk.partition(b"\r\n\r\n")
        kind = re.search(rb"Content-Type: *([^\r\n]+)", head)
        assert kind and payload.endswith(b"\r\n")
        found.append((kind.group(1).decode(), payload[:-2]))
    return found


def multipart_body(files: list[bytes], boundary: str = "placa-test-boundary") -> tuple[bytes, str]:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        for data in files
    ) + f"--{boundary}--\r\n".encode()  # fmt: skip
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'
