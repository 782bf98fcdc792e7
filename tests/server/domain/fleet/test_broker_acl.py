"""Per-device broker credentials and ACLs: one model, proven against both enforcers.

Every test taking ``enforcer`` runs twice: against a real Mosquitto loading the generated
``passwords``/``acl`` files, and against the embedded broker looking the same registry up live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session

from protocol import topics
from server.domain.fleet import service as fleet
from server.domain.fleet.broker_accounts import (
    broker_accounts,
    registry_accounts,
    render_acl,
    verify_broker_password,
    write_broker_files,
)
from server.domain.fleet.devices import register_device
from server.infra.broker import EmbeddedBroker
from server.infra.config import Settings, load_settings
from server.infra.mqtt_acl import hash_broker_password, service_account
from tests.conftest import raw_public_key
from tests.fixtures.mqtt import MosquittoBroker, find_mosquitto

INGEST_USER, INGEST_PASSWORD = "zfjl-ingest", "ingest-secret-123"
Registry = tuple[Session, Settings, dict[str, str]]


class Enforcer:
    """A broker enforcing the registry: Mosquitto with generated files, or the embedded broker."""

    def __init__(self, kind: str, session: Session, settings: Settings, workdir: Path) -> None:
        self.kind, self.session, self.settings, self.workdir = kind, session, settings, workdir
        self.mosquitto: MosquittoBroker | None = None
        self.embedded: EmbeddedBroker | None = None
        if kind == "mosquitto":
            binary = find_mosquitto()
            if binary is None:
                pytest.skip("mosquitto is not installed")
            self.mosquitto = MosquittoBroker(workdir / "mosquitto", binary=binary)
            pw, acl = write_broker_files(session, settings, workdir / "files")
            self.mosquitto.password_file, self.mosquitto.acl_file = pw, acl
            self.mosquitto.start()
            self.host, self.port = self.mosquitto.host, self.mosquitto.port
        else:
            service = service_account(INGEST_USER, hash_broker_password(INGEST_PASSWORD))
            engine = session.get_bind()
            self.embedded = EmbeddedBroker(accounts=registry_accounts(engine, service))  # type: ignore[arg-type]
            self.embedded.start()
            self.host, self.port = self.embedded.host, self.embedded.port

    def apply(self) -> None:
        """After a committed registry change: what the server does (rewrite + SIGHUP / revalidate)."""
        if self.mosquitto is not None:
            write_broker_files(self.session, self.settings, self.workdir / "files")
            self.mosquitto.reload()
        else:
            assert self.embedded is not None
            self.embedded.revalidate()

    def stop(self) -> None:
        """Stop the broker."""
        if self.mosquitto is not None:
            self.mosquitto.stop()
        if self.embedded is not None:
            self.embedded.stop()


class Client:
    """A paho MQTT 3.1.1 client that records what it receives and whether the broker accepted it."""

    def __init__(
        self,
        broker: Any,
        username: str | None,
        password: str | None,
        *,
        client_id: str | None = None,
        clean: bool = True,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.refused: str | None = None
        self.granted: list[int] = []
        self.ready = threading.Event()
        self.suback = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id if client_id is not None else f"{username}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv311,
            clean_session=clean,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.client.on_connect = self._connect
        self.client.on_disconnect = lambda *a: self.ready.set()
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = self._subscribed
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.ready.wait(10), "no CONNACK"

    def _connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            self.refused = str(rc)
        self.ready.set()

    def _subscribed(self, client: mqtt.Client, userdata: object, mid: int, codes: Any, props: object) -> None:
        self.granted = [int(c.value) for c in codes]
        self.suback.set()

    @property
    def accepted(self) -> bool:
        """Connected with CONNACK 0."""
        return self.refused is None and self.client.is_connected()

    def subscribe(self, flt: str) -> None:
        self.suback.clear()
        self.client.subscribe(flt, qos=1)
        assert self.suback.wait(5)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT (the last will fires)."""
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        self.client.loop_stop()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def registry(db_session: Session, tmp_path: Path) -> Registry:
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


@pytest.fixture(params=[pytest.param("mosquitto", marks=pytest.mark.mosquitto), "embedded"])
def enforcer(request: pytest.FixtureRequest, registry: Registry, tmp_path: Path) -> Iterator[Enforcer]:
    """The registry enforced by a real Mosquitto (generated files), then by the embedded broker."""
    session, settings, _ = registry
    broker = Enforcer(request.param, session, settings, tmp_path / "enforcer")
    try:
        yield broker
    finally:
        broker.stop()


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


def test_anonymous_unknown_and_wrong_password_logins_are_refused(
    enforcer: Enforcer, registry: Registry
) -> None:
    """No anonymous access; a device login needs its own issued password; the right one is accepted."""
    _, _, passwords = registry
    attempts = {
        "anonymous": Client(enforcer, None, None),
        "unknown user": Client(enforcer, "rec-x", "whatever"),
        "wrong password": Client(enforcer, "rec-a", passwords["rec-b"]),
        "empty password": Client(enforcer, "rec-a", ""),
        "ingest, wrong password": Client(enforcer, INGEST_USER, "guess"),
    }
    good = Client(enforcer, "rec-a", passwords["rec-a"])
    try:
        for name, client in attempts.items():
            assert not client.accepted, name
        assert good.accepted
    finally:
        for client in (*attempts.values(), good):
            client.close()


def test_device_cannot_publish_as_another_nor_read_its_acks(enforcer: Enforcer, registry: Registry) -> None:
    """Device A's publishes under B's tree never arrive; A never sees B's downlink; ingest sees both."""
    _, _, passwords = registry
    ingest = Client(enforcer, INGEST_USER, INGEST_PASSWORD)
    dev_a = Client(enforcer, "rec-a", passwords["rec-a"])
    try:
        assert ingest.accepted and dev_a.accepted
        ingest.subscribe(topics.ingest_filter())
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


def test_finding1_device_cannot_sniff_uploads_nor_forge_acks(enforcer: Enforcer, registry: Registry) -> None:
    """A device subscribing to every upload sees none of B's bytes; its forged ``complete`` acks reach nobody.

    Only the service account writes ``down/``: not even a device's own ack topic accepts its publish.
    """
    _, _, passwords = registry
    spy = Client(enforcer, "rec-a", passwords["rec-a"])
    victim = Client(enforcer, "rec-b", passwords["rec-b"])
    try:
        assert spy.accepted and victim.accepted
        for flt in ("#", topics.ingest_filter(), "zfjl/v1/rec-b/up/#", "zfjl/v1/+/down/#"):
            spy.subscribe(flt)
        spy.subscribe(topics.device_downlink_filter("rec-a"))
        victim.subscribe(topics.device_downlink_filter("rec-b"))
        victim.publish(topics.file_init("rec-b", "f1"), b"manifest bytes")
        victim.publish(topics.health("rec-b"), b"health")
        forged = b'{"state":"complete","recording_id":1}'
        spy.publish(topics.ack("rec-b", "f1"), forged)
        spy.publish(topics.ack("rec-a", "f1"), forged)
        time.sleep(1.0)
        assert spy.received == []
        assert victim.received == []
    finally:
        spy.close()
        victim.close()


def test_device_last_will_cannot_target_another_device(enforcer: Enforcer, registry: Registry) -> None:
    """A last will aimed at B's ack topic is never delivered (amqtt did not check wills at all)."""
    _, _, passwords = registry
    victim = Client(enforcer, "rec-b", passwords["rec-b"])
    ingest = Client(enforcer, INGEST_USER, INGEST_PASSWORD)
    forger = Client(
        enforcer, "rec-a", passwords["rec-a"], will=(topics.ack("rec-b", "f1"), b'{"state":"complete"}')
    )
    try:
        victim.subscribe(topics.device_downlink_filter("rec-b"))
        ingest.subscribe("zfjl/v1/+/down/#")  # the service may read nothing under down/ either
        forger.kill()
        time.sleep(1.5)
        assert victim.received == []
    finally:
        victim.close()
        ingest.close()
        forger.close()


def test_retained_messages_reach_only_their_own_device(enforcer: Enforcer, registry: Registry) -> None:
    """B's retained presence and desired config never reach A, even right after A connects."""
    _, _, passwords = registry
    ingest = Client(enforcer, INGEST_USER, INGEST_PASSWORD)
    dev_b = Client(enforcer, "rec-b", passwords["rec-b"])
    try:
        ingest.subscribe(topics.ingest_filter())
        dev_b.subscribe(topics.device_downlink_filter("rec-b"))
        dev_b.publish(topics.presence("rec-b"), b"online", retain=True)
        ingest.publish(topics.config_desired("rec-b"), b"config-b", retain=True)
        assert _wait(lambda: (topics.config_desired("rec-b"), b"config-b") in dev_b.received)
        dev_a = Client(enforcer, "rec-a", passwords["rec-a"])
        try:
            dev_a.subscribe(topics.device_downlink_filter("rec-a"))
            time.sleep(1.0)
            assert dev_a.received == []
        finally:
            dev_a.close()
    finally:
        ingest.close()
        dev_b.close()


def test_unauthenticated_client_cannot_kick_the_ingest_session(
    enforcer: Enforcer, registry: Registry
) -> None:
    """Reusing the ingest worker's client id without its password neither drops it nor stops delivery."""
    _, _, passwords = registry
    ingest = Client(enforcer, INGEST_USER, INGEST_PASSWORD, client_id="zfjl-ingest-w0")
    dev_a = Client(enforcer, "rec-a", passwords["rec-a"])
    try:
        ingest.subscribe(topics.ingest_filter())
        for username, password in ((None, None), (INGEST_USER, "guess")):
            intruder = Client(enforcer, username, password, client_id="zfjl-ingest-w0")
            assert not intruder.accepted
            intruder.close()
        dev_a.publish(topics.health("rec-a"), b"still heard")
        assert _wait(lambda: (topics.health("rec-a"), b"still heard") in ingest.received)
    finally:
        ingest.close()
        dev_a.close()


def test_device_cannot_take_another_devices_queued_messages(enforcer: Enforcer, registry: Registry) -> None:
    """A's persistent session queues an ack while offline; B logging in with A's client id never gets it."""
    _, _, passwords = registry
    owner = Client(enforcer, "rec-a", passwords["rec-a"], client_id="rec-a", clean=False)
    owner.subscribe(topics.device_downlink_filter("rec-a"))
    owner.close()
    ingest = Client(enforcer, INGEST_USER, INGEST_PASSWORD)
    try:
        ingest.publish(topics.ack("rec-a", "f1"), b"queued for a")
        time.sleep(0.3)
        thief = Client(enforcer, "rec-b", passwords["rec-b"], client_id="rec-a", clean=False)
        time.sleep(1.0)
        assert thief.received == []
        thief.close()
    finally:
        ingest.close()


def test_revoked_device_is_refused_at_connect_and_rotation_retires_old_password(
    enforcer: Enforcer, registry: Registry
) -> None:
    """A stolen recorder (lost) is refused; a rotated password replaces the old one."""
    session, _, passwords = registry
    fleet.revoke_device(session, "rec-b", status="lost", reason="stolen", actor="test")
    new_a = fleet.issue_credential(session, "rec-a", actor="test", reason="rotated").password
    session.commit()
    enforcer.apply()

    stolen = Client(enforcer, "rec-b", passwords["rec-b"])
    old_a = Client(enforcer, "rec-a", passwords["rec-a"])
    fresh_a = Client(enforcer, "rec-a", new_a)
    try:
        assert not stolen.accepted
        assert not old_a.accepted
        assert fresh_a.accepted
    finally:
        for c in (stolen, old_a, fresh_a):
            c.close()


def test_revocation_cuts_off_an_already_connected_device(enforcer: Enforcer, registry: Registry) -> None:
    """A stolen recorder that is online when revoked can publish nothing more once the broker is told."""
    session, _, passwords = registry
    ingest = Client(enforcer, INGEST_USER, INGEST_PASSWORD)
    stolen = Client(enforcer, "rec-b", passwords["rec-b"])
    try:
        assert ingest.accepted and stolen.accepted
        ingest.subscribe(topics.ingest_filter())
        stolen.publish(topics.health("rec-b"), b"before")
        assert _wait(lambda: (topics.health("rec-b"), b"before") in ingest.received)

        fleet.revoke_device(session, "rec-b", status="lost", reason="stolen", actor="test")
        session.commit()
        enforcer.apply()
        # Mosquitto 2 re-checks connected clients on reload; the embedded broker on revalidate().
        assert _wait(lambda: not stolen.client.is_connected(), timeout=5)
        stolen.client.publish(topics.health("rec-b"), b"after", qos=0)
        time.sleep(0.5)
        assert (topics.health("rec-b"), b"after") not in ingest.received
    finally:
        ingest.close()
        stolen.close()
