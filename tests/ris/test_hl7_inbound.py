"""The message log behind the HL7 door: idempotency, rollback, failures on record, and the
admin pages that search, show and re-process messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import hl7
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hl7.client import MLLPClient
from hl7apy.core import Message
from sqlalchemy import func, select

from ris import hl7 as ris_hl7
from ris import patients
from ris.db import transaction
from ris.hl7 import Context, HL7ApplicationError, adt, log
from ris.hl7_door import HL7Door
from ris.models import AuditEvent, InboundMessage, Patient
from ris.site import site_of
from tests.conftest import free_port, post_form, sign_in
from tests.factories import ACTOR
from tests.ris.test_hl7_adt import Send, err, log_row, msa, patient, pid, read, unframe
from tests.ris.test_hl7_adt import adt as adt_message


@pytest.fixture
def door(app: Flask) -> Iterator[HL7Door]:
    app.config.update(HL7_HOST="127.0.0.1", HL7_PORT=free_port(), HL7_MAX_MESSAGE_BYTES=4096)
    door = HL7Door(app)
    yield door
    door.stop()


@pytest.fixture
def send(door: HL7Door) -> Send:
    def send_one(message: str | bytes) -> hl7.Message:
        with MLLPClient(*door.address) as client:
            return unframe(client.send_message(message))

    return send_one


def rows(app: Flask) -> list[InboundMessage]:
    return read(
        app, lambda db: db.scalars(select(InboundMessage).order_by(InboundMessage.id)).all()
    )


def count_patients(app: Flask) -> int:
    return read(app, lambda db: db.scalar(select(func.count()).select_from(Patient)))


# --- idempotency ---------------------------------------------------------------------------


def test_duplicate_delivery_is_applied_once_and_acked_twice(app: Flask, door: HL7Door) -> None:
    message = adt_message("A01", "DUP1", pid("D1"))
    with MLLPClient(*door.address) as client:  # one connection, twice the same message
        first = client.send_message(message)
        second = client.send_message(message)
    assert first == second
    assert msa(unframe(first)) == ("AA", "DUP1")
    assert count_patients(app) == 1
    (row,) = rows(app)
    assert (row.deliveries, row.status) == (2, "applied")
    creations = read(
        app,
        lambda db: db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "patient.create")
        ),
    )
    assert creations == 1


def test_same_control_id_from_another_sender_is_another_message(app: Flask, send: Send) -> None:
    send(adt_message("A01", "SAME", pid("S1")))
    send(adt_message("A01", "SAME", pid("S2", issuer="OTHER"), facility="OTHER"))
    assert [(r.sender, r.deliveries) for r in rows(app)] == [("HIS^HOSP", 1), ("HIS^OTHER", 1)]
    assert count_patients(app) == 2


def test_concurrent_twin_deliveries_apply_once(
    app: Flask, door: HL7Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_register(ctx: Context, message: Message) -> int:
        patient_id = adt.handle_register(ctx, message)
        time.sleep(0.3)  # both deliveries are in flight at once
        return patient_id

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", slow_register)
    message = adt_message("A01", "TWIN", pid("T1"))
    replies: list[bytes] = []

    def deliver() -> None:
        with MLLPClient(*door.address) as client:
            replies.append(client.send_message(message))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(replies) == 2 and replies[0] == replies[1]
    assert msa(unframe(replies[0])) == ("AA", "TWIN")
    assert count_patients(app) == 1
    (row,) = rows(app)
    assert (row.deliveries, row.status) == (2, "applied")


def test_a_failed_message_delivered_again_is_processed_again(app: Flask, send: Send) -> None:
    update = adt_message("A08", "LATE", pid("L1", "DOE^JANE"))
    assert msa(send(update))[0] == "AE"
    send(adt_message("A01", "FIRST", pid("L1", "DOE^J")))
    assert msa(send(update)) == ("AA", "LATE")
    row = log_row(app, "LATE")
    assert (row.status, row.deliveries, row.error) == ("applied", 2, None)
    found = patient(app, "L1")
    assert found is not None and found.given_name == "JANE"


def test_messages_without_control_id_are_each_logged(app: Flask, send: Send) -> None:
    message = adt_message("A01", "", pid("N1"))
    send(message)
    send(message)
    assert [(r.control_id, r.deliveries) for r in rows(app)] == [(None, 1), (None, 1)]


# --- failures on record ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "control_id"),
    [
        (b"hello, world", None),
        (b"\x00\xff\xfe garbage", None),
        (b"MSH|^~\\&|HIS|HOSP|||2024||ADT^A01|BAD1|P|2.5.1\rFOO|1\r", "BAD1"),
    ],
)
def test_malformed_message_gets_ar_and_a_log_row(
    app: Flask, send: Send, raw: bytes, control_id: str | None
) -> None:
    ack = send(raw)
    assert msa(ack) == ("AR", control_id or "")
    (row,) = rows(app)
    assert (row.status, row.ack_code, row.control_id) == ("rejected", "AR", control_id)
    assert row.raw and row.error
    assert "MSA|AR" in row.ack


def test_unsupported_type_gets_ar_200_and_a_log_row(app: Flask, send: Send) -> None:
    ack = send("MSH|^~\\&|HIS|HOSP|||2024||ADT^A99|U99|P|2.5.1\rEVN|A99\r")
    assert msa(ack) == ("AR", "U99")
    assert err(ack, 3).startswith("200^")
    row = log_row(app, "U99")
    assert (row.status, row.message_type, row.sender) == ("rejected", "ADT^A99", "HIS^HOSP")


def test_oversize_message_is_logged(app: Flask, send: Send) -> None:
    big = adt_message("A01", "HUGE", pid("B1", rest="|" + "X" * 5000))
    assert msa(send(big)) == ("AR", "HUGE")
    row = log_row(app, "HUGE")
    assert row.status == "rejected" and "maximum" in (row.error or "")
    assert len(row.raw) <= 4096
    assert not log.can_reprocess(row)  # a truncated message must never be applied


def test_an_error_rolls_the_route_back_and_is_logged(
    app: Flask, send: Send, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_done(ctx: Context, message: Message) -> int:
        adt.handle_register(ctx, message)  # written, flushed...
        raise HL7ApplicationError("PV1-3", "Unknown location", "103")  # ...and undone

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", half_done)
    ack = send(adt_message("A01", "HALF", pid("H1")))
    assert msa(ack) == ("AE", "HALF")
    assert count_patients(app) == 0
    row = log_row(app, "HALF")
    assert (row.status, row.error, row.patient_id) == ("error", "PV1-3: Unknown location", None)


def test_a_crash_is_ar_and_the_log_keeps_the_cause(
    app: Flask, send: Send, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(ctx: Context, message: Message) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", crash)
    ack = send(adt_message("A01", "BOOM", pid("C1")))
    assert msa(ack) == ("AR", "BOOM")
    assert "fire" not in str(ack)
    row = log_row(app, "BOOM")
    assert row.status == "rejected" and "RuntimeError: disk on fire" in (row.error or "")


def test_warnings_of_an_applied_message_are_kept(
    app: Flask, send: Send, monkeypatch: pytest.MonkeyPatch
) -> None:
    def warn(ctx: Context, message: Message) -> int:
        ctx.warnings.append("kept unbooked")
        return adt.handle_register(ctx, message)

    monkeypatch.setitem(ris_hl7.ROUTES, "ADT^A01", warn)
    assert msa(send(adt_message("A01", "WARN", pid("W1"))))[0] == "AA"
    row = log_row(app, "WARN")
    assert (row.status, row.error) == ("applied", "kept unbooked")


# --- the admin pages -----------------------------------------------------------------------


@pytest.fixture
def admin(client: FlaskClient, make_user) -> FlaskClient:
    sign_in(client, make_user("admin"))
    return client


def test_message_log_search(app: Flask, send: Send, admin: FlaskClient) -> None:
    send(adt_message("A01", "P1", pid("Q1")))
    send(adt_message("A08", "P2", pid("Q404")))
    send(adt_message("A01", "P3", pid("Q3"), facility="ELSEWHERE"))
    q1 = patient(app, "Q1")
    assert q1 is not None

    def listed(query: str) -> list[str]:
        page = admin.get(f"/admin/hl7/messages?{query}")
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        return [cid for cid in ("P1", "P2", "P3") if f"<td>{cid}</td>" in text]

    assert listed("") == ["P1", "P2", "P3"]
    page = admin.get("/admin/hl7/messages").get_data(as_text=True)
    assert page.index("<td>P3</td>") < page.index("<td>P1</td>")  # newest first
    assert listed("status=error") == ["P2"]
    assert listed("message_type=adt^a08") == ["P2"]
    assert listed("message_type=ADT") == ["P1", "P2", "P3"]
    assert listed("sender=HIS^ELSE") == ["P3"]
    assert listed("control_id=P1") == ["P1"]
    assert listed(f"patient_id={q1.id}") == ["P1"]
    assert listed("since=2000-01-01&until=2999-12-31") == ["P1", "P2", "P3"]
    assert listed("until=2000-01-01") == []
    searches = read(app, lambda db: db.scalars(select(AuditEvent).where(
        AuditEvent.action == "hl7.message.search")).all())  # fmt: skip
    assert len(searches) == 10


def test_message_log_pagination(app: Flask, admin: FlaskClient) -> None:
    with transaction(app) as db:
        for number in range(55):
            db.add(InboundMessage(
                sender="HIS^HOSP", control_id=f"N{number}", status="applied",
                message_type="ADT^A01", raw="MSH|", ack="", ack_code="AA",
            ))  # fmt: skip
    first = admin.get("/admin/hl7/messages").get_data(as_text=True)
    second = admin.get("/admin/hl7/messages?page=2").get_data(as_text=True)
    assert first.count('href="/admin/hl7/messages/') == 50 and "page=2" in first
    assert second.count('href="/admin/hl7/messages/') == 5


def test_viewing_a_message_is_audited(app: Flask, send: Send, admin: FlaskClient) -> None:
    send(adt_message("A01", "V1", pid("V1", "PEÑA^JOSÉ")))
    row = log_row(app, "V1")
    page = admin.get(f"/admin/hl7/messages/{row.id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "\nPID|1||V1^^^HOSP^MR||PEÑA^JOSÉ</pre>" in text  # one segment per line
    assert "MSA|AA|V1" in text
    assert "Re-process" not in text  # applied: nothing to re-process
    view = read(app, lambda db: db.scalars(select(AuditEvent).where(
        AuditEvent.action == "hl7.message.view")).one())  # fmt: skip
    assert (view.patient_id, view.object_id, view.actor_kind) == (row.patient_id, str(row.id),
                                                                  "user")  # fmt: skip
    assert admin.get("/admin/hl7/messages/999999").status_code == 404


def test_reprocess_after_fixing_the_data(app: Flask, send: Send, admin: FlaskClient) -> None:
    ack = send(adt_message("A40", "RP1", pid("KEEP"), "MRG|GONE^^^HOSP^MR"))
    assert msa(ack)[0] == "AE"
    row = log_row(app, "RP1")
    path = f"/admin/hl7/messages/{row.id}"
    assert "Re-process" in admin.get(path).get_data(as_text=True)
    # Still unknown: it fails again, and says so.
    response = post_form(admin, f"{path}/reprocess", {}, form_page=path)
    assert response.status_code == 302
    assert "failed again" in admin.get(path).get_data(as_text=True)
    # The admin registers both patients; now the merge applies.
    with transaction(app) as db:
        for mrn in ("KEEP", "GONE"):
            patients.register_patient(db, ACTOR, site_of(app), patients.PatientData("DOE"),
                                      mrn=mrn, issuer="HOSP")  # fmt: skip
    post_form(admin, f"{path}/reprocess", {}, form_page=path)
    page = admin.get(path).get_data(as_text=True)
    assert "The message has been applied." in page
    after = log_row(app, "RP1")
    keep, gone = patient(app, "KEEP"), patient(app, "GONE")
    assert keep is not None and gone is not None and gone.merged_into_id == keep.id
    assert (after.status, after.ack_code, after.patient_id) == ("applied", "AA", keep.id)
    assert after.processed_at and after.processed_at >= row.processed_at  # type: ignore[operator]
    assert "MSA|AA|RP1" in after.ack
    merge_events = read(app, lambda db: db.scalars(select(AuditEvent).where(
        AuditEvent.action == "patient.merge")).all())  # fmt: skip
    assert {e.actor_kind for e in merge_events} == {"user"}  # the admin did it
    reprocessed = read(app, lambda db: db.scalars(select(AuditEvent).where(
        AuditEvent.action == "hl7.message.reprocess").order_by(AuditEvent.id)).all())  # fmt: skip
    assert [e.outcome for e in reprocessed] == ["failure", "success"]
    # Applied now: a second re-process is refused, and a redelivery answers the new ACK.
    post_form(admin, f"{path}/reprocess", {}, form_page=path)
    assert "already been applied" in admin.get(path).get_data(as_text=True)
    assert msa(send(adt_message("A40", "RP1", pid("KEEP"), "MRG|GONE^^^HOSP^MR")))[0] == "AA"


def test_reprocess_needs_a_csrf_token(app: Flask, send: Send, admin: FlaskClient) -> None:
    send(adt_message("A08", "CSRF", pid("nobody")))
    row = log_row(app, "CSRF")
    admin.post(f"/admin/hl7/messages/{row.id}/reprocess")
    assert log_row(app, "CSRF").processed_at == row.processed_at


def test_the_log_is_for_admins_only(app: Flask, client: FlaskClient, make_user) -> None:
    sign_in(client, make_user("front_desk"))
    assert client.get("/admin/hl7/messages").status_code == 403
    assert client.get("/admin/hl7/messages/1").status_code == 403
