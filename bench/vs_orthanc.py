#!/usr/bin/env python3
"""Placa against Orthanc, side by side in one run: ingest, C-FIND and C-MOVE (issue 6).

On the same generated corpora (``../shared/bench/make_corpus.py``), alternating the two
archives, each started fresh for each measurement on loopback:

* **Orthanc** (Debian ``orthanc``, ``orthanc-dicomweb``) with its defaults: SQLite index in
  its own temporary folder, ``TCP_NODELAY=1`` (its DCMTK layer leaves Nagle on otherwise,
  ../shared/bench/BASELINE.md), configured as ``../shared/bench/peers.sh`` does;
* **Placa**: ``flask --app wsgi db upgrade`` then ``flask --app wsgi serve`` (every door,
  scheduler off) in a fresh ``PLACA_DATA_DIR`` with a fresh SQLite database, or a
  throw-away PostgreSQL database with ``--database-url``.

Measurements, all with the reference harness's own scripts:

* ingest (``--corpus``): ``bench_store.py dimse``, DCMTK ``storescu`` over 1 and 4
  associations: instances/s, MB/s, server CPU ms per instance (the server's whole process
  tree, sampled here from /proc: Placa's DICOM door may run helper processes) and peak RSS;
* C-FIND (``--query-corpus``, e.g. 100,000 small instances): each archive loaded with 4
  associations, then ``bench_query.py`` study-level queries by PatientID, PatientName
  wildcard and StudyDate range (median and p95, new association and open association);
* C-MOVE (``--move-corpus``, one 500-image study): ``bench_query.py``'s ``movescu`` into a
  ``storescp`` it starts (Placa gets the destination by ``flask --app wsgi ae add``).

Everything runs inside a private network namespace (``unshare -n``, loopback only: Orthanc
1.10 cannot be told to bind 127.0.0.1); a PostgreSQL server is then reached over its Unix
socket. Results: JSON lines appended to ``--results``, and a Markdown table of medians and
Placa/Orthanc ratios on stdout.

  .venv/bin/python bench/vs_orthanc.py --corpus /tmp/corpus2k --reps 2
  .venv/bin/python bench/vs_orthanc.py --query-corpus /tmp/corpus100k --move-corpus /tmp/corpus-move
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from proc_stats import cpu_seconds  # noqa: E402

HARNESS = Path(os.environ.get("BENCH_HARNESS", ROOT.parent / "shared" / "bench"))
RESULTS = ROOT / "bench" / "results" / "vs_orthanc.jsonl"
ORTHANC = os.environ.get("ORTHANC_BIN", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
QUERIES = "find_by_patientid,find_by_name_wildcard,find_by_date_month"
PORTS = {
    "orthanc_dicom": 24104,
    "orthanc_http": 24042,
    "placa_dicom": 24204,
    "placa_http": 24242,
    "placa_hl7": 24275,
    "move": 24106,
}


# ------------------------------------------------------------------------- processes


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}) before port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


@dataclass
class Server:
    label: str
    process: subprocess.Popen[bytes]
    dicom_port: int
    aec: str
    folder: Path
    on_stop: list = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        for callback in self.on_stop:
            callback()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_orthanc(work: Path) -> Server:
    folder = Path(tempfile.mkdtemp(prefix="orthanc-", dir=work))
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpPort": PORTS["orthanc_http"],
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": PORTS["orthanc_dicom"],
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomModalities": {
            "bench": ["BENCH", "127.0.0.1", PORTS["move"]],
            "benchdest": ["BENCHDEST", "127.0.0.1", PORTS["move"]],
        },
        "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 (the server's lifetime)
    process = subprocess.Popen(
        [ORTHANC, str(folder / "orthanc.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    wait_port(PORTS["orthanc_http"], process)
    wait_port(PORTS["orthanc_dicom"], process)
    return Server("orthanc", process, PORTS["orthanc_dicom"], "ORTHANC", folder)


def placa_env(folder: Path, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PLACA_DATA_DIR": str(folder),
        "PLACA_DATABASE_URL": database_url,
        "PLACA_DICOM_PORT": str(PORTS["placa_dicom"]),
        "PLACA_DICOM_HOST": "127.0.0.1",
        "PLACA_HTTP_PORT": str(PORTS["placa_http"]),
        "PLACA_HL7_PORT": str(PORTS["placa_hl7"]),
        "PLACA_HL7_HOST": "127.0.0.1",
        "PLACA_AE_TITLE": "PLACA",
        "PLACA_SCHEDULER": "0",
        "PLACA_LOG_LEVEL": "WARNING",
    }


def start_placa(work: Path, database_url: str | None, label: str, checkout: Path = ROOT) -> Server:
    folder = Path(tempfile.mkdtemp(prefix="placa-", dir=work))
    on_stop = []
    if database_url:
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_frontdesk import fresh_database

        database = fresh_database(database_url)
        url, _ = database.__enter__()
        on_stop.append(lambda: database.__exit__(None, None, None))
    else:
        url = f"sqlite:///{folder / 'placa.db'}"
    env = placa_env(folder, url)
    venv = checkout / ".venv" if (checkout / ".venv").exists() else ROOT / ".venv"
    flask = [str(venv / "bin" / "flask"), "--app", "wsgi"]
    for command in (["db", "upgrade"], ["ae", "add", "BENCHDEST", "127.0.0.1", str(PORTS["move"])]):
        subprocess.run([*flask, *command], cwd=checkout, env=env, check=True, capture_output=True)
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 (the server's lifetime)
    process = subprocess.Popen(
        [*flask, "serve"],
        cwd=checkout,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(PORTS["placa_dicom"], process)
        wait_port(PORTS["placa_http"], process)
    except RuntimeError as exc:
        raise RuntimeError(
            f"{exc}: {(folder / 'serve.log').read_text()[-2000:]}"
        ) from None  # the web door opens last: every door is up
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['placa_http']}/healthz", timeout=10):
        pass
    return Server(label, process, PORTS["placa_dicom"], "PLACA", folder, on_stop)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------- measurements


def harness(args: argparse.Namespace, script: str, *options: str) -> list[dict]:
    """Run one of the reference harness's scripts; its JSON lines."""
    done = subprocess.run(
        [args.python, str(HARNESS / script), *options], capture_output=True, text=True
    )
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 and not records:
        records = [{"ok": False, "errors": [done.stderr[-600:] or done.stdout[-600:]]}]
    return records


def ingest(args: argparse.Namespace, server: Server, corpus: Path, parallel: int) -> dict:
    before = cpu_seconds(server.process.pid)
    (record,) = harness(
        args,
        "bench_store.py",
        "dimse",
        "--corpus",
        str(corpus),
        "--host",
        "127.0.0.1",
        "--port",
        str(server.dicom_port),
        "--aec",
        server.aec,
        "--parallel",
        str(parallel),
        "--label",
        server.label,
        "--server-pid",
        str(server.process.pid),
    )[-1:]
    cpu = cpu_seconds(server.process.pid) - before
    instances = record.get("instances") or 1
    record.update(
        server_tree_cpu_s=round(cpu, 2), server_cpu_ms_per_inst=round(cpu * 1000 / instances, 2)
    )
    return record


def queries(
    args: argparse.Namespace, server: Server, corpus: Path, only: str, move: bool
) -> list[dict]:
    options = [
        "--corpus",
        str(corpus),
        "--host",
        "127.0.0.1",
        "--port",
        str(server.dicom_port),
        "--aec",
        server.aec,
        "--label",
        server.label,
        "--only",
        only,
        "--no-cget",
        "--repeat",
        str(args.repeat),
        "--retrieve-repeat",
        str(args.retrieve_repeat),
        "--move-port",
        str(PORTS["move"] if move else 0),
        "--move-dest",
        "BENCHDEST",
    ]
    return harness(args, "bench_query.py", *options)


def record(args: argparse.Namespace, row: dict, **extra: object) -> dict:
    row = {**row, **extra, "run": args.run_id}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def placa_label(args: argparse.Namespace) -> str:
    return "placa-postgresql" if args.database_url else "placa-sqlite"


def run_ingest(args: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    for rep in range(1, args.reps + 1):
        for parallel in args.parallel:
            for start in (
                lambda: start_orthanc(work),
                lambda: start_placa(work, args.database_url, placa_label(args), args.checkout),
            ):
                with running(start()) as server:
                    row = ingest(args, server, args.corpus, parallel)
                rows.append(record(args, row, rep=rep, phase="ingest"))
    return rows


def run_loaded(
    args: argparse.Namespace, work: Path, corpus: Path, only: str, move: bool, phase: str
) -> list[dict]:
    """Load each archive with the corpus (4 associations), then query or retrieve."""
    rows = []
    for start in (
        lambda: start_orthanc(work),
        lambda: start_placa(work, args.database_url, placa_label(args), args.checkout),
    ):
        with running(start()) as server:
            rows.append(record(args, ingest(args, server, corpus, 4), phase=f"{phase}-load"))
            for row in queries(args, server, corpus, only, move):
                if (
                    not move
                    or str(row.get("metric", "")).startswith("cmove")
                    or not row.get("ok", 1)
                ):
                    rows.append(record(args, row, phase=phase))
    return rows


# ------------------------------------------------------------------------- summary


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "–"


def summary(rows: list[dict]) -> str:
    placa = next((r["label"] for r in rows if str(r.get("label", "")).startswith("placa")), "placa")
    lines = []
    ingest_rows = [r for r in rows if r.get("phase") == "ingest"]
    if ingest_rows:
        lines += [
            "| archive | assoc. | runs | inst/s (median) | MB/s | server CPU ms/inst | "
            "peak RSS MB | placa/orthanc inst/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for parallel in sorted({r["parallel"] for r in ingest_rows}):
            same = [r for r in ingest_rows if r["parallel"] == parallel and r.get("ok")]
            rates = {}
            for label in ("orthanc", placa):
                mine = [r for r in same if r["label"] == label]
                rates[label] = _median(mine, "inst_per_s")
                rng = "–".join(
                    f"{r['inst_per_s']:.0f}" for r in sorted(mine, key=lambda r: r["inst_per_s"])
                )
                lines.append(
                    f"| {label} | {parallel} | {len(mine)} | {rates[label] or 0:.0f} ({rng}) | "
                    f"{_median(mine, 'mb_per_s') or 0:.0f} | "
                    f"{_median(mine, 'server_cpu_ms_per_inst') or 0:.2f} | "
                    f"{_median(mine, 'server_peak_rss_sampled_mb') or 0:.0f} | "
                    f"{_ratio(rates[label], rates['orthanc']) if label != 'orthanc' else ''} |"
                )
    loads = [r for r in rows if str(r.get("phase", "")).endswith("-load")]
    for r in loads:
        lines.append(
            f"\n{r['phase']} {r['label']}: {r.get('instances')} instances at "
            f"{r.get('inst_per_s')} inst/s, {r.get('server_cpu_ms_per_inst')} ms CPU/inst, "
            f"peak RSS {r.get('server_peak_rss_sampled_mb')} MB, ok={r.get('ok')}"
        )
    query_rows = [r for r in rows if r.get("phase") in ("query", "move") and r.get("metric")]
    if query_rows:
        lines += [
            "",
            "| metric | orthanc median (p95) ms | placa median (p95) ms | "
            "orthanc/placa (median) | wrong counts o/p | MB/s o/p |",
            "|---|---|---|---|---|---|",
        ]
        metrics = list(dict.fromkeys(r["metric"] for r in query_rows))
        for metric in metrics:
            o = next(
                (r for r in query_rows if r["metric"] == metric and r["label"] == "orthanc"), {}
            )
            p = next((r for r in query_rows if r["metric"] == metric and r["label"] == placa), {})
            mbs = f"{o.get('mb_per_s', '–')} / {p.get('mb_per_s', '–')}" if "mb_per_s" in o else ""
            lines.append(
                f"| {metric} | {o.get('median_ms', '–')} ({o.get('p95_ms', '–')}) | "
                f"{p.get('median_ms', '–')} ({p.get('p95_ms', '–')}) | "
                f"{_ratio(o.get('median_ms'), p.get('median_ms'))} | "
                f"{o.get('wrong_counts', '–')} / {p.get('wrong_counts', '–')} | {mbs} |"
            )
    failed = [r for r in rows if r.get("ok") is False]
    for r in failed:
        lines.append(f"\nFAILED {r.get('label')} {r.get('phase')}: {r.get('errors')}")
    return "\n".join(lines)


# ------------------------------------------------------------------------- main


def default_python() -> str:
    for candidate in (os.environ.get("PY"), HARNESS / ".venv" / "bin" / "python"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return sys.executable


def in_private_network() -> None:
    """Re-run this script in a network namespace holding only loopback."""
    if os.environ.get("BENCH_IN_NETNS"):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    os.execvpe(
        unshare[0], [*unshare, sys.executable, *sys.argv], {**os.environ, "BENCH_IN_NETNS": "1"}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="ingest corpus (make_corpus.py output)")
    parser.add_argument("--query-corpus", type=Path, help="corpus for C-FIND (e.g. 100k small)")
    parser.add_argument("--move-corpus", type=Path, help="corpus whose middle CT study is moved")
    parser.add_argument("--reps", type=int, default=2, help="ingest repetitions (alternating)")
    parser.add_argument("--parallel", default="1,4", help="association counts for ingest")
    parser.add_argument("--queries", default=QUERIES, help="bench_query.py query names")
    parser.add_argument("--repeat", type=int, default=50, help="queries per type (after 3)")
    parser.add_argument("--retrieve-repeat", type=int, default=5)
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server for Placa (Unix socket URL, "
        "e.g. postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql)",
    )
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the Placa tree to run")
    parser.add_argument("--python", default=default_python(), help="python for the harness")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--summary", type=Path, help="only print the tables of this results file")
    args = parser.parse_args()
    if args.summary:
        print(summary([json.loads(line) for line in args.summary.read_text().splitlines() if line]))
        return
    in_private_network()
    args.parallel = [int(p) for p in args.parallel.split(",")]
    args.run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for corpus in (args.corpus, args.query_corpus, args.move_corpus):
        if corpus and not (corpus / "manifest.json").exists():
            parser.error(f"{corpus} is not a make_corpus.py corpus (no manifest.json)")
    work = Path(tempfile.mkdtemp(prefix="vs-orthanc-"))
    rows: list[dict] = []
    try:
        if args.corpus:
            rows += run_ingest(args, work)
        if args.query_corpus:
            rows += run_loaded(args, work, args.query_corpus, args.queries, False, "query")
        if args.move_corpus:
            rows += run_loaded(args, work, args.move_corpus, "find_by_patientid", True, "move")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
