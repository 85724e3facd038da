"""HL7 door throughput: N ORM^O01 new orders over one MLLP connection, nothing lost.

    .venv/bin/python bench/bench_hl7.py [--messages 10000] [--database-url URL]

Starts `flask --app wsgi serve --only hl7` on a fresh database (SQLite in a temporary folder
by default; with --database-url, a throw-away database on that PostgreSQL server) with a CT
room and one CT procedure, sends the messages one after the other on a single connection
with python-hl7's MLLP client (waiting for each ACK, as a HIS does), then checks that every
ACK is AA and that every order is in the database exactly once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hl7.client  # noqa: E402
from bench_frontdesk import fresh_database  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from ris import catalog, migrate  # noqa: E402
from ris.audit import Actor  # noqa: E402
from ris.db import transaction  # noqa: E402
from ris.models import InboundMessage, Order  # noqa: E402
from tests.conftest import build_app  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402

ACTOR = Actor.system("bench")
FAMILIES = ["PEÑA", "NÚÑEZ", "LEFÈVRE", "SMITH", "GARCÍA LÓPEZ", "DURAND", "O'BRIEN", "MARTIN"]
GIVEN = ["JOSÉ", "INÉS", "GAËLLE", "JOHN", "MARÍA", "FRANÇOIS", "SIOBHÁN", "LÉA"]


def orm(number: int) -> str:
    """One ORM^O01 (v2.3.1) new order; a patient comes back every 3 orders."""
    patient = number // 3
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    family, given = FAMILIES[patient % len(FAMILIES)], GIVEN[patient % len(GIVEN)]
    return "\r".join([
        f"MSH|^~\\&|HIS|HOSP|PLACA|RAD|{stamp}||ORM^O01|BENCH{number:07d}|P|2.3.1"
        "|||||||UNICODE UTF-8",
        f"PID|1||B{patient:07d}^^^HOSP^MR||{family}^{given}||19700101|F",
        "PV1|1|O",
        f"ORC|NW|PO{number:07d}^HIS||||||||||1234^HOUSE^GREGORY",
        f"OBR|1|PO{number:07d}^HIS||74177^CT ABDOMEN PELVIS W CONTRAST^C4|R||||||||||"
        "1234^HOUSE^GREGORY",
    ]) + "\r"  # fmt: skip


def prepare(data_dir: Path, url: str) -> None:
    app = build_app(data_dir, url)
    migrate.upgrade(app)
    with transaction(app) as db:
        catalog.save_room(db, ACTOR, catalog.RoomData(code="CT1", name="CT", modality="CT",
                                                      ae_title="CT1_AE"))  # fmt: skip
        catalog.save_procedure(db, ACTOR, catalog.ProcedureData(
            code_system="C4", code="74177", description="CT abdomen pelvis with contrast",
            modality="CT", duration_minutes=20, room_codes=["CT1"]))  # fmt: skip
    app.extensions["placa.engine"].dispose()


def send_all(port: int, count: int) -> tuple[float, dict[str, int]]:
    codes: dict[str, int] = {}
    started = time.perf_counter()
    with hl7.client.MLLPClient("127.0.0.1", port, encoding="utf-8") as client:
        for number in range(count):
            ack = client.send_message(orm(number)).decode("utf-8")
            code = next(s.split("|")[1] for s in ack.strip("\x0b\x1c\r").split("\r")
                        if s.startswith("MSA"))  # fmt: skip
            codes[code] = codes.get(code, 0) + 1
    return time.perf_counter() - started, codes


def count_rows(data_dir: Path, url: str) -> tuple[int, int]:
    app = build_app(data_dir, url)
    with transaction(app) as db:
        orders = db.scalar(select(func.count()).select_from(Order))
        logged = db.scalar(select(func.count()).select_from(InboundMessage))
    app.extensions["placa.engine"].dispose()
    return int(orders or 0), int(logged or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server: a throw-away database is made on it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    with fresh_database(args.database_url, args.keep) as (url, data_dir):
        prepare(data_dir, url)
        serve = ServeProcess(data_dir, url, only=("hl7", "web"))
        serve.start()
        serve.wait_ready()
        try:
            seconds, codes = send_all(serve.hl7_port, args.messages)
        finally:
            serve.stop()
        orders, logged = count_rows(data_dir, url)
    result = {
        "bench": "hl7-orm", "messages": args.messages, "seconds": round(seconds, 2),
        "per_second": round(args.messages / seconds, 1), "acks": codes, "orders": orders,
        "logged": logged, "backend": url.split(":")[0],
    }  # fmt: skip
    print(json.dumps(result))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    with open(results / "hl7.jsonl", "a") as handle:
        handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
