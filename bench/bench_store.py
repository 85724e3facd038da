#!/usr/bin/env python3
"""Archive ingest benchmark: DCMTK storescu into Placa's C-STORE SCP over 1 and 4 associations.

Generates a deterministic corpus of uncompressed CT (512x512, 16-bit, Explicit VR Little
Endian, about 0.5 MB each, like ../shared/bench/make_corpus.py's CT: studies of 2 series of
40 instances), then for each association count starts a fresh Placa (``flask --app wsgi
serve --only dicom --only web`` as its own process, with its DICOM helper processes, a new
data folder and database: SQLite, or a throw-away database on the PostgreSQL server given
by --database-url), sends the corpus with P storescu processes at once (contiguous shards,
so each association carries whole studies; ``TCP_NODELAY=1`` as in the reference harness)
and reports instances/s, MB/s, the server's CPU milliseconds per instance and its peak RSS
(its process tree). Every run checks that the index
holds every instance afterwards.

Placa's figures include what the reference peers do not pay (see BASELINE.md caveats):
one fsync per file and per folder, and a synchronous database commit before each answer.

Run from the repository root (not part of pytest):

  .venv/bin/python bench/bench_store.py                       # 1,000 instances, 1 and 4 assoc.
  .venv/bin/python bench/bench_store.py --instances 2000 --database-url \\
      postgresql+psycopg://postgres@127.0.0.1/postgres

Results: a table on stdout, JSON lines appended to bench/results/store.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_frontdesk import fresh_database  # noqa: E402
from proc_stats import cpu_seconds, process_tree  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from tests.pacs.dicom_data import make_dataset, write_part10  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402

SERIES_PER_STUDY, PER_SERIES = 2, 40
UID_ROOT = "1.2.826.0.1.3680043.10.1426.77."
RESULTS = ROOT / "bench" / "results" / "store.jsonl"


def make_corpus(folder: Path, instances: int, rows: int) -> list[Path]:
    """Deterministic CT corpus: the same arguments give the same files."""
    rng = random.Random(1426)
    pixels = rng.randbytes(rows * rows * 2)
    files = []
    for index in range(instances):
        study_no, rest = divmod(index, SERIES_PER_STUDY * PER_SERIES)
        series_no, number = divmod(rest, PER_SERIES)
        study = f"{UID_ROOT}{study_no + 1}"
        series = f"{study}.{series_no + 1}"
        ds = make_dataset(
            study=study, series=series, sop=f"{series}.{number + 1}",
            patient_id=f"PLC{1000000 + study_no * 7 % 997:07d}", name=f"BENCH^PATIENT{study_no}",
            accession=f"A{260000 + study_no}", number=number + 1, rows=1,
        )  # fmt: skip
        ds.Rows = ds.Columns = rows
        # A different first word per instance, so no two files are the same bytes.
        ds.PixelData = index.to_bytes(4, "little") + pixels[4:]
        path = folder / f"{study_no:04d}" / f"{series_no}" / f"{number:03d}.dcm"
        write_part10(ds, path, ExplicitVRLittleEndian)
        files.append(path)
    return files


def shards(files: list[Path], parts: int) -> list[list[Path]]:
    size = -(-len(files) // parts)
    return [files[i : i + size] for i in range(0, len(files), size)]


def peak_rss_mb(pid: int) -> float:
    """The sum of the peak RSS (VmHWM) of the server's processes."""
    total = 0.0
    for process in process_tree(pid):
        try:
            lines = Path(f"/proc/{process}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:"))
    return total


def wait_listening(port: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("serve exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if probe.getsockname() != probe.getpeername():
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the DICOM door did not come up")


def measure(files: list[Path], parallel: int, database_url: str | None) -> dict:
    with fresh_database(database_url) as (url, folder):
        return _measure_in(files, parallel, url, folder, database_url)


def _measure_in(
    files: list[Path], parallel: int, url: str, folder: Path, database_url: str | None
) -> dict:
    # The web door too: it opens last, so /healthz answering means every DICOM process is up.
    serve = ServeProcess(
        folder, url, only=("dicom", "web"), env_extra={"PLACA_LOG_LEVEL": "WARNING"}
    )
    try:
        migrated = serve.flask("db", "upgrade")
        if migrated.returncode != 0:
            raise SystemExit(migrated.stderr)
        serve.start()
        assert serve.process is not None
        wait_listening(serve.dicom_port, serve.process)
        serve.wait_ready(timeout=120)
        pid = serve.process.pid
        before = cpu_seconds(pid)
        env = {**os.environ, "TCP_NODELAY": "1"}
        command = ["/usr/bin/storescu", "-aet", "BENCH", "-aec", "PLACA", "-R",
                   "127.0.0.1", str(serve.dicom_port)]  # fmt: skip
        started = time.monotonic()
        clients = [subprocess.Popen([*command, *map(str, shard)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for shard in shards(files, parallel)]  # fmt: skip
        failures = [c.communicate()[0] for c in clients if c.wait() != 0]
        elapsed = time.monotonic() - started
        server_cpu = cpu_seconds(pid) - before
        rss = peak_rss_mb(pid)
        serve.stop()
        engine = create_engine(url)
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM instances")).scalar_one()
        engine.dispose()
    finally:
        if serve.process and serve.process.poll() is None:
            serve.process.kill()
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    return {
        "bench": "store", "backend": "postgresql" if database_url else "sqlite",
        "parallel": parallel, "instances": len(files), "stored": stored,
        "seconds": round(elapsed, 2), "inst_per_s": round(len(files) / elapsed, 1),
        "mb_per_s": round(megabytes / elapsed, 1),
        "server_cpu_ms_per_inst": round(server_cpu * 1000 / len(files), 2),
        "server_peak_rss_mb": round(rss), "client_failures": len(failures),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=512, help="CT matrix (512: about 0.5 MB)")
    parser.add_argument("--parallel", default="1,4", help="association counts to measure")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--database-url", help="a PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--corpus", type=Path, help="keep the generated corpus here")
    args = parser.parse_args()
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="placa-corpus-"))
    files = sorted(corpus.rglob("*.dcm"))
    if len(files) != args.instances:
        shutil.rmtree(corpus, ignore_errors=True)
        files = make_corpus(corpus, args.instances, args.rows)
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm
    RESULTS.parent.mkdir(exist_ok=True)
    print("| backend | assoc. | instances | inst/s | MB/s | server CPU ms/inst | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for _ in range(args.repeat):
        for parallel in (int(p) for p in args.parallel.split(",")):
            record = measure(files, parallel, args.database_url)
            with RESULTS.open("a") as out:
                out.write(json.dumps(record) + "\n")
            print(f"| {record['backend']} | {parallel} | {record['stored']}/{len(files)} | "
                  f"{record['inst_per_s']} | {record['mb_per_s']} | "
                  f"{record['server_cpu_ms_per_inst']} | {record['server_peak_rss_mb']} |",
                  flush=True)  # fmt: skip
    if not args.corpus:
        shutil.rmtree(corpus, ignore_errors=True)


if __name__ == "__main__":
    main()
