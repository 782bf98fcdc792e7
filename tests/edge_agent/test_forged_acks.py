"""Finding 1: a local MQTT client answering every upload with a forged ``complete`` frees nothing.

The attacker can publish on the device's ``down/`` tree (a private Mosquitto that allows anonymous
clients stands for any broker whose ACL lets someone else write there). It answers each ``init`` and
each status query of the device with a ``complete`` ack: bare JSON, signed with its own key, signed
with its own key under the pinned key's id, and a genuine server-signed ack replayed from another
file. The real uploader over the real link must mark nothing stored, count every forgery, keep
asking, and ``zfjl-agent status`` must still show the segment pending — then deliver it once the
genuine server answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig, ConfigError
from edge_agent.keys import generate_private_key, public_key_raw
from edge_agent.outbox import Outbox
from edge_agent.uploader import Uploader
from protocol import topics
from protocol.downlink import key_id, seal
from protocol.messages import AckState, TransferAck, encode
from tests.edge_agent.server_stub import INGEST_KEY, INGEST_PUBLIC_RAW, StubIngest, wait_until
from tests.edge_agent.test_uploader import DEVICE, Agent
from tests.fixtures.mqtt import MosquittoBroker

ROOT = Path(__file__).resolve().parents[2]


class Attacker:
    """Answers every init and status query of the device with forged ``complete`` acks."""

    def __init__(self, port: int, forgeries: list[str]) -> None:
        self.forgeries = forgeries
        self.questions = 0
        self.sent = 0
        self.subscribed = threading.Event()
        self.attacker_key = Ed25519PrivateKey.generate()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker", protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "attacker could not subscribe"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(f"zfjl/v1/{DEVICE}/up/file/#", qos=1)

    def _forged(self, kind: str, file_id: str, sha256: str) -> bytes:
        ack = TransferAck(
            device_id=DEVICE, file_id=file_id, state=AckState.COMPLETE, recording_id=1, sha256=sha256
        )
        topic, body = encode(ack)
        if kind == "unsigned":
            return b'{"recording_id":1,"state":"complete"}'
        if kind == "unsigned_conflict":  # would fail the segment for good: uploading stops (JL-17)
            return b'{"code":"segment_conflict","message":"forged","state":"conflict"}'
        if kind == "attacker_key":
            return seal(topic, body, self.attacker_key)
        if kind == "attacker_key_pinned_id":
            envelope = json.loads(seal(topic, body, self.attacker_key))
            envelope["kid"] = key_id(INGEST_PUBLIC_RAW)
            return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
        if kind == "replayed_from_other_file":
            # A genuine server-signed complete for another segment, published on this one's ack topic.
            other = TransferAck(
                device_id=DEVICE, file_id="0" * 32, state=AckState.COMPLETE, recording_id=1, sha256=sha256
            )
            other_topic, other_body = encode(other)
            return seal(other_topic, other_body, INGEST_KEY)
        raise AssertionError(kind)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(message.topic)
        if parsed.kind not in (topics.TopicKind.FILE_INIT, topics.TopicKind.FILE_STATUS):
            return
        assert parsed.file_id is not None
        self.questions += 1
        for kind in self.forgeries:
            payload = self._forged(kind, parsed.file_id, "ab" * 32)
            client.publish(topics.ack(DEVICE, parsed.file_id), payload, qos=1)
            self.sent += 1

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The device key."""
    return generate_private_key()


def _status(config: AgentConfig, path: Path) -> dict[str, Any]:
    config.write_toml(path)
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.mosquitto
def test_forged_complete_acks_free_nothing_and_the_segment_stays_pending(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, key: Ed25519PrivateKey
) -> None:
    """Finding 1 / JL-19: unsigned, wrongly signed, replayed completes and a forged conflict are refused."""
    forgeries = [
        "unsigned",
        "unsigned_conflict",
        "attacker_key",
        "attacker_key_pinned_id",
        "replayed_from_other_file",
    ]
    attacker = Attacker(mosquitto_broker.port, forgeries)
    agent = Agent(tmp_path, mosquitto_broker, key)
    try:
        seg = agent.add(0, 30_000)
        agent.start()
        # The device asks (init, then status after each ack timeout) and gets only forgeries.
        assert wait_until(lambda: attacker.questions >= 3, 30), attacker.questions
        assert wait_until(lambda: agent.link.untrusted_acks >= 3 * len(forgeries), 10)
        assert agent.link.untrusted_reasons.keys() == {"unsigned", "unknown_key", "bad_signature"}
        stored = agent.outbox.get(0)
        assert stored is not None and stored.state != "complete" and stored.recording_id is None
        assert agent.outbox.stats().segments_pending == 1
        assert agent.outbox.stats().segments_failed == 0  # a forged conflict fails nothing either
        assert agent.uploader is not None and agent.uploader.stats().segments_completed == 0
        status = _status(agent.config, tmp_path / "agent.toml")
        assert (status["segments_pending"], status["segments_complete"]) == (1, 0)
        assert seg.path.exists()
        # The genuine server answers: the segment is stored exactly once, forgeries notwithstanding.
        stub = StubIngest(mosquitto_broker.port, {DEVICE: public_key_raw(key)})
        stub.start()
        try:
            assert wait_until(lambda: agent.outbox.stats().segments_pending == 0, 30)
            assert stub.stored[(DEVICE, 0)] == seg.path.read_bytes()
        finally:
            stub.stop()
    finally:
        attacker.stop()
        agent.close()


@pytest.mark.mosquitto
def test_genuine_signature_over_a_complete_naming_another_hash_frees_nothing(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, key: Ed25519PrivateKey
) -> None:
    """A correctly signed ``complete`` whose sha256 is not the segment's is ignored and retried."""
    agent = Agent(tmp_path, mosquitto_broker, key)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wrong-hash", protocol=mqtt.MQTTv311)
    sender.connect("127.0.0.1", mosquitto_broker.port)
    sender.loop_start()
    try:
        agent.add(0, 5_000)
        agent.start()
        assert agent.link.wait_connected(10)
        file_id = agent.outbox.pending(limit=1)[0].file_id
        assert agent.uploader is not None
        assert wait_until(lambda: agent.uploader is not None and agent.uploader.stats().active == 1, 10)
        ack = TransferAck(
            device_id=DEVICE, file_id=file_id, state=AckState.COMPLETE, recording_id=5, sha256="cd" * 32
        )
        topic, body = encode(ack)
        sender.publish(topic, seal(topic, body, INGEST_KEY), qos=1).wait_for_publish(5)
        assert not wait_until(lambda: agent.outbox.stats().segments_pending == 0, 3)
        assert agent.link.untrusted_acks == 0  # the signature was fine; the hash was not this segment's
    finally:
        sender.disconnect()
        sender.loop_stop()
        agent.close()


def test_uploader_refuses_to_start_without_a_pinned_ingest_key(tmp_path: Path) -> None:
    """No pinned key: uploading is refused with a clear error instead of trusting unsigned acks."""
    config = AgentConfig(
        device_id=DEVICE,
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path / "data",
        mqtt_url="mqtt://127.0.0.1:1",
    )
    outbox = Outbox(tmp_path / "o.db")
    try:
        with pytest.raises(ConfigError, match="ingest_public_keys"):
            Uploader(outbox, object(), config)  # type: ignore[arg-type]
    finally:
        outbox.close()
    with pytest.raises(ConfigError, match="ingest_public_keys"):
        AgentConfig.from_dict(
            {
                "device_id": DEVICE,
                "private_key_file": "k.pem",
                "data_dir": "d",
                "mqtt_url": "mqtt://h:1",
                "ingest_public_keys": ["not-a-key"],
            },
            base_dir=tmp_path,
        )


def test_pinned_keys_survive_a_rewrite_of_agent_toml(tmp_path: Path) -> None:
    """A credential rotation rewrites agent.toml (write_toml): the pinned keys stay exactly as they were."""
    from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS

    config = AgentConfig(
        device_id=DEVICE,
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path / "data",
        mqtt_url="mqtt://127.0.0.1:1",
        ingest_public_keys=(*INGEST_PUBLIC_KEYS, "A" * 43 + "="),
    )
    config.write_toml(tmp_path / "agent.toml")
    assert AgentConfig.load(tmp_path / "agent.toml").ingest_public_keys == config.ingest_public_keys
