#!/usr/bin/env python3
"""Modality Worklist benchmark: C-FIND by modality and date for one day among 50,000 steps.

Issue 5 target: p95 under 50 ms.

Builds a fresh database (SQLite in a temporary folder, or a throw-away database on the
PostgreSQL server given by --database-url), migrates it, bulk-loads patients and 50,000
scheduled procedure steps over 60 days in 20 rooms (CR, CT, US, MR), starts
``flask --app wsgi serve --only dicom --only web`` as a separate process (or, with
--in-process, the DICOM door in this process), then measures on one association, after a
warm-up, with pynetdicom as SCU:

  modality + date   the query the emulator sends (worklist.simulate.worklist_query) with
                    Modality and ScheduledProcedureStepStartDate set and every other key
                    empty (return it), for each modality on --query-days days, --repeat times
  station + date    the same with ScheduledStationAETitle instead (what most modalities send)

Every answer count is compared with what was loaded. DCMTK findscu runs a few of the same
queries as a cross-check (a new process and association each: it measures start-up too).

Run from the repository root (not part of pytest):

  .venv/bin/python bench/bench_worklist.py
  .venv/bin/python bench/bench_worklist.py --database-url postgresql+psycopg://postgres@127.0.0.1/postgres

Results: a table and JSON on stdout, JSON lines appended to bench/results/worklist.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import frontdesk_data  # noqa: E402
import worklist_data as data  # noqa: E402
from bench_frontdesk import environment, fresh_database  # noqa: E402
from flask import Flask  # noqa: E402
from proc_stats import cpu_seconds  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.association import Association  # noqa: E402
from pynetdicom.sop_class import ModalityWorklistInformationFind  # noqa: E402
from sqlalchemy import text  # noqa: E402

from ris import migrate  # noqa: E402
from ris.app import create_app  # noqa: E402
from ris.db import transaction  # noqa: E402
from ris.dicom_door import DicomDoor, set_nodelay  # noqa: E402
from ris.site import site_of  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402
from worklist.simulate import park_reactor, worklist_query  # noqa: E402

TARGET_MS = 50.0
RESULTS = HERE / "results" / "worklist.jsonl"
CALLING_AE = "BENCH_MWL"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK 3.6.7 leaves Nagle on otherwise


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=60, help="days the steps are spread over")
    parser.add_argument("--past-days", type=int, default=20, help="of them, before --day")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--slot", type=int, default=15, help="minutes per booking")
    parser.add_argument("--day", type=date.fromisoformat, help="the measured day (default: today)")
    parser.add_argument("--query-days", type=int, default=5, help="days queried from --day on")
    parser.add_argument("--repeat", type=int, default=5, help="passes over the queries")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--findscu", type=int, default=20, help="findscu cross-check queries")
    parser.add_argument("--timezone", default="Europe/Madrid")
    parser.add_argument("--server-log-level", default="INFO",
                        help="the door's PLACA_LOG_LEVEL (default INFO)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--in-process", action="store_true",
                        help="run the DICOM door in this process (shares the GIL)")  # fmt: skip
    parser.add_argument("--database-url", help="a PostgreSQL server URL: a throw-away database "
                        "is created on it and dropped at the end")  # fmt: skip
    parser.add_argument("--analyze", action="store_true", help="run ANALYZE on SQLite too")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


# ------------------------------------------------------------------------------------ load


def build_app(url: str, folder: Path, args: argparse.Namespace, **extra: Any) -> Flask:
    return create_app({"DATA_DIR": str(folder), "DATABASE_URL": url, "SECRET_KEY": "bench",
                       "TIMEZONE": args.timezone, "LOG_LEVEL": "WARNING", **extra})  # fmt: skip


def load(app: Flask, args: argparse.Namespace, day: date) -> data.Loaded:
    site = site_of(app)
    loaded = data.Loaded()
    started = time.perf_counter()
    with transaction(app) as db:
        rooms, codes = frontdesk_data.rooms_and_codes(db, args.rooms, args.slot)
    engine = app.extensions["placa.engine"]
    patients = frontdesk_data.Loaded()
    with engine.begin() as connection:
        frontdesk_data.load_patients(connection, site, args.patients, args.seed, patients)
    loaded.patients = patients.patients
    loaded.seconds["patients"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    period = data.Period(day, args.days, args.past_days, args.steps, rooms, codes, args.slot)
    with engine.begin() as connection:
        data.load_steps(connection, site, period, args.patients, args.seed, loaded)
    loaded.seconds["steps"] = round(time.perf_counter() - started, 1)
    if engine.dialect.name == "postgresql" or args.analyze:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return loaded


# ------------------------------------------------------------------------------- the door


@contextmanager
def dicom_door(url: str, folder: Path, args: argparse.Namespace) -> Iterator[tuple[int, int]]:
    """Placa's DICOM door on a free port: its port and the server's process id."""
    if args.in_process:
        app = build_app(url, folder, args, DICOM_HOST="127.0.0.1", DICOM_PORT=free_port(),
                        LOG_LEVEL=args.server_log_level)  # fmt: skip
        door = DicomDoor(app)
        try:
            yield door.address[1], os.getpid()
        finally:
            door.stop()
            app.extensions["placa.engine"].dispose()
        return
    settings = {"PLACA_TIMEZONE": args.timezone, "PLACA_SCHEDULER": "0",
                "PLACA_LOG_LEVEL": args.server_log_level}  # fmt: skip
    serve = ServeProcess(folder, url, only=("dicom", "web"), env_extra=settings)
    serve.start()
    try:
        serve.wait_ready()
        assert serve.process is not None
        yield serve.dicom_port, serve.process.pid
    finally:
        serve.stop()


# -------------------------------------------------------------------------------- measure


@dataclass(frozen=True)
class Query:
    kind: str  # "modality + date" or "station + date"
    key: str  # the modality or the station AE
    day: date
    expected: int


def queries(loaded: data.Loaded, day: date, days: int) -> dict[str, list[Query]]:
    wanted = [day + timedelta(days=n) for n in range(days)]
    modalities = sorted({m for m, _ in loaded.served_by_modality})
    stations = sorted({s for s, _ in loaded.served_by_station})
    return {
        "modality + date": [Query("modality + date", m, d, loaded.served_by_modality[(m, d)])
                            for d in wanted for m in modalities],
        "station + date": [Query("station + date", s, d, loaded.served_by_station[(s, d)])
                           for d in wanted for s in stations],
    }  # fmt: skip


def identifier(query: Query):  # noqa: ANN201
    if query.kind == "modality + date":
        return worklist_query("", query.day, modality=query.key)
    return worklist_query(query.key, query.day)


@dataclass(frozen=True)
class Found:
    ms: float  # until the final response
    first_ms: float  # until the first response (the first item, or the final one)
    answers: int
    final: int
    items: list[Dataset]  # kept undecoded, read only to explain a wrong count, then dropped

    def step_ids(self) -> list[str]:
        return [str(item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
                for item in self.items]  # fmt: skip


def run_find(assoc: Association, query: Query) -> Found:
    """One C-FIND, timed until the first and until the final response."""
    park_reactor(assoc)  # else pynetdicom can lose a response of back-to-back queries
    started = time.perf_counter()
    items, final, first = [], -1, 0.0
    for status, found in assoc.send_c_find(identifier(query), ModalityWorklistInformationFind):
        first = first or time.perf_counter()
        code = int(status.get("Status", -1))
        if code in (0xFF00, 0xFF01) and found is not None:
            items.append(found)
        else:
            final = code
    ended = time.perf_counter()
    return Found((ended - started) * 1000, (first - started) * 1000, len(items), final, items)


def explain(assoc: Association, query: Query, got: Found) -> str:
    """A wrong answer count, and what the same query answers again right away."""
    again = run_find(assoc, query)
    ids = got.step_ids()
    missing = [(n, sps) for n, sps in enumerate(again.step_ids()) if sps not in ids]
    return (f"{query.key} {query.day}: {got.answers} answers, {query.expected} expected, "
            f"final {got.final:#06x}; again: {again.answers}; missing (position, SPS ID): "
            f"{missing[:5]}")  # fmt: skip


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2),
            "max_ms": round(ordered[-1], 2)}  # fmt: skip


class LostResponses(logging.Handler):
    """Counts the responses pynetdicom's requestor threw away as unexpected."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "unexpected" in record.getMessage()


def measure_pynetdicom(port: int, pid: int, planned: list[Query], args: argparse.Namespace
                       ) -> dict[str, Any]:  # fmt: skip
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title="PLACA",
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])  # fmt: skip
    if not assoc.is_established:
        raise SystemExit("the DICOM door refused the worklist association")
    try:
        for query in (planned * args.warmup)[: args.warmup]:
            run_find(assoc, query)
        lost = LostResponses()
        logging.getLogger("pynetdicom").addHandler(lost)
        results: list[Found] = []
        mismatches: list[str] = []
        cpu_before, client_before = cpu_seconds(pid), time.process_time()
        for _ in range(args.repeat):
            for query in planned:
                results.append(run_find(assoc, query))
                got = results[-1]
                if got.answers != query.expected:
                    mismatches.append(explain(assoc, query, got))
                got.items.clear()
        cpu = cpu_seconds(pid) - cpu_before
        client_cpu = time.process_time() - client_before
    finally:
        assoc.release()
        logging.getLogger("pynetdicom").removeHandler(lost)
    timings, answers = [r.ms for r in results], [r.answers for r in results]
    first = summary([r.first_ms for r in results])
    return {
        "n": len(timings), **summary(timings),
        "first_answer_median_ms": first["median_ms"], "first_answer_p95_ms": first["p95_ms"],
        "answers": {"min": min(answers), "median": statistics.median(answers),
                    "max": max(answers), "total": sum(answers)},
        "wrong_counts": len(mismatches), "mismatches": mismatches[:10],
        "client_lost_responses": lost.count,
        "failed_queries": sum(r.final != 0x0000 for r in results),
        "server_cpu_ms_per_query": round(cpu * 1000 / len(timings), 2),
        "client_cpu_ms_per_query": round(client_cpu * 1000 / len(timings), 2),
        "ms_per_answer": round(sum(timings) / max(1, sum(answers)), 3),
    }  # fmt: skip


def findscu_keys(query: Query) -> list[str]:
    item = "ScheduledProcedureStepSequence[0]"
    keys = [f"{item}.ScheduledProcedureStepStartDate={query.day:%Y%m%d}",
            f"{item}.ScheduledStationAETitle", f"{item}.ScheduledProcedureStepStartTime",
            f"{item}.ScheduledProcedureStepID", f"{item}.ScheduledProcedureStepDescription",
            f"{item}.Modality" + (f"={query.key}" if query.kind == "modality + date" else ""),
            "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
            "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription",
            "SpecificCharacterSet=ISO_IR 192"]  # fmt: skip
    if query.kind == "station + date":
        keys[1] += f"={query.key}"
    return [arg for key in keys for arg in ("-k", key)]


def dcmtk(name: str) -> str | None:
    """DCMTK's tool, never the virtualenv's pynetdicom namesake."""
    return shutil.which(name, path="/usr/bin:/usr/local/bin")


def process_floor(port: int) -> float | None:
    """Median wall time of echoscu (process start, association, C-ECHO, release)."""
    tool = dcmtk("echoscu")
    if tool is None:
        return None
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        command = [tool, "-aet", CALLING_AE, "-aec", "PLACA", "127.0.0.1", str(port)]
        subprocess.run(command, check=True, capture_output=True, env=DCMTK_ENV)
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 2)


def measure_findscu(port: int, planned: list[Query], count: int) -> dict[str, Any] | None:
    """Queries with DCMTK findscu -W -X: wall time per process, answers counted from files.

    A modality's C++ stack decodes faster than pynetdicom; each run also pays process
    start-up and an association, given apart by the echoscu floor.
    """
    tool = dcmtk("findscu")
    if tool is None or count <= 0:
        return None
    step = max(1, len(planned) // count)
    timings, answers, mismatches = [], [], []
    for query in planned[::step][:count]:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            subprocess.run(
                [tool, "-W", "-aet", CALLING_AE, "-aec", "PLACA", "-X", "-od", folder,
                 *findscu_keys(query), "127.0.0.1", str(port)],
                check=True, capture_output=True, env=DCMTK_ENV,
            )  # fmt: skip
            timings.append((time.perf_counter() - started) * 1000)
            found = len(list(Path(folder).glob("rsp*.dcm")))
        answers.append(found)
        if found != query.expected:
            mismatches.append(f"{query.key} {query.day}: {found}, {query.expected} expected")
    return {
        "n": len(timings), **summary(timings), "process_floor_ms": process_floor(port),
        "answers": {"min": min(answers), "median": statistics.median(answers),
                    "max": max(answers), "total": sum(answers)},
        "wrong_counts": len(mismatches), "mismatches": mismatches[:10],
    }  # fmt: skip


# --------------------------------------------------------------------------------- report


def report(records: list[dict[str, Any]]) -> None:
    print(f"\n{'measure':<52} {'n':>5} {'median':>8} {'p95':>8} {'max':>8} {'answers':>16} "
          f"{'wrong':>5}  (ms)")  # fmt: skip
    for record in records:
        answers = record["answers"]
        shown = f"{answers['min']}-{answers['max']} med {answers['median']:g}"
        verdict = ""
        if "target_ms" in record:
            verdict = "ok" if record["p95_ms"] < record["target_ms"] else "SLOW"
        print(f"{record['measure']:<52} {record['n']:>5} {record['median_ms']:>8.1f} "
              f"{record['p95_ms']:>8.1f} {record['max_ms']:>8.1f} {shown:>16} "
              f"{record['wrong_counts']:>5}  {verdict}")  # fmt: skip


def main() -> None:
    args = parse_args()
    logging.disable(logging.INFO)
    day = args.day or datetime.now(ZoneInfo(args.timezone)).date()
    with fresh_database(args.database_url, args.keep) as (url, folder):
        app = build_app(url, folder, args)
        migrate.upgrade(app)
        started = time.perf_counter()
        loaded = load(app, args, day)
        common = {"bench": "worklist", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                  **environment(app), "steps": loaded.steps, "patients": loaded.patients,
                  "rooms": args.rooms, "days": args.days, "day": day.isoformat(),
                  "statuses": loaded.statuses, "load_seconds": loaded.seconds,
                  "door": "in-process" if args.in_process else "serve process",
                  "server_log_level": args.server_log_level}  # fmt: skip
        app.extensions["placa.engine"].dispose()
        print(f"loaded {loaded.steps} steps ({loaded.statuses}) and {loaded.patients} patients "
              f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        planned = queries(loaded, day, args.query_days)
        records = []
        with dicom_door(url, folder, args) as (port, pid):
            for kind, batch in planned.items():
                result = measure_pynetdicom(port, pid, batch, args)
                records.append({**common, "measure": f"C-FIND {kind}, pynetdicom, one association",
                                "target_ms": TARGET_MS, **result})  # fmt: skip
            checked = measure_findscu(port, planned["modality + date"], args.findscu)
            if checked is not None:
                records.append({**common, "measure": "C-FIND modality + date, findscu (process)",
                                **checked})  # fmt: skip
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    print(json.dumps(records, ensure_ascii=False, default=str, indent=1))
    report(records)
    print(f"results appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
