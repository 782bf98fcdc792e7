"""Recordings list/detail/media over HTTP (Range, 416), device endpoints, audit rows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.audit import AuditLog
from server.domain.evidence.commit import commit_segment
from server.http.context import get_store
from server.infra.db import session_scope
from tests.conftest import SegmentFactory


@pytest.fixture
def stored(app: Flask, client: FlaskClient, auth: dict[str, str], segments: SegmentFactory) -> list[bytes]:
    """Three committed segments of dev-001 registered through the API; returns their bytes."""
    response = client.post(
        "/api/v1/devices",
        headers=auth,
        json={
            "device_id": segments.device_id,
            "public_key": base64.b64encode(segments.public_key).decode(),
            "serial": "SN-1",
            "model": "DSJ-X",
        },
    )
    assert response.status_code == 201, response.get_json()
    payloads = []
    with app.app_context(), session_scope(app) as session:
        for i in range(3):
            data = bytes(range(256)) * (i + 4)
            signed, path = segments.make(data)
            commit_segment(session, get_store(), signed, path)
            payloads.append(data)
    return payloads


def _audit(app: Flask) -> list[AuditLog]:
    with session_scope(app) as session:
        return list(session.scalars(select(AuditLog).order_by(AuditLog.id)))


def test_list_detail_and_pagination(
    app: Flask, client: FlaskClient, auth: dict[str, str], stored: list[bytes]
) -> None:
    body = client.get("/api/v1/recordings?limit=2", headers=auth).get_json()
    assert [i["sequence"] for i in body["items"]] == [2, 1]
    assert set(body["items"][0]) == {
        "id",
        "device_id",
        "sequence",
        "started_at",
        "ended_at",
        "size",
        "sha256",
        "verified",
        "media_type",
        "officer_id",
        "kind",
    }
    page2 = client.get(f"/api/v1/recordings?limit=2&before={body['next']}", headers=auth).get_json()
    assert [i["sequence"] for i in page2["items"]] == [0] and page2["next"] is None
    assert client.get("/api/v1/recordings?device_id=other", headers=auth).get_json()["items"] == []
    assert client.get("/api/v1/recordings?limit=0", headers=auth).status_code == 400
    assert client.get("/api/v1/recordings?limit=x", headers=auth).status_code == 400

    rec_id = body["items"][0]["id"]
    detail = client.get(f"/api/v1/recordings/{rec_id}", headers=auth).get_json()
    manifest = json.loads(detail["manifest"])
    assert manifest["sequence"] == 2 and detail["prev_manifest_hash"] == manifest["prev_manifest_hash"]
    assert len(base64.b64decode(detail["signature"])) == 64
    assert detail["manifest_hash"] and detail["stored_at"]
    missing = client.get("/api/v1/recordings/99999", headers=auth)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"

    actions = [(a.action, a.target_id) for a in _audit(app)]
    assert ("recording.list", None) in actions and ("recording.view", str(rec_id)) in actions
    view = next(a for a in _audit(app) if a.action == "recording.view")
    assert view.actor == "1" and view.client_ip and view.at.tzinfo is not None


def test_media_full_and_ranges(
    app: Flask, client: FlaskClient, auth: dict[str, str], stored: list[bytes]
) -> None:
    data = stored[0]
    items = client.get("/api/v1/recordings?device_id=dev-001", headers=auth).get_json()["items"]
    rec_id = next(i["id"] for i in items if i["sequence"] == 0)
    url = f"/api/v1/recordings/{rec_id}/media"

    full = client.get(url, headers=auth)
    assert full.status_code == 200 and full.data == data
    assert full.headers["Accept-Ranges"] == "bytes" and full.headers["Content-Type"] == "video/mp4"
    assert int(full.headers["Content-Length"]) == len(data)

    part = client.get(url, headers={**auth, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert part.headers["Content-Length"] == "10"

    tail = client.get(url, headers={**auth, "Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.data == data[-5:]
    open_end = client.get(url, headers={**auth, "Range": f"bytes={len(data) - 3}-"})
    assert open_end.status_code == 206 and open_end.data == data[-3:]
    clamped = client.get(url, headers={**auth, "Range": f"bytes=0-{len(data) + 100}"})
    assert clamped.status_code == 206 and clamped.data == data

    for bad in (f"bytes={len(data)}-", "bytes=20-10", "bytes=-0"):
        response = client.get(url, headers={**auth, "Range": bad})
        assert response.status_code == 416, bad
        assert response.headers["Content-Range"] == f"bytes */{len(data)}"
        assert response.get_json()["error"]["code"] == "range_not_satisfiable"

    media_rows = [a for a in _audit(app) if a.action == "recording.media"]
    assert len(media_rows) == 8 and media_rows[1].detail_dict() == {"range": "bytes=10-19"}


def test_device_endpoints(
    client: FlaskClient, auth: dict[str, str], stored: list[bytes], tmp_path: Path
) -> None:
    listed = client.get("/api/v1/devices", headers=auth).get_json()["items"]
    assert [d["device_id"] for d in listed] == ["dev-001"] and listed[0]["status"] == "active"
    one = client.get("/api/v1/devices/dev-001", headers=auth).get_json()
    assert one["serial"] == "SN-1" and len(one["key_fingerprint"]) == 64
    assert client.get("/api/v1/devices/none", headers=auth).status_code == 404

    same = {"device_id": "dev-001", "public_key": one["public_key"]}
    assert client.post("/api/v1/devices", headers=auth, json=same).status_code == 200
    other_key = base64.b64encode(SegmentFactory(tmp_path).public_key).decode()
    conflict = client.post(
        "/api/v1/devices", headers=auth, json={"device_id": "dev-001", "public_key": other_key}
    )
    assert conflict.status_code == 409 and conflict.get_json()["error"]["code"] == "device_key_conflict"
    for body in (
        {"device_id": "d2", "public_key": "!!!"},
        {"device_id": "d2"},
        {"device_id": "d2", "public_key": "AAAA"},
    ):
        response = client.post("/api/v1/devices", headers=auth, json=body)
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_request"

    chain = client.get("/api/v1/devices/dev-001/chain", headers=auth).get_json()
    assert chain["segments"] == 3 and chain["verified"] is True and chain["gaps"] == []


def test_health_and_json_errors(client: FlaskClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok", "db": "ok", "store": "ok"}
    nf = client.get("/nope")
    assert nf.status_code == 404 and nf.get_json()["error"]["code"] == "not_found"
    na = client.delete("/healthz")
    assert na.status_code == 405 and na.get_json()["error"]["code"] == "method_not_allowed"
    bad = client.post("/api/v1/auth/login", data="x", content_type="text/plain")
    assert bad.status_code == 400 and bad.get_json()["error"]["message_en"]


def test_health_degraded_when_db_unreachable(tmp_path: Path) -> None:
    from server.app import create_app

    app = create_app(
        {
            "data_dir": str(tmp_path),
            "database_url": "postgresql+psycopg://nobody@127.0.0.1:1/x",
            "jwt_secret": "s" * 32,
        }
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503 and response.get_json()["db"] == "error"
