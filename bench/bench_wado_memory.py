#!/usr/bin/env python3
"""WADO-RS memory on a large study: does the server's RSS stay flat as the study grows? (issue 7)

The issue asks that large retrievals stream, in constant memory for a 2 GB study. For each
corpus given (one study each, ``../shared/bench/make_corpus.py`` output; by default a 250 MB
study and a 2 GB one, generated when missing), this script:

* starts a fresh Placa (``vs_orthanc_dicomweb.placa_with_token``: ``flask --app wsgi db
  upgrade``, ``flask --app wsgi serve``, every door, SQLite, new data folder, a user and an API
  token) in a private network namespace (loopback only, so its fixed ports clash with nobody);
* loads the study with DCMTK ``storescu`` over ``--associations`` (4) associations,
  ``TCP_NODELAY=1``, and checks that every file was indexed (QIDO-RS count);
* retrieves, each time sampling the server's process-tree RSS (``/proc/*/status`` VmRSS of the
  serve process and its DICOM helper process) every ``--interval`` (50 ms):

  - the whole study by WADO-RS (``Accept: multipart/related; type="application/dicom"``),
    once **checked** (the multipart body parsed as it arrives, each part's size and SHA-1
    compared with the files in the archive folder, the total with Content-Length) and once
    **discarded** (1 MB chunks counted and dropped: the throughput figure);
  - the first series by WADO-RS (discarded, byte count checked against the archive files);
  - the study's ``/metadata`` (DICOM JSON of every instance; the item count checked).

Figures per retrieval: bytes received, seconds, MB/s, the server tree's CPU seconds, server
RSS (tree and main process) before, peak and one second after. "Constant" shows as the peak
over the baseline not growing with the study's size, nor the baseline with each retrieval.
JSON lines are appended to ``--results``; a Markdown table on stdout.

  .venv/bin/python bench/bench_wado_memory.py                       # 250 MB and 2 GB studies
  .venv/bin/python bench/bench_wado_memory.py --corpus /tmp/wadomem/corpus-250m
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_stats import cpu_seconds, process_tree  # noqa: E402
from vs_orthanc import HARNESS, ROOT, Server, default_python, in_private_network  # noqa: E402
from vs_orthanc_dicomweb import DICOM_PART, placa_with_token  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "bench_wado_memory.jsonl"
WORK = Path("/tmp/wadomem")
# name: make_corpus.py options (one study of 4 series of 512x512 CT, 0.5 MB an instance)
CORPORA = {
    "corpus-250m": ["--series", "4", "--instances", "125", "--seed", "250"],
    "corpus-2g": ["--series", "4", "--instances", "1000"],
}
CHUNK = 1 << 20
MB = 1e6


# ------------------------------------------------------------------------- server memory


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_now(pid: int) -> tuple[int, int]:
    """(process tree, main process) RSS."""
    return sum(rss_bytes(p) for p in process_tree(pid)), rss_bytes(pid)


@dataclass
class RssSampler:
    """Samples a process tree's RSS on a thread every ``interval`` seconds."""

    pid: int
    interval: float
    samples: list[tuple[int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_now(self.pid))
            self._stop.wait(self.interval)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.samples.append(rss_now(self.pid))

    def peak(self) -> tuple[int, int]:
        return max(s[0] for s in self.samples), max(s[1] for s in self.samples)


def measured(server: Server, interval: float, name: str, fetch) -> dict:  # noqa: ANN001
    """Run ``fetch()`` (-> dict with ``bytes``) while sampling; the figures of one retrieval."""
    before = rss_now(server.process.pid)
    sampler = RssSampler(server.process.pid, interval)
    cpu = cpu_seconds(server.process.pid)
    with sampler.running():
        started = time.perf_counter()
        row = fetch()
        seconds = time.perf_counter() - started
    cpu = cpu_seconds(server.process.pid) - cpu
    time.sleep(1.0)
    after = rss_now(server.process.pid)
    peak = sampler.peak()
    return {
        "metric": name, **row, "seconds": round(seconds, 2),
        "mb_per_s": round(row["bytes"] / MB / seconds, 1), "samples": len(sampler.samples),
        "server_cpu_s": round(cpu, 2),
        "rss_tree_before_mb": round(before[0] / MB, 1),
        "rss_tree_peak_mb": round(peak[0] / MB, 1),
        "rss_tree_after_mb": round(after[0] / MB, 1),
        "rss_main_before_mb": round(before[1] / MB, 1),
        "rss_main_peak_mb": round(peak[1] / MB, 1),
        "rss_main_after_mb": round(after[1] / MB, 1),
        "rss_main_growth_mb": round((peak[1] - before[1]) / MB, 1),
    }  # fmt: skip


# ------------------------------------------------------------------------- multipart check


class MultipartCheck:
    """Parses a multipart/related body as it arrives: each part's size and SHA-1.

    Parts must carry Content-Length (Placa sends one for every instance sent as stored); the
    delimiter is then checked right after each part's bytes, so a wrong length shows."""

    def __init__(self, boundary: str) -> None:
        self.delimiter = b"--" + boundary.encode("ascii")
        self.buffer = bytearray()
        self.state = "first"
        self.remaining = 0
        self.hasher = hashlib.sha1()
        self.parts: list[tuple[int, str]] = []
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buffer += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        """Consume what the buffer allows in the current state; False when it needs more."""
        buf = self.buffer
        if self.state == "body":
            take = min(self.remaining, len(buf))
            self.hasher.update(memoryview(buf)[:take])
            del buf[:take]
            self.remaining -= take
            if self.remaining:
                return False
            self.parts.append((self.size, self.hasher.hexdigest()))
            self.state = "after"
            return True
        if self.state in ("first", "after"):
            lead = self.delimiter if self.state == "first" else b"\r\n" + self.delimiter
            if len(buf) < len(lead) + 2:
                return False
            if buf[: len(lead)] != lead:
                raise ValueError(f"no delimiter after part {len(self.parts)}")
            tail = bytes(buf[len(lead) : len(lead) + 2])
            del buf[: len(lead) + 2]
            self.state = {b"\r\n": "headers", b"--": "end"}[tail]
            return True
        if self.state == "headers":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            headers = dict(
                line.split(":", 1) for line in bytes(buf[:end]).decode("ascii").split("\r\n")
            )
            lengths = {k.strip().lower(): v.strip() for k, v in headers.items()}
            self.size = self.remaining = int(lengths["content-length"])
            del buf[: end + 4]
            self.hasher = hashlib.sha1()
            self.state = "body"
            return True
        return False  # "end": the epilogue (CRLF) is left in the buffer


def boundary_of(content_type: str) -> str:
    for param in content_type.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"')
    raise ValueError(f"no boundary in {content_type!r}")


def archive_files(server: Server, series: str | None = None) -> list[Path]:
    root = server.folder / "archive"
    return sorted(p for p in root.rglob("*.dcm") if series is None or p.parent.name == series)


def sha1_file(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------- retrievals


def wado_checked(session: requests.Session, url: str, expected: list[Path]) -> dict:
    """The body parsed as it arrives; parts compared with the archive's files."""
    answer = session.get(url, stream=True, timeout=1800, headers={"Accept": DICOM_PART})
    answer.raise_for_status()
    check = MultipartCheck(boundary_of(answer.headers["Content-Type"]))
    for chunk in answer.iter_content(CHUNK):
        check.feed(chunk)
    wanted = sorted((p.stat().st_size, sha1_file(p)) for p in expected)
    errors = []
    if check.state != "end":
        errors.append(f"body ended in state {check.state}")
    if sorted(check.parts) != wanted:
        errors.append(f"{len(check.parts)} parts differ from the {len(wanted)} archive files")
    if int(answer.headers.get("Content-Length", -1)) != check.total:
        errors.append(f"Content-Length {answer.headers.get('Content-Length')} != {check.total}")
    return {"bytes": check.total, "parts": len(check.parts), "expected_parts": len(wanted),
            "ok": not errors, "errors": errors or None,
            "content_length": answer.headers.get("Content-Length"),
            "transfer_encoding": answer.headers.get("Transfer-Encoding")}  # fmt: skip


def wado_discarded(session: requests.Session, url: str, expected: list[Path]) -> dict:
    """The body read in 1 MB chunks and dropped; its length against the files' sizes."""
    answer = session.get(url, stream=True, timeout=1800, headers={"Accept": DICOM_PART})
    answer.raise_for_status()
    total = sum(len(chunk) for chunk in answer.iter_content(CHUNK))
    payload = sum(p.stat().st_size for p in expected)
    ok = payload < total < payload + len(expected) * 400  # each part's delimiter and headers
    return {"bytes": total, "payload_bytes": payload, "ok": ok,
            "errors": None if ok else [f"{total} bytes for {payload} of files"]}  # fmt: skip


def metadata(session: requests.Session, url: str, instances: int) -> dict:
    answer = session.get(url, timeout=1800, headers={"Accept": "application/dicom+json"})
    answer.raise_for_status()
    items = json.loads(answer.content)
    ok = len(items) == instances
    errors = None if ok else [f"{len(items)} items for {instances} instances"]
    return {"bytes": len(answer.content), "items": len(items), "ok": ok, "errors": errors}


# ------------------------------------------------------------------------- one corpus


def ensure_corpus(args: argparse.Namespace, path: Path) -> Path:
    if (path / "manifest.json").exists():
        return path
    options = CORPORA.get(path.name)
    if options is None:
        raise SystemExit(f"{path} has no manifest.json and is not one of {sorted(CORPORA)}")
    command = [args.python, str(HARNESS / "make_corpus.py"), "--out", str(path), "--studies",
               "1", "--mr-studies", "0", "--cr-studies", "0", *options]  # fmt: skip
    subprocess.run(command, check=True)
    return path


def load(server: Server, corpus: Path, associations: int) -> float:
    """storescu over ``associations`` associations; seconds."""
    files = sorted(str(p) for p in corpus.rglob("*.dcm"))
    shares = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    env = {**os.environ, "TCP_NODELAY": "1"}
    runs = [
        subprocess.Popen(
            ["storescu", "-aec", server.aec, "127.0.0.1", str(server.dicom_port), *share],
            env=env,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for share in shares
    ]
    if any(run.wait() for run in runs):
        raise RuntimeError("storescu failed")
    return time.perf_counter() - started


def indexed(session: requests.Session, base: str, study: str) -> int:
    answer = session.get(f"{base}/studies", timeout=60, params={
        "StudyInstanceUID": study, "includefield": "00201208"})  # fmt: skip
    answer.raise_for_status()
    (item,) = answer.json()
    return int(item["00201208"]["Value"][0])


def run_corpus(args: argparse.Namespace, corpus: Path) -> list[dict]:
    manifest = json.loads((corpus / "manifest.json").read_text())
    (study,) = manifest["studies"]
    uid, instances = study["StudyInstanceUID"], study["instances"]
    server, session, base = placa_with_token(args.work, args.checkout)
    try:
        started_rss = rss_now(server.process.pid)
        seconds = load(server, corpus, args.associations)
        count = indexed(session, base, uid)
        if count != instances:
            raise RuntimeError(f"{count} of {instances} instances indexed")
        common = {"corpus": corpus.name, "checkout": str(args.checkout), "instances": instances,
                  "study_bytes": manifest["bytes"], "load_s": round(seconds, 1),
                  "rss_tree_idle_mb": round(started_rss[0] / MB, 1),
                  "loadavg": os.getloadavg()}  # fmt: skip
        files = archive_files(server)
        first_series = study["series"][0]
        series_files = archive_files(server, first_series)
        study_url = f"{base}/studies/{uid}"
        plan = [
            ("wado_study_checked", lambda: wado_checked(session, study_url, files)),
            *[(f"wado_study_{n}", lambda: wado_discarded(session, study_url, files))
              for n in range(1, args.repeat + 1)],
            ("wado_series", lambda: wado_discarded(
                session, f"{study_url}/series/{first_series}", series_files)),
            ("metadata_study", lambda: metadata(session, f"{study_url}/metadata", instances)),
        ]  # fmt: skip
        rows = []
        for name, fetch in plan:
            row = {**common, **measured(server, args.interval, name, fetch)}
            row["loadavg_after"] = os.getloadavg()
            rows.append(row)
            print(json.dumps(row), flush=True)
        return rows
    finally:
        server.stop()


# ------------------------------------------------------------------------- report


def table(rows: list[dict]) -> str:
    lines = [
        "| study | retrieval | MB received | s | MB/s | tree RSS before / peak / after (MB) "
        "| main RSS before / peak / after (MB) | main peak − before | server CPU s | check |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instances']} inst, {r['study_bytes'] / MB:,.0f} MB | {r['metric']} "
            f"| {r['bytes'] / MB:,.1f} | {r['seconds']} | {r['mb_per_s']:,} "
            f"| {r['rss_tree_before_mb']} / {r['rss_tree_peak_mb']} / {r['rss_tree_after_mb']} "
            f"| {r['rss_main_before_mb']} / {r['rss_main_peak_mb']} / {r['rss_main_after_mb']} "
            f"| {r['rss_main_growth_mb']:+} | {r['server_cpu_s']} "
            f"| {'ok' if r['ok'] else r['errors']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, action="append",
                        help="one-study corpus (repeatable; default: the 250 MB and 2 GB ones "
                             f"under {WORK}, generated when missing)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=WORK, help="where data folders go")
    parser.add_argument("--associations", type=int, default=4, help="storescu processes")
    parser.add_argument("--interval", type=float, default=0.05, help="RSS sampling period (s)")
    parser.add_argument("--python", default=default_python(), help="python for make_corpus.py")
    parser.add_argument("--repeat", type=int, default=1, help="discarded study retrievals")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the Placa tree to run")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    corpora = args.corpus or [args.work / name for name in CORPORA]
    corpora = [ensure_corpus(args, path) for path in corpora]
    in_private_network()
    rows = [row for corpus in corpora for row in run_corpus(args, corpus)]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    print(f"\nload average at the end: {os.getloadavg()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
