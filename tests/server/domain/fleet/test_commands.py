"""Commands and desired configuration: lifecycle, offline delivery via presence, expiry, and the agent
handler over a real Mosquitto."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from sqlalchemy.orm import Session

from edge_agent.commands import CommandHandler
from edge_agent.config import AgentConfig
from protocol import fleet, topics
from protocol.fleet import CommandState, CommandStatus
from protocol.messages import Presence, PresenceState, encode
from server.domain.base import utcnow
from server.domain.fleet import commands, dispatch
from server.domain.fleet import config as device_config
from server.domain.fleet.broker_accounts import verify_broker_password
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import DeviceCommand, DeviceCredential
from server.infra.db import session_scope
from server.infra.ingest_key import IngestSigner
from server.ingest.service import IngestService
from tests.conftest import pinned_ingest_keys, raw_public_key
from tests.fixtures.mqtt import MosquittoBroker


def _device(session: Session, device_id: str = "rec-1") -> None:
    register_device(session, device_id, raw_public_key(Ed25519PrivateKey.generate()), actor="t")


def test_command_lifecycle_and_expiry(db_session: Session) -> None:
    """queued → in_progress → succeeded; out-of-order reports ignored; stale commands expire."""
    session = db_session
    _device(session)
    cmd = commands.create_command(session, "rec-1", "upload_now", actor="admin")
    assert cmd.state == "queued"
    report = CommandStatus(device_id="rec-1", command_id=cmd.id, state=CommandState.IN_PROGRESS)
    assert commands.apply_status(session, report) is not None and cmd.state == "in_progress"
    done = CommandStatus(device_id="rec-1", command_id=cmd.id, state=CommandState.SUCCEEDED)
    assert commands.apply_status(session, done) is not None and cmd.state == "succeeded"
    assert commands.apply_status(session, report) is None and cmd.state == "succeeded"
    # Another device cannot report on this command.
    forged = CommandStatus(device_id="rec-2", command_id=cmd.id, state=CommandState.FAILED)
    assert commands.apply_status(session, forged) is None

    stale = commands.create_command(session, "rec-1", "locate", ttl=timedelta(seconds=10), actor="admin")
    assert commands.expire_stale(session, now=utcnow() + timedelta(seconds=11)) == 1
    assert stale.state == "expired"


def test_offline_device_gets_config_and_queued_commands_when_presence_turns_online(app: Flask) -> None:
    """Queued while offline; ingest answers the online presence with the config and the command."""
    with session_scope(app) as session:
        _device(session)
        device_config.set_desired(
            session, scope="device", target="rec-1", settings={"segment_seconds": 120}, actor="a"
        )
        cmd_id = commands.create_command(session, "rec-1", "sync_clock", actor="a").id
    with session_scope(app) as session:
        assert dispatch.dispatch_once(session) == [
            (
                "zfjl/v1/rec-1/down/config",
                b'{"settings":{"segment_seconds":120},"version":1}',
                True,
            )
        ]  # config is retained for later; the command waits for the device to be online
    service = IngestService.from_app(app)
    out = service.handle(
        *encode(Presence(device_id="rec-1", state=PresenceState.ONLINE, at="2026-01-01T00:00:00Z"))
    )
    sent = {topic for topic, _ in out}
    assert sent == {topics.config_desired("rec-1"), topics.command("rec-1", cmd_id)}
    # The device reports through ingest; the shadow and the command follow.
    status = CommandStatus(
        device_id="rec-1", command_id=cmd_id, state=CommandState.SUCCEEDED, detail={"offset_s": 0.2}
    )
    assert service.handle(*fleet.encode(status)) == []
    reported = fleet.ReportedConfig(device_id="rec-1", version=1, settings={"segment_seconds": 120})
    service.handle(*fleet.encode(reported))
    with session_scope(app) as session:
        assert session.get(DeviceCommand, cmd_id).state == "succeeded"  # type: ignore[union-attr]
        assert device_config.shadow(session, "rec-1")["in_sync"] is True


def test_group_config_is_overridden_by_device_config(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    """Group settings apply to members; a device's own setting wins; the version only rises."""
    with session_scope(app) as session:
        _device(session)
    client.put("/api/v1/fleet/devices/rec-1/profile", headers=auth, json={"group": "traffic"})
    group = client.put(
        "/api/v1/fleet/config/group/traffic",
        headers=auth,
        json={"settings": {"segment_seconds": 300, "bitrate_kbps": 2000}},
    )
    assert group.status_code == 201
    own = client.put(
        "/api/v1/fleet/config/device/rec-1", headers=auth, json={"settings": {"bitrate_kbps": 4000}}
    )
    shadow = client.get("/api/v1/fleet/devices/rec-1/shadow", headers=auth).get_json()
    assert shadow["desired"] == {
        "version": own.get_json()["version"],
        "settings": {"segment_seconds": 300, "bitrate_kbps": 4000},
    }
    assert shadow["in_sync"] is False
    bad = client.put(
        "/api/v1/fleet/config/device/rec-1", headers=auth, json={"settings": {"bitrate_kbps": 1}}
    )
    assert bad.status_code == 400
    made = client.post("/api/v1/fleet/devices/rec-1/commands", headers=auth, json={"kind": "locate"})
    assert made.status_code == 201 and made.get_json()["state"] == "queued"
    assert (
        client.post(
            "/api/v1/fleet/devices/rec-1/commands", headers=auth, json={"kind": "selfdestruct"}
        ).status_code
        == 400
    )


@pytest.mark.mosquitto
def test_agent_runs_commands_once_and_rotates_its_own_password(
    app: Flask, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Over a real broker: config applied and reported; a re-sent command is not run twice; credential
    rotation sends only a hash, which the server installs."""
    with session_scope(app) as session:
        _device(session)
        device_config.set_desired(
            session, scope="device", target="rec-1", settings={"prerecord_seconds": 15}, actor="a"
        )
        rotate_id = commands.create_command(session, "rec-1", "rotate_credentials", actor="a").id
        upload_id = commands.create_command(session, "rec-1", "upload_now", actor="a").id

    device_dir = tmp_path / "device"
    device_dir.mkdir()
    config = AgentConfig.from_dict(
        {
            "device_id": "rec-1",
            "private_key_file": "device-key.pem",
            "data_dir": "data",
            "mqtt_url": mosquitto_broker.url,
            "mqtt_username": "rec-1",
            "mqtt_password": "old-password",
            "ingest_public_keys": list(pinned_ingest_keys(app)),
        },
        base_dir=device_dir,
    )
    config.write_toml(device_dir / "agent.toml")
    uploads: list[int] = []
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rec-1", protocol=mqtt.MQTTv5)
    handler = CommandHandler(config, device, state_dir=config.data_dir, upload_now=lambda: uploads.append(1))
    handler.start()
    server = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ingest", protocol=mqtt.MQTTv5)
    service = IngestService.from_app(app)
    subscribed = threading.Event()
    signer = IngestSigner.from_settings(app.extensions["zfjl.settings"])  # as IngestWorker publishes
    server.on_message = lambda c, u, m: [
        c.publish(t, signer.seal(t, p), qos=1) for t, p in service.handle(m.topic, bytes(m.payload))
    ]
    server.on_subscribe = lambda *a: subscribed.set()
    server.connect(mosquitto_broker.host, mosquitto_broker.port)
    server.loop_start()
    server.subscribe(topics.ingest_filter(), qos=1)
    assert subscribed.wait(5)
    device_subscribed = threading.Event()
    device.on_subscribe = lambda *a: device_subscribed.set()
    device.connect(mosquitto_broker.host, mosquitto_broker.port)
    device.loop_start()
    try:
        device.subscribe(topics.device_downlink_filter("rec-1"), qos=1)
        assert device_subscribed.wait(5)

        def online() -> None:
            payload = encode(
                Presence(device_id="rec-1", state=PresenceState.ONLINE, at="2026-01-01T00:00:00Z")
            )
            device.publish(*payload, qos=1)

        def states() -> dict[str, str]:
            with session_scope(app) as session:
                return {
                    row.id: row.state
                    for row in session.execute(select(DeviceCommand.id, DeviceCommand.state))
                }

        online()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and states() != {rotate_id: "succeeded", upload_id: "succeeded"}:
            time.sleep(0.1)
        assert states() == {rotate_id: "succeeded", upload_id: "succeeded"}
        assert handler.applied == {"version": 1, "settings": {"prerecord_seconds": 15}}
        new_password = AgentConfig.load(device_dir / "agent.toml").mqtt_password
        assert new_password and new_password != "old-password"
        with session_scope(app) as session:
            cred = session.scalar(select(DeviceCredential).where(DeviceCredential.revoked_at.is_(None)))
            assert cred is not None and verify_broker_password(new_password, cred.password_hash)
            rotate = session.get(DeviceCommand, rotate_id)
            assert rotate is not None and "password_hash" not in rotate.result
            shadow = device_config.shadow(session, "rec-1")
        assert shadow["in_sync"] is True
        # Coming online again re-sends nothing queued; re-running a stored command does not run it twice.
        online()
        time.sleep(0.5)
        assert uploads == [1]
    finally:
        handler.stop()
        device.loop_stop()
        device.disconnect()
        server.loop_stop()
        server.disconnect()
