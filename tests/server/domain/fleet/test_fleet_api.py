"""Provisioning (token, allow-list, approval), revocation, assignment and alerts over the API."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from firmware_tools.cli import main as fw_main
from server.domain.accounts.models import User
from server.domain.base import utcnow
from server.domain.evidence.models import IngestRejection
from server.domain.fleet import alerts
from server.domain.fleet.broker_accounts import verify_broker_password
from server.domain.fleet.devices import register_device
from server.domain.fleet.telemetry_models import DeviceHealthSample, DevicePresence
from server.infra.db import session_scope
from tests.conftest import raw_public_key


def _key() -> str:
    return base64.b64encode(raw_public_key(Ed25519PrivateKey.generate())).decode()


def _health(session: Session, device_id: str, **values: object) -> None:
    now = utcnow()
    row = {
        "backlog_bytes": 0,
        "backlog_segments": 0,
        "oldest_pending_age_s": None,
        "free_bytes": 10 * 1024**3,
        "battery_pct": 90,
        "recording": False,
        "extra": {},
        "at": now,
        "received_at": now,
    } | values
    session.add(DeviceHealthSample(device_id=device_id, **row))
    session.flush()


def test_token_provisioning_returns_credentials_once_and_stores_only_a_hash(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    """The admin-token path registers the key and hands out a broker password exactly once."""
    answer = client.post(
        "/api/v1/fleet/provision", headers=auth, json={"device_id": "rec-1", "public_key": _key()}
    )
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["mqtt_username"] == "rec-1" and len(body["mqtt_password"]) >= 24
    with session_scope(app) as session:
        from sqlalchemy import select

        from server.domain.fleet.models import DeviceCredential

        stored = session.scalar(select(DeviceCredential.password_hash))
        assert stored is not None and body["mqtt_password"] not in stored
        assert verify_broker_password(body["mqtt_password"], stored)


def test_allowlisted_serial_is_approved_without_token_and_unknown_serial_waits_for_admin(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """Allow-list: credentials at once; otherwise 202 + claim, credentials after approval, only once."""
    assert client.post("/api/v1/fleet/allowlist", headers=auth, json={"serials": ["SN-1"]}).get_json() == {
        "added": 1
    }
    ok = client.post(
        "/provisioning/v1/requests",
        json={"device_id": "rec-a", "public_key": _key(), "serial": "SN-1"},
    )
    assert ok.status_code == 201 and ok.get_json()["mqtt_password"]

    pending = client.post(
        "/provisioning/v1/requests",
        json={"device_id": "rec-b", "public_key": _key(), "serial": "SN-X"},
    )
    assert pending.status_code == 202 and "mqtt_password" not in pending.get_json()
    claim = pending.get_json()["claim"]
    assert client.post("/provisioning/v1/claim", json={"claim": claim}).status_code == 202
    listed = client.get("/api/v1/fleet/provisioning-requests", headers=auth).get_json()["items"]
    assert [r["device_id"] for r in listed] == ["rec-b"]
    # The public endpoint cannot approve itself.
    assert (
        client.post(f"/api/v1/fleet/provisioning-requests/{listed[0]['request_id']}/approve").status_code
        == 401
    )
    decided = client.post(
        f"/api/v1/fleet/provisioning-requests/{listed[0]['request_id']}/approve", headers=auth
    )
    assert decided.get_json()["state"] == "approved"
    got = client.post("/provisioning/v1/claim", json={"claim": claim})
    assert got.status_code == 200 and got.get_json()["mqtt_password"]
    again = client.post("/provisioning/v1/claim", json={"claim": claim})
    assert again.status_code == 403 and again.get_json()["error"]["code"] == "claim_refused"


def test_revoked_device_keeps_its_key_for_evidence_and_drops_from_broker_files(
    client: FlaskClient, auth: dict[str, str], app: Flask, tmp_path: Path
) -> None:
    """Revoking a stolen recorder: status lost, credential gone from the ACL, public key unchanged."""
    made = client.post(
        "/api/v1/fleet/provision", headers=auth, json={"device_id": "rec-9", "public_key": _key()}
    )
    key_before = made.get_json()["public_key"]
    revoked = client.post("/api/v1/fleet/devices/rec-9/revoke", headers=auth, json={"reason": "stolen"})
    assert revoked.status_code == 200 and revoked.get_json()["status"] == "lost"
    assert revoked.get_json()["public_key"] == key_before
    from server.cli import main as server_main

    assert (
        server_main(
            [
                "--database-url",
                app.extensions["zfjl.settings"].database_url,
                "broker-acl",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    assert "rec-9" not in (tmp_path / "b" / "passwords").read_text()
    assert "rec-9" not in (tmp_path / "b" / "acl").read_text()


def test_check_out_needs_minimum_battery_and_keeps_history(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    """A device below the battery minimum cannot be checked out; check-out/in history is kept."""
    client.post("/api/v1/fleet/provision", headers=auth, json={"device_id": "rec-2", "public_key": _key()})
    with session_scope(app) as session:
        from sqlalchemy import select

        user_id = session.scalar(select(User.id))
        _health(session, "rec-2", battery_pct=20)
    low = client.post("/api/v1/fleet/devices/rec-2/check-out", headers=auth, json={"user_id": user_id})
    assert low.status_code == 409 and low.get_json()["error"]["code"] == "battery_too_low"
    with session_scope(app) as session:
        _health(session, "rec-2", battery_pct=80, at=utcnow() + timedelta(seconds=1))
    out = client.post("/api/v1/fleet/devices/rec-2/check-out", headers=auth, json={"user_id": user_id})
    assert out.status_code == 201 and out.get_json()["battery_at_checkout"] == 80
    twice = client.post("/api/v1/fleet/devices/rec-2/check-out", headers=auth, json={"user_id": user_id})
    assert twice.status_code == 409
    assert client.post("/api/v1/fleet/devices/rec-2/check-in", headers=auth).status_code == 200
    history = client.get("/api/v1/fleet/devices/rec-2/assignments", headers=auth).get_json()["items"]
    assert len(history) == 1 and history[0]["checked_in_at"] is not None
    listed = client.get("/api/v1/fleet/devices?max_battery_pct=85", headers=auth).get_json()["items"]
    assert [d["device_id"] for d in listed] == ["rec-2"] and listed[0]["assigned_to"] is None
    assert client.get("/api/v1/fleet/devices?max_battery_pct=50", headers=auth).get_json()["items"] == []


def test_fleet_list_pages_with_a_stable_cursor_and_filters_in_sql(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    """Pages of ``limit`` devices follow each other without overlap; filters apply before paging."""
    for i in range(5):
        client.post(
            "/api/v1/fleet/provision", headers=auth, json={"device_id": f"rec-p{i}", "public_key": _key()}
        )
    with session_scope(app) as session:
        for i in range(5):
            _health(session, f"rec-p{i}", battery_pct=10 if i % 2 else 90)
    seen: list[str] = []
    after = ""
    while True:
        page = client.get(f"/api/v1/fleet/devices?limit=2&after={after}", headers=auth).get_json()
        seen += [d["device_id"] for d in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [f"rec-p{i}" for i in range(5)]
    low = client.get("/api/v1/fleet/devices?max_battery_pct=20&limit=1", headers=auth).get_json()
    assert [d["device_id"] for d in low["items"]] == ["rec-p1"] and low["next"] == "rec-p1"
    assert client.get("/api/v1/fleet/devices?limit=0", headers=auth).status_code == 400
    assert client.get("/api/v1/fleet/devices?max_battery_pct=lots", headers=auth).status_code == 400


def test_jl13_capabilities_are_recorded(client: FlaskClient, auth: dict[str, str]) -> None:
    """JL-13: positioning and night vision are recorded per device; unknown capabilities refused."""
    client.post("/api/v1/fleet/provision", headers=auth, json={"device_id": "rec-3", "public_key": _key()})
    ok = client.put(
        "/api/v1/fleet/devices/rec-3/profile",
        headers=auth,
        json={"capabilities": {"gps": True, "night_vision": True}, "agent_version": "1.2.0"},
    )
    assert ok.status_code == 200 and ok.get_json()["capabilities"] == {"gps": True, "night_vision": True}
    bad = client.put(
        "/api/v1/fleet/devices/rec-3/profile", headers=auth, json={"capabilities": {"laser": True}}
    )
    assert bad.status_code == 400


def test_jl17_alerts_open_and_clear(db_session: Session) -> None:
    """Backlog ≥ 20 h (JL-17), offline, low storage, clock drift and signature failures raise alerts."""
    session = db_session
    register_device(session, "rec-4", raw_public_key(Ed25519PrivateKey.generate()), actor="t")
    now = utcnow()
    _health(
        session,
        "rec-4",
        oldest_pending_age_s=21 * 3600,
        free_bytes=100 * 1024**2,
        at=now + timedelta(seconds=10),
        received_at=now,
    )
    session.add(
        DevicePresence(
            device_id="rec-4", state="offline", at=now, agent_version="", received_at=now - timedelta(hours=5)
        )
    )
    session.add(IngestRejection(device_id="rec-4", code="bad_signature", message="x", at=now))
    session.commit()
    counts = alerts.evaluate_alerts(session, offline_after=timedelta(hours=2), now=now)
    kinds = {a.kind for a in alerts.open_alerts(session, "rec-4")}
    assert kinds == {"backlog", "offline", "low_storage", "clock_drift", "integrity"}
    assert counts["opened"] == 5
    assert alerts.open_alerts(session, "rec-4")[0].severity == "critical"
    # Once uploads catch up and the device is back, those alerts clear; a re-run opens no duplicates.
    _health(session, "rec-4", at=now + timedelta(minutes=1), received_at=now + timedelta(minutes=1))
    session.get(DevicePresence, "rec-4").state = "online"  # type: ignore[union-attr]
    session.commit()
    counts = alerts.evaluate_alerts(session, offline_after=timedelta(hours=2), now=now + timedelta(minutes=2))
    assert {a.kind for a in alerts.open_alerts(session, "rec-4")} == {"integrity"}
    assert counts["cleared"] == 4 and counts["opened"] == 0


def test_fw_provision_writes_broker_credentials_and_waits_for_approval(
    app: Flask, auth: dict[str, str], tmp_path: Path, client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """``zfjl-fw provision``: token path writes the broker login (0600); serial path pends, then collects."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        token = auth["Authorization"].split()[1]
        out = tmp_path / "dev1"
        assert (
            fw_main(
                [
                    "provision",
                    "--server",
                    url,
                    "--token",
                    token,
                    "--device-id",
                    "rec-5",
                    "--out",
                    str(out),
                    "--mqtt-url",
                    "mqtt://127.0.0.1:1883",
                ]
            )
            == 0
        )
        from edge_agent.config import AgentConfig

        config = AgentConfig.load(out / "agent.toml")
        assert config.mqtt_username == "rec-5" and config.mqtt_password
        assert stat.S_IMODE(os.stat(out / "agent.toml").st_mode) == 0o600

        out2 = tmp_path / "dev2"
        args = [
            "provision",
            "--server",
            url,
            "--serial",
            "SN-77",
            "--device-id",
            "rec-6",
            "--out",
            str(out2),
            "--mqtt-url",
            "mqtt://127.0.0.1:1883",
        ]
        assert fw_main(args) == 3 and (out2 / "claim").exists()
        request_id = client.get("/api/v1/fleet/provisioning-requests", headers=auth).get_json()["items"][0][
            "request_id"
        ]
        client.post(f"/api/v1/fleet/provisioning-requests/{request_id}/approve", headers=auth)
        assert fw_main(args) == 0
        assert AgentConfig.load(out2 / "agent.toml").mqtt_username == "rec-6"
        assert not (out2 / "claim").exists()
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["device_id"] == "rec-6"
    finally:
        server.shutdown()
        thread.join(5)


def test_allowlist_remove_drops_an_unused_serial_and_keeps_a_used_one(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    """DELETE takes an unused serial off (audited); a serial a device joined with stays (409)."""
    client.post("/api/v1/fleet/allowlist", headers=auth, json={"serials": ["SN-1", "SN-2"]})
    joined = client.post(
        "/provisioning/v1/requests", json={"device_id": "rec-a", "public_key": _key(), "serial": "SN-1"}
    )
    assert joined.status_code == 201
    assert client.delete("/api/v1/fleet/allowlist/SN-2").status_code == 401
    gone = client.delete("/api/v1/fleet/allowlist/SN-2", headers=auth)
    assert gone.status_code == 200 and gone.get_json() == {"removed": "SN-2"}
    assert client.delete("/api/v1/fleet/allowlist/SN-2", headers=auth).status_code == 404
    used = client.delete("/api/v1/fleet/allowlist/SN-1", headers=auth)
    assert used.status_code == 409
    # A removed serial no longer lets a device join without approval.
    waits = client.post(
        "/provisioning/v1/requests", json={"device_id": "rec-b", "public_key": _key(), "serial": "SN-2"}
    )
    assert waits.status_code == 202
    with session_scope(app) as session:
        from sqlalchemy import select

        from server.domain.audit import AuditLog
        from server.domain.fleet.models import SerialAllowlistEntry

        assert session.get(SerialAllowlistEntry, "SN-1") is not None
        assert session.get(SerialAllowlistEntry, "SN-2") is None
        removed = session.scalars(select(AuditLog).where(AuditLog.action == "device.allowlist_remove")).all()
        assert [row.target_id for row in removed] == ["SN-2"]
