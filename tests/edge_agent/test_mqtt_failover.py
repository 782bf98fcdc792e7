"""The recorder's broker failover list (``mqtt_urls``): when its broker stays unreachable or refusing, the
link moves to the next one, so a recorder of a lost cluster node keeps uploading (JL-17) instead of
waiting for that node to come back; and once the first broker (a primary) accepts it again, the link
moves back to it (``mqtt_return_to_first_s``). docs/agent.md, "Several brokers"; docs/scaling.md.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import mqtt_link
from edge_agent.config import AgentConfig, BrokerAddress, ConfigError
from edge_agent.keys import generate_private_key, save_private_key
from edge_agent.mqtt_link import BrokerRotation, FirstBrokerReturn, MqttLink
from protocol import topics
from protocol.downlink import seal
from tests.fixtures.mqtt import MosquittoBroker, find_mosquitto, hold_port

DEVICE = "rec-fo"
DEVICE_PASSWORD = "pw-" + "d" * 20  # anonymous Mosquittos ignore it; the refusing one does not know it


class _Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


_A, _B, _C = (BrokerAddress.parse(f"mqtt://10.0.0.{i}:1883") for i in (1, 2, 3))


@pytest.mark.parametrize(
    ("brokers", "events", "expected"),
    [
        # (seconds since start, event) -> broker after it ("" = stay); failover window 10 s.
        ((_A, _B, _C), [(0, "fail"), (5, "fail"), (9.9, "fail")], ["", "", ""]),
        ((_A, _B, _C), [(0, "fail"), (10, "fail")], ["", "10.0.0.2"]),
        # Each broker moved to gets a whole window of its own, then the list wraps round.
        (
            (_A, _B, _C),
            [(0, "fail"), (10, "fail"), (15, "fail"), (20, "fail"), (30, "fail")],
            ["", "10.0.0.2", "", "10.0.0.3", "10.0.0.1"],
        ),
        # A success closes the window: a later loss opens a new one on the same broker.
        (
            (_A, _B),
            [(0, "fail"), (8, "ok"), (12, "fail"), (21, "fail"), (22, "fail")],
            ["", "", "", "", "10.0.0.2"],
        ),
        # One broker: nowhere to go, ever.
        ((_A,), [(0, "fail"), (100, "fail"), (1000, "fail")], ["", "", ""]),
    ],
)
def test_jl17_rotation_moves_only_after_the_failover_window(
    brokers: tuple[BrokerAddress, ...], events: list[tuple[float, str]], expected: list[str]
) -> None:
    clock = _Clock()
    rotation = BrokerRotation(brokers, 10.0, clock)
    seen = []
    start = clock.now
    for at, event in events:
        clock.now = start + at
        if event == "ok":
            rotation.connected()
            seen.append("")
            continue
        moved = rotation.failed()
        seen.append("" if moved is None else moved.host)
    assert seen == expected


def test_rotation_reports_a_whole_round_failed() -> None:
    """After every broker failed once since the last success, the link lets its backoff grow."""
    clock = _Clock()
    rotation = BrokerRotation((_A, _B), 1.0, clock)
    rotation.failed()
    clock.now += 1
    assert rotation.failed() == _B and not rotation.round_failed
    clock.now += 1
    assert rotation.failed() == _A and rotation.round_failed
    rotation.connected()
    assert not rotation.round_failed


@pytest.mark.parametrize(
    ("events", "expected", "backoff"),
    [
        # (seconds, event) -> "T"/"F" for a due() check ("away": on a later broker, "first": on the
        # first), "" for a try's outcome ("ok": moved back, "fail": refused). Interval 10 s.
        ([(0, "away"), (9.9, "away"), (10, "away")], ["F", "F", "T"], 1),
        # Each failed try doubles the wait: 20 s, then 40 s, never more than 80 s.
        (
            [(0, "away"), (10, "fail"), (29.9, "away"), (30, "away"), (30, "fail"), (69.9, "away"),
             (70, "away"), (70, "fail"), (149, "away"), (150, "away"), (150, "fail"), (230, "away")],
            ["F", "", "F", "T", "", "F", "T", "", "F", "T", "", "T"],
            8,
        ),
        # Moved back, but the first broker failed again within the interval: the next try waits 20 s.
        (
            [(0, "away"), (10, "ok"), (12, "first"), (15, "away"), (34.9, "away"), (35, "away")],
            ["F", "", "F", "F", "F", "T"],
            2,
        ),
        # A return that lasted an interval brings the wait back to one interval.
        (
            [(0, "away"), (10, "fail"), (30, "ok"), (41, "first"), (60, "away"), (69.9, "away"),
             (70, "away")],
            ["F", "", "", "F", "F", "F", "T"],
            1,
        ),
        # On the first broker nothing is ever due.
        ([(0, "first"), (100, "first")], ["F", "F"], 1),
    ],
)  # fmt: skip
def test_return_to_first_broker_waits_an_interval_and_backs_off_when_it_fails(
    events: list[tuple[float, str]], expected: list[str], backoff: int
) -> None:
    clock = _Clock()
    schedule = FirstBrokerReturn(10.0, clock)
    seen = []
    start = clock.now
    for at, event in events:
        clock.now = start + at
        if event in ("ok", "fail"):
            schedule.tried(accepted=event == "ok")
            seen.append("")
        else:
            seen.append("T" if schedule.due(on_first=event == "first") else "F")
    assert (seen, schedule.backoff) == (expected, backoff)


def test_return_to_first_broker_off_when_the_interval_is_zero() -> None:
    clock = _Clock()
    schedule = FirstBrokerReturn(0.0, clock)
    for _ in range(3):
        clock.now += 1000
        assert not schedule.due(on_first=False)


# --------------------------------------------------------------------------- configuration


def _config(tmp_path: Path, **values: object) -> AgentConfig:
    base: dict[str, object] = {"device_id": DEVICE, "private_key_file": "k.pem", "data_dir": "data"}
    return AgentConfig.from_dict({**base, **values}, base_dir=tmp_path)


def test_mqtt_urls_is_the_ordered_list_and_mqtt_url_its_first(tmp_path: Path) -> None:
    urls = ["mqtt://n0:1883", "mqtt://n1:1884", "mqtt://n2"]
    config = _config(tmp_path, mqtt_urls=urls, mqtt_failover_after_s=5)
    assert config.broker_urls == tuple(urls)
    assert config.mqtt_url == "mqtt://n0:1883"  # filled in: what reads mqtt_url sees the primary
    assert [(b.host, b.port) for b in config.brokers] == [("n0", 1883), ("n1", 1884), ("n2", 1883)]
    assert config.mqtt_failover_after_s == 5.0
    assert config.mqtt_return_to_first_s == 60.0  # the default: back to the primary within a minute
    assert _config(tmp_path, mqtt_urls=urls, mqtt_return_to_first_s=0).mqtt_return_to_first_s == 0.0
    # Written and loaded back unchanged (zfjl-fw provision writes agent.toml this way).
    config.write_toml(tmp_path / "agent.toml")
    assert AgentConfig.load(tmp_path / "agent.toml") == config
    # The single URL keeps working alone.
    single = _config(tmp_path, mqtt_url="mqtt://broker:1884")
    assert single.broker_urls == ("mqtt://broker:1884",)
    assert _config(tmp_path, mqtt_url="mqtt://n0:1883", mqtt_urls=urls).broker_urls == tuple(urls)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "mqtt_url (or mqtt_urls) is required"),
        ({"mqtt_urls": []}, "mqtt_url (or mqtt_urls) is required"),
        ({"mqtt_urls": ["mqtt://a", "http://b"]}, "mqtt_urls 'http://b'"),
        ({"mqtt_urls": "mqtt://a"}, "mqtt_urls must be a list of strings"),
        ({"mqtt_urls": ["mqtt://a", "mqtts://b"]}, "all be mqtt:// or all be mqtts://"),
        ({"mqtt_urls": ["mqtt://a", "mqtt://a"]}, "lists a broker twice"),
        ({"mqtt_url": "mqtt://b", "mqtt_urls": ["mqtt://a", "mqtt://b"]}, "first entry of mqtt_urls"),
        ({"mqtt_url": "mqtt://a", "mqtt_failover_after_s": 0}, "mqtt_failover_after_s must be positive"),
        ({"mqtt_url": "mqtt://a", "mqtt_return_to_first_s": -1}, "mqtt_return_to_first_s must be 0 (off)"),
    ],
)
def test_broker_list_mistakes_are_refused_by_name(
    tmp_path: Path, values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _config(tmp_path, **values)


# --------------------------------------------------------------------------- real brokers
# Private Mosquitto processes: a SIGKILL ends one at once even on a loaded machine.


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Little jitter, so the tests take seconds (the backoff itself stays paho's 1 s minimum)."""
    monkeypatch.setattr(mqtt_link, "_JITTER_MAX_S", 0.1)


@pytest.fixture
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], MosquittoBroker]]:
    """Make private Mosquitto brokers (not started); every one is stopped at the end."""
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    made: list[MosquittoBroker] = []

    def make() -> MosquittoBroker:
        made.append(MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), binary=binary))
        return made[-1]

    yield make
    for broker in made:
        broker.stop()


def _link(
    tmp_path: Path, urls: list[str], *, failover_after_s: float = 0.5, return_to_first_s: float = 0.0
) -> tuple[MqttLink, list[float]]:
    save_private_key(generate_private_key(), tmp_path / "device-key.pem")
    config = AgentConfig(
        device_id=DEVICE,
        private_key_file=tmp_path / "device-key.pem",
        data_dir=tmp_path / "data",
        mqtt_url=urls[0],
        mqtt_urls=tuple(urls) if len(urls) > 1 else (),
        mqtt_failover_after_s=failover_after_s,
        mqtt_return_to_first_s=return_to_first_s,
        mqtt_username=DEVICE,
        mqtt_password=DEVICE_PASSWORD,
        ingest_public_keys=(base64.b64encode(os.urandom(32)).decode(),),
    )
    connected_at: list[float] = []
    link = MqttLink(
        config, on_ack=lambda ack: None, on_connected=lambda: connected_at.append(time.monotonic())
    )
    return link, connected_at


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _downlink_heard_on(broker: MosquittoBroker, link: MqttLink) -> bool:
    """Publish a (wrongly signed) ack for the device on ``broker``: the link hears it only if it
    subscribed there. It is refused, as any ack not signed by a pinned key must be."""
    # A message published before the broker processed the link's SUBSCRIBE is not delivered to it.
    assert link.wait_downlink(30), "the downlink subscription was never granted"
    before = link.untrusted_acks
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tester-" + os.urandom(3).hex())
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        topic = topics.ack(DEVICE, "f" * 64)
        info = client.publish(topic, seal(topic, b"{}", Ed25519PrivateKey.generate()), qos=1)
        info.wait_for_publish(30)
        return _wait(lambda: link.untrusted_acks > before, 30)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.mosquitto
def test_jl17_unreachable_first_broker_the_link_uses_the_next(
    tmp_path: Path, fast_retries: None, brokers: Callable[[], MosquittoBroker]
) -> None:
    """A recorder whose first broker is down at start connects to the second one."""
    broker = brokers()
    broker.start()
    # A port bound but not listening refuses every connection, and no other process (a broker another
    # test starts meanwhile on a "free" port) can take it while the test runs.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        dead = f"mqtt://127.0.0.1:{held.getsockname()[1]}"
        link, _ = _link(tmp_path, [dead, broker.url])
        try:
            link.connect()
            assert link.wait_connected(60), f"never connected to the second broker: {link.last_error}"
            state = (link.broker_url, link.rotation.failovers, link.disconnects, link.last_error)
            assert state[:3] == (broker.url, 1, 0), state
            assert _downlink_heard_on(broker, link)
        finally:
            link.close()


@pytest.mark.mosquitto
def test_jl17_lost_broker_the_link_moves_to_the_next_and_resyncs(
    tmp_path: Path, fast_retries: None, brokers: Callable[[], MosquittoBroker]
) -> None:
    """Connected to broker A, A crashes: the link moves to B (one connection at a time), subscribes to
    its downlink there and calls ``on_connected`` again, which makes the uploader ask the status of
    every transfer in flight and resume it (docs/protocol.md)."""
    first, second = brokers(), brokers()
    first.start()
    second.start()
    link, connected_at = _link(tmp_path, [first.url, second.url])
    try:
        link.connect()
        assert link.wait_connected(60) and link.broker_url == first.url
        first.kill()
        assert _wait(lambda: len(connected_at) == 2, 60), "did not reconnect elsewhere"
        assert link.connected and link.broker_url == second.url
        assert link.disconnects == 1 and link.rotation.failovers == 1
        assert _downlink_heard_on(second, link)
    finally:
        link.close()


@pytest.mark.mosquitto
def test_jl17_refusing_broker_the_link_moves_to_the_next(
    tmp_path: Path, fast_retries: None, brokers: Callable[[], MosquittoBroker]
) -> None:
    """A broker that answers but refuses the login (here: it does not know the device) counts as failed
    like an unreachable one; the link moves on instead of knocking at it for ever."""
    refusing, accepting = brokers(), brokers()
    refusing.write_passwords({"someone-else": "pw"})
    refusing.start()
    accepting.start()
    link, _ = _link(tmp_path, [refusing.url, accepting.url])
    try:
        link.connect()
        assert link.wait_connected(60), f"never connected: {link.last_error}"
        assert link.broker_url == accepting.url
        assert link.last_error  # the refusal was seen first
    finally:
        link.close()


@pytest.mark.mosquitto
def test_single_broker_link_never_moves(
    tmp_path: Path, fast_retries: None, brokers: Callable[[], MosquittoBroker]
) -> None:
    """With one URL the link reconnects to it, as before the list existed (that it never moves however
    long the broker is down is the rotation table's one-broker row)."""
    broker = brokers()
    broker.start()
    link, connected_at = _link(tmp_path, [broker.url], failover_after_s=0.1)
    try:
        link.connect()
        assert link.wait_connected(60)
        broker.kill()
        assert _wait(lambda: not link.connected, 60)
        broker.start()
        assert _wait(lambda: len(connected_at) == 2, 60), "did not reconnect"
        assert link.broker_url == broker.url and link.rotation.failovers == 0
    finally:
        link.close()


RETURN_AFTER_S = 2.0  # the tests' interval between tries of the first broker (default 60 s)


@pytest.mark.mosquitto
def test_jl17_link_returns_to_the_first_broker_once_it_is_back(
    tmp_path: Path, fast_retries: None, brokers: Callable[[], MosquittoBroker]
) -> None:
    """Primary and standby: the primary dies, the recorder moves to the standby; the primary is started
    again on the same port and the recorder moves back within one interval, its downlink subscribed
    there before the standby connection is closed (make before break)."""
    with hold_port() as held:
        primary = brokers()
        primary.port = held.getsockname()[1]
        standby = brokers()
        primary.start()
        standby.start()
        link, connected_at = _link(tmp_path, [primary.url, standby.url], return_to_first_s=RETURN_AFTER_S)
        # The command handler's routes (desired config, commands) must follow the link to each client.
        configs: list[bytes] = []
        routed = threading.Event()

        def on_config(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            configs.append(bytes(message.payload))
            routed.set()

        link.device_client.message_callback_add(topics.config_desired(DEVICE), on_config)
        try:
            link.connect()
            assert link.wait_connected(60) and link.broker_url == primary.url
            primary.kill()  # the held socket keeps the port: nothing else can take it meanwhile
            assert _wait(lambda: len(connected_at) == 2 and link.connected, 60), "no failover"
            assert link.broker_url == standby.url and link.rotation.failovers == 1
            primary.start()
            back_at = time.monotonic()
            assert _wait(lambda: link.rotation.returns == 1, 30), "never moved back to the primary"
            took = time.monotonic() - back_at
            assert link.broker_url == primary.url and link.connected
            # Within the wait then in force of the primary's return (one interval, twice that if a try
            # came just before the primary was up) plus the connect's own round trips.
            assert took <= RETURN_AFTER_S * link.returner.backoff + 1.0, (took, link.returner.backoff)
            assert link.downlink_subscribed
            assert _downlink_heard_on(primary, link)
            _publish_on(primary, topics.config_desired(DEVICE), b"desired")
            assert routed.wait(30) and configs == [b"desired"]
            # The standby connection is closed: an ack published there reaches nobody.
            before = link.untrusted_acks
            assert not _heard_within(standby, link, 1.0)
            assert link.untrusted_acks == before
            # One move each way, and the standby connection was closed, not lost.
            assert (link.rotation.failovers, link.rotation.returns, link.disconnects) == (1, 1, 1)
        finally:
            link.close()


@pytest.mark.mosquitto
def test_jl17_first_broker_refusing_the_link_stays_and_tries_less_often(
    tmp_path: Path, fast_retries: None, brokers: Callable[[], MosquittoBroker]
) -> None:
    """A first broker that answers TCP but refuses the device's login is not moved to: the link keeps
    its working connection (never drops it for a try) and each refusal doubles the wait (no flapping)."""
    refusing, standby = brokers(), brokers()
    refusing.write_passwords({"someone-else": "pw"})
    refusing.start()
    standby.start()
    link, connected_at = _link(tmp_path, [refusing.url, standby.url], return_to_first_s=0.5)
    try:
        link.connect()
        assert link.wait_connected(60) and link.broker_url == standby.url
        assert _wait(lambda: link.returner.backoff >= 4, 30), "the first broker was not tried again"
        assert link.broker_url == standby.url and link.connected
        assert (len(connected_at), link.disconnects, link.rotation.returns) == (1, 0, 0)
        assert _downlink_heard_on(standby, link)
    finally:
        link.close()


def _publish_on(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    """Publish one QoS 1 message on ``broker`` as a tester."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tester-" + os.urandom(3).hex())
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def _heard_within(broker: MosquittoBroker, link: MqttLink, timeout_s: float) -> bool:
    """Publish a (wrongly signed) ack for the device on ``broker``; whether the link hears it in time."""
    before = link.untrusted_acks
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tester-" + os.urandom(3).hex())
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        topic = topics.ack(DEVICE, "e" * 64)
        info = client.publish(topic, seal(topic, b"{}", Ed25519PrivateKey.generate()), qos=1)
        info.wait_for_publish(30)
        return _wait(lambda: link.untrusted_acks > before, timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
