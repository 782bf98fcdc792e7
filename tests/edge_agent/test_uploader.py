"""Uploader + MqttLink against a private Mosquitto and a protocol-only ingest stub."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key, public_key_raw
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.uploader import Uploader
from protocol import topics
from protocol.messages import AckState, FileChunk, FileFin, FileInit, FileStatusQuery, Message, TransferAck
from protocol.ranges import RangeSet
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS, StubIngest, wait_until
from tests.fixtures.mqtt import MosquittoBroker

DEVICE = "cam-7"


@dataclass(frozen=True)
class FakeSegment:
    """Stands in for the recorder's SegmentFile."""

    path: Path
    size: int
    sha256: str
    started_utc: datetime
    ended_utc: datetime
    started_mono_ns: int
    ended_mono_ns: int


@pytest.fixture
def broker(mosquitto_broker: MosquittoBroker) -> MosquittoBroker:
    """A private Mosquitto for one test (never the system one)."""
    return mosquitto_broker


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The device key."""
    return generate_private_key()


class Agent:
    """Outbox + link + uploader wired like the app does."""

    def __init__(
        self,
        tmp_path: Path,
        broker: MosquittoBroker,
        key: Ed25519PrivateKey,
        mqtt_protocol: str = "3.1.1",
        ingest_public_keys: tuple[str, ...] = INGEST_PUBLIC_KEYS,
    ) -> None:
        """Build (not started); pins the stub's ingest key unless given the real server's."""
        self.key = key
        self.config = AgentConfig(
            device_id=DEVICE,
            private_key_file=tmp_path / "k.pem",
            data_dir=tmp_path / "data",
            mqtt_url=broker.url,
            ingest_public_keys=ingest_public_keys,
            chunk_bytes=16 * 1024,
            window=4,
            ack_timeout_s=1.0,
            mqtt_protocol=mqtt_protocol,
        )
        self.config.segment_dir.mkdir(parents=True)
        self.outbox = Outbox(self.config.outbox_path)
        self.uploader: Uploader | None = None
        self.link = MqttLink(self.config, on_ack=self._on_ack, on_connected=self._on_connected)
        self.uploader = Uploader(self.outbox, self.link, self.config, retry_blocked_s=0.5)

    def _on_ack(self, ack: object) -> None:
        assert self.uploader is not None
        self.uploader.on_ack(ack)  # type: ignore[arg-type]

    def _on_connected(self) -> None:
        assert self.uploader is not None
        self.uploader.on_connected()

    def add(self, index: int, size: int) -> FakeSegment:
        """Write and journal one segment of random bytes."""
        data = os.urandom(size)
        start = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(seconds=index)
        seg = FakeSegment(
            path=self.config.segment_dir / f"seg-{index}.mp4",
            size=size,
            sha256=hashlib.sha256(data).hexdigest(),
            started_utc=start,
            ended_utc=start + timedelta(seconds=1),
            started_mono_ns=index,
            ended_mono_ns=index + 1,
        )
        seg.path.write_bytes(data)
        self.outbox.add_segment(seg, device_id=DEVICE, officer_id="", private_key=self.key)
        return seg

    def start(self) -> None:
        """Connect and start uploading."""
        assert self.uploader is not None
        self.link.connect()
        self.uploader.start()

    def close(self) -> None:
        """Stop in app order."""
        assert self.uploader is not None
        self.uploader.stop()
        self.link.close()
        self.outbox.close()


@pytest.fixture
def agent(tmp_path: Path, broker: MosquittoBroker, key: Ed25519PrivateKey) -> Iterator[Agent]:
    """A device agent (outbox, link, uploader) for one test."""
    dev = Agent(tmp_path, broker, key)
    yield dev
    dev.close()


def _stub(broker: MosquittoBroker, keys: dict[str, bytes]) -> StubIngest:
    stub = StubIngest(broker.port, keys)
    stub.start()
    return stub


def _assert_delivered_once(stub: StubIngest, segs: list[FakeSegment]) -> None:
    assert stub.commits == {(DEVICE, i): 1 for i in range(len(segs))}
    for i, seg in enumerate(segs):
        assert stub.stored[(DEVICE, i)] == seg.path.read_bytes()


@pytest.mark.mosquitto
def test_delivers_segments_exactly_once_and_keeps_files_until_complete(
    agent: Agent, broker: MosquittoBroker, key: Ed25519PrivateKey
) -> None:
    """3 segments arrive once each; nothing is marked stored before the server's complete ack."""
    stub = _stub(broker, {DEVICE: public_key_raw(key)})
    try:
        stub.hold_finalize.set()
        segs = [agent.add(i, 40_000 + i) for i in range(3)]
        agent.start()
        # Two transfers send at a time; one whose bytes are all held waits for its commit without a
        # sending slot, so the third goes out while the first two wait for a finalize held back here.
        total_chunks = sum(-(-s.size // agent.config.chunk_bytes) for s in segs)
        assert wait_until(lambda: stub.chunks_staged >= total_chunks, 20)
        assert agent.uploader is not None
        # Every byte is staged and PUBACKed, but without "complete" nothing is done on the device.
        assert wait_until(lambda: agent.uploader is not None and agent.uploader.stats().active == 3, 5)
        assert agent.outbox.stats().segments_pending == 3
        assert all(s.path.exists() for s in segs)
        stub.hold_finalize.clear()
        assert agent.uploader.drain(30)
        _assert_delivered_once(stub, segs)
        assert all(s.path.exists() for s in segs)  # uploaded files are only freed when space is needed
        assert [s.recording_id is not None for s in agent.outbox.all_segments()] == [True] * 3
        assert agent.uploader.stats().bytes_sent >= sum(s.size for s in segs)

        # A malformed (so unsigned) ack is counted as untrusted and ignored; the link keeps working.
        bad = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bad", protocol=mqtt.MQTTv311)
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        bad.publish(topics.ack(DEVICE, "abc"), b"not json", qos=1).wait_for_publish(5)
        bad.disconnect()
        bad.loop_stop()
        assert wait_until(lambda: agent.link.untrusted_acks == 1, 5)
        seg = agent.add(3, 1000)
        assert agent.uploader.drain(20)
        assert stub.stored[(DEVICE, 3)] == seg.path.read_bytes()
    finally:
        stub.stop()


@pytest.mark.mosquitto
def test_resumes_when_the_ingest_peer_appears_later(
    agent: Agent, broker: MosquittoBroker, key: Ed25519PrivateKey
) -> None:
    """With nobody answering, transfers time out and ask for status; once the peer is up all arrive."""
    segs = [agent.add(i, 30_000) for i in range(3)]
    agent.start()
    assert agent.link.wait_connected(10)
    assert agent.uploader is not None
    assert not agent.uploader.drain(2.5)  # nobody there: nothing can complete
    assert agent.outbox.stats().segments_pending == 3
    stub = _stub(broker, {DEVICE: public_key_raw(key)})
    try:
        assert agent.uploader.drain(30)
        _assert_delivered_once(stub, segs)
    finally:
        stub.stop()


@pytest.mark.mosquitto
def test_broker_restart_mid_transfer(agent: Agent, broker: MosquittoBroker, key: Ed25519PrivateKey) -> None:
    """The broker dies mid-transfer (losing every session); device and peer reconnect and finish."""
    stub = _stub(broker, {DEVICE: public_key_raw(key)})
    try:
        stub.hold_finalize.set()
        segs = [agent.add(i, 120_000) for i in range(3)]
        agent.start()
        assert wait_until(lambda: stub.chunks_staged >= 4, 20)
        broker.stop()
        assert wait_until(lambda: not agent.link.connected, 10)
        broker.start()
        stub.hold_finalize.clear()
        assert agent.uploader is not None
        assert agent.uploader.drain(40)
        assert agent.link.connects >= 2
        _assert_delivered_once(stub, segs)
    finally:
        stub.stop()


@pytest.mark.mosquitto
def test_refused_segment_is_kept_and_failed(agent: Agent, broker: MosquittoBroker) -> None:
    """A bad signature (peer knows another key) fails the segment; its file stays on disk."""
    stub = _stub(broker, {DEVICE: public_key_raw(generate_private_key())})
    try:
        seg = agent.add(0, 5000)
        agent.start()
        assert agent.uploader is not None
        assert agent.uploader.drain(20)  # failed segments are not pending
        failed = agent.outbox.failed()
        assert [(s.sequence, s.error_code) for s in failed] == [(0, "bad_signature")]
        assert seg.path.exists()
        assert agent.outbox.free_space(2**62) == []  # even when desperate for space
        assert seg.path.exists()
        assert stub.stored == {}
        assert agent.outbox.stats().segments_failed == 1
    finally:
        stub.stop()


@pytest.mark.mosquitto
def test_jl17_segment_of_a_not_yet_registered_device_stays_pending_and_uploads_once_registered(
    agent: Agent, broker: MosquittoBroker, key: Ed25519PrivateKey
) -> None:
    """``unknown_device`` is about the registration, not the evidence: retry later, never fail it."""
    stub = _stub(broker, {})
    try:
        seg = agent.add(0, 5000)
        agent.start()
        assert agent.uploader is not None
        assert wait_until(lambda: agent.uploader is not None and agent.uploader.stats().blocked == 1, 20)
        assert agent.outbox.failed() == [] and agent.outbox.stats().segments_pending == 1
        stub.device_keys[DEVICE] = public_key_raw(key)  # an admin registers the device
        assert agent.uploader.drain(20)
        assert stub.stored == {(DEVICE, 0): seg.path.read_bytes()}
        assert agent.outbox.stats().segments_failed == 0
    finally:
        stub.stop()


@pytest.mark.mosquitto
def test_mqtt5_persistent_session(tmp_path: Path, broker: MosquittoBroker, key: Ed25519PrivateKey) -> None:
    """With mqtt_protocol = 5 (clean_start=False + session expiry) a segment is delivered too."""
    stub = _stub(broker, {DEVICE: public_key_raw(key)})
    dev = Agent(tmp_path, broker, key, mqtt_protocol="5")
    try:
        seg = dev.add(0, 20_000)
        dev.start()
        assert dev.link.wait_connected(10)
        assert dev.uploader is not None and dev.uploader.drain(20)
        assert stub.stored[(DEVICE, 0)] == seg.path.read_bytes()
    finally:
        dev.close()
        stub.stop()


class FakeLink:
    """Records published messages; connected at will."""

    def __init__(self) -> None:
        """Start connected with nothing sent."""
        self.connected = True
        self.sent: list[Message] = []

    def publish(self, msg: Message) -> bool:
        """Record the message."""
        self.sent.append(msg)
        return True


def test_only_the_complete_ack_marks_a_segment_stored(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Driven step by step with a fake link and clock: STORED acks free nothing, COMPLETE does."""
    config = AgentConfig(
        device_id=DEVICE,
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path,
        mqtt_url="mqtt://127.0.0.1:1",
        ingest_public_keys=INGEST_PUBLIC_KEYS,
        chunk_bytes=1000,
        window=2,
        ack_timeout_s=5,
    )
    box = Outbox(tmp_path / "o.db")
    data = os.urandom(2500)
    (tmp_path / "s.mp4").write_bytes(data)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    seg = FakeSegment(tmp_path / "s.mp4", 2500, hashlib.sha256(data).hexdigest(), t0, t0, 0, 1)
    signed = box.add_segment(seg, device_id=DEVICE, officer_id="", private_key=key)
    link, now = FakeLink(), [100.0]
    up = Uploader(box, link, config, clock=lambda: now[0])
    fid = signed.file_id

    def ack(state: AckState, **kw: object) -> None:
        up.on_ack(TransferAck(device_id=DEVICE, file_id=fid, state=state, **kw))  # type: ignore[arg-type]
        up.step()

    up.step()
    assert isinstance(link.sent[-1], FileInit)
    ack(AckState.READY, ranges=RangeSet())
    assert [m.offset for m in link.sent if isinstance(m, FileChunk)] == [0, 1000]
    ack(AckState.STORED, offset=0, length=1000)
    ack(AckState.STORED, offset=1000, length=1000)
    ack(AckState.STORED, offset=2000, length=500)
    assert isinstance(link.sent[-1], FileFin)
    assert box.stats().segments_pending == 1  # every chunk stored and PUBACKed: still pending
    link.connected = False
    up.on_connected()  # a reconnect: the transfer asks what the server holds
    link.connected = True
    up.step()
    assert isinstance(link.sent[-1], FileStatusQuery)
    ack(AckState.READY, ranges=RangeSet.of([(0, 1000), (2000, 2500)]))
    assert isinstance(link.sent[-1], FileChunk) and link.sent[-1].offset == 1000
    assert up.stats().chunks_resent == 1
    ack(AckState.STORED, offset=1000, length=1000)
    ack(AckState.COMPLETE, recording_id=9, sha256=seg.sha256)
    stored = box.get(0)
    assert stored is not None and stored.state == "complete" and stored.recording_id == 9
    assert seg.path.exists()
    up.stop()
    box.close()
