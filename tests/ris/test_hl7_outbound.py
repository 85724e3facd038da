"""The HL7 outbox: SIU written with the booking, sent in order to a real MLLP peer, retried
with back-off, surviving a restart; the `hl7` commands and the admin pages."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy import select
from sqlalchemy.orm import Session

from ris import events, scheduling
from ris.db import sessions, transaction, utcnow
from ris.hl7 import outbound, siu
from ris.hl7.client import MLLPClient, MLLPClientError
from ris.models import AuditEvent, HL7Destination, OutboundMessage
from tests.conftest import build_app, free_port, post_form, sign_in
from tests.factories import ACTOR, SITE, FrontDesk, at, next_weekday
from tests.hl7_peer import HL7Peer

FAST = {"connect_timeout": 2.0, "read_timeout": 2.0}


@pytest.fixture
def ct(db: Session, desk: FrontDesk):
    room = desk.room(db, "CT1", "CT")
    code = desk.code(db, "74177", "CT", minutes=20)
    db.commit()
    return room, code


def _destination(db: Session, port: int, types: str = "SIU", name: str = "HIS") -> HL7Destination:
    data = outbound.DestinationData(
        name=name, host="127.0.0.1", port=port, message_types=outbound.parse_message_types(types),
        receiving_application="HIS", receiving_facility="HOSP",
    )  # fmt: skip
    destination = outbound.save_destination(db, ACTOR, data)
    db.commit()
    return destination


def _outbox(app: Flask) -> list[OutboundMessage]:
    with transaction(app) as db:
        return list(db.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


def _parse(payload: str):  # noqa: ANN202
    message = parse_message(payload, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    return parse_message(payload, find_groups=False)


# Enqueueing --------------------------------------------------------------------------------


def test_booking_queues_an_s12_in_its_transaction(
    app: Flask, db: Session, desk: FrontDesk, ct
) -> None:
    room, code = ct
    _destination(db, free_port())
    _destination(db, free_port(), "ORU,DFT", name="BILLING")  # does not want SIU
    patient = desk.patient(db, "Peña|Ruiz", "José", phone="+34 600 000 000", email="j@p.es",
                           city="Madrid")  # fmt: skip
    exam = desk.exam(db, patient, code)
    db.commit()
    scheduling.book(db, ACTOR, SITE, exam, room, at(next_weekday(), 9))
    db.rollback()  # the booking is abandoned: no message either
    assert _outbox(app) == []
    scheduling.book(db, ACTOR, SITE, exam, room, at(next_weekday(), 9))
    db.commit()
    [queued] = _outbox(app)
    assert (queued.message_type, queued.state, queued.destination.name) == ("SIU^S12", "queued",
                                                                            "HIS")  # fmt: skip
    assert (queued.exam_id, queued.patient_id) == (exam.id, patient.id)
    message = _parse(queued.payload)
    step = exam.steps[0]
    assert message.msh.msh_9.value == "SIU^S12^SIU_S12"
    assert message.msh.msh_10.value == queued.control_id
    assert (message.msh.msh_5.value, message.msh.msh_6.value) == ("HIS", "HOSP")
    assert message.sch.sch_2.value == f"{step.step_id}^PLACA"
    assert message.sch.sch_27.value == f"{exam.accession_number}^PLACA"
    assert message.sch.sch_25.value.startswith("Booked")
    zone = outbound.identity_of(db).zone  # the app's TIMEZONE
    start, end = (t.astimezone(zone).strftime("%Y%m%d%H%M%S%z") for t in (step.start_at,
                                                                          step.end_at))  # fmt: skip
    assert message.sch.sch_11.value == f"^^M20^{start}^{end}"
    assert message.pid.pid_3.value == f"{patient.mrn}^^^PLACA^MR"
    assert message.pid.pid_5.value == "Peña\\F\\Ruiz^José^^^^^L"  # delimiters escaped
    assert message.pid.pid_7.value == "19700101" and message.pid.pid_8.value == "M"
    assert [f.value for f in message.pid.pid_13] == ["+34 600 000 000^PRN^PH",
                                                     "^NET^Internet^j@p.es"]  # fmt: skip
    assert message.ais.ais_3.value == "74177^CT exam 74177^CPT"
    assert message.ail.ail_3.value.startswith("CT1^CT1")


def test_times_are_site_local_with_their_offset(app: Flask, desk: FrontDesk) -> None:
    app.config["TIMEZONE"] = "Europe/Madrid"
    outbound.configure(app)  # what registering the blueprint does at start
    with sessions(app)() as db:
        room, code = desk.room(db), desk.code(db)
        _destination(db, free_port())
        desk.booked(db, room, code, at(next_weekday(), 9))
        db.commit()
    [queued] = _outbox(app)
    message = parse_message(queued.payload, find_groups=False)
    assert message.ais.ais_4.value[8:] in ("090000+0100", "090000+0200")


def test_reschedule_cancel_and_no_show(app: Flask, db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    _destination(db, free_port())
    day = next_weekday()
    exam = desk.booked(db, room, code, at(day, 9))
    scheduling.reschedule(db, ACTOR, SITE, exam, room, at(day, 11))
    scheduling.check_in(db, ACTOR, exam)
    scheduling.cancel(db, ACTOR, exam, "Patient feels better")
    other = desk.booked(db, room, code, at(day, 12))
    scheduling.no_show(db, ACTOR, other)
    db.commit()
    rows = _outbox(app)
    assert [m.message_type for m in rows] == ["SIU^S12", "SIU^S13", "SIU^S14", "SIU^S15",
                                              "SIU^S12", "SIU^S15"]  # fmt: skip
    s13, s14, s15, no_show = (_parse(rows[i].payload) for i in (1, 2, 3, 5))
    assert s13.sch.sch_2.value == _parse(rows[0].payload).sch.sch_2.value  # same appointment
    assert s13.ais.ais_4.value == outbound.hl7_time(at(day, 11), outbound.identity_of(db).zone)
    assert s14.sch.sch_6.value == "S14^Arrived" and s14.sch.sch_25.value.startswith("Started")
    assert s15.sch.sch_6.value == "S15^Cancelled: Patient feels better"
    assert s15.sch.sch_25.value.startswith("Cancelled")
    assert no_show.sch.sch_25.value.startswith("Noshow")
    assert len({m.control_id for m in rows}) == 6


def test_no_destination_no_message_and_inactive_gets_none(
    app: Flask, db: Session, desk: FrontDesk, ct
) -> None:
    room, code = ct
    desk.booked(db, room, code, at(next_weekday(), 9))
    destination = _destination(db, free_port())
    outbound.set_destination_active(db, ACTOR, destination, False)
    desk.booked(db, room, code, at(next_weekday(), 10))
    db.commit()
    assert _outbox(app) == []


def test_a_failing_handler_fails_the_change(app: Flask, db: Session, desk: FrontDesk,
                                            ct) -> None:  # fmt: skip
    room, code = ct

    def broken(_db: Session, **_data: object) -> None:
        raise RuntimeError("outbox unavailable")

    events.subscribe("exam.booked", broken)
    try:
        exam = desk.exam(db, desk.patient(db), code)
        with pytest.raises(RuntimeError):
            scheduling.book(db, ACTOR, SITE, exam, room, at(next_weekday(), 9))
    finally:
        events.unsubscribe("exam.booked", broken)


def test_status_triggers() -> None:
    from ris.models import ExamStatus as S

    assert siu.trigger_for_status(S.ORDERED, S.SCHEDULED) is None  # exam.booked says S12
    assert siu.trigger_for_status(S.SCHEDULED, S.CANCELLED) == "S15"
    assert siu.trigger_for_status(S.ARRIVED, S.CANCELLED) == "S15"
    assert siu.trigger_for_status(S.SCHEDULED, S.ORDERED) == "S15"
    assert siu.trigger_for_status(S.ARRIVED, S.SCHEDULED) == "S14"
    assert siu.trigger_for_status(S.IN_PROGRESS, S.COMPLETED) == "S14"
    assert siu.trigger_for_status(S.COMPLETED, S.READ) is None
    assert siu.trigger_for_status(S.NO_SHOW, S.CANCELLED) is None


# Sending -----------------------------------------------------------------------------------


def test_sender_delivers_in_order_and_marks_acknowledged(
    app: Flask, db: Session, desk: FrontDesk, ct, peer: HL7Peer
) -> None:
    room, code = ct
    _destination(db, peer.port)
    day = next_weekday()
    for hour in (9, 10, 11):
        desk.booked(db, room, code, at(day, hour))
    db.commit()
    report = outbound.send_due(app, **FAST)
    assert (report.acknowledged, report.failed) == (3, 0)
    rows = _outbox(app)
    assert peer.control_ids == [m.control_id for m in rows]
    assert peer.connections == 1  # one connection per batch
    assert {(m.state, m.ack_code, m.attempts) for m in rows} == {("acknowledged", "AA", 1)}
    assert all(m.acknowledged_at is not None for m in rows)
    assert outbound.send_due(app, **FAST).acknowledged == 0  # nothing sent twice


def test_peer_down_then_up_loses_nothing(app: Flask, db: Session, desk: FrontDesk, ct) -> None:
    room, code = ct
    peer = HL7Peer(free_port())  # not started: connections are refused
    _destination(db, peer.port)
    day = next_weekday()
    desk.booked(db, room, code, at(day, 9))
    desk.booked(db, room, code, at(day, 10))
    db.commit()
    start = utcnow()
    report = outbound.send_due(app, now=lambda: start, **FAST)
    assert (report.acknowledged, report.failed) == (1 - 1, 1)
    first, second = _outbox(app)
    assert (first.state, first.attempts, second.state) == ("failed", 1, "queued")
    assert "cannot connect" in (first.last_error or "")
    assert first.next_attempt_at - start == timedelta(seconds=10)
    assert outbound.send_due(app, now=lambda: start + timedelta(seconds=5), **FAST).failed == 0
    later = start + timedelta(seconds=11)
    outbound.send_due(app, now=lambda: later, **FAST)
    first = _outbox(app)[0]
    assert (first.attempts, first.next_attempt_at - later) == (2, timedelta(seconds=20))
    peer.start()
    try:
        report = outbound.send_due(app, now=lambda: later + timedelta(minutes=1), **FAST)
    finally:
        peer.stop()
    assert report.acknowledged == 2
    assert peer.control_ids == [m.control_id for m in _outbox(app)]
    assert {m.state for m in _outbox(app)} == {"acknowledged"}


def test_error_ack_is_retried_and_blocks_the_queue(
    app: Flask, db: Session, desk: FrontDesk, ct, peer: HL7Peer
) -> None:
    room, code = ct
    _destination(db, peer.port)
    day = next_weekday()
    desk.booked(db, room, code, at(day, 9))
    desk.booked(db, room, code, at(day, 10))
    db.commit()
    peer.answer = "AE"
    start = utcnow()
    assert outbound.send_due(app, now=lambda: start, **FAST).failed == 1
    first, second = _outbox(app)
    assert (first.state, first.ack_code, second.state) == ("failed", "AE", "queued")
    assert "Refused by the test peer" in (first.last_error or "")
    peer.answer = "AR"
    outbound.send_due(app, now=lambda: start + timedelta(seconds=10), **FAST)
    assert _outbox(app)[0].ack_code == "AR" and _outbox(app)[1].state == "queued"
    peer.answer = "AA"
    report = outbound.send_due(app, now=lambda: start + timedelta(minutes=5), **FAST)
    assert report.acknowledged == 2
    ids = [m.control_id for m in _outbox(app)]
    assert peer.control_ids == [ids[0], ids[0], ids[0], ids[1]]


def test_silent_peer_times_out_and_is_retried(
    app: Flask, db: Session, desk: FrontDesk, ct, peer: HL7Peer
) -> None:
    room, code = ct
    _destination(db, peer.port)
    desk.booked(db, room, code, at(next_weekday(), 9))
    db.commit()
    peer.answer = "silent"
    report = outbound.send_due(app, connect_timeout=1.0, read_timeout=0.3)
    assert report.failed == 1
    [message] = _outbox(app)
    assert message.state == "failed" and "no reply" in (message.last_error or "")


def test_a_claimed_message_is_not_sent_twice_until_its_claim_lapses(
    app: Flask, db: Session, desk: FrontDesk, ct, peer: HL7Peer
) -> None:
    room, code = ct
    _destination(db, peer.port)
    desk.booked(db, room, code, at(next_weekday(), 9))
    db.commit()
    # A sender crashed after claiming (state "sent"): another run leaves it alone...
    with transaction(app) as session:
        message = session.scalars(select(OutboundMessage)).one()
        message.state, message.attempts = "sent", 1
        message.next_attempt_at = utcnow() + timedelta(seconds=outbound.CLAIM_SECONDS)
    assert outbound.send_due(app, **FAST).acknowledged == 0
    # ...until the claim lapses: then it is sent again (at least once).
    later = utcnow() + timedelta(seconds=outbound.CLAIM_SECONDS + 1)
    assert outbound.send_due(app, now=lambda: later, **FAST).acknowledged == 1
    assert _outbox(app)[0].attempts == 2


def test_two_senders_at_once_send_each_message_once_in_order(
    app: Flask, db: Session, desk: FrontDesk, ct, peer: HL7Peer
) -> None:
    room, code = ct
    _destination(db, peer.port)
    day = next_weekday()
    for hour in range(9, 15):
        desk.booked(db, room, code, at(day, hour))
    db.commit()
    barrier = threading.Barrier(2)

    def sender() -> None:
        barrier.wait()
        outbound.send_due(app, **FAST)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    outbound.send_due(app, **FAST)  # whatever a skipped run left is due now
    assert peer.control_ids == [m.control_id for m in _outbox(app)]
    assert {m.state for m in _outbox(app)} == {"acknowledged"}


def test_outbox_survives_a_restart(tmp_path: Path, database_url: str, peer: HL7Peer) -> None:
    first = build_app(tmp_path, database_url)
    desk = FrontDesk(first)
    with sessions(first)() as db:
        room, code = desk.room(db), desk.code(db)
        _destination(db, peer.port)
        desk.booked(db, room, code, at(next_weekday(), 9))
        db.commit()
    first.extensions["placa.engine"].dispose()
    del first
    second = build_app(tmp_path, database_url)
    try:
        assert outbound.send_due(second, **FAST).acknowledged == 1
        assert [m.state for m in _outbox(second)] == ["acknowledged"]
        assert len(peer.messages) == 1 and "SIU^S12" in peer.messages[0]
    finally:
        second.extensions["placa.engine"].dispose()


def test_backoff_doubles_up_to_ten_minutes() -> None:
    assert [outbound.backoff(n).total_seconds() for n in (1, 2, 3, 6, 7, 50)] == [
        10, 20, 40, 320, 600, 600]  # fmt: skip


def test_read_ack_is_tolerant() -> None:
    ack = outbound.read_ack(b"MSH|^~\\&|A|B|||x||ACK|1|P|2.3.1\nMSA|AE|C1|Bad PID\r")
    assert (ack.code, ack.control_id, ack.text) == ("AE", "C1", "Bad PID")
    assert outbound.read_ack(b"garbage").code == ""


def test_client_refused_and_timeouts() -> None:
    port = free_port()
    with pytest.raises(MLLPClientError, match="cannot connect"):
        MLLPClient("127.0.0.1", port, connect_timeout=1).connect()


# Command line ------------------------------------------------------------------------------


def test_cli_add_list_remove(app: Flask, db: Session, desk: FrontDesk, ct) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["hl7", "add-destination", "HIS", "his.example", "2575", "--messages", "siu,ORU",
              "--application", "EPIC", "--pdf"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    again = runner.invoke(args=["hl7", "add-destination", "HIS", "h", "1", "--messages", "SIU"])
    assert again.exit_code != 0 and "exists already" in again.output
    bad = runner.invoke(args=["hl7", "add-destination", "X", "h", "1", "--messages", "ADT"])
    assert bad.exit_code != 0 and "SIU, ORU, DFT" in bad.output
    listing = runner.invoke(args=["hl7", "destinations"]).output
    assert "HIS\this.example:2575\tSIU,ORU\tactive\tqueued=0 sent=0" in listing
    assert listing.rstrip().endswith("pdf")
    room, code = ct
    desk.booked(db, room, code, at(next_weekday(), 9))  # HIS now has a message
    db.commit()
    assert "queued=1" in runner.invoke(args=["hl7", "destinations"]).output
    kept = runner.invoke(args=["hl7", "remove-destination", "HIS"])
    assert "deactivated" in kept.output
    assert "inactive" in runner.invoke(args=["hl7", "destinations"]).output
    runner.invoke(args=["hl7", "add-destination", "LAB", "lab", "2576", "--messages", "ORU"])
    assert "removed" in runner.invoke(args=["hl7", "remove-destination", "LAB"]).output
    assert "LAB" not in runner.invoke(args=["hl7", "destinations"]).output
    assert runner.invoke(args=["hl7", "remove-destination", "NOPE"]).exit_code != 0
    with transaction(app) as session:
        query = select(AuditEvent.actor).where(AuditEvent.action.like("hl7.destination.%"))
        actors = set(session.scalars(query))
    assert actors == {"cli"}


# Admin pages -------------------------------------------------------------------------------


def test_admin_manages_destinations_and_sees_the_outbox(
    app: Flask, client: FlaskClient, db: Session, desk: FrontDesk, ct, make_user, peer: HL7Peer
) -> None:
    sign_in(client, make_user("admin"))
    page = client.get("/admin/outbox/destinations/new")
    assert page.status_code == 200
    response = post_form(client, "/admin/outbox/destinations/new", {
        "name": "HIS", "host": "127.0.0.1", "port": str(peer.port), "message_types": ["SIU"],
        "receiving_application": "HIS", "active": "y"})  # fmt: skip
    assert response.status_code == 302, response.get_data(as_text=True)
    refused = post_form(client, "/admin/outbox/destinations/new", {
        "name": "HIS", "host": "x", "port": "1", "message_types": ["SIU"]})  # fmt: skip
    assert refused.status_code == 422 and "exists already" in refused.get_data(as_text=True)
    destination = outbound.find_destination(db, "HIS")
    assert destination is not None and destination.wants("SIU^S12")
    destination_id = destination.id
    db.rollback()  # on SQLite a session that has read holds the write lock until it ends
    edit = f"/admin/outbox/destinations/{destination_id}"
    assert "HIS" in client.get(edit).get_data(as_text=True)
    changed = post_form(client, edit, {
        "name": "HIS", "host": "127.0.0.1", "port": str(peer.port), "message_types": ["SIU", "ORU"],
        "receiving_application": "HIS", "receiving_facility": "HOSP", "active": "y"})  # fmt: skip
    assert changed.status_code == 302
    bad_port = post_form(client, edit, {"name": "HIS", "host": "h", "port": "70000",
                                        "message_types": ["SIU"]})  # fmt: skip
    assert bad_port.status_code == 422
    room, code = ct
    desk.booked(db, room, code, at(next_weekday(), 9))
    db.commit()
    peer.answer = "AE"
    outbound.send_due(app, **FAST)
    listing = client.get("/admin/outbox/?state=failed").get_data(as_text=True)
    [message] = _outbox(app)
    assert message.control_id in listing and "SIU^S12" in listing
    assert message.control_id not in client.get("/admin/outbox/?state=acknowledged").get_data(
        as_text=True)  # fmt: skip
    detail = client.get(f"/admin/outbox/messages/{message.id}").get_data(as_text=True)
    assert "Retry now" in detail and "Refused by the test peer" in detail
    assert "SCH|" in detail
    retried = post_form(client, f"/admin/outbox/messages/{message.id}/retry", {},
                        form_page=f"/admin/outbox/messages/{message.id}")  # fmt: skip
    assert retried.status_code == 302
    peer.answer = "AA"
    assert outbound.send_due(app, **FAST).acknowledged == 1
    with transaction(app) as session:
        actions = list(session.scalars(select(AuditEvent.action).where(
            AuditEvent.action.like("hl7.%")).order_by(AuditEvent.id)))  # fmt: skip
        viewed = session.scalars(select(AuditEvent.patient_id).where(
            AuditEvent.action == "hl7.outbound.view"))  # fmt: skip
        assert set(viewed) == {message.patient_id}
    assert {"hl7.outbox.view", "hl7.outbound.view", "hl7.outbound.retry"} <= set(actions)
    listing = client.get("/admin/outbox/destinations").get_data(as_text=True)
    assert "127.0.0.1:" in listing
    deactivated = post_form(
        client, f"{edit}/deactivate", {}, form_page="/admin/outbox/destinations"
    )
    assert deactivated.status_code == 302
    db.expire_all()
    assert not outbound.get_destination(db, destination_id).active


def test_the_outbox_is_in_the_admin_navigation(client: FlaskClient, make_user) -> None:
    sign_in(client, make_user("admin"))
    assert "/admin/outbox/" in client.get("/admin/").get_data(as_text=True)
    assert client.get("/admin/outbox/messages/999").status_code == 404


def test_the_scheduler_job_and_the_send_command_deliver(
    app: Flask, db: Session, desk: FrontDesk, ct, peer: HL7Peer
) -> None:
    from ris.scheduler import JOBS, run_job

    room, code = ct
    _destination(db, peer.port)
    desk.booked(db, room, code, at(next_weekday(), 9))
    db.commit()
    [job] = [job for job_id, job, _trigger in JOBS if job_id == "hl7-send"]
    run_job(app, "hl7-send", job)
    assert [m.state for m in _outbox(app)] == ["acknowledged"]
    desk.booked(db, room, code, at(next_weekday(), 10))
    db.commit()
    result = app.test_cli_runner().invoke(args=["hl7", "send"])
    assert result.output.strip() == "1 acknowledged, 0 failed."
    assert len(peer.messages) == 2


# Dead letters -------------------------------------------------------------------------------


def test_a_refused_message_is_dead_lettered_and_the_queue_goes_on(
    app: Flask, db: Session, desk: FrontDesk, ct, peer: HL7Peer
) -> None:
    room, code = ct
    _destination(db, peer.port)
    day = next_weekday()
    desk.booked(db, room, code, at(day, 9))
    desk.booked(db, room, code, at(day, 10))
    db.commit()
    peer.answer = "AR"
    moment = utcnow()
    for attempt in range(1, outbound.DEAD_LETTER_ATTEMPTS):
        report = outbound.send_due(app, now=lambda m=moment: m, **FAST)
        assert (report.failed, report.dead_lettered) == (1, 0)
        first, second = _outbox(app)
        assert (first.state, first.attempts, second.state) == ("failed", attempt, "queued")
        moment += outbound.backoff(attempt)
    # Refused again at the fifth attempt: parked, and the next message goes in the same run.
    report = outbound.send_due(app, now=lambda: moment, **FAST)
    assert (report.dead_lettered, report.failed) == (1, 1)
    first, second = _outbox(app)
    assert (first.state, first.ack_code, first.attempts) == ("dead", "AR", 5)
    assert "Refused by the test peer" in (first.last_error or "")
    assert (second.state, second.attempts) == ("failed", 1)
    peer.answer = "AA"
    moment += timedelta(minutes=1)
    assert outbound.send_due(app, now=lambda: moment, **FAST).acknowledged == 1
    first, second = _outbox(app)
    assert (first.state, second.state) == ("dead", "acknowledged")
    later = moment + timedelta(hours=1)
    assert outbound.send_due(app, now=lambda: later, **FAST).acknowledged == 0  # never by itself
    assert peer.control_ids == [first.control_id] * 5 + [second.control_id] * 2


def test_transport_failures_never_dead_letter(app: Flask, db: Session, desk: FrontDesk,
                                              ct) -> None:  # fmt: skip
    room, code = ct
    peer = HL7Peer(free_port())  # down
    _destination(db, peer.port)
    desk.booked(db, room, code, at(next_weekday(), 9))
    db.commit()
    moment = utcnow()
    for _attempt in range(outbound.DEAD_LETTER_ATTEMPTS + 2):
        assert outbound.send_due(app, now=lambda m=moment: m, **FAST).dead_lettered == 0
        moment += outbound.RETRY_MAX
    [message] = _outbox(app)
    assert (message.state, message.attempts) == ("failed", outbound.DEAD_LETTER_ATTEMPTS + 2)


def test_restamp_changes_only_msh_7_and_msh_10() -> None:
    payload = (
        "MSH|^~\\&|PLACA|PLACA|HIS|HOSP|20261124090000+0100||SIU^S12^SIU_S12|OLD|P|2.5.1\rSCH|1\r"
    )
    assert outbound.restamp(payload, "NEW", "20261125100000+0100") == (
        "MSH|^~\\&|PLACA|PLACA|HIS|HOSP|20261125100000+0100||SIU^S12^SIU_S12|NEW|P|2.5.1\rSCH|1\r"
    )


def test_admin_skips_a_blocking_message_and_sends_it_again(
    app: Flask, client: FlaskClient, db: Session, desk: FrontDesk, ct, make_user, peer: HL7Peer
) -> None:
    room, code = ct
    _destination(db, peer.port)
    day = next_weekday()
    desk.booked(db, room, code, at(day, 9))
    desk.booked(db, room, code, at(day, 10))
    db.commit()
    peer.answer = "AR"
    assert outbound.send_due(app, **FAST).failed == 1
    blocked, waiting = _outbox(app)
    sign_in(client, make_user("admin"))
    page = f"/admin/outbox/messages/{blocked.id}"
    detail = client.get(page).get_data(as_text=True)
    assert "Skip (dead-letter)" in detail and "Send again" not in detail
    refused = post_form(client, f"{page}/resend", {}, form_page=page)  # not dead: refused
    assert refused.status_code == 302
    assert "Only a dead-lettered" in client.get(page).get_data(as_text=True)
    skipped = post_form(client, f"{page}/skip", {"reason": "HIS rejects this patient"},
                        form_page=page)  # fmt: skip
    assert skipped.status_code == 302
    blocked = _outbox(app)[0]
    assert blocked.state == "dead" and "HIS rejects this patient" in (blocked.last_error or "")
    assert "dead-lettered" in client.get("/admin/outbox/?state=dead").get_data(as_text=True)
    peer.answer = "AA"
    assert outbound.send_due(app, **FAST).acknowledged == 1  # the next one goes
    assert _outbox(app)[1].state == "acknowledged"
    again = post_form(client, f"{page}/skip", {}, form_page=page)  # already dead
    assert again.status_code == 302
    resent = post_form(client, f"{page}/resend", {}, form_page=page)
    assert resent.status_code == 302
    rows = _outbox(app)
    copy = rows[2]
    assert resent.headers["Location"].endswith(f"/admin/outbox/messages/{copy.id}")
    assert (copy.state, copy.message_type, copy.exam_id) == ("queued", "SIU^S12", blocked.exam_id)
    assert copy.control_id != blocked.control_id
    assert f"|{copy.control_id}|" in copy.payload.split("\r")[0]
    assert copy.payload.split("\r")[1:] == blocked.payload.split("\r")[1:]
    assert outbound.send_due(app, **FAST).acknowledged == 1
    assert peer.control_ids == [blocked.control_id, waiting.control_id, copy.control_id]
    assert [m.state for m in _outbox(app)] == ["resent", "acknowledged", "acknowledged"]
    assert f"sent again as message {copy.id}" in (_outbox(app)[0].last_error or "")
    twice = post_form(client, f"{page}/resend", {}, form_page=page)  # resent: not again
    assert twice.status_code == 302 and len(_outbox(app)) == 3
    with transaction(app) as session:
        events = list(session.execute(select(AuditEvent.action, AuditEvent.object_id,
                                             AuditEvent.detail, AuditEvent.patient_id)
                                      .where(AuditEvent.action.in_(("hl7.outbound.skip",
                                                                    "hl7.outbound.resend")))
                                      .order_by(AuditEvent.id)))  # fmt: skip
    assert [(e.action, e.object_id) for e in events] == [
        ("hl7.outbound.skip", str(blocked.id)),
        ("hl7.outbound.resend", str(blocked.id)),
    ]
    assert json.loads(events[0].detail) == {"reason": "HIS rejects this patient"}
    assert json.loads(events[1].detail)["copy"] == copy.id
    assert {e.patient_id for e in events} == {blocked.patient_id}
    counts = client.get("/admin/outbox/destinations").get_data(as_text=True)
    assert "dead-lettered, not sent" in counts


def test_admin_sends_every_dead_message_of_a_destination_again(
    app: Flask, client: FlaskClient, db: Session, desk: FrontDesk, ct, make_user, peer: HL7Peer
) -> None:
    room, code = ct
    destination = _destination(db, peer.port)
    day = next_weekday()
    for hour in (9, 10, 11):
        desk.booked(db, room, code, at(day, hour))
    db.commit()
    peer.answer = "AE"  # the receiver refuses everything until it is fixed
    moment = utcnow()
    runs = 0
    while any(m.state != "dead" for m in _outbox(app)) and runs < 20:
        outbound.send_due(app, now=lambda m=moment: m, **FAST)
        moment += outbound.RETRY_MAX
        runs += 1
    assert [m.state for m in _outbox(app)] == ["dead"] * 3
    result = app.test_cli_runner().invoke(args=["hl7", "destinations"])
    assert "dead=3" in result.output
    sign_in(client, make_user("admin"))
    listing = client.get("/admin/outbox/destinations").get_data(as_text=True)
    assert "Send the dead-lettered messages again" in listing
    action = f"/admin/outbox/destinations/{destination.id}/resend-dead"
    response = post_form(client, action, {}, form_page="/admin/outbox/destinations")
    assert response.status_code == 302
    assert "3 dead-lettered messages to HIS are queued again" in client.get(
        "/admin/outbox/destinations").get_data(as_text=True)  # fmt: skip
    again = post_form(client, action, {}, form_page="/admin/outbox/destinations")
    assert again.status_code == 302 and len(_outbox(app)) == 6  # nothing resent twice
    peer.answer = "AA"
    sent = app.test_cli_runner().invoke(args=["hl7", "send"])
    assert sent.output.strip() == "3 acknowledged, 0 failed."
    rows = _outbox(app)
    assert [m.state for m in rows] == ["resent"] * 3 + ["acknowledged"] * 3
    assert peer.control_ids[-3:] == [m.control_id for m in rows[3:]]
    originals = [m.payload.split("\r", 1)[1] for m in rows[:3]]
    assert [m.payload.split("\r", 1)[1] for m in rows[3:]] == originals  # same order, same body
