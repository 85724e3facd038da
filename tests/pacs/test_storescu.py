"""C-STORE interop: DCMTK storescu against the running DICOM door (both backends).

Many files, uncompressed and compressed transfer syntaxes (made with DCMTK's own
dcmcjpeg/dcmcjpls/dcmcrle), several associations at once; every stored file's dataset is
byte-compared with what was sent. The calling-AE whitelist on and off.
"""

from __future__ import annotations

import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from sqlalchemy import select

from pacs import remote_aes
from pacs.models import Instance, Study
from pacs.storage import archive_root
from ris.audit import Actor
from ris.db import transaction
from tests.conftest import require_tool
from tests.pacs.dicom_data import dataset_part, make_dataset, new_uid, write_part10
from tests.pacs.running_door import Running, running_door


@pytest.fixture
def door(tmp_path: Path, database_url: str) -> Iterator[Running]:
    yield from running_door(tmp_path / "placa", database_url)


@pytest.fixture
def guarded_door(tmp_path: Path, database_url: str) -> Iterator[Running]:
    yield from running_door(tmp_path / "placa", database_url, AE_WHITELIST=True)


def storescu(door: Running, files: list[Path], *, aet: str = "STORESCU",
             extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:  # fmt: skip
    tool = require_tool("storescu")
    host, port = door.address
    return subprocess.Popen(
        [tool, "-R", "-aet", aet, "-aec", "PLACA", *extra, host, str(port), *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


# storescu's option proposing each syntax (and the uncompressed ones after it).
PROPOSE = {
    ExplicitVRLittleEndian: "-xe", ImplicitVRLittleEndian: "-xi",
    DeflatedExplicitVRLittleEndian: "-xd", JPEGLosslessSV1: "-xs", JPEGExtended12Bit: "-xx",
    JPEGLSLossless: "-xt", RLELossless: "-xr",
}  # fmt: skip


def as_sent(path: Path, syntax: str) -> bytes:
    """A file's dataset bytes; inflated when deflated, since storescu deflates again itself
    (its own compression level), so the deflated bytes on the wire are not the file's."""
    data = dataset_part(path)
    if syntax == DeflatedExplicitVRLittleEndian:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    return data


def compress(tool: str, options: tuple[str, ...], source: Path, target: Path) -> Path:
    subprocess.run([require_tool(tool), *options, str(source), str(target)], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    return target


def stored_datasets(app: Flask) -> dict[str, tuple[Path, str]]:
    root = archive_root(app.config["DATA_DIR"])
    with transaction(app) as db:
        rows = db.execute(select(Instance.sop_instance_uid, Instance.path,
                                 Instance.transfer_syntax_uid)).all()  # fmt: skip
    return {uid: (root / path, syntax) for uid, path, syntax in rows}


def test_many_files_in_several_syntaxes_over_several_associations(
    door: Running, tmp_path: Path
) -> None:
    source = tmp_path / "sent"
    study = new_uid()
    series = [new_uid() for _ in range(3)]
    sent: list[Path] = []
    for index, syntax in enumerate(
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian] * 10
    ):
        ds = make_dataset(study=study, series=series[index % 3], number=index, rows=64)
        path = source / f"plain{index:03d}.dcm"
        write_part10(ds, path, syntax)
        sent.append(path)
    # Compressed copies made by DCMTK from uncompressed originals (new SOP Instance UIDs).
    compressed_kinds = [
        ("dcmcjpeg", (), JPEGLosslessSV1),  # default: lossless, first-order prediction
        ("dcmcjpeg", ("+ee",), JPEGExtended12Bit),
        ("dcmcjpls", (), JPEGLSLossless),
        ("dcmcrle", (), RLELossless),
    ]
    for index, (tool, options, syntax) in enumerate(compressed_kinds):
        original = source / f"original{index}.dcm"
        write_part10(make_dataset(study=new_uid(), number=index, rows=64), original)
        target = compress(tool, options, original, source / f"compressed{index}.dcm")
        assert dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
        original.unlink()
        sent.append(target)
    # One storescu per transfer syntax, told to propose exactly it (else it converts the
    # files to what it proposes), all running at once: seven associations in parallel.
    by_syntax: dict[str, list[Path]] = {}
    for path in sent:
        syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        by_syntax.setdefault(syntax, []).append(path)
    processes = [storescu(door, paths, extra=(PROPOSE[syntax],))
                 for syntax, paths in by_syntax.items()]  # fmt: skip
    for process in processes:
        code, output = finished(process)
        assert code == 0, output
    stored = stored_datasets(door.app)
    assert len(stored) == len(sent)
    for path in sent:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        stored_path, syntax = stored[str(meta.MediaStorageSOPInstanceUID)]
        assert syntax == meta.TransferSyntaxUID  # stored as received, no transcoding
        assert as_sent(stored_path, syntax) == as_sent(path, syntax), path.name
        assert dcmread(stored_path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    with transaction(door.app) as db:
        main = db.scalar(select(Study).where(Study.study_instance_uid == study))
        assert main.number_of_study_related_instances == 30
        assert main.number_of_study_related_series == 3


def test_a_resent_file_is_acknowledged_and_kept_once(door: Running, tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    write_part10(make_dataset(), path)
    for _ in range(2):
        code, output = finished(storescu(door, [path]))
        assert code == 0, output
    assert len(stored_datasets(door.app)) == 1


def test_a_refused_instance_gets_a_failure_status(door: Running, tmp_path: Path) -> None:
    path = tmp_path / "nostudy.dcm"
    ds = make_dataset()
    del ds.StudyInstanceUID
    write_part10(ds, path)
    code, output = finished(storescu(door, [path]))
    assert "0xc002" in output.lower() or "Store SCP Failed" in output or code != 0, output
    assert stored_datasets(door.app) == {}


def test_the_whitelist_rejects_unknown_calling_aes(guarded_door: Running, tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    write_part10(make_dataset(), path)
    code, output = finished(storescu(guarded_door, [path], aet="STRANGER"))
    assert code != 0 and "Rejected" in output, output
    assert stored_datasets(guarded_door.app) == {}
    with transaction(guarded_door.app) as db:
        remote_aes.add_remote_ae(db, Actor.system("test"), "CT1_SOMATOM", "127.0.0.1", 104)
    code, output = finished(storescu(guarded_door, [path], aet="CT1_SOMATOM"))
    assert code == 0, output
    assert len(stored_datasets(guarded_door.app)) == 1


def test_without_the_whitelist_any_calling_ae_is_accepted(door: Running, tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    write_part10(make_dataset(), path)
    code, output = finished(storescu(door, [path], aet="ANYONE"))
    assert code == 0, output
    [(stored_path, _syntax)] = stored_datasets(door.app).values()
    assert dcmread(stored_path, stop_before_pixels=True).file_meta.SourceApplicationEntityTitle == (
        "ANYONE"
    )


def test_jpeg_2000_is_stored_as_received(door: Running) -> None:
    """DCMTK cannot encode JPEG 2000 here; a pynetdicom SCU sends an encapsulated frame
    (the archive never decodes pixel data, so any codestream stands for a real one)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage

    from ris.dicom_door import set_nodelay
    from tests.pacs.dicom_data import encode

    j2k = make_dataset(rows=64)
    j2k.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(200)) + b"\xff\xd9"])
    j2k["PixelData"].VR = "OB"
    j2k.file_meta.TransferSyntaxUID = JPEG2000Lossless
    scu = AE(ae_title="J2KSCU")
    scu.add_requested_context(CTImageStorage, JPEG2000Lossless)
    assoc = scu.associate(*door.address, ae_title="PLACA",
                          evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])  # fmt: skip
    assert assoc.is_established
    assert int(assoc.send_c_store(j2k).Status) == 0x0000
    assoc.release()
    [(stored_path, syntax)] = stored_datasets(door.app).values()
    assert syntax == JPEG2000Lossless
    j2k.set_original_encoding(False, True)
    assert dataset_part(stored_path) == encode(j2k, ExplicitVRLittleEndian)
