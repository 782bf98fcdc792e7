"""Staging guards over a real broker: the ingest worker, a raw attacker client and the real recorder uploader.

Finding 5 (second half): a flood must not hide a forged manifest from the security log, chunks for file
ids without an accepted manifest must not reach the disk, and a recorder held back by its staging quota
keeps its segment and delivers it later (JL-17, JL-19).
"""

from __future__ import annotations

import os
import queue
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from edge_agent.keys import generate_private_key, public_key_raw
from protocol import topics
from protocol.downlink import IngestKeyring, decode_public_key
from protocol.messages import AckState, FileChunk, FileInit, TransferAck, decode, encode
from protocol.transfer import TransferFinished
from server.domain.evidence.models import IngestRejection
from server.domain.fleet.devices import register_device
from server.infra.config import load_settings
from server.infra.db import session_scope
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker
from tests.conftest import SegmentFactory, pinned_ingest_keys
from tests.edge_agent.server_stub import wait_until
from tests.edge_agent.test_uploader import Agent
from tests.fixtures.mqtt import BrokerHandle, MosquittoBroker
from tests.server.test_runner import DeviceLink, stored_once


class RawClient:
    """Whoever can publish on a device's topics: sends anything, collects the device's acks."""

    def __init__(
        self,
        broker: MosquittoBroker | BrokerHandle,
        device_id: str,
        keyring: IngestKeyring,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.keyring = keyring  # acks are signed by the server's ingest key (protocol/downlink.py)
        self.acks: queue.Queue[TransferAck] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{os.urandom(3).hex()}")
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(
            topics.device_downlink_filter(device_id), qos=1
        )
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        ack = decode(message.topic, self.keyring.open(message.topic, bytes(message.payload)))
        assert isinstance(ack, TransferAck)
        self.acks.put(ack)

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1, waiting for the PUBACK so the order of a flood is kept."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def ack_for(self, file_id: str, timeout_s: float = 30.0) -> TransferAck:
        """The next ack naming ``file_id`` (others are skipped)."""
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                try:
                    ack = self.acks.get(timeout=0.2)
                except queue.Empty:
                    continue
                if ack.file_id == file_id:
                    return ack
        finally:
            timer.cancel()
        raise AssertionError(f"no ack for {file_id}")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(app: Flask, segments: SegmentFactory) -> SegmentFactory:
    """The segment factory's device, registered."""
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    return segments


@pytest.fixture
def worker(app: Flask, mosquitto_broker: MosquittoBroker) -> Iterator[IngestWorker]:
    """One real ingest worker on a private Mosquitto."""
    service = IngestService.from_app(app)
    running = IngestWorker(service.settings, service, "w0", mosquitto_broker.url, shared=True)
    running.start()
    yield running
    running.stop()


def staged_bytes(root: Path) -> int:
    """Bytes on disk under the staging root."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


@pytest.mark.mosquitto
def test_forged_manifest_after_a_flood_over_the_broker_is_logged_and_random_chunks_stage_nothing(
    app: Flask, device: SegmentFactory, mosquitto_broker: MosquittoBroker, worker: IngestWorker
) -> None:
    """40 refused chunks, 50 × 1 MiB chunks for random file ids, a forged init: all on record, 0 bytes."""
    keyring = IngestKeyring.of(decode_public_key(text) for text in pinned_ingest_keys(app))
    raw = RawClient(mosquitto_broker, device.device_id, keyring)
    try:
        for n in range(40):  # refused chunks (hash in the topic is not the bytes')
            topic, payload = encode(
                FileChunk(device_id=device.device_id, file_id=f"{n:032x}", offset=0, data=b"z" * 10)
            )
            raw.publish(topic.rsplit("/", 1)[0] + "/" + "0" * 64, payload)
        block = os.urandom(1024 * 1024)
        rng = random.Random(11)
        for _ in range(50):
            file_id = f"{rng.getrandbits(128):032x}"
            raw.publish(*encode(FileChunk(device_id=device.device_id, file_id=file_id, offset=0, data=block)))
        forged, _ = device.make(b"f" * 1000, key=Ed25519PrivateKey.generate())
        raw.publish(*encode(FileInit(device_id=device.device_id, file_id=forged.file_id, signed=forged)))
        ack = raw.ack_for(forged.file_id)
        assert (ack.state, ack.code) == (AckState.REJECTED, "bad_signature")
    finally:
        raw.close()
    assert staged_bytes(worker.service.staging.root) == 0
    assert worker.service.stats()["bytes_staged"] == 0
    with session_scope(app) as session:
        logged = session.scalars(select(IngestRejection).where(IngestRejection.code == "bad_signature")).all()
        assert [r.manifest_text for r in logged] == [forged.manifest_text]


@pytest.mark.mosquitto
def test_sender_whose_transfer_lost_its_manifest_sends_init_again_and_finishes(
    app: Flask,
    device: SegmentFactory,
    mosquitto_broker: MosquittoBroker,
    worker: IngestWorker,
    link_to: Callable[..., DeviceLink],
) -> None:
    """The server lost a transfer's staging: its chunks answer `no_manifest`, the device re-inits."""
    data = random.Random(4).randbytes(1_300_000)
    signed, _ = device.make(data)
    staging = worker.service.staging
    readies = 0

    def on_ack(ack: TransferAck) -> None:
        nonlocal readies
        if ack.state is AckState.READY:
            readies += 1
            if readies == 1:  # before the device sends its chunks: e.g. the staging disk was replaced
                staging.discard(device.device_id, signed.file_id)

    link = link_to(mosquitto_broker.host, mosquitto_broker.port, device.device_id)
    result = link.upload(signed, data, on_ack=on_ack)
    assert isinstance(result, TransferFinished)
    stored_once(app, worker.service, data)
    assert worker.service.stats()["messages"]["file_init"] >= 2
    assert worker.service.stats()["rejections"].get("no_manifest", 0) >= 1


@pytest.mark.mosquitto
def test_recorder_held_back_by_its_staging_quota_keeps_the_segment_and_delivers_it_later(
    app: Flask, tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    """The real uploader gets `staging_quota`: the segment stays pending, then goes once there is room."""
    key = generate_private_key()
    agent = Agent(tmp_path / "agent", mosquitto_broker, key, ingest_public_keys=pinned_ingest_keys(app))
    with session_scope(app) as session:
        register_device(session, agent.config.device_id, public_key_raw(key))
    base = IngestService.from_app(app)
    quota = 100_000
    settings = load_settings(
        {
            "data_dir": str(base.settings.data_dir),
            "database_url": base.settings.database_url,
            "jwt_secret": base.settings.jwt_secret,
            "staging_quota_bytes": quota,
            "max_segment_bytes": quota,
        }
    )
    service = IngestService(settings, app, base.store, base.staging)
    # Another transfer of the same device already holds most of the quota (an upload left half-way).
    occupier_dir = tmp_path / "occupier"
    occupier_dir.mkdir()
    factory = SegmentFactory(occupier_dir, device_id=agent.config.device_id, key=key, sequence=100)
    occupier_data = os.urandom(80_000)
    occupier, _ = factory.make(occupier_data)
    service.handle(*encode(FileInit(device_id=factory.device_id, file_id=occupier.file_id, signed=occupier)))
    service.handle(
        *encode(
            FileChunk(
                device_id=factory.device_id, file_id=occupier.file_id, offset=0, data=occupier_data[:60_000]
            )
        )
    )
    running = IngestWorker(settings, service, "w0", mosquitto_broker.url, shared=True)
    running.start()
    try:
        seg = agent.add(0, 40_000)
        agent.start()
        assert agent.uploader is not None
        assert wait_until(lambda: agent.uploader is not None and agent.uploader.stats().blocked >= 1, 20)
        assert agent.outbox.failed() == [] and agent.outbox.stats().segments_pending == 1
        assert service.stats()["rejections"].get("staging_quota", 0) >= 1
        service.staging.discard(factory.device_id, occupier.file_id)  # the janitor cleans the abandoned one
        assert agent.uploader.drain(30)
        assert agent.outbox.stats().segments_failed == 0
        with session_scope(app) as session:
            from server.domain.evidence.models import Recording

            (recording,) = session.scalars(select(Recording)).all()
        assert recording.size == seg.size and recording.sha256 == seg.sha256
    finally:
        agent.close()
        running.stop()


@pytest.fixture
def link_to(app: Flask) -> Iterator[Callable[[str, int, str], DeviceLink]]:
    """Open device links (pinning the app's ingest key) that are closed after the test."""
    links: list[DeviceLink] = []
    keyring = IngestKeyring.of(decode_public_key(text) for text in pinned_ingest_keys(app))

    def make(host: str, port: int, device_id: str) -> DeviceLink:
        link = DeviceLink(host, port, device_id, keyring)
        links.append(link)
        return link

    yield make
    for link in links:
        link.close()


def test_server_housekeeping_cleans_abandoned_staging_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running server's one housekeeping thread sweeps staging on its interval and is joined at stop."""
    import server.runner as runner_module
    from server.infra.staging import DATA_NAME, MANIFEST_NAME, Staging
    from server.runner import ServerRunner

    monkeypatch.setattr(runner_module, "STAGING_SWEEP_INTERVAL_S", 0.2)
    data_dir = tmp_path / "var"
    staging = Staging(data_dir / "staging")
    factory = SegmentFactory(tmp_path)
    data = os.urandom(5000)
    signed, _ = factory.make(data)
    staging.store_manifest(signed)
    staging.stage(FileChunk(device_id=factory.device_id, file_id=signed.file_id, offset=0, data=data[:1000]))
    path = staging.path_of(factory.device_id, signed.file_id)
    old = path.stat().st_mtime - 7 * 3600  # past the default 6 hours
    for item in [*path.iterdir(), path]:
        os.utime(item, (old, old))
    runner = ServerRunner(
        {
            "data_dir": str(data_dir),
            "database_url": f"sqlite:///{tmp_path / 'zfjl.db'}",
            "jwt_secret": "x" * 48,
            "http_port": 0,
        },
        embedded_mqtt_port=0,
    )
    runner.start()
    try:
        assert wait_until(lambda: not (path / DATA_NAME).exists(), 20)
        assert (path / MANIFEST_NAME).exists()
    finally:
        runner.stop()
    assert not [t for t in threading.enumerate() if t.name == "zfjl-housekeeping"]
