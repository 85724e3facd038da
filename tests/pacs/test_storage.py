"""The archive's store service: files, paths, refusals, duplicates, counts, character sets,
reconciliation with the RIS (both backends)."""

from __future__ import annotations

import warnings
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from sqlalchemy import func, select

from pacs import reconciliation, storage
from pacs.ingest import index_writer, ingest
from pacs.models import ArchivePatient, Instance, Series, Study
from pacs.storage import Duplicates, Outcome, Received, StoreRefused
from ris.audit import Actor
from ris.db import transaction
from ris.models import AuditEvent
from tests.factories import FrontDesk
from tests.pacs.dicom_data import dataset_part, encode, make_dataset, new_uid, received

ZONE = ZoneInfo("Europe/Madrid")


def root_of(app: Flask) -> Path:
    return storage.archive_root(app.config["DATA_DIR"])


def store(app: Flask, incoming: Received, duplicates: Duplicates = Duplicates.KEEP):
    with transaction(app) as db:
        result = storage.store_instance(db, root_of(app), incoming, zone=ZONE,
                                        duplicates=duplicates)  # fmt: skip
    if result.obsolete_path:
        storage.discard_file(root_of(app), result.obsolete_path)
    return result


def files(app: Flask) -> list[Path]:
    root = root_of(app)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def count(app: Flask, model: type) -> int:
    with transaction(app) as db:
        return db.scalar(select(func.count()).select_from(model)) or 0


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_an_instance_is_stored_as_received_with_a_correct_file_meta(
    app: Flask, syntax: str
) -> None:
    ds = make_dataset()
    incoming = received(ds, syntax)
    result = store(app, incoming)
    assert result.outcome is Outcome.STORED and result.new_study
    [path] = files(app)
    assert dataset_part(path) == incoming.dataset  # byte for byte, no transcoding
    stored = dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert stored.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert stored.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert stored.PatientName == "DOE^JOHN"
    with transaction(app) as db:
        instance = db.scalar(select(Instance))
        assert instance.path == path.relative_to(root_of(app)).as_posix()
        assert instance.size == path.stat().st_size
        assert instance.transfer_syntax_uid == syntax and instance.calling_ae == "MODALITY"
        study = db.scalar(select(Study))
        assert study.study_instance_uid == ds.StudyInstanceUID
        assert study.study_date == "20261130" and study.study_time == "101500"
        assert study.study_at is not None and study.study_at.hour == 9  # 10:15 Madrid = 09:15Z
        assert (study.accession_number, study.modalities_in_study) == ("A0001", "CT")
        assert study.patient.patient_id == "PID001"
        assert study.patient.patient_birth_date.isoformat() == "1970-01-01"


def test_paths_come_from_validated_uids_only(app: Flask) -> None:
    ds = make_dataset()
    result = store(app, received(ds))
    [path] = files(app)
    relative = path.relative_to(root_of(app)).parts
    assert relative[1:3] == (ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert relative[3].startswith(ds.SOPInstanceUID + ".") and relative[3].endswith(".dcm")
    assert result.outcome is Outcome.STORED


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("SOPInstanceUID", "../../x", storage.BAD_SOP_INSTANCE_UID),
        ("SOPInstanceUID", "1.2." + "3" * 70, storage.BAD_SOP_INSTANCE_UID),
        ("SOPInstanceUID", "1.2.abc", storage.BAD_SOP_INSTANCE_UID),
        ("SOPInstanceUID", "", storage.BAD_SOP_INSTANCE_UID),
        ("StudyInstanceUID", "../../etc", storage.BAD_STUDY_INSTANCE_UID),
        ("StudyInstanceUID", "1..2", storage.BAD_STUDY_INSTANCE_UID),
        ("SeriesInstanceUID", "/tmp/x", storage.BAD_SERIES_INSTANCE_UID),
    ],
)
def test_bad_uids_are_refused_and_nothing_is_written(
    app: Flask, field: str, value: str, status: int
) -> None:
    ds = make_dataset()
    request_uid = value if field == "SOPInstanceUID" else str(ds.SOPInstanceUID)
    with warnings.catch_warnings():  # pydicom warns about the invalid UID it is told to write
        warnings.simplefilter("ignore")
        setattr(ds, field, value)
        incoming = Received(encode(ds), ExplicitVRLittleEndian, str(ds.SOPClassUID), request_uid)
    with pytest.raises(StoreRefused) as refusal:
        store(app, incoming)
    assert refusal.value.status == status
    assert files(app) == [] and count(app, Instance) == 0 and count(app, Study) == 0


def test_a_dataset_that_is_not_of_the_requested_sop_class_is_refused(app: Flask) -> None:
    ds = make_dataset()
    incoming = Received(encode(ds), ExplicitVRLittleEndian, MRImageStorage, ds.SOPInstanceUID)
    with pytest.raises(StoreRefused) as refusal:
        store(app, incoming)
    assert refusal.value.status == storage.DOES_NOT_MATCH_SOP_CLASS
    assert files(app) == []


def test_garbage_is_refused_as_not_understood(app: Flask) -> None:
    incoming = Received(b"\x08\x00\x16\x00" + b"\xff" * 40, ImplicitVRLittleEndian,
                        "1.2.840.10008.5.1.4.1.1.2", "1.2.3")  # fmt: skip
    with pytest.raises(StoreRefused) as refusal:
        store(app, incoming)
    assert 0xC000 <= refusal.value.status <= 0xCFFF or refusal.value.status == 0xA900
    assert files(app) == []


def test_a_resent_instance_is_kept_once_by_default(app: Flask) -> None:
    ds = make_dataset()
    first = store(app, received(ds))
    ds.SeriesDescription = "CHANGED"  # different bytes, same SOP Instance UID
    again = store(app, received(ds))
    assert again.outcome is Outcome.ALREADY_PRESENT and again.instance_id == first.instance_id
    assert count(app, Instance) == 1 and len(files(app)) == 1
    [path] = files(app)
    assert dcmread(path).SeriesDescription == "AXIAL"  # the first copy is kept


def test_a_resent_instance_replaces_the_first_when_asked(app: Flask) -> None:
    ds = make_dataset()
    store(app, received(ds))
    ds.SeriesDescription = "CHANGED"
    incoming = received(ds)
    replaced = store(app, incoming, Duplicates.REPLACE)
    assert replaced.outcome is Outcome.REPLACED
    [path] = files(app)  # the old file is gone
    assert dataset_part(path) == incoming.dataset
    with transaction(app) as db:
        study = db.scalar(select(Study))
        assert study.number_of_study_related_instances == 1
        assert study.number_of_study_related_series == 1
    identical = store(app, incoming, Duplicates.REPLACE)  # the same bytes: nothing to do
    assert identical.outcome is Outcome.ALREADY_PRESENT and len(files(app)) == 1


def test_a_replacement_in_another_series_moves_the_counts(app: Flask) -> None:
    study_uid, first_series = new_uid(), new_uid()
    ds = make_dataset(study=study_uid, series=first_series)
    store(app, received(ds))
    store(app, received(make_dataset(study=study_uid, series=first_series, number=2)))
    ds.SeriesInstanceUID, ds.Modality = new_uid(), "SR"
    store(app, received(ds), Duplicates.REPLACE)
    with transaction(app) as db:
        study = db.scalar(select(Study))
        assert study.number_of_study_related_series == 2
        assert study.number_of_study_related_instances == 2
        assert study.modalities_in_study == "CT\\SR"
        rows = select(Series.series_instance_uid, Series.number_of_series_related_instances)
        counts = dict(db.execute(rows).all())
        assert counts == {first_series: 1, ds.SeriesInstanceUID: 1}


def test_counts_follow_series_and_instances(app: Flask) -> None:
    study_uid = new_uid()
    ct_series, mr_series = new_uid(), new_uid()
    for number in range(1, 4):
        store(app, received(make_dataset(study=study_uid, series=ct_series, number=number)))
    for number in range(1, 3):
        store(app, received(make_dataset(study=study_uid, series=mr_series, number=number,
                                         modality="MR", sop_class=MRImageStorage)))  # fmt: skip
    with transaction(app) as db:
        study = db.scalar(select(Study))
        assert study.number_of_study_related_series == 2
        assert study.number_of_study_related_instances == 5
        assert study.modalities_in_study == "CT\\MR"
        rows = select(Series.modality, Series.number_of_series_related_instances)
        per_series = dict(db.execute(rows).all())
        assert per_series == {"CT": 3, "MR": 2}
        assert db.scalar(select(func.count()).select_from(ArchivePatient)) == 1


@pytest.mark.parametrize(
    ("charset", "name", "key"),
    [
        ("ISO_IR 100", "Peña^José", "pena^jose"),
        ("ISO_IR 100", "Lefèvre^Hélène", "lefevre^helene"),
        ("ISO_IR 192", "Müller^Ünal=ミュラー^ユナル", "muller^unal"),
        ("ISO_IR 192", "Gaëlle^Françoise", "gaelle^francoise"),
    ],
)
def test_specific_character_sets_are_decoded_for_the_index(
    app: Flask, charset: str, name: str, key: str
) -> None:
    store(app, received(make_dataset(name=name, charset=charset,
                                     StudyDescription="Tórax AP")))  # fmt: skip
    with transaction(app) as db:
        patient = db.scalar(select(ArchivePatient))
        assert patient.patient_name == name and patient.patient_name_key == key
        assert db.scalar(select(Study.study_description)) == "Tórax AP"


def test_a_study_with_the_exams_accession_number_is_linked(app: Flask) -> None:
    desk = FrontDesk(app)
    with transaction(app) as db:
        exam = desk.exam(db, desk.patient(db), desk.code(db))
        accession, exam_id, patient_id = exam.accession_number, exam.id, exam.order.patient_id
    store(app, received(make_dataset(accession=accession)))
    with transaction(app) as db:
        study = db.scalar(select(Study))
        assert (study.procedure_id, study.ris_patient_id) == (exam_id, patient_id)
        assert study.images_received_at is not None
        assert reconciliation.unmatched_studies(db) == []
        assert reconciliation.images_received_at(db, study.procedure) is not None


def test_a_study_with_the_exams_pre_assigned_uid_is_linked(app: Flask) -> None:
    desk = FrontDesk(app)
    with transaction(app) as db:
        exam = desk.exam(db, desk.patient(db), desk.code(db))
        study_uid, exam_id = exam.study_instance_uid, exam.id
    store(app, received(make_dataset(study=study_uid, accession="")))
    with transaction(app) as db:
        assert db.scalar(select(Study.procedure_id)) == exam_id


def test_an_unmatched_study_is_listed_and_linked_by_hand(app: Flask) -> None:
    desk = FrontDesk(app)
    with transaction(app) as db:
        patient = desk.patient(db, family="Núñez", given="Inés")
        exam = desk.exam(db, patient, desk.code(db))
        exam_id, mrn = exam.id, patient.mrn
    store(app, received(make_dataset(accession="UNKNOWN1", patient_id="OTHER", name="X^Y")))
    actor = Actor("user", "tech1", None, "127.0.0.1")
    with transaction(app) as db:
        [study] = reconciliation.unmatched_studies(db)
        exam = db.get(type(exam), exam_id)
        reconciliation.link_study(db, actor, study, exam)
    with transaction(app) as db:
        study = db.scalar(select(Study))
        assert study.procedure_id == exam_id and study.accession_number == exam.accession_number
        assert study.patient.patient_id == mrn and study.patient.patient_name == "Núñez^Inés"
        assert study.patient.patient_name_key == "nunez^ines"
        assert study.linked_by == "tech1" and study.images_received_at is not None
        assert reconciliation.unmatched_studies(db) == []
        # The patient the images named has no study left and is gone from the index.
        assert db.scalar(select(func.count()).select_from(ArchivePatient)) == 1
        event = db.scalar(select(AuditEvent).where(AuditEvent.action == "archive.study_linked"))
        assert event is not None and event.actor == "tech1"
        assert event.object_id == study.study_instance_uid


def test_the_door_path_groups_commits_and_answers_after_them(app: Flask) -> None:
    import threading

    study_uid = new_uid()
    incoming = [received(make_dataset(study=study_uid, series=new_uid(), number=n))
                for n in range(24)]  # fmt: skip
    errors: list[BaseException] = []

    def send(items: list[Received]) -> None:
        try:
            for item in items:
                ingest(app, item)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(incoming[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    writer = index_writer(app)
    assert writer.rows == 24 and writer.commits <= 24
    with transaction(app) as db:
        study = db.scalar(select(Study))
        assert study.number_of_study_related_instances == 24
        assert study.number_of_study_related_series == 24
    assert len(files(app)) == 24


def test_a_patient_merge_moves_the_linked_studies_and_undo_brings_them_back(app: Flask) -> None:
    from ris import patients

    desk = FrontDesk(app)
    with transaction(app) as db:
        merged = desk.patient(db, family="Duplicate")
        surviving = desk.patient(db, family="Kept")
        exam = desk.exam(db, merged, desk.code(db))
        accession, merged_id, surviving_id = exam.accession_number, merged.id, surviving.id
    store(app, received(make_dataset(accession=accession)))
    actor = Actor.system("test")
    with transaction(app) as db:
        record = patients.merge_patients(db, actor, db.get(type(surviving), surviving_id),
                                         db.get(type(merged), merged_id))  # fmt: skip
        assert db.scalar(select(Study.ris_patient_id)) == surviving_id
        patients.undo_merge(db, actor, record)
        assert db.scalar(select(Study.ris_patient_id)) == merged_id


def test_abandoned_temporary_files_are_swept_and_final_files_kept(app: Flask) -> None:
    import os
    import time

    store(app, received(make_dataset()))
    [final] = files(app)
    old = final.with_name(f".{final.name}.dead.tmp")
    fresh = final.with_name(f".{final.name}.busy.tmp")
    old.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(final, (an_hour_ago, an_hour_ago))
    assert storage.sweep_temporary_files(root_of(app)) == 1
    assert files(app) == sorted([final, fresh])


def test_the_door_path_replaces_when_set_to(app: Flask) -> None:
    app.config["ARCHIVE_DUPLICATES"] = "replace"
    ds = make_dataset()
    ingest(app, received(ds))
    ds.SeriesDescription = "SECOND"
    second = received(ds)
    assert ingest(app, second).outcome is Outcome.REPLACED
    [path] = files(app)
    assert dataset_part(path) == second.dataset
    with transaction(app) as db:
        assert db.scalar(select(Study.number_of_study_related_instances)) == 1
        assert db.scalar(select(Instance.path)) == path.relative_to(root_of(app)).as_posix()


def test_a_failing_fsync_after_the_file_is_named_leaves_nothing(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StoreRefused) as refused:
        ingest(app, received(make_dataset()))
    assert refused.value.status == storage.OUT_OF_RESOURCES
    assert files(app) == [] and count(app, Instance) == 0


def test_the_same_bytes_again_replace_the_named_file_only_once_on_disk(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that exists already (the same bytes: perhaps indexed) is never linked over:
    the new copy is fsynced, then renamed over it."""
    import os

    incoming = received(make_dataset())
    ingest(app, incoming)
    [path] = files(app)
    first_inode = path.stat().st_ino
    order: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "rename", lambda a, b: (order.append("rename"), real_rename(a, b))[1])
    assert ingest(app, incoming).outcome is Outcome.ALREADY_PRESENT
    assert order[:2] == ["fsync", "rename"]  # data on disk before the name moves to it
    assert files(app) == [path] and path.stat().st_ino != first_inode
    assert dataset_part(path) == incoming.dataset and count(app, Instance) == 1


def _resident_pages(path: Path) -> tuple[int, int]:
    """How many of the file's pages are in the kernel's page cache, and of how many
    (Linux's mincore over a shared mapping of the file, which faults nothing in)."""
    import ctypes
    import mmap
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]  # fmt: skip
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        vector = ctypes.create_string_buffer(pages)
        try:
            assert libc.mincore(address, size, vector) == 0, ctypes.get_errno()
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)
    return sum(byte & 1 for byte in vector.raw), pages


def _on_tmpfs(path: Path) -> bool:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[2] in ("tmpfs", "ramfs")]  # fmt: skip
    return any(path.is_relative_to(mount) for mount in mounts if mount != "/")


@pytest.mark.skipif(not Path("/proc/mounts").exists(), reason="Linux's page cache")
def test_a_stored_file_leaves_the_page_cache_once_on_disk(app: Flask) -> None:
    """Written once, seldom read soon: its pages are not kept to push out what is read."""
    if _on_tmpfs(root_of(app)):
        pytest.skip("a tmpfs file lives in the page cache")
    incoming = received(make_dataset(rows=512))  # 0.5 MB of pixel data
    ingest(app, incoming)
    [path] = files(app)
    resident, pages = _resident_pages(path)
    assert pages > 100 and resident <= pages // 10
    assert dataset_part(path) == incoming.dataset  # and it reads back whole
    assert _resident_pages(path)[0] == pages
