"""``flask --app wsgi import-dicom`` and ``flask --app wsgi ae``: a folder of good and bad files."""

from __future__ import annotations

import warnings
from pathlib import Path

from flask import Flask
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import func, select

from pacs.models import Instance, RemoteAE, Study
from pacs.storage import archive_root
from ris.db import transaction
from tests.pacs.dicom_data import dataset_part, make_dataset, new_uid, write_part10


def folder_of_good_and_bad_files(folder: Path) -> dict[str, bytes]:
    """Five good instances (nested folders, three syntaxes) and four bad files."""
    study = new_uid()
    good = {}
    for number, syntax in enumerate(
        ["1.2.840.10008.1.2.1", ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian] * 2
    ):
        if number == 5:
            break
        ds = make_dataset(study=study, number=number)
        good[ds.SOPInstanceUID] = write_part10(ds, folder / f"s{number % 2}" / f"{number}.dcm",
                                               syntax)  # fmt: skip
    (folder / "notes.txt").write_text("not DICOM at all")
    (folder / "s1" / "truncated.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    climbing = make_dataset()
    with warnings.catch_warnings():  # pydicom warns about the invalid UID it is told to write
        warnings.simplefilter("ignore")
        climbing.SOPInstanceUID = "../../../etc/x"
        write_part10(climbing, folder / "evil.dcm")
    no_study = make_dataset()
    del no_study.StudyInstanceUID
    write_part10(no_study, folder / "s0" / "nostudy.dcm")
    return good


def run(app: Flask, *args: str):  # noqa: ANN201
    return app.test_cli_runner().invoke(args=list(args), catch_exceptions=False)


def test_import_stores_the_good_files_and_refuses_the_bad(app: Flask, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    good = folder_of_good_and_bad_files(folder)
    result = run(app, "import-dicom", str(folder))
    assert result.exit_code == 1  # some were refused
    assert "5 imported, 0 already present, 4 refused." in result.output
    for name in ("notes.txt", "truncated.dcm", "evil.dcm", "nostudy.dcm"):
        assert f"{name}:" in result.output
    assert "not a DICOM Part 10 file" in result.output
    root = archive_root(app.config["DATA_DIR"])
    with transaction(app) as db:
        stored = dict(db.execute(select(Instance.sop_instance_uid, Instance.path)).all())
        assert db.scalar(select(Study.number_of_study_related_instances)) == 5
        assert db.scalar(select(func.count()).select_from(Study)) == 1
    assert set(stored) == set(good)
    for uid, data in good.items():
        assert dataset_part(root / stored[uid]) == data
    assert not any("etc" in p.name for p in root.rglob("*"))
    again = run(app, "import-dicom", str(folder / "s0"), str(folder / "s1" / "1.dcm"))
    assert "0 imported, 4 already present, 1 refused." in again.output


def test_import_of_good_files_only_succeeds(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    write_part10(make_dataset(), path)
    result = run(app, "import-dicom", str(path))
    assert result.exit_code == 0, result.output
    assert "1 imported, 0 already present, 0 refused." in result.output


def test_ae_add_list_remove(app: Flask) -> None:
    added = run(
        app, "ae", "add", "WORKSTATION1", "10.0.0.5", "104", "--description", "Reading room"
    )
    assert added.exit_code == 0 and "AE WORKSTATION1 added" in added.output
    assert run(app, "ae", "add", "WORKSTATION1", "10.0.0.6", "104").exit_code != 0  # taken
    assert run(app, "ae", "add", "A_TITLE_TOO_LONG_X", "h", "104").exit_code != 0
    assert run(app, "ae", "add", "BADPORT", "h", "70000").exit_code != 0
    listed = run(app, "ae", "list")
    assert "WORKSTATION1\t10.0.0.5:104\tReading" in listed.output
    assert run(app, "ae", "remove", "WORKSTATION1").exit_code == 0
    assert run(app, "ae", "remove", "WORKSTATION1").exit_code != 0
    with transaction(app) as db:
        assert db.scalar(select(func.count()).select_from(RemoteAE)) == 0
