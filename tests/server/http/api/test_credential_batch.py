"""The offline credential batch over HTTP (GS-10(1)): ``POST /api/v1/me/credential/batch`` issues the
caller's own per-minute codes, bounded to 12 h, each accepted by ``/verify`` in its own minute only."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.audit import AuditLog
from server.domain.people.credentials import minute_start
from server.infra.db import session_scope
from tests.fixtures.people import World, login

BATCH = "/api/v1/me/credential/batch"


def _outcome(client: FlaskClient, url: str) -> str:
    html = client.get(url).get_data(as_text=True)
    return html.split('data-outcome="', 1)[1].split('"', 1)[0]


def test_gs10_offline_batch_of_own_minute_codes_only_and_bounded(
    app: Flask, client: FlaskClient, world: World
) -> None:
    officer = login(client, "officer-a")
    before = minute_start(datetime.now(UTC))
    response = client.post(BATCH, json={"minutes": 3}, headers=officer)
    after = minute_start(datetime.now(UTC))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["credential"]["name"] == "王执法" and body["credential"]["validity"] == "valid"
    tokens = body["tokens"]
    assert len(tokens) == 3
    starts = [datetime.fromisoformat(t["valid_from"]) for t in tokens]
    assert starts[0] in (before, after)  # the minute the batch was issued in comes first
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(starts))
    for item in tokens:
        assert item["qr_payload"].endswith("/verify/" + item["token"])
        assert len(item["qr_payload"]) < 160  # a low-version QR code, easy to scan
    # The code of this minute verifies; the next minute's does not yet (it is not the live code).
    assert _outcome(client, f"/verify/{tokens[0]['token']}") == "valid"
    assert _outcome(client, f"/verify/{tokens[2]['token']}") == "replayed"
    with session_scope(app) as session:
        audit = session.scalars(select(AuditLog).where(AuditLog.action == "credential.batch_issued")).one()
        detail = audit.detail if isinstance(audit.detail, dict) else json.loads(audit.detail)
        assert audit.target_id == str(world.officer_a) and detail["minutes"] == 3
    # Naming one's own officer is allowed; naming anyone else's is refused.
    own = client.post(BATCH, json={"minutes": 1, "officer_id": world.officer_a}, headers=officer)
    assert own.status_code == 200

    other = client.post(BATCH, json={"minutes": 5, "officer_id": world.officer_b}, headers=officer)
    assert other.status_code == 403 and other.get_json()["error"]["code"] == "other_officer"
    assert "tokens" not in other.get_json()
    theirs = client.post(
        BATCH, json={"minutes": 5, "officer_id": world.officer_a}, headers=login(client, "officer-b")
    )
    assert theirs.status_code == 403
    for bad in ({}, {"minutes": 0}, {"minutes": 721}, {"minutes": "60"}, {"minutes": True}, {"minutes": 1.5}):
        answer = client.post(BATCH, json=bad, headers=officer)
        assert answer.status_code == 400, (bad, answer.status_code)
        assert "minutes" in answer.get_json()["error"]["message_en"], bad
    # Only credential holders; a supervisor has no credential to carry, and nobody without a login.
    assert client.post(BATCH, json={"minutes": 1}, headers=login(client, "supervisor-a")).status_code == 403
    assert client.post(BATCH, json={"minutes": 1}).status_code == 401
    # An account without a linked officer (the auxiliary of A has none) gets a 404, not codes.
    assert client.post(BATCH, json={"minutes": 1}, headers=login(client, "auxiliary-a")).status_code == 404
