"""Per-device broker credentials and ACLs, proven against a real Mosquitto."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session

from protocol import topics
from server.config import load_settings
from server.services import fleet
from server.services.broker_acl import (
    broker_accounts,
    render_acl,
    verify_broker_password,
    write_broker_files,
)
from server.services.devices import register_device
from tests.conftest import raw_public_key
from tests.fixtures.mqtt import MosquittoBroker

INGEST_USER, INGEST_PASSWORD = "zfjl-ingest", "ingest-secret-123"


class Client:
    """A paho client that records what it receives and whether the broker accepted it."""

    def __init__(self, broker: MosquittoBroker, username: str, password: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.refused: str | None = None
        self.ready = threading.Event()
        self.suback = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._connect
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *a: self.suback.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            self.refused = str(rc)
        self.ready.set()

    def subscribe(self, flt: str) -> None:
        self.suback.clear()
        self.client.subscribe(flt, qos=1)
        assert self.suback.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(predicate: object, timeout: float = 3.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def registry(db_session: Session, tmp_path: Path) -> tuple[Session, object, dict[str, str]]:
    """Two provisioned devices with their own credentials, and settings naming the ingest account."""
    settings = load_settings(
        {"data_dir": str(tmp_path), "mqtt_url": f"mqtt://{INGEST_USER}:{INGEST_PASSWORD}@127.0.0.1:1883"},
        environ={},
    )
    passwords = {}
    for device_id in ("rec-a", "rec-b"):
        register_device(db_session, device_id, raw_public_key(Ed25519PrivateKey.generate()), actor="test")
        passwords[device_id] = fleet.issue_credential(db_session, device_id, actor="test").password
    db_session.commit()
    return db_session, settings, passwords


def test_credentials_stored_only_as_broker_hash(registry: tuple[Session, object, dict[str, str]]) -> None:
    """The database holds a $7$ PBKDF2 hash, never the password."""
    session, settings, passwords = registry
    accounts = {a.username: a for a in broker_accounts(session, settings)}  # type: ignore[arg-type]
    assert accounts["rec-a"].password_hash.startswith("$7$")
    assert passwords["rec-a"] not in accounts["rec-a"].password_hash
    assert verify_broker_password(passwords["rec-a"], accounts["rec-a"].password_hash)
    acl = render_acl(list(accounts.values()))
    assert "user rec-a\ntopic write zfjl/v1/rec-a/up/#\ntopic read zfjl/v1/rec-a/down/#" in acl
    assert f"user {INGEST_USER}\ntopic write zfjl/v1/+/down/#\ntopic read zfjl/v1/+/up/#" in acl


@pytest.mark.mosquitto
def test_device_cannot_publish_as_another_nor_read_its_acks(
    registry: tuple[Session, object, dict[str, str]], mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Device A's publishes under B's tree never arrive; A never sees B's downlink; ingest sees both."""
    session, settings, passwords = registry
    pw, acl = write_broker_files(session, settings, tmp_path / "broker")  # type: ignore[arg-type]
    mosquitto_broker.password_file, mosquitto_broker.acl_file = pw, acl
    mosquitto_broker.restart()

    ingest = Client(mosquitto_broker, INGEST_USER, INGEST_PASSWORD)
    dev_a = Client(mosquitto_broker, "rec-a", passwords["rec-a"])
    try:
        assert ingest.ready.wait(5) and dev_a.ready.wait(5)
        assert ingest.refused is None and dev_a.refused is None
        ingest.subscribe(topics.ingest_filter("zfjl-ingest"))  # $share subscription (MQTT 5 §4.8.2)
        dev_a.subscribe(topics.device_downlink_filter("rec-b"))  # denied by the ACL: nothing will arrive
        dev_a.subscribe(topics.device_downlink_filter("rec-a"))

        dev_a.publish(topics.health("rec-b"), b"forged")
        dev_a.publish(topics.health("rec-a"), b"genuine")
        assert _wait(lambda: any(t == topics.health("rec-a") for t, _ in ingest.received))
        assert all(t != topics.health("rec-b") for t, _ in ingest.received)

        ingest.publish(topics.ack("rec-b", "f1"), b"{}")
        ingest.publish(topics.ack("rec-a", "f1"), b"{}")
        assert _wait(lambda: any(t == topics.ack("rec-a", "f1") for t, _ in dev_a.received))
        assert all(t != topics.ack("rec-b", "f1") for t, _ in dev_a.received)
    finally:
        ingest.close()
        dev_a.close()


@pytest.mark.mosquitto
def test_revoked_device_is_refused_at_connect_and_rotation_retires_old_password(
    registry: tuple[Session, object, dict[str, str]], mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """A stolen recorder (lost) is refused at once after reload; a rotated password replaces the old one."""
    session, settings, passwords = registry
    fleet.revoke_device(session, "rec-b", status="lost", reason="stolen", actor="test")
    new_a = fleet.issue_credential(session, "rec-a", actor="test", reason="rotated").password
    session.commit()
    pw, acl = write_broker_files(session, settings, tmp_path / "broker")  # type: ignore[arg-type]
    mosquitto_broker.password_file, mosquitto_broker.acl_file = pw, acl
    mosquitto_broker.restart()

    stolen = Client(mosquitto_broker, "rec-b", passwords["rec-b"])
    old_a = Client(mosquitto_broker, "rec-a", passwords["rec-a"])
    fresh_a = Client(mosquitto_broker, "rec-a", new_a)
    try:
        assert stolen.ready.wait(5) and old_a.ready.wait(5) and fresh_a.ready.wait(5)
        assert stolen.refused is not None
        assert old_a.refused is not None
        assert fresh_a.refused is None
    finally:
        for c in (stolen, old_a, fresh_a):
            c.close()


@pytest.mark.mosquitto
def test_revocation_cuts_off_an_already_connected_device_at_reload(
    registry: tuple[Session, object, dict[str, str]], mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """A stolen recorder that is online when revoked can publish nothing more once the broker reloads."""
    session, settings, passwords = registry
    out = tmp_path / "broker"
    pw, acl = write_broker_files(session, settings, out)  # type: ignore[arg-type]
    mosquitto_broker.password_file, mosquitto_broker.acl_file = pw, acl
    mosquitto_broker.restart()
    ingest = Client(mosquitto_broker, INGEST_USER, INGEST_PASSWORD)
    stolen = Client(mosquitto_broker, "rec-b", passwords["rec-b"])
    try:
        assert ingest.ready.wait(5) and stolen.ready.wait(5) and stolen.refused is None
        ingest.subscribe(topics.ingest_filter())
        stolen.publish(topics.health("rec-b"), b"before")
        assert _wait(lambda: (topics.health("rec-b"), b"before") in ingest.received)

        fleet.revoke_device(session, "rec-b", status="lost", reason="stolen", actor="test")
        session.commit()
        write_broker_files(session, settings, out)  # type: ignore[arg-type]
        mosquitto_broker.reload()
        # Mosquitto 2 re-checks connected clients on reload: the revoked one is dropped at once.
        assert _wait(lambda: not stolen.client.is_connected())
        stolen.client.publish(topics.health("rec-b"), b"after", qos=0)
        time.sleep(0.5)
        assert (topics.health("rec-b"), b"after") not in ingest.received
    finally:
        ingest.close()
        stolen.close()
