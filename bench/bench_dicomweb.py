#!/usr/bin/env python3
"""DICOMweb benchmark: STOW-RS ingest and WADO-RS retrieval (multipart study, series
metadata) of one study of uncompressed 512x512 16-bit CT (about 0.5 MB each) from Placa's web
door, measured as ../shared/bench/bench_query.py measures Orthanc (BASELINE.md): the wall time
of one ``requests`` GET of the whole multipart answer, read in 1 MB chunks, one warm-up then
the median of ``--repeat`` runs; every run checks the byte count.

Placa runs as its own process (``flask --app wsgi serve --only web``, waitress) on a fresh data
folder and database, so client and server do not share a GIL; the study is sent by STOW-RS
(raw multipart, batches of ``--batch`` instances over one stream), authenticated by a bearer
API token made with ``users token create``.

  .venv/bin/python bench/bench_dicomweb.py --instances 500
  .venv/bin/python bench/bench_dicomweb.py --instances 500 --database-url \\
      postgresql+psycopg://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_frontdesk import fresh_database  # noqa: E402
from bench.bench_retrieve import free_port, wait_listening  # noqa: E402
from tests.pacs.dicom_data import make_dataset, new_uid  # noqa: E402
from tests.pacs.dicomweb.placa_server import with_meta  # noqa: E402

DICOM_PART = 'multipart/related; type="application/dicom"'


def part10_files(instances: int) -> tuple[str, str, list[bytes]]:
    study, series = new_uid(), new_uid()
    files = []
    for index in range(instances):
        ds = with_meta(make_dataset(study=study, series=series, number=index + 1, rows=512))
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    return study, series, files


def stow(base: str, session: requests.Session, files: list[bytes], batch: int) -> float:
    boundary = "placa-bench"
    started = time.perf_counter()
    for start in range(0, len(files), batch):
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        parts = [head + data + b"\r\n" for data in files[start : start + batch]]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        answer = session.post(f"{base}/studies", data=body, headers={
            "Content-Type": f"{DICOM_PART}; boundary={boundary}"})  # fmt: skip
        if answer.status_code != 200:
            raise SystemExit(f"STOW-RS {answer.status_code}: {answer.text[:300]}")
    return time.perf_counter() - started


def timed_get(
    session: requests.Session, url: str, accept: str, repeat: int
) -> tuple[list[float], int]:
    times, size = [], 0
    for run in range(repeat + 1):
        started = time.perf_counter()
        response = session.get(url, headers={"Accept": accept}, stream=True, timeout=300)
        size = sum(len(chunk) for chunk in response.iter_content(1 << 20))
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"GET {url}: {response.status_code}")
        if run:
            times.append(elapsed)
    return times, size


def report(label: str, times: list[float], instances: int, size: int) -> None:
    median = statistics.median(times)
    runs = ", ".join(f"{t * 1000:.0f}" for t in times)
    print(f"{label}: median {median * 1000:.1f} ms = {instances / median:.0f} inst/s, "
          f"{size / median / 1e6:.0f} MB/s (runs: {runs} ms)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    study, series, files = part10_files(args.instances)
    with fresh_database(args.database_url) as (url, folder):
        port = free_port()
        env = {**os.environ, "PLACA_DATA_DIR": str(folder / "data"), "PLACA_DATABASE_URL": url,
               "PLACA_HTTP_PORT": str(port), "PLACA_SCHEDULER": "0",
               "PLACA_LOG_LEVEL": "WARNING"}  # fmt: skip

        def flask(*words: str, stdin: str | None = None) -> str:
            done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *words],
                                  cwd=ROOT, env=env, input=stdin, capture_output=True,
                                  text=True, check=True)  # fmt: skip
            return done.stdout

        flask("db", "upgrade")
        flask("users", "create", "bench", "--role", "technologist", "--password-stdin",
              stdin="bench password 123\n")  # fmt: skip
        token = flask("users", "token", "create", "bench").strip().splitlines()[-1]
        server = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "serve",
                                   "--only", "web"], cwd=ROOT, env=env)  # fmt: skip
        try:
            wait_listening(port)
            base = f"http://127.0.0.1:{port}/dicomweb"
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            size = sum(len(f) for f in files)
            report(f"STOW-RS (1 stream, batches of {args.batch})",
                   [stow(base, session, files, args.batch)], args.instances, size)  # fmt: skip
            times, got = timed_get(session, f"{base}/studies/{study}", DICOM_PART, args.repeat)
            report("WADO-RS study (multipart)", times, args.instances, got)
            times, got = timed_get(session, f"{base}/studies/{study}/series/{series}/metadata",
                                   "application/dicom+json", args.repeat)  # fmt: skip
            report("WADO-RS series metadata", times, args.instances, got)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
