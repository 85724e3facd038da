#!/usr/bin/env python3
"""Archive query benchmark: C-FIND and QIDO-RS latency on an index of 100,000 instances.

Builds a fresh database (SQLite in a temporary folder, or a throw-away database on the
PostgreSQL server given by --database-url), migrates it and bulk-loads index rows (no
files: C-FIND and QIDO-RS read the index only) shaped like BASELINE.md's corpus100k: 3,500
patients (half with accented Spanish/French names), 5,000 studies over 2023-2027 (CT 2x10,
MR 3x12, CR 2x1, US 1x6 instances), then measures the queries of BASELINE.md's 100k table:

  service   pacs.query in this process: plan, SQL, every answer encoded to bytes as the
            C-FIND door sends them (what the server spends, without the network)
  c-find    ``flask --app wsgi serve --only dicom --only web`` as a separate process,
            pynetdicom as SCU on one open association with TCP_NODELAY (the SCU's decoding
            of each answer is part of the figure, as in BASELINE.md)
  qido      QIDO-RS to the same process over HTTP (requests, HTTP Basic), JSON answers

The server's CPU per query (the serve process and its children, from /proc) is given
beside the c-find and qido figures.

Every answer count is checked against the loaded rows. Run from the repository root:

  .venv/bin/python bench/bench_find.py
  .venv/bin/python bench/bench_find.py --database-url postgresql+psycopg://postgres@127.0.0.1/postgres

Results: a table on stdout, JSON lines appended to bench/results/find.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import requests  # noqa: E402
from bench_frontdesk import fresh_database  # noqa: E402
from flask import Flask  # noqa: E402
from proc_stats import cpu_seconds  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from pacs.models import ArchivePatient, Instance, Series, Study  # noqa: E402
from pacs.query import (  # noqa: E402
    Model,
    QueryOptions,
    find_archive_entries,
    plan_archive_query,
    read_level,
)
from pacs.storage import pn_key  # noqa: E402
from ris import migrate, users  # noqa: E402
from ris.app import create_app  # noqa: E402
from ris.audit import Actor  # noqa: E402
from ris.db import read_only, transaction  # noqa: E402
from ris.dicom_door import set_nodelay  # noqa: E402
from ris.dicom_encode import encode_dataset  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402

FAMILIES = ["GARCÍA", "NÚÑEZ", "LEFÈVRE", "MÜLLER", "SMITH", "DOE", "IBÁÑEZ", "PEÑA", "DUPONT",
            "MARTIN", "JONES", "BROWN", "LÓPEZ", "ÁLVAREZ", "OLIVIER"]  # fmt: skip
GIVEN = ["JOSÉ", "HÉLÈNE", "MARÍA", "JOHN", "ANNE", "LUCÍA", "PIERRE", "ZOË"]
KINDS = [("CT", 2, 10)] * 16 + [("MR", 3, 12)] * 2 + [("CR", 2, 1), ("US", 1, 6)]
UID_ROOT = "1.2.826.0.1.3680043.10.1426.7."
CT_IMAGE, EXPLICIT_LE = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"
PASSWORD = "bench password 1234"
STUDY_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
              "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
              "ReferringPhysicianName")  # fmt: skip


def load(app: Flask, seed: int = 7) -> list[dict[str, Any]]:
    """Bulk-load the index rows; the studies (for the expected counts)."""
    rnd, now = random.Random(seed), datetime.now(UTC)
    patients, studies, series, instances = [], [], [], []
    for p in range(1, 3501):
        family = f"{rnd.choice(FAMILIES)} {rnd.choice(FAMILIES)}" if p % 2 else rnd.choice(FAMILIES)
        name = f"{family}^{rnd.choice(GIVEN)}"
        patients.append(dict(id=p, patient_id=f"PLC{p:07d}", issuer_of_patient_id="",
                             patient_name=name, patient_name_key=pn_key(name),
                             patient_birth_date=date(1950, 1, 1) + timedelta(days=p * 7),
                             patient_sex="MF"[p % 2], created_at=now, updated_at=now))  # fmt: skip
    series_id = instance_id = 0
    for s in range(1, 5001):
        day = date(2023, 1, 1) + timedelta(days=rnd.randrange(5 * 365))
        modality, count, per_series = rnd.choice(KINDS)
        uid = f"{UID_ROOT}{s}"
        studies.append(dict(
            id=s, study_instance_uid=uid, patient_fk=rnd.randrange(1, 3501),
            study_date=day.strftime("%Y%m%d"), study_time="101500",
            study_at=datetime(day.year, day.month, day.day, 10, 15, tzinfo=UTC),
            accession_number=f"A{s:011d}", study_id=str(s), study_description="EXAM",
            referring_physician_name="WILSON^JAMES", referring_physician_key="wilson^james",
            modalities_in_study=modality, number_of_study_related_series=count,
            number_of_study_related_instances=count * per_series, created_at=now, updated_at=now,
        ))  # fmt: skip
        for k in range(count):
            series_id += 1
            series.append(dict(id=series_id, series_instance_uid=f"{uid}.{k}", study_fk=s,
                               modality=modality, series_number=k + 1,
                               number_of_series_related_instances=per_series,
                               created_at=now))  # fmt: skip
            for n in range(per_series):
                instance_id += 1
                instances.append(dict(id=instance_id, sop_instance_uid=f"{uid}.{k}.{n}",
                                      series_fk=series_id, sop_class_uid=CT_IMAGE,
                                      instance_number=n + 1, transfer_syntax_uid=EXPLICIT_LE,
                                      path=f"bench/{instance_id}", size=1, sha1="0" * 40,
                                      received_at=now))  # fmt: skip
    engine = app.extensions["placa.engine"]
    with engine.begin() as connection:
        for model, rows in ((ArchivePatient, patients), (Study, studies), (Series, series),
                            (Instance, instances)):  # fmt: skip
            for start in range(0, len(rows), 5000):
                connection.execute(insert(model), rows[start : start + 5000])
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    names = {p["id"]: p["patient_name_key"] for p in patients}
    for study in studies:
        study["name_key"] = names[study["patient_fk"]]
    print(f"loaded {len(patients)} patients, {len(studies)} studies, {len(series)} series, "
          f"{len(instances)} instances")  # fmt: skip
    return studies


Query = tuple[dict[str, str], int]  # (keys, expected answers)


def queries(studies: list[dict[str, Any]]) -> dict[str, list[Query]]:
    """The query types of BASELINE.md's 100k table, 20 of each, with their expected counts."""
    rnd = random.Random(11)
    chosen = rnd.sample(studies, 20)

    def count(test: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for study in studies if test(study))

    def patient(study: dict[str, Any]) -> Query:
        pid = f"PLC{study['patient_fk']:07d}"
        return {"PatientID": pid}, count(lambda s: s["patient_fk"] == study["patient_fk"])

    def prefix(study: dict[str, Any]) -> Query:
        key = study["name_key"][:3]
        request = next(f for f in FAMILIES if pn_key(f).startswith(key))[:3] + "*"
        return {"PatientName": request}, count(lambda s: s["name_key"].startswith(key))

    def month(study: dict[str, Any]) -> Query:
        low, high = study["study_date"][:6] + "01", study["study_date"][:6] + "28"
        return {"StudyDate": f"{low}-{high}"}, count(lambda s: low <= s["study_date"] <= high)

    def week(study: dict[str, Any]) -> Query:
        low = study["study_date"]
        high = (datetime.strptime(low, "%Y%m%d") + timedelta(days=6)).strftime("%Y%m%d")
        modality = study["modalities_in_study"]
        return ({"StudyDate": f"{low}-{high}", "ModalitiesInStudy": modality},
                count(lambda s: low <= s["study_date"] <= high
                      and s["modalities_in_study"] == modality))  # fmt: skip

    year = {"StudyDate": "20240101-20241231"}
    return {
        "study, PatientID": [patient(s) for s in chosen],
        "study, AccessionNumber": [({"AccessionNumber": s["accession_number"]}, 1) for s in chosen],
        "study, PatientName prefix (accented)": [prefix(s) for s in chosen],
        "study, StudyDate one month": [month(s) for s in chosen],
        "study, 7 days + ModalitiesInStudy": [week(s) for s in chosen],
        "study, StudyDate one year": [(year, count(lambda s: s["study_date"][:4] == "2024"))] * 3,
    }


def identifier(keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in STUDY_KEYS:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def service(app: Flask, keys: dict[str, str]) -> int:
    request = identifier(keys)
    query = plan_archive_query(request, Model.STUDY_ROOT, read_level(request, Model.STUDY_ROOT),
                               QueryOptions.of(app))  # fmt: skip
    count = 0
    with read_only(app) as db:
        for answer in find_archive_entries(db, query).answers():
            encode_dataset(answer.elements, explicit_vr=True, charset=answer.charset)
            count += 1
    return count


def measure(name: str, run: Callable[[dict[str, str]], int], cases: list[Query]) -> dict:
    for keys, _expected in cases[:3]:  # warm-up
        run(keys)
    times, wrong, counts = [], 0, []
    for keys, expected in cases:
        start = time.perf_counter()
        got = run(keys)
        times.append((time.perf_counter() - start) * 1000)
        wrong += got != expected
        counts.append(got)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"path": name, "median_ms": round(statistics.median(times), 2), "p95_ms": round(p95, 2),
            "matches_median": statistics.median(counts), "wrong": wrong}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="a PostgreSQL server URL (default: SQLite)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows: list[dict[str, Any]] = []
    with fresh_database(args.database_url) as (url, folder):
        settings = {"DATA_DIR": str(folder), "DATABASE_URL": url, "SECRET_KEY": "bench",
                    "LOG_LEVEL": "WARNING"}  # fmt: skip
        app = create_app(settings)
        migrate.upgrade(app)
        studies = load(app)
        with transaction(app) as db:
            users.create_user(db, Actor.system("bench"), "bench", PASSWORD, ["radiologist"])
        serve = ServeProcess(folder, url, only=("dicom", "web"),
                             env_extra={"PLACA_SCHEDULER": "0", "PLACA_LOG_LEVEL": "WARNING",
                                        "PLACA_SECRET_KEY": "bench"})  # fmt: skip
        serve.start()
        try:
            serve.wait_ready()
            assert serve.process is not None
            rows = run_all(app, studies, serve.dicom_port, serve.base_url, serve.process.pid, url)
        finally:
            serve.stop()
            app.extensions["placa.engine"].dispose()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    with open(results / "find.jsonl", "a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_all(app: Flask, studies: list[dict[str, Any]], port: int, base: str, pid: int,
            url: str) -> list[dict[str, Any]]:  # fmt: skip
    scu = AE(ae_title="BENCH")
    scu.add_requested_context(FIND)
    # TCP_NODELAY on the SCU's socket too, as BASELINE.md's client (else 40 ms stalls).
    assoc = scu.associate("127.0.0.1", port, ae_title="PLACA",
                          evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])  # fmt: skip
    assert assoc.is_established
    http = requests.Session()
    http.auth = ("bench", PASSWORD)

    def c_find(keys: dict[str, str]) -> int:
        return sum(1 for status, _ in assoc.send_c_find(identifier(keys), FIND)
                   if status.Status in (0xFF00, 0xFF01))  # fmt: skip

    def qido(keys: dict[str, str]) -> int:
        answer = http.get(f"{base}/dicomweb/studies", params=keys)
        return len(answer.json())

    paths: list[tuple[str, Callable[[dict[str, str]], int]]] = [
        ("service", lambda keys: service(app, keys)),
        ("c-find", c_find),
        ("qido", qido),
    ]
    rows = []
    try:
        for label, cases in queries(studies).items():
            for name, run in paths:
                before = cpu_seconds(pid)
                row = {"query": label, **measure(name, run, cases),
                       "backend": url.split(":")[0], "at": datetime.now(UTC).isoformat(),
                       "load_average": os.getloadavg()[0]}  # fmt: skip
                if name != "service":
                    row["server_cpu_ms_per_query"] = round(
                        (cpu_seconds(pid) - before) * 1000 / (len(cases) + 3), 2
                    )
                rows.append(row)
                print(f"{label:38} {name:8} median {row['median_ms']:8.2f} ms  p95 "
                      f"{row['p95_ms']:8.2f} ms  server CPU "
                      f"{row.get('server_cpu_ms_per_query', '-'):>7} ms  matches "
                      f"{row['matches_median']:6}  wrong {row['wrong']}", flush=True)  # fmt: skip
    finally:
        assoc.release()
    return rows


if __name__ == "__main__":
    main()
