#!/usr/bin/env python3
"""Front-desk benchmarks: patient search on 100,000 patients, the day board of a 2,000-exam day.

DEVELOPERS.md targets: the day board of a 2,000-exam day renders in under 300 ms server time
on SQLite, and the patient search on 100,000 patients answers in under 100 ms.

Builds a fresh database in a temporary folder (SQLite, or a throw-away database on the
PostgreSQL server given by --database-url), migrates it, bulk-loads the patients and the day,
then measures:

  search   ris.patients.search_patients for 50 realistic queries (accented and unaccented
           names, prefixes, name + given name, MRN, accession number, birth dates, no match),
           each repeated --repeat times after one warm-up; median, p95, max in ms;
           also GET /patients?q= through the web app when that page exists
  board    GET /board?date=DAY through the Flask test client, signed in as front desk:
           median/p95 of --board-requests requests after two warm-ups, and the response size;
           also ris.board.day_board alone (the query, without rendering)

Run from the repository root (not part of pytest):

  .venv/bin/python bench/bench_frontdesk.py
  .venv/bin/python bench/bench_frontdesk.py --database-url postgresql+psycopg://postgres@127.0.0.1/postgres

Results: a table on stdout and JSON lines appended to bench/results/frontdesk.jsonl.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from datetime import time as clock
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import frontdesk_data as data  # noqa: E402
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from ris import migrate, patients, users  # noqa: E402
from ris.app import create_app  # noqa: E402
from ris.board import day_board  # noqa: E402
from ris.db import read_only, sessions, transaction  # noqa: E402
from ris.site import site_of  # noqa: E402

SEARCH_TARGET_MS = 100.0
BOARD_TARGET_MS = 300.0
PASSWORD = "benchmark front desk password"
RESULTS = HERE / "results" / "frontdesk.jsonl"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--exams", type=int, default=2_000, help="booked exams on the day")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--unbooked", type=int, default=150, help="orders waiting for booking")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each search query")
    parser.add_argument("--board-requests", type=int, default=20)
    parser.add_argument("--day", type=date.fromisoformat, help="the busy day (default: today)")
    parser.add_argument("--timezone", default="Europe/Madrid")
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL (e.g. postgresql+psycopg://postgres@127.0.0.1/postgres): "
        "a throw-away database is created on it and dropped at the end",
    )
    parser.add_argument("--analyze", action="store_true", help="run ANALYZE on SQLite too")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--gc-freeze", action="store_true",
        help="gc.freeze() after loading, as a server could after start-up (an experiment)",
    )  # fmt: skip
    return parser.parse_args()


# ------------------------------------------------------------------------------- database


@contextmanager
def fresh_database(database_url: str | None, keep: bool = False) -> Iterator[tuple[str, Path]]:
    """A data folder and an empty database: SQLite in the folder, or a throw-away database
    on the PostgreSQL server ``database_url`` names; both removed afterwards unless ``keep``."""
    folder = Path(tempfile.mkdtemp(prefix="placa-bench-"))
    if not database_url:
        try:
            yield f"sqlite:///{folder / 'placa.db'}", folder
        finally:
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                print(f"kept {folder}")
        return
    server = create_engine(database_url, isolation_level="AUTOCOMMIT")
    name = f"placa_bench_{uuid.uuid4().hex[:10]}"
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(database_url).set(database=name).render_as_string(False), folder
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with server.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            shutil.rmtree(folder, ignore_errors=True)
        server.dispose()


def build_app(url: str, folder: Path, args: argparse.Namespace) -> Flask:
    app = create_app({"DATA_DIR": str(folder), "DATABASE_URL": url, "SECRET_KEY": "bench",
                      "TIMEZONE": args.timezone, "LOG_LEVEL": "WARNING"})  # fmt: skip
    migrate.upgrade(app)
    return app


def load(app: Flask, args: argparse.Namespace) -> data.Loaded:
    site = site_of(app)
    loaded = data.Loaded(rooms=args.rooms)
    day = args.day or datetime.now(site.zone).date()
    per_room = -(-args.exams // args.rooms)
    slot = max(5, 24 * 60 // per_room)
    started = time.perf_counter()
    with transaction(app) as db:
        rooms, codes = data.rooms_and_codes(db, args.rooms, slot)
        users.create_user(db, data.ACTOR, "bench-desk", PASSWORD, ["front_desk"])
    engine = app.extensions["placa.engine"]
    with engine.begin() as connection:
        data.load_patients(connection, site, args.patients, args.seed, loaded)
    loaded.seconds["patients"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    now = datetime.now(UTC)
    if day != now.astimezone(site.zone).date():
        now = datetime.combine(day, clock(12, 0), site.zone).astimezone(UTC)
    plan = data.DayPlan(day, args.exams, rooms, codes, now, slot)
    with engine.begin() as connection:
        data.load_day(connection, site, plan, args.patients, args.unbooked, args.seed, loaded)
    loaded.day = day
    loaded.seconds["day"] = round(time.perf_counter() - started, 1)
    if engine.dialect.name == "postgresql" or args.analyze:
        # PostgreSQL's autovacuum would analyze the new tables within a minute; SQLite never
        # does unless asked, and Placa does not ask (so by default it is measured without).
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return loaded


# --------------------------------------------------------------------------------- queries


def search_queries(loaded: data.Loaded, seed: int) -> list[tuple[str, str]]:
    """50 queries as a front desk types them, built from what was loaded."""
    rng = random.Random(seed + 3)
    people = loaded.sample_patients
    queries: list[tuple[str, str]] = []
    for person in rng.sample(people, 10):  # a family name, accents as on the card
        queries.append(("family name", person["family_name"]))
    for person in rng.sample(people, 8):  # name and given name, typed without accents
        words = f"{person['family_name'].split()[0]} {person['given_name'].split()[0]}"
        queries.append(("family + given, no accents", patients.normalise(words)))
    for person in rng.sample(people, 8):  # the first letters only
        family = patients.search_tokens(person["family_name"])[0]
        queries.append(("prefix", family[: rng.randint(2, 4)]))
    for person in rng.sample(people, 5):  # prefixes of two words
        tokens = patients.search_tokens(f"{person['family_name']} {person['given_name']}")
        queries.append(("two prefixes", f"{tokens[0][:3]} {tokens[-1][:2]}"))
    for person in rng.sample(people, 5):
        queries.append(("MRN", person["mrn"]))
    for accession in rng.sample(loaded.sample_accessions, 5):
        queries.append(("accession", accession))
    for n, person in enumerate(rng.sample(people, 4)):
        born: date = person["birth_date"]
        queries.append(("birth date", born.isoformat() if n % 2 else born.strftime("%d/%m/%Y")))
    queries += [("accented exact", "Núñez"), ("accented exact", "Lefèvre"),
                ("accented exact", "Gaëlle"), ("no match", "qwxz"),
                ("no match", "zz zz")]  # fmt: skip
    return queries[:50]


class Timings:
    """Wall-clock and CPU milliseconds of each run. The CPU time is this process's: the
    Python side of the work, less sensitive than the wall clock to a busy machine (for
    PostgreSQL the server's own work is not in it)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, action: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = action()
        self.cpu.append((time.process_time() - cpu) * 1000)
        self.wall.append((time.perf_counter() - wall) * 1000)
        return result

    def summary(self) -> dict[str, float]:
        return {"n": len(self.wall), **_stats(self.wall, ""), **_stats(self.cpu, "cpu_")}


def _stats(values: list[float], prefix: str) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {f"{prefix}median_ms": round(statistics.median(values), 2),
            f"{prefix}p95_ms": round(p95, 2), f"{prefix}max_ms": round(ordered[-1], 2),
            f"{prefix}min_ms": round(ordered[0], 2)}  # fmt: skip


def measure_search(app: Flask, queries: list[tuple[str, str]], repeat: int) -> dict[str, Any]:
    """The service alone, one session per query (as one request has)."""
    factory = sessions(app)

    def run(query: str) -> int:
        with factory() as db:
            found = patients.search_patients(db, query)
            db.rollback()
            return len(found)

    with app.app_context():
        for _kind, query in queries:
            run(query)  # warm-up: page cache, statement cache
        gc.collect()
        times = Timings()
        kinds: dict[str, Timings] = {}
        matches: dict[str, int] = {}
        for _ in range(repeat):
            for kind, query in queries:
                matches[query] = times.run(lambda q=query: run(q))
                kinds.setdefault(kind, Timings()).wall.append(times.wall[-1])
    slowest = sorted(queries, key=lambda kq: -matches[kq[1]])[:3]
    return {**times.summary(), "queries": len(queries),
            "by_kind": {k: round(statistics.median(v.wall), 2) for k, v in kinds.items()},
            "matches": {"zero": sum(1 for c in matches.values() if c == 0),
                        "at_limit": sum(1 for c in matches.values() if c >= patients.SEARCH_LIMIT),
                        "most": [f"{q} ({matches[q]})" for _, q in slowest]}}  # fmt: skip


def sign_in(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token, "no CSRF token on /login"
    answer = client.post("/login", data={"username": "bench-desk", "password": PASSWORD,
                                         "csrf_token": token.group(1)})  # fmt: skip
    assert answer.status_code == 302, f"sign-in failed: {answer.status_code}"


def measure_page(client: FlaskClient, paths: list[str], warm_up: int = 2) -> dict[str, Any]:
    for path in paths[:warm_up]:
        client.get(path)
    times, sizes = Timings(), []
    for path in paths:
        response = times.run(lambda p=path: client.get(p))
        assert response.status_code == 200, f"{path}: {response.status_code}"
        sizes.append(len(response.get_data()))
    return {**times.summary(), "bytes": max(sizes), "last": response.get_data(as_text=True)}


def measure_board(app: Flask, loaded: data.Loaded, requests: int) -> dict[str, Any]:
    site = site_of(app)
    service = Timings()
    gc.collect()  # each measure starts from the same heap, not from the last one's garbage
    for n in range(requests + 2):  # a session per run, as a request has; two to warm up
        with read_only(app) as db:
            rows = service.run(lambda db=db: day_board(db, site, loaded.day))
        assert len(rows) == loaded.day_exams, len(rows)
        del rows  # a request drops its rows before the next one comes
        if n < 2:
            service.wall.clear(), service.cpu.clear()
    result: dict[str, Any] = {"service": service.summary()}
    if "frontdesk.board" not in app.view_functions:
        result["note"] = "GET /board does not exist yet: only ris.board.day_board was measured"
        return result
    client = app.test_client()
    sign_in(client)
    gc.collect()
    page = measure_page(client, [f"/board?date={loaded.day.isoformat()}"] * requests)
    html = page.pop("last")
    page["accessions_shown"] = len(set(re.findall(r"\b\d{4}\d{6}\b", html)))
    result["page"] = page
    return result


def measure_search_page(app: Flask, queries: list[tuple[str, str]]) -> dict[str, Any] | None:
    if "patients.search" not in app.view_functions:
        return None
    from urllib.parse import quote

    client = app.test_client()
    sign_in(client)
    page = measure_page(client, [f"/patients?q={quote(q)}" for _, q in queries])
    page.pop("last")
    return page


# --------------------------------------------------------------------------------- report


def environment(app: Flask) -> dict[str, Any]:
    engine = app.extensions["placa.engine"]
    with engine.connect() as connection:
        version = (
            connection.execute(text("SHOW server_version")).scalar()
            if engine.dialect.name == "postgresql" else sqlite3.sqlite_version
        )  # fmt: skip
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())  # fmt: skip
    return {"backend": engine.dialect.name, "database_version": version, "cpu": cpu,
            "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "host": platform.node()}  # fmt: skip


def report(records: list[dict[str, Any]]) -> None:
    print()
    print(f"{'measure':<28} {'n':>4} {'median':>8} {'p95':>8} {'max':>8} {'cpu med':>8} "
          f"{'cpu p95':>8} {'target':>7}  size  (ms)")  # fmt: skip
    for record in records:
        target = record.get("target_ms")
        size = f"{record['bytes'] / 1024:.0f} KiB" if "bytes" in record else ""
        verdict = "" if target is None else ("ok" if record["p95_ms"] < target else "SLOW")
        print(f"{record['measure']:<28} {record['n']:>4} {record['median_ms']:>8.1f} "
              f"{record['p95_ms']:>8.1f} {record['max_ms']:>8.1f} {record['cpu_median_ms']:>8.1f} "
              f"{record['cpu_p95_ms']:>8.1f} {'' if target is None else f'<{target:.0f}':>7}  "
              f"{size} {verdict}")  # fmt: skip


def main() -> None:
    args = parse_args()
    logging.disable(logging.INFO)
    with fresh_database(args.database_url, args.keep) as (url, folder):
        app = build_app(url, folder, args)
        started = time.perf_counter()
        loaded = load(app, args)
        print(f"loaded {loaded.patients} patients ({loaded.tokens} name tokens), "
              f"{loaded.day_exams} exams on {loaded.day} in {loaded.rooms} rooms, "
              f"{loaded.unbooked} unbooked, in {time.perf_counter() - started:.0f} s")  # fmt: skip
        queries = search_queries(loaded, args.seed)
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        common = {"bench": "frontdesk", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                  **environment(app), "patients": loaded.patients, "name_tokens": loaded.tokens,
                  "day_exams": loaded.day_exams, "rooms": loaded.rooms,
                  "unbooked": loaded.unbooked, "load_seconds": loaded.seconds,
                  "analyzed": common_analyzed(app, args), "gc_freeze": args.gc_freeze}  # fmt: skip
        records = []
        search = measure_search(app, queries, args.repeat)
        records.append({**common, "measure": "search service", "target_ms": SEARCH_TARGET_MS,
                        **search})  # fmt: skip
        page = measure_search_page(app, queries)
        if page is not None:
            records.append({**common, "measure": "search page /patients?q=", **page})
        board = measure_board(app, loaded, args.board_requests)
        records.append({**common, "measure": "board service day_board", **board["service"],
                        "note": board.get("note")})  # fmt: skip
        if "page" in board:
            records.append({**common, "measure": "board page GET /board",
                            "target_ms": BOARD_TARGET_MS, **board["page"]})  # fmt: skip
        app.extensions["placa.engine"].dispose()
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    report(records)
    print(f"\nsearch medians by kind (ms): {json.dumps(search['by_kind'], ensure_ascii=False)}")
    print(f"most matches: {', '.join(search['matches']['most'])}")
    if board.get("note"):
        print(f"note: {board['note']}")
    if "page" in board:
        print(f"board page: {board['page']['accessions_shown']} accession numbers shown")
    print(f"results appended to {RESULTS.relative_to(HERE.parent)}")


def common_analyzed(app: Flask, args: argparse.Namespace) -> bool:
    return app.extensions["placa.engine"].dialect.name == "postgresql" or args.analyze


if __name__ == "__main__":
    main()
