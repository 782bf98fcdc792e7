"""JL-8(1), GS-10(1), JL-15: "出示证件" asks the officer's checked-out recorder to bookmark the moment."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from protocol import topics
from protocol.messages import Presence, PresenceState, encode
from protocol.session import SessionEventKind
from server.domain.audit import AuditLog
from server.domain.base import utcnow
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import DeviceAssignment, DeviceCommand
from server.infra.db import session_scope
from server.infra.ingest_key import IngestSigner
from server.ingest.service import IngestService
from tests.conftest import pinned_ingest_keys, raw_public_key
from tests.fixtures.mqtt import MosquittoBroker
from tests.fixtures.people import World, login
from tests.server.domain.fleet.test_bookmark import agent_with_sessions

DEVICE = "rec-cred"


def _pair(app: Flask, user_id: int) -> None:
    """Register the recorder and check it out to ``user_id`` (as the fleet's check_out records it)."""
    with session_scope(app) as session:
        register_device(session, DEVICE, raw_public_key(Ed25519PrivateKey.generate()), actor="t")
        session.add(
            DeviceAssignment(device_id=DEVICE, user_id=user_id, checked_out_at=utcnow(), checked_out_by="t")
        )


def test_jl8_showing_the_credential_queues_a_bookmark_for_the_paired_recorder(
    app: Flask, client: FlaskClient, world: World
) -> None:
    """No device checked out: null with the reason; checked out: a queued bookmark command, audited."""
    officer = login(client, "officer-a")
    alone = client.post("/api/v1/me/credential/shown", json={}, headers=officer).get_json()
    assert alone["recorder_bookmark"] is None
    assert alone["recorder_bookmark_reason"] == "no_device_assigned"

    _pair(app, world.users["officer"])
    shown = client.post("/api/v1/me/credential/shown", json={}, headers=officer)
    assert shown.status_code == 201, shown.get_json()
    body = shown.get_json()
    bookmark = body["recorder_bookmark"]
    assert body["recorder_bookmark_reason"] is None
    assert bookmark["device_id"] == DEVICE and bookmark["state"] == "queued"
    with session_scope(app) as session:
        row = session.get(DeviceCommand, bookmark["command_id"])
        assert row is not None and row.kind == "bookmark"
        assert row.params == {
            "bookmark_type": "credential_shown",
            "note": "出示执法证件 AH-0001",
            "case_id": None,
        }
        assert (row.expires_at - row.created_at).total_seconds() == 120
        audit = session.scalars(
            select(AuditLog).where(AuditLog.action == "credential.recorder_bookmark").order_by(AuditLog.id)
        ).all()
        assert [a.detail_dict()["reason"] for a in audit] == ["no_device_assigned", None]
        assert audit[1].target_id == str(body["event"]["id"])


@pytest.mark.mosquitto
def test_jl15_bookmark_reaches_the_recorder_over_mosquitto(
    app: Flask, client: FlaskClient, world: World, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Button → queued command → presence re-send through ingest → agent bookmark → status succeeded."""
    _pair(app, world.users["officer"])
    officer = login(client, "officer-a")
    command_id = client.post("/api/v1/me/credential/shown", json={}, headers=officer).get_json()[
        "recorder_bookmark"
    ]["command_id"]

    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv5)
    sessions, handler, _key = agent_with_sessions(tmp_path, device, DEVICE, pinned_ingest_keys(app))
    sessions.begin(officer_id="AH-0001")
    handler.start()
    server = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ingest", protocol=mqtt.MQTTv5)
    service = IngestService.from_app(app)
    signer = IngestSigner.from_settings(app.extensions["zfjl.settings"])  # as IngestWorker publishes
    subscribed, device_subscribed = threading.Event(), threading.Event()
    server.on_message = lambda c, u, m: [
        c.publish(t, signer.seal(t, p), qos=1) for t, p in service.handle(m.topic, bytes(m.payload))
    ]
    server.on_subscribe = lambda *a: subscribed.set()
    device.on_subscribe = lambda *a: device_subscribed.set()
    server.connect(mosquitto_broker.host, mosquitto_broker.port)
    server.loop_start()
    device.connect(mosquitto_broker.host, mosquitto_broker.port)
    device.loop_start()
    try:
        server.subscribe(topics.ingest_filter(), qos=1)
        device.subscribe(topics.device_downlink_filter(DEVICE), qos=1)
        assert subscribed.wait(5) and device_subscribed.wait(5)
        online = Presence(device_id=DEVICE, state=PresenceState.ONLINE, at="2026-01-01T00:00:00Z")
        device.publish(*encode(online), qos=1)

        def state() -> tuple[str, dict[str, object]]:
            with session_scope(app) as session:
                row = session.get(DeviceCommand, command_id)
                assert row is not None
                return row.state, dict(row.result)

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and state()[0] != "succeeded":
            time.sleep(0.1)
        final, result = state()
        assert final == "succeeded", result
        events = [
            s.event for s in sessions.outbox.session_events() if s.event.kind is SessionEventKind.BOOKMARK
        ]
        assert len(events) == 1 and events[0].bookmark_type == "credential_shown"
        assert result == {"event_id": events[0].event_id, "bookmark_type": "credential_shown"}
    finally:
        handler.stop()
        device.loop_stop()
        device.disconnect()
        server.loop_stop()
        server.disconnect()
        sessions.outbox.close()
