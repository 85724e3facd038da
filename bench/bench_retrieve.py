#!/usr/bin/env python3
"""Retrieve benchmark: C-MOVE (DCMTK movescu into a DCMTK storescp) and C-GET (DCMTK getscu)
of one study of uncompressed 512x512 16-bit CT (about 0.5 MB each) from Placa's DICOM door.

Measured as ../shared/bench/bench_query.py measures Orthanc (BASELINE.md, finding 7): the wall
time of one ``movescu -S`` / ``getscu -S`` process at study level, ``TCP_NODELAY=1``, storescp
``--fork``, one warm-up then the median of ``--repeat`` runs; every run checks the number of
files received. The door runs in this process (a fresh data folder and database); the study
is stored through the real store path (:func:`pacs.ingest.ingest`) first.

Run from the repository root (not part of pytest):

  .venv/bin/python bench/bench_retrieve.py --instances 80
  .venv/bin/python bench/bench_retrieve.py --instances 500 --database-url \\
      postgresql+psycopg://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_frontdesk import fresh_database  # noqa: E402
from pacs import remote_aes  # noqa: E402
from pacs.ingest import ingest  # noqa: E402
from ris import migrate  # noqa: E402
from ris.app import create_app  # noqa: E402
from ris.audit import Actor  # noqa: E402
from ris.db import transaction  # noqa: E402
from ris.dicom_door import DicomDoor  # noqa: E402
from tests.pacs.dicom_data import make_dataset, new_uid, received, write_part10  # noqa: E402

ENV = {"TCP_NODELAY": "1", "PATH": "/usr/sbin:/usr/bin:/bin"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def load_study(app: Flask, instances: int, folder: Path) -> tuple[str, int, list[Path]]:
    """One study of two series, stored in Placa and written as files (for Orthanc)."""
    study, series = new_uid(), [new_uid(), new_uid()]
    size, files = 0, []
    for index in range(instances):
        ds = make_dataset(study=study, series=series[index % 2], number=index + 1, rows=512)
        item = received(ds)
        size += len(item.dataset)
        ingest(app, item)
        files.append(folder / f"{index:05d}.dcm")
        write_part10(ds, files[-1])
    return study, size, files


def once(command: list[str], folder: Path, expected: int) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=ENV, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {done.stdout[-400:]!r} {done.stderr[-400:]!r}")
    got = sum(len(files) for _, _, files in os.walk(folder))
    if got < expected:
        raise SystemExit(f"{command[0]}: {got} files of {expected}")
    return elapsed


def report(label: str, times: list[float], instances: int, size: int) -> float:
    median = statistics.median(times)
    runs = ", ".join(f"{t * 1000:.0f}" for t in times)
    print(
        f"{label}: median {median * 1000:.1f} ms = {instances / median:.0f} inst/s, "
        f"{size / median / 1e6:.0f} MB/s (runs: {runs} ms)"
    )
    return instances / median


ORTHANC_CONFIG = """{
  "Name": "bench-retrieve", "StorageDirectory": "%(dir)s", "IndexDirectory": "%(dir)s",
  "HttpPort": %(http)d, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomServerEnabled": true, "DicomAet": "ORTHANC", "DicomPort": %(dicom)d,
  "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowFind": true,
  "DicomAlwaysAllowGet": true, "DicomAlwaysAllowMove": true,
  "DicomModalities": {"bench": ["BENCH", "127.0.0.1", %(move)d],
                      "benchdest": ["BENCHDEST", "127.0.0.1", %(move)d]},
  "SaveJobs": false, "Plugins": []
}"""


def start_orthanc(
    folder: Path, move_port: int, files: list[Path]
) -> tuple[subprocess.Popen[bytes], int]:
    """Orthanc 1.10 with its defaults (SQLite index, its own folder), loaded with ``files``."""
    folder.mkdir()
    dicom = free_port()
    config = folder / "orthanc.json"
    config.write_text(
        ORTHANC_CONFIG
        % {"dir": folder / "storage", "http": free_port(), "dicom": dicom, "move": move_port}
    )
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 (lives as long as Orthanc)
    process = subprocess.Popen(
        ["Orthanc", str(config)], stdout=log, stderr=subprocess.STDOUT, env=ENV
    )
    wait_listening(dicom)
    subprocess.run(
        ["storescu", "-aec", "ORTHANC", "127.0.0.1", str(dicom), *map(str, files)],
        check=True,
        capture_output=True,
        env=ENV,
    )
    return process, dicom


def in_private_network() -> None:
    """Re-run this script in a network namespace of its own (loopback only), as
    ../shared/bench/run_peers.sh does: Orthanc has no bind-address option."""
    if os.environ.get("RETRIEVE_BENCH_NETNS"):
        return
    command = " ".join(["ip link set lo up && exec", sys.executable, *sys.argv])
    os.execvpe(
        "unshare",
        ["unshare", "-rn", "sh", "-c", command],
        {**os.environ, "RETRIEVE_BENCH_NETNS": "1"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--orthanc",
        action="store_true",
        help="measure Orthanc in the same run (SQLite only: a private network)",
    )
    args = parser.parse_args()
    if args.orthanc:
        in_private_network()
    logging.basicConfig(level=logging.WARNING)
    with fresh_database(args.database_url) as (url, folder):
        app = create_app(
            {
                "DATA_DIR": str(folder / "data"),
                "DATABASE_URL": url,
                "SECRET_KEY": "bench",
                "DICOM_HOST": "127.0.0.1",
                "DICOM_PORT": free_port(),
            }
        )
        logging.getLogger().setLevel(logging.WARNING)
        migrate.upgrade(app)
        study, size, files = load_study(app, args.instances, folder / "corpus")
        door = DicomDoor(app)
        host, port = door.address
        move_port = free_port()
        with transaction(app) as db:
            remote_aes.add_remote_ae(db, Actor.system("bench"), "BENCHDEST", "127.0.0.1", move_port)
        peers = {"placa": ("PLACA", port)}
        orthanc = None
        if args.orthanc:
            orthanc, orthanc_port = start_orthanc(folder / "orthanc", move_port, files)
            peers["orthanc"] = ("ORTHANC", orthanc_port)
        moved = folder / "moved"
        moved.mkdir()
        scp = subprocess.Popen(
            ["storescp", "--fork", "-aet", "BENCHDEST", "-od", str(moved), str(move_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
        try:
            wait_listening(move_port)
            got = folder / "got"
            commands = {}
            for name, (title, peer_port) in peers.items():
                commands[name, "C-MOVE"] = (
                    [
                        "movescu",
                        "-S",
                        "-aet",
                        "BENCH",
                        "-aec",
                        title,
                        "-aem",
                        "BENCHDEST",
                        *keys,
                        host,
                        str(peer_port),
                    ],
                    moved,
                )
                commands[name, "C-GET"] = (
                    [
                        "getscu",
                        "-S",
                        "-aet",
                        "BENCH",
                        "-aec",
                        title,
                        "-od",
                        str(got),
                        *keys,
                        host,
                        str(peer_port),
                    ],
                    got,
                )
            times: dict[tuple[str, str], list[float]] = {key: [] for key in commands}
            for run in range(args.repeat + 1):  # the first is a warm-up; peers interleaved
                for key, (command, target) in commands.items():
                    elapsed = once(command, target, args.instances)
                    if run:
                        times[key].append(elapsed)
            rates = {
                key: report(f"{key[0]} {key[1]}", values, args.instances, size)
                for key, values in times.items()
            }
            if orthanc is not None:
                for operation in ("C-MOVE", "C-GET"):
                    ratio = rates["placa", operation] / rates["orthanc", operation]
                    print(f"{operation} Placa/Orthanc: {ratio:.2f}")
        finally:
            scp.terminate()
            scp.wait()
            if orthanc is not None:
                orthanc.terminate()
                orthanc.wait()
            door.stop()
            app.extensions["placa.engine"].dispose()


if __name__ == "__main__":
    main()
