"""The public verification answer shows a person only for a live, genuine code; apps get the same answer
as JSON (GS-10(1))."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.domain.people import credentials as credential_service
from server.http.pages.verify import LIMITER_KEY
from server.http.rate_limit import TokenBucketLimiter
from tests.fixtures.people import World, login

PERSONAL = ("王执法", "AH-0001", "data:image/png", "市场监管综合执法")
JSON = {"Accept": "application/json"}


def _token(app: Flask, officer_id: int, *, age: timedelta = timedelta(0)) -> str:
    key = credential_service.load_or_create_key(app.extensions["zfjl.settings"].data_dir)
    token, _ = credential_service.issue_token(key, officer_id, now=datetime.now(UTC) - age)
    return token


def test_gs10_replayed_genuine_code_shows_only_the_verdict(
    app: Flask, client: FlaskClient, world: World
) -> None:
    """A screenshot of an old code showed the officer's name, photo and number like a live one."""
    page = client.get(f"/verify/{_token(app, world.officer_a, age=timedelta(minutes=5))}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-outcome="replayed"' in html
    for detail in PERSONAL:
        assert detail not in html, detail


def test_gs10_live_code_still_shows_the_person(app: Flask, client: FlaskClient, world: World) -> None:
    html = client.get(f"/verify/{_token(app, world.officer_a)}").get_data(as_text=True)
    assert 'data-outcome="valid"' in html
    for detail in PERSONAL:
        assert detail in html, detail


@pytest.mark.parametrize("how", ["accept", "format"])
def test_gs10_verify_answers_json_for_apps(app: Flask, client: FlaskClient, world: World, how: str) -> None:
    token = _token(app, world.officer_a)
    response = (
        client.get(f"/verify/{token}", headers=JSON)
        if how == "accept"
        else client.get(f"/verify/{token}?format=json")
    )
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store" and "Accept" in response.headers["Vary"]
    body = response.get_json()
    assert body["outcome"] == "valid" and body["valid"] is True
    assert body["message"] == "该执法证件当前有效" and body["message_en"] == "This credential is valid now"
    assert body["checked_at"]
    credential = body["credential"]
    assert credential["name"] == "王执法" and credential["certificate_number"] == "AH-0001"
    assert credential["photo"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("kind", ["replayed", "forged"])
def test_gs10_json_for_a_replayed_or_forged_code_has_no_person(
    app: Flask, client: FlaskClient, world: World, kind: str
) -> None:
    token = _token(app, world.officer_a, age=timedelta(minutes=5))
    if kind == "forged":
        token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = client.get(f"/verify/{token}?format=json")
    body = response.get_json()
    assert response.status_code == 200 and body["outcome"] == kind and body["valid"] is False
    assert body["credential"] is None
    for detail in PERSONAL:
        assert detail not in response.get_data(as_text=True)


def test_gs10_certificate_lookup_in_json(client: FlaskClient, world: World) -> None:
    found = client.get("/verify?cert=AH-0001", headers=JSON).get_json()
    assert found["outcome"] == "valid" and found["credential"]["certificate_number"] == "AH-0001"
    missing = client.get("/verify?cert=NOPE&format=json").get_json()
    assert missing["outcome"] == "not_found" and missing["credential"] is None
    no_cert = client.get("/verify?format=json")
    assert no_cert.status_code == 400 and no_cert.get_json()["error"]["code"] == "missing_cert"
    # Browsers still get the page.
    page = client.get("/verify?cert=AH-0001", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.mimetype == "text/html"


def test_gs10_json_rate_limit_answer(app: Flask, client: FlaskClient, world: World) -> None:
    app.extensions[LIMITER_KEY] = TokenBucketLimiter(1)
    here = {"REMOTE_ADDR": "198.51.100.40"}
    assert client.get("/verify/x?format=json", environ_base=here).status_code == 200
    refused = client.get("/verify/x?format=json", environ_base=here)
    assert refused.status_code == 429 and refused.mimetype == "application/json"
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1


def test_gs10_scan_log_counts_json_checks(app: Flask, client: FlaskClient, world: World) -> None:
    client.get(f"/verify/{_token(app, world.officer_a)}?format=json")
    head = login(client, "agency_head-a")
    items = client.get("/api/v1/credential-scans", headers=head).get_json()["items"]
    assert [i["outcome"] for i in items] == ["valid"]


def test_docs_give_the_token_length_measured_from_real_tokens(app: Flask, world: World) -> None:
    """docs/api-people.md said 22 bytes and 115 characters."""
    key = credential_service.load_or_create_key(app.extensions["zfjl.settings"].data_dir)
    tokens = [credential_service.issue_token(key, officer)[0] for officer in (1, world.officer_a, 2**32 - 1)]
    (length,) = {len(t) for t in tokens}
    raw = base64.urlsafe_b64decode(tokens[0] + "=" * (-len(tokens[0]) % 4))
    doc = Path(__file__).resolve().parents[4] / "docs" / "api-people.md"
    docs = " ".join(doc.read_text("utf-8").split())
    assert f"({len(raw) - 64} bytes)" in docs
    assert f"{len(raw)} bytes, {length} characters" in docs
