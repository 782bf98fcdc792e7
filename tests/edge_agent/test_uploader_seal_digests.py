"""The recorder hashes each chunk when it seals a segment; the upload then hashes nothing per chunk.

Each chunk's topic names its SHA-256 (docs/protocol.md, "Chunk hashes"). The recorder reads a segment
once when it seals it; that read now also yields each chunk's digest, stored with the segment in the
outbox, and the uploader names them instead of hashing every chunk as it sends it. The server treats
the hash as a claim, and the signed whole-file hash guards what is stored (JL-6), so the only new case
is a file altered after sealing: old claims, new bytes. It must be kept and reported, never stored and
never resent in a loop (JL-19); a damaged digest row must not stop a good segment either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import select

import edge_agent.uploader as uploader_module
import protocol.messages as messages_module
from edge_agent.app import AgentApp
from edge_agent.config import AgentConfig
from edge_agent.encoder import SegmentFile
from edge_agent.keys import generate_private_key, public_key_raw, save_private_key
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.recorder import Recorder
from edge_agent.sources import SyntheticVideoSource
from edge_agent.uploader import Uploader
from protocol.messages import AckState, FileChunk, FileFin, FileInit, Message, TransferAck
from protocol.ranges import RangeSet
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.infra.db import session_scope
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker
from tests.conftest import pinned_ingest_keys
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS, wait_until
from tests.edge_agent.test_uploader import DEVICE, Agent, FakeLink
from tests.fixtures.mqtt import MosquittoBroker

# Small chunks so a one-second 320x180 segment (about 5-15 kB) is cut into several.
CHUNK = 2048


def per_chunk_sha256(data: bytes, chunk: int = CHUNK) -> list[bytes]:
    """What each chunk's topic must name: SHA-256 of every ``chunk`` piece on the grid."""
    return [hashlib.sha256(data[i : i + chunk]).digest() for i in range(0, len(data), chunk)]


def seal(directory: Path, chunk_bytes: int | None, count: int) -> list[SegmentFile]:
    """``count`` segments sealed by the real recorder and encoder from the synthetic camera."""
    directory.mkdir(parents=True, exist_ok=True)
    sealed: list[SegmentFile] = []
    enough = threading.Event()

    def closed(segment: SegmentFile) -> None:
        sealed.append(segment)
        if len(sealed) >= count:
            enough.set()

    recorder = Recorder(
        video=SyntheticVideoSource(width=320, height=180, fps=10, realtime=False),
        audio=None,
        segment_dir=directory,
        segment_seconds=1.0,
        on_segment_closed=closed,
        stop_event=threading.Event(),
        chunk_bytes=chunk_bytes,
    )
    recorder.start()
    try:
        assert enough.wait(60), f"only {len(sealed)} segments sealed"
    finally:
        recorder.stop()
    assert recorder.failure is None
    return sealed[:count]


def journal(agent: Agent, segments: list[SegmentFile], key: Ed25519PrivateKey) -> None:
    """Journal sealed segments as AgentApp does on each segment's close."""
    for segment in segments:
        agent.outbox.add_segment(segment, device_id=DEVICE, officer_id="", private_key=key)


class PublishedChunks:
    """Every FileChunk the device publishes (MqttLink.publish wrapped, the bytes still sent)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chunks: list[FileChunk] = []
        original = MqttLink.publish

        def publish(link: MqttLink, msg: Message) -> bool:
            if isinstance(msg, FileChunk):
                self.chunks.append(msg)
            return original(link, msg)

        monkeypatch.setattr(MqttLink, "publish", publish)


class UploaderHashes:
    """SHA-256 objects made by ``protocol.messages`` on the uploader's thread (a chunk hashed at send)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, thread_name: str = "uploader") -> None:
        self.calls = 0
        real = hashlib.sha256

        def counting(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name == thread_name:
                self.calls += 1
            return real(*args, **kwargs)

        class _Hashlib:
            sha256 = staticmethod(counting)

        monkeypatch.setattr(messages_module, "hashlib", _Hashlib)


@pytest.fixture
def worker(app: Flask, mosquitto_broker: MosquittoBroker) -> Iterator[IngestWorker]:
    """The real server ingest on a private Mosquitto."""
    service = IngestService.from_app(app)
    running = IngestWorker(service.settings, service, "w0", mosquitto_broker.url, shared=True)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def make_agent(
    app: Flask, tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> Iterator[Callable[[], tuple[Agent, Ed25519PrivateKey]]]:
    """A registered device (outbox, link, uploader on CHUNK-byte chunks) pinning the real server's key."""
    made: list[Agent] = []

    def make() -> tuple[Agent, Ed25519PrivateKey]:
        key = generate_private_key()
        agent = Agent(tmp_path / "agent", mosquitto_broker, key, ingest_public_keys=pinned_ingest_keys(app))
        agent.config = dataclasses.replace(agent.config, chunk_bytes=CHUNK)
        assert agent.uploader is not None
        agent.uploader.config = agent.config
        with session_scope(app) as session:
            register_device(session, DEVICE, public_key_raw(key))
        made.append(agent)
        return agent, key

    yield make
    for agent in made:
        agent.close()


def stored_recordings(app: Flask) -> dict[int, tuple[str, int]]:
    """The server's recordings of the device: sequence -> (sha256, size)."""
    with session_scope(app) as session:
        rows = session.scalars(select(Recording).where(Recording.device_id == DEVICE)).all()
        return {r.sequence: (r.sha256, r.size) for r in rows}


# --------------------------------------------------------------------------- (a) the seal


def test_the_agent_seals_each_segment_with_its_chunk_digests_in_the_outbox(tmp_path: Path) -> None:
    """The running agent (synthetic camera, offline) stores each chunk's SHA-256 for its chunk size."""
    save_private_key(generate_private_key(), tmp_path / "k.pem")
    config = AgentConfig(
        device_id="rec-1",
        private_key_file=tmp_path / "k.pem",
        data_dir=tmp_path / "data",
        mqtt_url="mqtt://127.0.0.1:1",  # nothing listens: every segment stays pending with its digests
        ingest_public_keys=INGEST_PUBLIC_KEYS,
        chunk_bytes=CHUNK,
        width=320,
        height=180,
        fps=10,
        microphone="none",
    )
    agent = AgentApp(config, simulate=True, segment_seconds=1.0)
    agent.start()
    try:
        outbox = agent.outbox
        assert outbox is not None
        assert wait_until(lambda: outbox.stats().segments_recorded >= 2, 30)
        agent.stop_recorder()
        segments = outbox.all_segments()
        for segment in segments:
            data = segment.path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == segment.sha256
            assert len(data) > CHUNK  # several chunks, the last one shorter
            assert outbox.chunk_digests(segment.sequence, CHUNK) == per_chunk_sha256(data)
            assert outbox.chunk_digests(segment.sequence, 4 * CHUNK) is None  # another grid: none
    finally:
        agent.stop()


# --------------------------------------------------------------------------- (b) no hash at send


@pytest.mark.mosquitto
def test_an_upload_of_sealed_segments_hashes_no_chunk_and_the_server_stores_them(
    app: Flask,
    tmp_path: Path,
    worker: IngestWorker,
    make_agent: Callable[[], tuple[Agent, Ed25519PrivateKey]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each chunk's topic names the digest taken at seal; the uploader makes no SHA-256; all stored."""
    agent, key = make_agent()
    sealed = seal(agent.config.segment_dir, CHUNK, 2)
    journal(agent, sealed, key)
    digests = {s.sequence: agent.outbox.chunk_digests(s.sequence, CHUNK) for s in agent.outbox.pending()}
    published = PublishedChunks(monkeypatch)
    hashes = UploaderHashes(monkeypatch)
    agent.start()
    assert agent.uploader is not None and agent.uploader.drain(60)
    assert hashes.calls == 0
    assert stored_recordings(app) == {i: (s.sha256, s.size) for i, s in enumerate(sealed)}
    by_file = {s.file_id: s for s in agent.outbox.all_segments()}
    assert len(published.chunks) == sum(len(d or []) for d in digests.values())
    for chunk in published.chunks:
        claims = digests[by_file[chunk.file_id].sequence]
        assert claims is not None
        assert chunk.hash_checked is False
        assert chunk.sha256 == claims[chunk.offset // CHUNK].hex() == hashlib.sha256(chunk.data).hexdigest()
    assert agent.outbox.chunk_digests(0, CHUNK) is None  # not needed once the server holds the segment


# --------------------------------------------------------------------------- (c) altered after seal


@pytest.mark.mosquitto
def test_jl19_a_file_altered_after_sealing_is_kept_reported_and_never_resent_in_a_loop(
    app: Flask,
    tmp_path: Path,
    worker: IngestWorker,
    make_agent: Callable[[], tuple[Agent, Ed25519PrivateKey]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Old claims, new bytes: the server's chunk_hash_mismatch brings one check of the file, then a block."""
    agent, key = make_agent()
    (segment,) = seal(agent.config.segment_dir, CHUNK, 1)
    journal(agent, [segment], key)
    original = segment.path.read_bytes()
    flipped = bytearray(original)
    flipped[len(original) // 2] ^= 0x01  # a flipped bit on the card, same size
    segment.path.write_bytes(bytes(flipped))
    checks: list[int] = []
    real_sha256_fd = uploader_module.sha256_fd

    def counting_sha256_fd(fd: int) -> tuple[int, str]:
        checks.append(fd)
        return real_sha256_fd(fd)

    monkeypatch.setattr(uploader_module, "sha256_fd", counting_sha256_fd)
    agent.start()
    uploader = agent.uploader
    assert uploader is not None
    # The check after the server's answer, then at least two retries after the blocked delay (0.5 s).
    assert wait_until(lambda: len(checks) >= 3, 30), checks
    stats = uploader.stats()
    chunks = len(per_chunk_sha256(original))
    assert (stats.chunks_sent, stats.chunks_resent) == (chunks, 0)
    assert stats.blocked == 1 and stats.active == 0
    assert stored_recordings(app) == {}
    kept = agent.outbox.get(0)
    assert kept is not None and kept.state == "pending"
    assert segment.path.read_bytes() == bytes(flipped)
    assert "no longer matches its signed manifest" in caplog.text
    assert worker.service.stats()["rejections"].get("chunk_hash_mismatch", 0) >= 1


# --------------------------------------------------------------------------- (d) a damaged digest row


@pytest.mark.mosquitto
def test_a_damaged_digest_row_with_an_intact_file_still_ends_stored(
    app: Flask,
    tmp_path: Path,
    worker: IngestWorker,
    make_agent: Callable[[], tuple[Agent, Ed25519PrivateKey]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong stored digest is only a wrong claim: the file matches its signed hash, so it is stored."""
    agent, key = make_agent()
    sealed = seal(agent.config.segment_dir, CHUNK, 2)
    journal(agent, sealed, key)
    with sqlite3.connect(agent.config.outbox_path) as db:
        # Segment 0: its second digest is wrong (same length); segment 1: every digest is.
        (blob,) = db.execute("SELECT digests FROM chunk_digests WHERE sequence=0").fetchone()
        db.execute(
            "UPDATE chunk_digests SET digests=? WHERE sequence=0", (blob[:32] + bytes(32) + blob[64:],)
        )
        db.execute("UPDATE chunk_digests SET digests=zeroblob(length(digests)) WHERE sequence=1")
    published = PublishedChunks(monkeypatch)
    agent.start()
    assert agent.uploader is not None and agent.uploader.drain(60)
    assert stored_recordings(app) == {i: (s.sha256, s.size) for i, s in enumerate(sealed)}
    # The damaged digests were what the topics claimed: the uploader did use the row.
    first = agent.outbox.get(0)
    assert first is not None
    claimed: dict[int, str] = {}
    for chunk in published.chunks:
        if chunk.file_id == first.file_id:
            claimed.setdefault(chunk.offset, chunk.sha256)  # each chunk's first send
    assert claimed[CHUNK] == bytes(32).hex()
    assert agent.uploader.stats().segments_failed == 0


# --------------------------------------------------------------------------- (e) an older outbox


@pytest.mark.mosquitto
def test_an_outbox_of_the_older_schema_opens_and_uploads_hashing_at_send(
    app: Flask,
    tmp_path: Path,
    worker: IngestWorker,
    make_agent: Callable[[], tuple[Agent, Ed25519PrivateKey]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outbox written before digests existed gains the table in place; its segments hash at send."""
    agent, key = make_agent()
    sealed = seal(agent.config.segment_dir, None, 1)  # as an older recorder sealed it: no digests
    journal(agent, sealed, key)
    agent.outbox.close()
    with sqlite3.connect(agent.config.outbox_path) as db:
        db.execute("DROP TABLE chunk_digests")  # exactly the schema before this table
    reader = Outbox(agent.config.outbox_path, readonly=True)  # `zfjl-agent status` on the old file
    try:
        assert reader.chunk_digests(0, CHUNK) is None
    finally:
        reader.close()
    agent.outbox = Outbox(agent.config.outbox_path)
    assert agent.uploader is not None
    agent.uploader.outbox = agent.outbox
    published = PublishedChunks(monkeypatch)
    agent.start()
    assert agent.uploader.drain(60)
    assert stored_recordings(app) == {0: (sealed[0].sha256, sealed[0].size)}
    assert published.chunks and all(c.hash_checked for c in published.chunks)


# --------------------------------------------------------------------------- the uploader's rules, stepped


class SteppedRig:
    """One sealed segment with digests, an uploader on a fake link, driven step by step."""

    def __init__(self, tmp_path: Path) -> None:
        """Seal and journal one segment; build the uploader (not started)."""
        key = generate_private_key()
        self.config = AgentConfig(
            device_id=DEVICE,
            private_key_file=tmp_path / "k.pem",
            data_dir=tmp_path / "data",
            mqtt_url="mqtt://127.0.0.1:1",
            ingest_public_keys=INGEST_PUBLIC_KEYS,
            chunk_bytes=CHUNK,
            window=64,
            ack_timeout_s=5,
        )
        self.box = Outbox(self.config.outbox_path)
        (self.segment,) = seal(self.config.segment_dir, CHUNK, 1)
        self.signed = self.box.add_segment(self.segment, device_id=DEVICE, officer_id="", private_key=key)
        self.data = self.segment.path.read_bytes()
        self.link, self.now = FakeLink(), [100.0]
        self.up = Uploader(self.box, self.link, self.config, clock=lambda: self.now[0], retry_blocked_s=1.0)

    def ack(self, state: AckState, **kw: object) -> None:
        """Deliver one ack and let the uploader react."""
        ack = TransferAck(device_id=DEVICE, file_id=self.signed.file_id, state=state, **kw)  # type: ignore[arg-type]
        self.up.on_ack(ack)
        self.up.step()

    def send_everything(self) -> None:
        """Start, ack every chunk, up to the fin."""
        self.up.step()
        assert isinstance(self.link.sent[-1], FileInit)
        self.ack(AckState.READY, ranges=RangeSet())
        for offset in range(0, len(self.data), CHUNK):
            self.ack(AckState.STORED, offset=offset, length=min(CHUNK, len(self.data) - offset))
        assert isinstance(self.link.sent[-1], FileFin)

    def chunks(self) -> list[FileChunk]:
        """Chunks published so far."""
        return [m for m in self.link.sent if isinstance(m, FileChunk)]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[SteppedRig]:
    """A fresh stepped rig, closed afterwards."""
    made = SteppedRig(tmp_path)
    yield made
    made.up.stop()
    made.box.close()


def test_chunk_hash_mismatch_with_an_intact_file_drops_the_digests_and_resends_hashed(
    rig: SteppedRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dropped a chunk whose claim failed, the file is fine: claims from the seal are no longer
    used, the chunk goes again with its bytes hashed, and the row is gone for later uploads too."""
    hashes = UploaderHashes(monkeypatch, thread_name=threading.current_thread().name)
    rig.send_everything()
    assert hashes.calls == 0
    held = RangeSet().add(0, CHUNK).add(2 * CHUNK, len(rig.data))
    rig.ack(AckState.INCOMPLETE, ranges=held, code="chunk_hash_mismatch")
    resent = rig.chunks()[-1]
    assert (resent.offset, resent.hash_checked) == (CHUNK, True)
    assert hashes.calls == 1
    assert rig.box.chunk_digests(0, CHUNK) is None
    assert rig.up.stats().blocked == 0 and rig.up.stats().active == 1


def test_a_resend_of_a_refused_chunk_hashes_its_bytes(rig: SteppedRig) -> None:
    """Only a chunk's first send names the digest from the seal; a resend names what it sends."""
    rig.up.step()
    rig.ack(AckState.READY, ranges=RangeSet())
    first = rig.chunks()[1]
    assert first.hash_checked is False
    rig.ack(AckState.REJECTED, offset=CHUNK, length=CHUNK, code="chunk_hash_mismatch")
    again = rig.chunks()[-1]
    assert (again.offset, again.hash_checked) == (CHUNK, True)


def test_digests_made_for_another_chunk_size_are_not_used(tmp_path: Path) -> None:
    """A device whose chunk size changed since the seal hashes each chunk as before."""
    made = SteppedRig(tmp_path)
    try:
        config = dataclasses.replace(made.config, chunk_bytes=4 * CHUNK)
        up = Uploader(made.box, made.link, config, clock=lambda: made.now[0])
        up.step()
        up.on_ack(
            TransferAck(
                device_id=DEVICE, file_id=made.signed.file_id, state=AckState.READY, ranges=RangeSet()
            )
        )
        up.step()
        chunks = made.chunks()
        assert chunks and all(c.hash_checked for c in chunks)
        up.stop()
    finally:
        made.up.stop()
        made.box.close()
