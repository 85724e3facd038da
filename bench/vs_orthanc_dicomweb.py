#!/usr/bin/env python3
"""Placa's DICOMweb against Orthanc's DICOMweb plugin, side by side in one run (issue 7).

Alternating the two archives, each started fresh for each measurement on loopback (start and
stop code shared with ``vs_orthanc.py``: Orthanc 1.10 with the ``orthanc-dicomweb`` plugin at
``/dicom-web/``, its defaults, ``TCP_NODELAY=1``; Placa ``flask --app wsgi serve`` with a
fresh SQLite database and data folder):

* **STOW-RS** (``--stow-corpus``, e.g. one 500-image series of 0.5 MB CT): raw multipart
  bodies built from the file bytes as ``../shared/bench/bench_store.py stow`` builds them,
  batches of ``--batch`` (50) instances, over 1 and 4 concurrent streams: instances/s, MB/s,
  the server's CPU ms per instance; every answer is checked for failed instances;
* **WADO-RS** of the series just stored (and of the whole study): one ``requests`` GET of the
  multipart answer read in 1 MB chunks (``bench_query.py``'s way), one warm-up then the
  median of ``--retrieve-repeat``; the byte count is checked;
* **QIDO-RS** (``--query-corpus``, e.g. 100,000 small instances): each archive loaded with the
  same corpus by DCMTK ``storescu`` over 4 associations (``vs_orthanc.ingest``), then
  ``bench_query.py``'s study searches by PatientID, PatientName wildcard and a one-month
  StudyDate range (median, p95), every answer's count checked against the manifest.

Placa's DICOMweb requires credentials: a user and an API token are created in each fresh
Placa (``flask --app wsgi users create``, ``users token create``) and every request carries
``Authorization: Bearer``. Orthanc runs with authentication off (its bench default), so it
skips that work. Results: JSON lines appended to ``--results``; a Markdown table of medians
and Placa/Orthanc ratios on stdout.

  .venv/bin/python bench/vs_orthanc_dicomweb.py --stow-corpus /tmp/corpus-series500 \\
      --query-corpus /tmp/corpus100k
  .venv/bin/python bench/vs_orthanc_dicomweb.py --stow-corpus /tmp/corpus-series500 \\
      --parallel 4 --reps 5 --checkout /tmp/placa-after --before /tmp/placa-before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_orthanc  # noqa: E402
from proc_stats import cpu_seconds  # noqa: E402
from vs_orthanc import (  # noqa: E402
    HARNESS,
    PORTS,
    Server,
    default_python,
    in_private_network,
    placa_env,
    running,
    start_orthanc,
    start_placa,
)

sys.path.insert(0, str(HARNESS))
import bench_query  # noqa: E402
from bench_store import _multipart  # noqa: E402
from benchlib import corpus_files, load_manifest, warm_cache  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "vs_orthanc_dicomweb.jsonl"
QUERIES = ("find_by_patientid", "find_by_name_wildcard", "find_by_date_month")
PASSWORD = "bench password 123\n"
DICOM_PART = 'multipart/related; type="application/dicom"'


# ------------------------------------------------------------------------- servers


def placa_with_token(
    work: Path, checkout: Path = vs_orthanc.ROOT
) -> tuple[Server, requests.Session, str]:
    """A fresh Placa, a user with an API token, and a session that sends it."""
    server = start_placa(work, None, "placa-sqlite", checkout)
    env = placa_env(server.folder, f"sqlite:///{server.folder / 'placa.db'}")
    flask = [str(vs_orthanc.ROOT / ".venv" / "bin" / "flask"), "--app", "wsgi"]

    def run(*words: str, stdin: str | None = None) -> str:
        done = subprocess.run([*flask, *words], cwd=checkout, env=env, input=stdin,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    run("users", "create", "bench", "--role", "technologist", "--password-stdin", stdin=PASSWORD)
    token = run("users", "token", "create", "bench").strip().splitlines()[-1]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return server, session, f"http://127.0.0.1:{PORTS['placa_http']}/dicomweb"


def orthanc(work: Path) -> tuple[Server, requests.Session, str]:
    base = f"http://127.0.0.1:{PORTS['orthanc_http']}/dicom-web"
    return start_orthanc(work), requests.Session(), base


STARTS = {"orthanc": orthanc, "placa": placa_with_token}


# ------------------------------------------------------------------------- measurements


def stow(server: Server, session: requests.Session, base: str, files: list[str],
         batch: int, parallel: int) -> dict:  # fmt: skip
    """bench_store.py's raw STOW-RS client, with the session's credentials."""
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=max(4, parallel)))
    batches = [files[i : i + batch] for i in range(0, len(files), batch)]
    errors: list[str] = []

    def send(paths: list[str]) -> None:
        boundary = uuid.uuid4().hex.encode()
        body = _multipart(paths, boundary)
        answer = session.post(f"{base}/studies", data=body, timeout=600, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; '
                            f"boundary={boundary.decode()}",
            "Accept": "application/dicom+json"})  # fmt: skip
        failed = []
        if answer.status_code == 200 and answer.content:
            failed = answer.json().get("00081198", {}).get("Value", [])
        if answer.status_code not in (200, 202) or failed:
            errors.append(f"HTTP {answer.status_code}, {len(failed)} failed: {answer.text[:300]}")

    warm_cache(files)
    cpu = cpu_seconds(server.process.pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(send, batches))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(server.process.pid) - cpu
    size = sum(os.path.getsize(p) for p in files)
    return {"metric": f"stow_{parallel}", "ok": not errors, "errors": errors[:3] or None,
            "instances": len(files), "parallel": parallel, "batch": batch,
            "wall_s": round(wall, 2), "inst_per_s": round(len(files) / wall, 1),
            "mb_per_s": round(size / 1e6 / wall, 1),
            "server_cpu_ms_per_inst": round(cpu * 1000 / len(files), 2)}  # fmt: skip


def wado(server: Server, session: requests.Session, base: str, url: str, name: str,
         instances: int, nbytes: int, repeat: int) -> dict:  # fmt: skip
    """bench_query.py's WADO-RS timing (one warm-up, median of the rest) on any URL."""
    times, got = [], []
    cpu = cpu_seconds(server.process.pid)
    for run in range(repeat + 1):
        started = time.perf_counter()
        answer = session.get(url, stream=True, timeout=300, headers={"Accept": DICOM_PART})
        size = sum(len(chunk) for chunk in answer.iter_content(1 << 20))
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            return {"metric": name, "ok": False, "errors": [f"HTTP {answer.status_code}"]}
        if run:
            times.append(elapsed)
            got.append(size)
    cpu = cpu_seconds(server.process.pid) - cpu
    row = bench_query._thr(times, instances, nbytes, got, got_is_bytes=True)
    row["server_cpu_ms_per_inst"] = round(cpu * 1000 / instances / (repeat + 1), 2)
    return {"metric": name, "ok": row["complete"], **row}


def run_stow_wado(args: argparse.Namespace, work: Path) -> list[dict]:
    manifest = load_manifest(args.stow_corpus)
    (study,) = manifest["studies"][:1]
    files = corpus_files(args.stow_corpus)
    nbytes = sum(os.path.getsize(p) for p in files)
    series_dir = args.stow_corpus / study["dir"] / "00"
    series_files = sorted(p for p in files if Path(p).parent == series_dir)
    rows = []
    for rep in range(1, args.reps + 1):
        for parallel in args.parallel:
            for label, start in STARTS.items():
                server, session, base = start(work)
                with running(server):
                    row = stow(server, session, base, files, args.batch, parallel)
                    rows.append(record(args, row, label=label, rep=rep, phase="stow"))
                    if parallel != args.parallel[-1]:
                        continue
                    uid = study["StudyInstanceUID"]
                    rows.append(record(args, wado(
                        server, session, base, f"{base}/studies/{uid}/series/{study['series'][0]}",
                        "wadors_series", len(series_files),
                        sum(os.path.getsize(p) for p in series_files), args.retrieve_repeat,
                    ), label=label, rep=rep, phase="wado"))  # fmt: skip
                    if len(series_files) != len(files):
                        rows.append(record(args, wado(
                            server, session, base, f"{base}/studies/{uid}", "wadors_study",
                            len(files), nbytes, args.retrieve_repeat,
                        ), label=label, rep=rep, phase="wado"))  # fmt: skip
    return rows


def run_qido(args: argparse.Namespace, work: Path) -> list[dict]:
    manifest = load_manifest(args.query_corpus)
    plans = bench_query.query_plan(manifest, args.repeat)
    plans = {name: items for name, items in plans.items() if name in QUERIES}
    rows = []
    for label in ("orthanc", "placa"):
        server, session, base = STARTS[label](work)
        with running(server):
            load = vs_orthanc.ingest(args, server, args.query_corpus, 4)
            rows.append(record(args, load, label=label, phase="qido-load"))
            if load.get("instances") != manifest["instances"] or not load.get("ok", True):
                rows.append(record(args, {"ok": False, "errors": ["load incomplete"]},
                                   label=label, phase="qido"))  # fmt: skip
            cpu = cpu_seconds(server.process.pid)
            answers = bench_query.qido(SimpleNamespace(url=base), plans, session)
            cpu = cpu_seconds(server.process.pid) - cpu
            queries = sum(len(items) + 3 for items in plans.values())
            for metric, row in answers.items():
                row.update(metric=metric, ok=row["wrong_counts"] == 0,
                           server_cpu_ms_per_query_all=round(cpu * 1000 / queries, 2))  # fmt: skip
                rows.append(record(args, row, label=label, phase="qido"))
    return rows


def record(args: argparse.Namespace, row: dict, **extra: object) -> dict:
    row = {**row, **extra, "run": args.run_id, "loadavg": os.getloadavg()[0]}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


# ------------------------------------------------------------------------- summary


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def summary(rows: list[dict]) -> str:
    labels = list(dict.fromkeys(r["label"] for r in rows if r.get("label")))
    others = [lab for lab in labels if lab != "orthanc"]
    lines = [
        "| metric | orthanc | "
        + " | ".join(others)
        + " | "
        + " | ".join(f"{lab}/orthanc" for lab in others)
        + " | server CPU ms/inst | runs |",
        "|---" * (4 + 2 * len(others)) + "|",
    ]
    metrics = list(dict.fromkeys(r["metric"] for r in rows if r.get("metric")))
    for metric in metrics:
        same = {lab: [r for r in rows if r.get("metric") == metric and r.get("label") == lab
                      and r.get("ok")] for lab in labels}  # fmt: skip
        qido = metric.startswith("qido")
        key = "median_ms" if qido else "inst_per_s"
        values = {lab: _median(same[lab], key) for lab in labels}
        if qido:
            cells = [f"{values[lab]} ({_median(same[lab], 'p95_ms')})" for lab in labels]
        else:
            cells = [f"{values[lab]:.0f} ({_median(same[lab], 'mb_per_s'):.0f})"
                     if values[lab] else "–" for lab in labels]  # fmt: skip
        o = values.get("orthanc")
        ratios = [(f"{o / values[lab]:.2f} faster" if qido else f"{values[lab] / o:.2f}")
                  if o and values[lab] else "–" for lab in others]  # fmt: skip
        cpu = " / ".join(f"{_median(same[lab], 'server_cpu_ms_per_inst') or 0:.2f}"
                         for lab in labels)  # fmt: skip
        unit = "median (p95) ms" if qido else "inst/s (MB/s)"
        runs = max(len(v) for v in same.values())
        lines.append(f"| {metric} {unit} | " + " | ".join(cells) + " | " + " | ".join(ratios)
                     + f" | {cpu if not qido else '–'} | {runs} |")  # fmt: skip
    for r in rows:
        if r.get("phase") == "qido-load":
            lines.append(f"\n{r['label']} loaded {r.get('instances')} instances at "
                         f"{r.get('inst_per_s')} inst/s")  # fmt: skip
        if r.get("ok") is False:
            lines.append(f"\nFAILED {r['label']} {r.get('metric') or r.get('phase')}: "
                         f"{r.get('errors') or r.get('wrong_counts')}")  # fmt: skip
    return "\n".join(lines)


# ------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stow-corpus", type=Path, help="STOW-RS/WADO-RS corpus (one study)")
    parser.add_argument("--query-corpus", type=Path, help="QIDO-RS corpus (e.g. 100k small)")
    parser.add_argument("--reps", type=int, default=2, help="STOW-RS repetitions (alternating)")
    parser.add_argument("--parallel", default="1,4", help="concurrent STOW-RS streams")
    parser.add_argument("--batch", type=int, default=50, help="instances per STOW-RS request")
    parser.add_argument("--repeat", type=int, default=50, help="queries per type (after 3)")
    parser.add_argument("--retrieve-repeat", type=int, default=5)
    parser.add_argument(
        "--checkout", type=Path, help="the Placa tree measured as placa (default: this one)"
    )
    parser.add_argument(
        "--before", type=Path, help="another Placa checkout, measured as placa-before (STOW/WADO)"
    )
    parser.add_argument("--python", default=default_python(), help="python for the harness")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--summary", type=Path, help="only print the tables of this results file")
    args = parser.parse_args()
    if args.summary:
        rows = [json.loads(line) for line in args.summary.read_text().splitlines() if line]
        print(summary(rows))
        return
    in_private_network()
    if args.checkout:  # e.g. a clean `git archive` of a commit, while others edit this tree
        STARTS["placa"] = partial(placa_with_token, checkout=args.checkout.resolve())
    if args.before:
        STARTS["placa-before"] = partial(placa_with_token, checkout=args.before.resolve())
    args.parallel = [int(p) for p in args.parallel.split(",")]
    args.run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    work = Path(tempfile.mkdtemp(prefix="vs-orthanc-dicomweb-"))
    rows: list[dict] = []
    try:
        if args.stow_corpus:
            rows += run_stow_wado(args, work)
        if args.query_corpus:
            rows += run_qido(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
