"""Behaviour of the embedded amqtt broker and a private Mosquitto, driven by paho-mqtt 2.x (MQTT 3.1.1)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from server.infra.broker import EmbeddedBroker
from tests.fixtures.mqtt import BrokerHandle

PAYLOAD = 256 * 1024
COUNT = 400


class Collector:
    """A connected paho client that records every message it receives."""

    def __init__(self, broker: BrokerHandle, client_id: str = "", *, clean: bool = True) -> None:
        """Connect to ``broker`` and start the network loop."""
        self.messages: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.granted: list[int] = []
        self.client = _client(client_id, clean=clean, login=broker.login)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        _connect(self.client, broker)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Store a message."""
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[Any], props: Any
    ) -> None:
        """Record the SUBACK."""
        self.granted = [int(c.value) for c in codes]
        self.subscribed.set()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK."""
        self.subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self.subscribed.wait(10), "no SUBACK"

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` messages arrived."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.messages) >= count, timeout)

    def close(self) -> None:
        """Disconnect cleanly and stop the loop."""
        self.client.disconnect()
        self.client.loop_stop()


def _client(client_id: str = "", *, clean: bool = True, login: tuple[str, str] | None = None) -> mqtt.Client:
    """Build a paho 2.x MQTT 3.1.1 client (logging in with ``login`` if given)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean
    )
    if login is not None:
        client.username_pw_set(*login)
    return client


def _connect(client: mqtt.Client, broker: BrokerHandle) -> None:
    """Connect, start the loop and wait for CONNACK."""
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    assert connected.wait(10), "no CONNACK"


def _publish(broker: BrokerHandle, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
    """Publish one message with a throw-away client and wait until it is acknowledged."""
    client = _client(login=broker.login)
    _connect(client, broker)
    client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_embedded_binds_loopback_only(embedded_broker: EmbeddedBroker) -> None:
    """The embedded broker listens on loopback only and reports its URL."""
    assert embedded_broker.port > 0
    assert embedded_broker.url == f"mqtt://127.0.0.1:{embedded_broker.port}"
    assert embedded_broker.socknames
    assert all(ipaddress.ip_address(name[0]).is_loopback for name in embedded_broker.socknames)
    assert any(t.name.startswith("zfjl-mqtt-broker") for t in threading.enumerate())
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(host="0.0.0.0")


def test_embedded_stop_is_idempotent_and_restartable() -> None:
    """stop() twice is harmless, the thread is joined and restart() reuses the port."""
    broker = EmbeddedBroker()
    broker.stop()
    broker.start()
    port = broker.port
    broker.restart()
    assert broker.port == port
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    broker.stop()
    broker.stop()
    assert not broker.running
    assert not any(t.name.startswith("zfjl-mqtt-broker") and t.is_alive() for t in threading.enumerate())
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


@pytest.mark.slow
def test_qos1_256k_all_delivered_in_order(any_broker: BrokerHandle) -> None:
    """400 QoS 1 messages of 256 KiB reach a QoS 1 subscriber completely and in order."""
    sub = Collector(any_broker, "bulk-sub")
    sub.subscribe("zfjl/test/bulk/#", 1)
    pub = _client("bulk-pub", login=any_broker.login)
    _connect(pub, any_broker)
    started = time.monotonic()
    infos = [
        pub.publish("zfjl/test/bulk/chunk", i.to_bytes(4, "big") + bytes(PAYLOAD - 4), qos=1)
        for i in range(COUNT)
    ]
    for info in infos:
        info.wait_for_publish(60)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
    assert sub.wait_for(COUNT, 60), f"only {len(sub.messages)}/{COUNT} delivered"
    elapsed = time.monotonic() - started
    seq = [int.from_bytes(m.payload[:4], "big") for m in sub.messages]
    assert seq == list(range(COUNT))
    assert all(len(m.payload) == PAYLOAD and m.qos == 1 for m in sub.messages)
    print(f"{any_broker.url}: {COUNT * PAYLOAD / elapsed / 1e6:.0f} MB/s end to end")
    pub.disconnect()
    pub.loop_stop()
    sub.close()


def test_qos1_messages_acknowledged_before_a_quick_disconnect_are_delivered(any_broker: BrokerHandle) -> None:
    """Every PUBACKed message is routed even when the publisher disconnects right after the last PUBACK.

    amqtt 0.12 dropped what was still queued in the session when the DISCONNECT arrived.
    """
    count = 64
    sub = Collector(any_broker, "quick-sub")
    sub.subscribe("zfjl/test/quick/#", 1)
    for round_ in range(3):
        pub = _client(f"quick-pub-{round_}", login=any_broker.login)
        _connect(pub, any_broker)
        infos = [pub.publish(f"zfjl/test/quick/{round_}/{i}", bytes(64 * 1024), qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
    assert sub.wait_for(3 * count, 15), f"{len(sub.messages)} of {3 * count} delivered"
    sub.close()


def test_retained_message_reaches_late_subscriber(any_broker: BrokerHandle) -> None:
    """A retained message reaches a later subscriber with the retain flag; an empty payload clears it."""
    _publish(any_broker, "zfjl/test/retained", b"config-v1", retain=True)
    sub = Collector(any_broker)
    sub.subscribe("zfjl/test/retained", 1)
    assert sub.wait_for(1, 10)
    assert sub.messages[0].payload == b"config-v1"
    assert sub.messages[0].retain
    sub.close()

    _publish(any_broker, "zfjl/test/retained", b"", retain=True)
    late = Collector(any_broker)
    late.subscribe("zfjl/test/retained", 1)
    assert not late.wait_for(1, 1.0)
    late.close()


def test_last_will_published_on_abrupt_disconnect(any_broker: BrokerHandle) -> None:
    """A client's will is published when its TCP connection drops without DISCONNECT."""
    watcher = Collector(any_broker)
    watcher.subscribe("zfjl/test/status/#", 1)

    dying = _client("recorder-7", login=any_broker.login)
    dying.will_set("zfjl/test/status/recorder-7", b"offline", qos=1, retain=False)
    connected = threading.Event()
    dying.on_connect = lambda *args: connected.set()
    dying.connect(any_broker.host, any_broker.port, keepalive=30)
    deadline = time.monotonic() + 10
    while not connected.is_set() and time.monotonic() < deadline:
        dying.loop(0.1)
    assert connected.is_set()
    sock = dying.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()

    assert watcher.wait_for(1, 10), "last will not delivered"
    assert watcher.messages[0].topic == "zfjl/test/status/recorder-7"
    assert watcher.messages[0].payload == b"offline"
    watcher.close()


def test_clean_disconnect_suppresses_will(any_broker: BrokerHandle) -> None:
    """A client that sends DISCONNECT does not trigger its will."""
    watcher = Collector(any_broker)
    watcher.subscribe("zfjl/test/status/#", 1)
    polite = _client("recorder-8", login=any_broker.login)
    polite.will_set("zfjl/test/status/recorder-8", b"offline", qos=1)
    _connect(polite, any_broker)
    polite.disconnect()
    polite.loop_stop()
    assert not watcher.wait_for(1, 1.0)
    watcher.close()


def test_oversized_packet_drops_connection(any_broker: BrokerHandle) -> None:
    """A PUBLISH larger than 2 MiB is refused by closing the connection; the broker keeps serving."""
    dropped = threading.Event()
    client = _client("too-big", login=any_broker.login)
    client.reconnect_delay_set(30, 60)
    client.on_disconnect = lambda *args: dropped.set()
    _connect(client, any_broker)
    client.publish("zfjl/test/big", bytes(3 * 1024 * 1024), qos=1)
    assert dropped.wait(10), "oversized publish did not drop the connection"
    client.loop_stop()

    sub = Collector(any_broker)
    sub.subscribe("zfjl/test/ok", 1)
    _publish(any_broker, "zfjl/test/ok", bytes(2 * 1024 * 1024 - 1024))
    assert sub.wait_for(1, 10)
    sub.close()


def test_restart_keeps_port(any_broker: BrokerHandle) -> None:
    """restart() brings the broker back on the same port."""
    port = any_broker.port
    any_broker.restart()
    assert any_broker.port == port
    sub = Collector(any_broker)
    sub.subscribe("zfjl/test/after-restart", 1)
    _publish(any_broker, "zfjl/test/after-restart", b"x")
    assert sub.wait_for(1, 10)
    sub.close()


def test_embedded_offline_queue_kept_for_logged_in_session(embedded_broker: EmbeddedBroker) -> None:
    """QoS 1 messages for an offline persistent session are queued (every accepted client logged in)."""
    first = Collector(embedded_broker, "persistent-sub", clean=False)
    first.subscribe("zfjl/test/queued", 1)
    first.close()
    time.sleep(0.2)
    _publish(embedded_broker, "zfjl/test/queued", b"while-offline")
    time.sleep(1.5)  # amqtt's session monitor drops anonymous sessions once per second

    second = Collector(embedded_broker, "persistent-sub", clean=False)
    assert second.wait_for(1, 3.0)
    assert second.messages[0].payload == b"while-offline"
    second.close()


def test_embedded_refuses_mqtt5(embedded_broker: EmbeddedBroker) -> None:
    """amqtt speaks MQTT 3.1.1 only: an MQTT 5 CONNECT gets no successful CONNACK."""
    result: list[Any] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(30, 60)

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *args: done.set()
    client.connect(embedded_broker.host, embedded_broker.port)
    client.loop_start()
    assert done.wait(5)
    client.loop_stop()
    assert result, "expected a CONNACK refusing the protocol version"
    assert result[0].is_failure


@pytest.mark.xfail(strict=True, reason="amqtt 0.12 grants $share subscriptions but delivers nothing")
def test_embedded_shared_subscription(embedded_broker: EmbeddedBroker) -> None:
    """Shared subscriptions ($share/group/filter) deliver messages (they do not with amqtt 0.12)."""
    sub = Collector(embedded_broker)
    sub.subscribe("$share/workers/zfjl/test/shared", 1)
    assert sub.granted == [1]
    _publish(embedded_broker, "zfjl/test/shared", b"job")
    try:
        assert sub.wait_for(1, 2.0)
    finally:
        sub.close()


@pytest.mark.mosquitto
def test_fixture_mosquitto_enforces_model_accounts(mosquitto_broker: Any) -> None:
    """``use_accounts`` turns the private Mosquitto into an enforcer of the same model."""
    from server.infra.mqtt_acl import device_account, hash_broker_password

    mosquitto_broker.use_accounts([device_account("rec-a", hash_broker_password("pw-a"))])
    refused = _client("anon")
    answers: list[Any] = []
    refused.on_connect = lambda c, u, f, reason, p: answers.append(reason)
    refused.connect(mosquitto_broker.host, mosquitto_broker.port)
    refused.loop_start()
    deadline = time.monotonic() + 10
    while not answers and time.monotonic() < deadline:
        time.sleep(0.05)
    refused.loop_stop()
    assert answers and answers[0].is_failure
    ok = _client("rec-a", login=("rec-a", "pw-a"))
    _connect(ok, mosquitto_broker)
    ok.disconnect()
    ok.loop_stop()
