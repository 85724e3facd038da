"""Ingest: how the DICOM door stores what the modalities send, within the CPU budget.

Each C-STORE is handled on its association's thread: the header is parsed (up to the last
attribute the index reads, never the pixel data), the file written and fsynced there,
concurrently with the other associations (hashing, writing and fsync release the GIL).
The index rows then go to one **group commit**: whichever association has the turn takes
every row waiting, from every association, fsyncs each folder the batch's files were named
in (once per folder, however many files), applies each row in its own savepoint and commits
them in one transaction. Each association's Success is sent only after the commit that
holds its row; with one association this is a commit per instance, with several the commit
(and its fsync) is shared.

A row that fails alone (a constraint raced by another association) rolls back its savepoint
and is retried; a commit that fails fails every row it held, and their new files are removed.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pacs.models import Instance
from pacs.storage import (
    INDEX_UNAVAILABLE,
    Duplicates,
    Header,
    Received,
    StoreRefused,
    StoreResult,
    archive_root,
    discard_file,
    index_instance,
    read_index_header,
    sweep_temporary_files,
    sync_folder,
    write_file,
)
from ris.db import read_only, sessions
from ris.site import site_of

logger = logging.getLogger(__name__)

MAX_BATCH = 64  # rows in one commit at most
WRITER_LOCK = "index-writer.lock"  # in the data folder: the DICOM processes' turn (SQLite)
RETRIES = 3  # a row that loses a race (unique constraint) is tried again this often
T = TypeVar("T")


@dataclass
class _Job(Generic[T]):
    work: Callable[[Session], T]
    sync: Callable[[], None] | None = None  # makes the job's file durable (its folder)
    finished: bool = False  # set, with result or error, by the thread that committed it
    result: T | None = None
    error: BaseException | None = None


class IndexWriter:
    """The group commit: the index rows of every association, committed together.

    It has no thread of its own. The association that submits a row when no commit is
    running commits it at once, on its own thread; one that finds a commit running queues
    its row and waits for its turn, and the first to get the turn commits every row queued
    meanwhile, its own among them (the others then find theirs committed). One association
    thus commits without handing its row to another thread and back (two wake-ups of a
    thread on another core, which a virtual machine makes dear); several share commits.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._pending: deque[_Job] = deque()
        self._turn = threading.Lock()  # held by the thread committing
        self._swept = False
        self._lock_fd: int | None = None
        self.commits = 0  # for the benchmark and the tests: rows / commits is the batch size
        self.rows = 0

    def submit(self, work: Callable[[Session], T], sync: Callable[[], None] | None = None) -> T:
        """Run ``work`` in the next group transaction; return once it is committed.

        ``sync`` runs before the commit (once per distinct callable key in the batch: the
        folder fsyncs of every file the batch indexes)."""
        job: _Job[T] = _Job(work, sync)
        self._pending.append(job)  # type: ignore[arg-type]
        with self._turn:
            self._sweep_once()
            while not job.finished:  # not taken by the commit that held the turn
                self._commit(self._take_pending())
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _take_pending(self) -> list[_Job]:
        batch: list[_Job] = []
        while self._pending and len(batch) < MAX_BATCH:
            batch.append(self._pending.popleft())
        return batch

    def _sweep_once(self) -> None:
        """What a killed process left half-written, swept once per process, aside."""
        if self._swept:
            return
        self._swept = True
        root = archive_root(self.app.config["DATA_DIR"])
        threading.Thread(target=sweep_temporary_files, args=(root,),
                         name="placa-archive-sweep", daemon=True).start()  # fmt: skip

    def _commit(self, batch: list[_Job]) -> None:
        try:
            self._sync(batch)
            with self._writers_in_turn(), self.app.app_context(), self._transaction() as db:
                if len(batch) == 1:  # alone in its transaction: no savepoint to pay for
                    batch[0].result = batch[0].work(db)
                for job in batch if len(batch) > 1 else ():
                    try:
                        with db.begin_nested():
                            job.result = job.work(db)
                    except Exception as exc:  # this row only: its savepoint is rolled back
                        job.error = exc
            self.commits += 1
            self.rows += len(batch)
        except Exception as exc:  # the commit itself: nothing of the batch is stored
            logger.error("Index commit of %d rows failed: %s", len(batch), exc)
            for job in batch:
                job.error, job.result = job.error or exc, None
        finally:
            for job in batch:
                job.finished = True

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """The batch's transaction: a pooled connection's, with a session joined to it
        (0.15 ms of CPU a commit, against 0.23 for a session of the application's factory,
        which sets up its own transaction machinery each time)."""
        engine = sessions(self.app).kw["bind"]  # the factory's: tests point it elsewhere
        with engine.connect() as connection, connection.begin():
            db = Session(bind=connection, join_transaction_mode="rollback_only")
            try:
                yield db
                db.flush()
            finally:
                db.close()

    @contextmanager
    def _writers_in_turn(self) -> Iterator[None]:
        """On SQLite, the group commits of the DICOM door's processes take turns on a file
        lock: a writer that finds the database locked otherwise polls for it (SQLite's busy
        handler sleeps 1, 2, 5, 10 ms...), which costs a few ms a commit once two
        processes ingest at once. PostgreSQL's row locks need no such turn."""
        url = str(self.app.config.get("DATABASE_URL") or "sqlite")
        if not url.startswith("sqlite"):
            yield
            return
        if self._lock_fd is None:
            path = Path(self.app.config["DATA_DIR"]) / WRITER_LOCK
            self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @staticmethod
    def _sync(batch: list[_Job]) -> None:
        """The durability step before the commit, once per folder for the whole batch."""
        for sync in dict.fromkeys(job.sync for job in batch if job.sync is not None):
            sync()


def index_writer(app: Flask) -> IndexWriter:
    writer = app.extensions.get("pacs.index_writer")
    if writer is None:
        with _WRITERS_LOCK:
            writer = app.extensions.setdefault("pacs.index_writer", IndexWriter(app))
    return writer


_WRITERS_LOCK = threading.Lock()


def ingest(app: Flask, received: Received, header: Header | None = None) -> StoreResult:
    """Store one received instance durably: file, then index, then (only then) the answer.

    ``header`` is the received dataset's, when the caller has read it already (STOW-RS
    checks the study first). Raises StoreRefused with the status to answer; nothing is left
    behind on a refusal."""
    header = header or read_index_header(received)
    root = archive_root(app.config["DATA_DIR"])
    stored = write_file(root, received, header, sync_folder=False)
    zone = site_of(app).zone
    duplicates = Duplicates(app.config["ARCHIVE_DUPLICATES"])

    def work(db: Session) -> StoreResult:
        return index_instance(
            db, header, stored, transfer_syntax_uid=received.transfer_syntax_uid,
            calling_ae=received.calling_ae, zone=zone, duplicates=duplicates,
        )  # fmt: skip

    writer = index_writer(app)
    sync = _folder_sync(root, stored.path)
    for attempt in range(1, RETRIES + 1):
        try:
            result = writer.submit(work, sync)
            break
        except IntegrityError as exc:  # another association created the same row first
            if attempt == RETRIES:
                _failed(app, root, stored.path, exc)
        except StoreRefused:  # the folder could not be made durable
            if not _indexed(app, stored.path):
                discard_file(root, stored.path)
            raise
        except Exception as exc:
            _failed(app, root, stored.path, exc)
    if result.obsolete_path:
        discard_file(root, result.obsolete_path)
    return result


_SYNCS: dict[Path, Callable[[], None]] = {}


def _folder_sync(root: Path, relative: str) -> Callable[[], None]:
    """One callable per folder, so a batch fsyncs each folder once whatever its size."""
    folder = (root / relative).parent
    sync = _SYNCS.get(folder)
    if sync is None:
        if len(_SYNCS) > 4096:  # folders of series long finished
            _SYNCS.clear()
        sync = _SYNCS.setdefault(folder, functools.partial(sync_folder, root, relative))
    return sync


def _failed(app: Flask, root: Path, path: str, exc: BaseException) -> NoReturn:
    logger.error("Index of %s failed, file removed: %s", path, exc)
    if not _indexed(app, path):
        discard_file(root, path)
    raise StoreRefused(INDEX_UNAVAILABLE, "the index is unavailable") from exc


def _indexed(app: Flask, path: str) -> bool:
    """Whether a committed row uses this file (the same bytes stored by another association)."""
    try:
        with read_only(app) as db:
            return db.scalar(select(Instance.id).where(Instance.path == path)) is not None
    except Exception:
        return False  # the database is down: no committed row can be shown to need it
