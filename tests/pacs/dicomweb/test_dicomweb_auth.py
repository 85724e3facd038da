"""Who may use DICOMweb, over a real HTTP connection on both backends: HTTP Basic (with the
sign-in throttling), bearer API tokens (created, listed and revoked by the CLI too), the
session cookie (which still needs its CSRF token to store), roles, CORS for a viewer's
origin, and the audit of every retrieval."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from ris import api_tokens, users
from ris.audit import Actor
from ris.db import transaction
from ris.models import ApiToken, AuditEvent
from tests.conftest import PASSWORD, csrf_token
from tests.pacs.dicom_data import make_dataset
from tests.pacs.dicomweb.placa_server import ORIGIN, Placa, multipart_body, start, with_meta


@pytest.fixture
def placa(tmp_path: Path, database_url: str) -> Iterator[Placa]:
    yield from start(tmp_path, database_url)


@pytest.fixture
def study(placa: Placa) -> str:
    ds = with_meta(make_dataset())
    placa.client("technologist").store_instances([ds])
    return str(ds.StudyInstanceUID)


def test_without_credentials_the_answer_is_401_naming_both_schemes(
    placa: Placa, study: str
) -> None:
    response = requests.get(f"{placa.base}/studies/{study}/metadata")
    assert response.status_code == 401
    assert response.json()["status"] == 401
    challenges = response.headers["WWW-Authenticate"]
    assert 'Basic realm="Placa"' in challenges and 'Bearer realm="Placa"' in challenges


def test_basic_credentials_and_a_wrong_password(placa: Placa, study: str) -> None:
    name = placa.user("radiologist")
    url = f"{placa.base}/studies/{study}/metadata"
    assert requests.get(url, auth=(name, PASSWORD)).status_code == 200
    assert requests.get(url, auth=(name, PASSWORD)).status_code == 200  # verified once, cached
    wrong = requests.get(url, auth=(name, "not the password"))
    assert wrong.status_code == 401 and "Basic" in wrong.headers["WWW-Authenticate"]
    assert requests.get(url, headers={"Authorization": "Basic !!!"}).status_code == 401


def test_failed_basic_credentials_count_towards_the_lock_out(placa: Placa, study: str) -> None:
    name = placa.user("radiologist")
    url = f"{placa.base}/studies/{study}/metadata"
    for _ in range(placa.app.config["LOGIN_MAX_FAILURES"]):
        assert requests.get(url, auth=(name, "wrong password!")).status_code == 401
    throttled = requests.get(url, auth=(name, PASSWORD))
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0


def test_bearer_tokens_work_until_revoked(placa: Placa, study: str) -> None:
    name = placa.user("radiologist")
    token_id, token = placa.token(name)
    url = f"{placa.base}/studies/{study}/metadata"
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(url, headers=headers).status_code == 200
    with transaction(placa.app) as db:
        row = db.get(ApiToken, token_id)
        assert row is not None and row.last_used_at is not None
        assert row.token_hash != token and token not in row.token_hash  # only a hash is kept
    result = placa.app.test_cli_runner().invoke(args=["users", "token", "revoke", str(token_id)])
    assert result.exit_code == 0, result.output
    assert requests.get(url, headers=headers).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer placa_made-up"}).status_code == 401


def test_the_cli_creates_and_lists_tokens_printing_the_token_once(placa: Placa, study: str) -> None:
    name = placa.user("technologist")
    runner = placa.app.test_cli_runner()
    created = runner.invoke(args=["users", "token", "create", name, "--label", "OHIF"])
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("placa_")
    listed = runner.invoke(args=["users", "token", "list", name])
    assert "\tactive\tOHIF\t" in listed.output and token not in listed.output
    response = requests.get(f"{placa.base}/studies/{study}/metadata",
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.status_code == 200
    assert runner.invoke(args=["users", "token", "create", "nobody"]).exit_code != 0
    with transaction(placa.app) as db:
        actions = set(db.scalars(select(AuditEvent.action)))
    assert "api_token.create" in actions


def test_wrong_roles_are_403_and_refused_access_is_audited(placa: Placa, study: str) -> None:
    for role in ("referrer", "billing", "transcriptionist"):
        session = placa.session(role, bearer=True)
        assert session.get(f"{placa.base}/studies/{study}").status_code == 403
    body, content_type = multipart_body([b"x"])
    reader = placa.session("radiologist", bearer=True)
    refused = reader.post(
        f"{placa.base}/studies", data=body, headers={"Content-Type": content_type}
    )
    assert refused.status_code == 403
    with transaction(placa.app) as db:
        denied = db.scalars(select(AuditEvent).where(AuditEvent.action == "access.denied")).all()
    assert len(denied) == 4


def test_each_retrieval_is_audited_once_with_who_and_which_study(placa: Placa, study: str) -> None:
    name = placa.user("radiologist")
    requests.get(f"{placa.base}/studies/{study}", auth=(name, PASSWORD))
    with transaction(placa.app) as db:
        [event] = db.scalars(select(AuditEvent).where(AuditEvent.action == "dicomweb.retrieve"))
        assert (event.actor, event.object_type, event.object_id) == (name, "study", study)


def test_a_signed_in_browser_session_reads_but_needs_a_csrf_token_to_store(
    placa: Placa, study: str
) -> None:
    name = placa.user("technologist")
    browser = placa.app.test_client()
    token = csrf_token(browser, "/login")
    browser.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token})
    assert browser.get(f"/dicomweb/studies/{study}/metadata").status_code == 200
    body, content_type = multipart_body([b"x"])
    assert (
        browser.post("/dicomweb/studies", data=body, content_type=content_type).status_code == 400
    )
    # with a credential header, no cookie and no CSRF token are needed
    bearer = placa.session("technologist", bearer=True)
    answer = bearer.post(f"{placa.base}/studies", data=body, headers={"Content-Type": content_type})
    assert answer.status_code == 409  # refused as not DICOM, not as a forged request


def test_cors_preflight_and_headers_for_the_configured_origin(placa: Placa, study: str) -> None:
    preflight = requests.options(f"{placa.base}/studies/{study}/metadata", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    })  # fmt: skip
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    session = placa.session("radiologist", bearer=True)
    answer = session.get(f"{placa.base}/studies/{study}/metadata", headers={"Origin": ORIGIN})
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = session.get(f"{placa.base}/studies/{study}/metadata",
                        headers={"Origin": "https://evil.example.com"})  # fmt: skip
    assert "Access-Control-Allow-Origin" not in other.headers
    foreign = requests.options(f"{placa.base}/studies", headers={
        "Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert "Access-Control-Allow-Origin" not in foreign.headers
    assert "Access-Control-Allow-Methods" not in foreign.headers


def test_the_rest_api_takes_the_same_credentials(placa: Placa) -> None:
    host, port = placa.web.address
    api = f"http://{host}:{port}/api/rooms"
    assert requests.get(api).status_code == 401
    name = placa.user("front_desk")
    assert requests.get(api, auth=(name, PASSWORD)).status_code == 200
    _, token = placa.token(name)
    answer = requests.get(api, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and "rooms" in answer.json()
    # a write with a bearer token needs no CSRF token; an admin route still checks the role
    created = requests.post(api, json={"code": "CT9", "name": "CT 9", "modality": "CT"},
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert created.status_code == 403


def test_expired_tokens_and_disabled_users_are_refused(placa: Placa, study: str) -> None:
    url = f"{placa.base}/studies/{study}/metadata"
    name = placa.user("radiologist")
    with transaction(placa.app) as db:
        user = users.find_user(db, name)
        assert user is not None
        _, expired = api_tokens.create_token(db, Actor.system("test"), user, "old",
                                             timedelta(seconds=-1))  # fmt: skip
    assert requests.get(url, headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    _, token = placa.token(name)
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert placa.app.test_cli_runner().invoke(args=["users", "disable", name]).exit_code == 0
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert requests.get(url, auth=(name, PASSWORD)).status_code == 401
