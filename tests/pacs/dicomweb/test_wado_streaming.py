"""WADO-RS of instances sent as stored is streamed: a file laid over the archive files, handed
to the WSGI server's file wrapper (waitress sends it from its I/O thread), with the whole
length known up front, each file opened only when its bytes are read; on both backends, and
the multipart file itself against the generator that frames and converted instances use."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from waitress.buffers import ReadOnlyFileBasedBuffer
from werkzeug.wsgi import FileWrapper

from pacs import storage
from pacs.dicomweb import wado
from pacs.dicomweb.common import instances_of
from pacs.dicomweb.wado import MultipartFile, _multipart, _part_head
from ris.db import transaction
from ris.site import site_of
from tests.conftest import sign_in
from tests.pacs.dicom_data import make_dataset, new_uid, received

DICOM_PART = 'multipart/related; type="application/dicom"'
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture
def study(app: Flask) -> str:
    """Three instances in two series of one study."""
    study, series = new_uid(), (new_uid(), new_uid())
    root = storage.archive_root(app.config["DATA_DIR"])
    for number, series_uid in enumerate((series[0], series[0], series[1]), start=1):
        ds = make_dataset(study=study, series=series_uid, number=number, rows=8 * number)
        with transaction(app) as db:
            storage.store_instance(db, root, received(ds), zone=site_of(app).zone)
    return study


@pytest.fixture
def reader(app: Flask, make_user: Callable) -> FlaskClient:
    client = app.test_client()
    sign_in(client, make_user("radiologist"))
    return client


def archive_files(app: Flask, study: str) -> list[Path]:
    """The study's files, in the order WADO-RS sends them."""
    root = storage.archive_root(app.config["DATA_DIR"])
    with transaction(app) as db:
        return [root / row.path for row in instances_of(db, study)]


def parts_of(body: bytes, content_type: str) -> list[bytes]:
    boundary = re.search(r"boundary=([^;]+)", content_type)
    assert boundary
    chunks = body.split(b"--" + boundary.group(1).encode())
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    return [chunk.partition(b"\r\n\r\n")[2][:-2] for chunk in chunks[1:-1]]


class RecordingWrapper(ReadOnlyFileBasedBuffer):
    """waitress's own file wrapper, remembering what it was given."""

    given: list[object] = []

    def __init__(self, file: object, block_size: int = 32768) -> None:
        super().__init__(file, block_size)
        RecordingWrapper.given.append(file)


def test_study_answer_is_streamed_with_its_length(
    app: Flask, reader: FlaskClient, study: str
) -> None:
    answer = reader.get(f"/dicomweb/studies/{study}", headers={"Accept": DICOM_PART},
                        buffered=False)  # fmt: skip
    assert answer.status_code == 200
    assert answer.is_streamed
    body = answer.get_data()
    assert int(answer.headers["Content-Length"]) == len(body)
    files = archive_files(app, study)
    assert parts_of(body, answer.headers["Content-Type"]) == [p.read_bytes() for p in files]


def test_the_server_file_wrapper_gets_the_multipart_file(
    app: Flask, reader: FlaskClient, study: str
) -> None:
    RecordingWrapper.given.clear()
    answer = reader.get(f"/dicomweb/studies/{study}", headers={"Accept": DICOM_PART},
                        environ_overrides={"wsgi.file_wrapper": RecordingWrapper},
                        buffered=False)  # fmt: skip
    (body,) = RecordingWrapper.given
    assert isinstance(body, MultipartFile)
    # waitress sends a wrapped file itself when it can tell its size (seek and tell); the
    # test client has already read the first block, waitress would not have
    body.seek(0)
    assert RecordingWrapper(body).prepare() == int(answer.headers["Content-Length"])
    answer.close()


def test_files_are_opened_only_when_their_bytes_are_read(
    app: Flask, reader: FlaskClient, study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: int) -> int:
        if str(path).endswith(".dcm"):
            opened.append(str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(wado.os, "open", spy)
    small_blocks = {"wsgi.file_wrapper": lambda file, size: FileWrapper(file, 64)}
    answer = reader.get(f"/dicomweb/studies/{study}", headers={"Accept": DICOM_PART},
                        environ_overrides=small_blocks, buffered=False)  # fmt: skip
    assert opened == []  # the answer has begun (the test client read a block): headers only
    body = b""
    for block in answer.response:
        body += block
        assert len(opened) <= body.count(b"\r\n\r\n")  # a file once its part is reached
    assert opened == [str(p) for p in archive_files(app, study)]
    assert len(body) == int(answer.headers["Content-Length"])
    answer.close()


def test_multipart_file_reads_what_the_generator_writes(tmp_path: Path) -> None:
    paths = []
    for number, size in enumerate((0, 1, 5000, 70_000)):
        paths.append(tmp_path / f"{number}.dcm")
        paths[-1].write_bytes(os.urandom(size))
    parts = [(_part_head(EXPLICIT_LE, p.stat().st_size), [p.read_bytes()]) for p in paths]
    expected = b"".join(_multipart("b0undary", parts))
    body = MultipartFile.of_files("b0undary", [(EXPLICIT_LE, path) for path in paths])
    assert body.size == len(expected)
    assert b"".join(iter(lambda: body.read(777), b"")) == expected
    # as waitress's buffer reads: read ahead, seek back, then skip what the socket took
    body.seek(0)
    sent = bytearray()
    while len(sent) < body.size:
        start = body.tell()
        chunk = body.read(4096)
        body.seek(start)
        body.seek(len(chunk) // 2 + 1, os.SEEK_CUR)
        sent += chunk[: len(chunk) // 2 + 1]
    assert bytes(sent) == expected
    body.seek(-10, os.SEEK_END)
    assert body.read() == expected[-10:]
    body.close()


def test_empty_multipart_file_is_the_closing_line() -> None:
    body = MultipartFile.of_files("x", [])
    assert body.read() == b"--x--\r\n" == b"".join(_multipart("x", []))
