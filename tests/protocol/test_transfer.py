"""Sender and receiver machines paired over an in-memory link, byte for byte.

The link can drop, duplicate and reorder messages and the server can "restart" (lose everything but
its staging). Whatever happens, the server ends with exactly the device's bytes, and the device hears
``complete`` only after the server committed them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.manifest import GENESIS_HASH, SegmentManifest, SignedManifest
from protocol.messages import (
    AckState,
    FileChunk,
    FileFin,
    FileInit,
    FileStatusQuery,
    TransferAck,
    decode,
    encode,
)
from protocol.ranges import RangeSet
from protocol.transfer import (
    Committed,
    DiscardStaging,
    Finalize,
    FinalizeRejected,
    ReceiverView,
    Reply,
    SegmentReceiver,
    SegmentSender,
    SendChunk,
    SenderState,
    SendFin,
    SendInit,
    SendStatus,
    StageChunk,
    StageOutcome,
    StoreManifest,
    TransferFailed,
    TransferFinished,
)

KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
DEV = "rec-0001"
CHUNK = 256 * 1024


def signed_for(data: bytes, key: Ed25519PrivateKey = KEY) -> SignedManifest:
    manifest = SegmentManifest(
        device_id=DEV,
        sequence=0,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        started_at=datetime(2026, 11, 26, 8, 0, tzinfo=UTC),
        ended_at=datetime(2026, 11, 26, 8, 1, tzinfo=UTC),
        started_mono_ns=0,
        ended_mono_ns=60 * 10**9,
        prev_manifest_hash=GENESIS_HASH,
    )
    return SignedManifest.sign(manifest, key)


@dataclass
class FakeServer:
    """Server side: receiver machine + in-memory staging + a 'committed' store (its I/O)."""

    device_key: bytes | None = PUB
    staged: dict[str, bytearray] = field(default_factory=dict)
    held: dict[str, RangeSet] = field(default_factory=dict)
    manifests: dict[str, SignedManifest] = field(default_factory=dict)
    committed: dict[str, bytes] = field(default_factory=dict)
    corrupt_next_finalize: bool = False

    def handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        msg = decode(topic, payload)
        assert isinstance(msg, FileInit | FileChunk | FileFin | FileStatusQuery)
        fid = msg.file_id
        view = ReceiverView(
            device_id=msg.device_id,
            file_id=fid,
            device_key=self.device_key,
            manifest=self.manifests.get(fid),
            held=self.held.get(fid, RangeSet()),
            recording_id=1 if fid in self.committed else None,
            recording_sha256=hashlib.sha256(self.committed[fid]).hexdigest() if fid in self.committed else "",
        )
        receiver = SegmentReceiver(view)
        out: list[tuple[str, bytes]] = []
        pending = receiver.receive(msg)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Reply):
                out.append(encode(action.ack))
            elif isinstance(action, StoreManifest):
                self.manifests[fid] = action.signed
            elif isinstance(action, StageChunk):
                pending.extend(receiver.chunk_staged(action.chunk, self._stage(fid, action.chunk)))
            elif isinstance(action, Finalize):
                pending.extend(receiver.finalized(self._finalize(fid, action.signed)))
            elif isinstance(action, DiscardStaging):
                self.staged.pop(fid, None)
                self.held.pop(fid, None)
        return out

    def _stage(self, fid: str, chunk: FileChunk) -> StageOutcome:
        buf = self.staged.setdefault(fid, bytearray())
        held = self.held.get(fid, RangeSet())
        for lo, hi in held.overlaps(chunk.offset, chunk.end):
            if buf[lo:hi] != chunk.data[lo - chunk.offset : hi - chunk.offset]:
                return StageOutcome.DIFFERENT
        if held.covers(chunk.offset, chunk.end):
            return StageOutcome.SAME
        if len(buf) < chunk.end:
            buf.extend(b"\0" * (chunk.end - len(buf)))
        buf[chunk.offset : chunk.end] = chunk.data
        self.held[fid] = held.add(chunk.offset, chunk.end)
        return StageOutcome.WRITTEN

    def _finalize(self, fid: str, signed: SignedManifest) -> Committed | FinalizeRejected:
        data = bytes(self.staged[fid][: signed.manifest.size])
        if self.corrupt_next_finalize:
            self.corrupt_next_finalize = False
            data = b"\xff" + data[1:]
        if hashlib.sha256(data).hexdigest() != signed.manifest.sha256:
            return FinalizeRejected("hash_mismatch", "staged bytes do not match the manifest")
        self.committed[fid] = data
        return Committed(recording_id=1)


@dataclass
class FakeDevice:
    """Device side: the sender machine plus the file it reads chunks from."""

    data: bytes
    signed: SignedManifest
    window: int = 4
    sender: SegmentSender = field(init=False)
    outcome: TransferFinished | TransferFailed | None = None

    def __post_init__(self) -> None:
        self.sender = SegmentSender(
            file_id=self.signed.file_id,
            size=len(self.data),
            sha256=hashlib.sha256(self.data).hexdigest(),
            chunk_size=CHUNK,
            window=self.window,
        )

    def perform(self, actions: list[object]) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        fid = self.signed.file_id
        digest = hashlib.sha256(self.data).hexdigest()
        for action in actions:
            if isinstance(action, SendInit):
                out.append(encode(FileInit(device_id=DEV, file_id=fid, signed=self.signed)))
            elif isinstance(action, SendChunk):
                part = self.data[action.offset : action.offset + action.length]
                out.append(encode(FileChunk(device_id=DEV, file_id=fid, offset=action.offset, data=part)))
            elif isinstance(action, SendFin):
                out.append(encode(FileFin(device_id=DEV, file_id=fid, size=len(self.data), sha256=digest)))
            elif isinstance(action, SendStatus):
                out.append(encode(FileStatusQuery(device_id=DEV, file_id=fid)))
            elif isinstance(action, TransferFinished | TransferFailed):
                self.outcome = action
        return out


def run_link(
    device: FakeDevice,
    server: FakeServer,
    *,
    drop: float = 0.0,
    duplicate: float = 0.0,
    shuffle: bool = False,
    seed: int = 1,
    max_rounds: int = 500,
) -> list[str]:
    """Pump messages both ways until the device reaches a terminal state; return the uplink topics."""
    rng = random.Random(seed)
    now = 0.0
    uplink = device.perform(device.sender.start(now))
    seen: list[str] = []
    for _ in range(max_rounds):
        if device.sender.done:
            break
        if shuffle:
            rng.shuffle(uplink)
        downlink: list[tuple[str, bytes]] = []
        for topic, payload in uplink:
            seen.append(topic)
            copies = 0 if rng.random() < drop else (2 if rng.random() < duplicate else 1)
            for _ in range(copies):
                downlink.extend(server.handle(topic, payload))
        uplink = []
        for topic, payload in downlink:
            if rng.random() < drop:
                continue
            ack = decode(topic, payload)
            assert isinstance(ack, TransferAck)
            uplink.extend(device.perform(device.sender.receive_ack(ack, now)))
        now += 1.0
        if not uplink:
            now += device.sender.ack_timeout_s + 1
            uplink.extend(device.perform(device.sender.tick(now)))
    return seen


def test_clean_link_sends_init_chunks_fin_in_order_and_stores_exact_bytes() -> None:
    data = random.Random(5).randbytes(CHUNK * 3 + 1000)
    device, server = FakeDevice(data, signed_for(data)), FakeServer()
    topics_seen = run_link(device, server)
    fid = device.signed.file_id
    assert [t.split(f"/{fid}/")[1].split("/")[0] for t in topics_seen] == [
        "init",
        "0",
        "262144",
        "524288",
        "786432",
        "fin",
    ]
    assert isinstance(device.outcome, TransferFinished) and device.outcome.recording_id == 1
    assert server.committed[fid] == data
    assert device.sender.chunks_sent == 4


def test_lossy_duplicating_reordering_link_still_delivers_exactly_the_bytes() -> None:
    data = random.Random(6).randbytes(CHUNK * 7 + 3)
    for seed in range(5):
        device, server = FakeDevice(data, signed_for(data)), FakeServer()
        run_link(device, server, drop=0.2, duplicate=0.3, shuffle=True, seed=seed)
        assert device.sender.state is SenderState.COMPLETE, seed
        assert server.committed[device.signed.file_id] == data


def test_resume_after_server_restart_sends_only_missing_chunks() -> None:
    data = random.Random(7).randbytes(CHUNK * 6)
    server = FakeServer()
    device = FakeDevice(data, signed_for(data), window=2)
    # First connection: init and the first window get through, then the link dies.
    for topic, payload in device.perform(device.sender.start(0.0)):
        for t, p in server.handle(topic, payload):
            ack = decode(t, p)
            assert isinstance(ack, TransferAck)
            for t2, p2 in device.perform(device.sender.receive_ack(ack, 0.0)):
                server.handle(t2, p2)  # acks of these chunks are lost with the link
    fid = device.signed.file_id
    assert server.held[fid] == RangeSet.of([(0, 2 * CHUNK)])
    # Days later, a new process on both sides: a fresh sender learns what is held via status.
    device2 = FakeDevice(data, signed_for(data), window=2)
    device2.sender.state = SenderState.SENDING  # it had started before the restart
    actions = device2.sender.resume(100.0)
    assert actions == [SendStatus()]
    (ready,) = server.handle(*device2.perform(actions)[0])
    ack = decode(*ready)
    assert isinstance(ack, TransferAck) and ack.state is AckState.READY
    assert ack.ranges == RangeSet.of([(0, 2 * CHUNK)])
    resent = device2.sender.receive_ack(ack, 100.0)
    assert resent == [SendChunk(2 * CHUNK, CHUNK), SendChunk(3 * CHUNK, CHUNK)]
    device2.sender.state = SenderState.IDLE
    run_link(device2, server)
    assert server.committed[fid] == data


def test_already_stored_segment_is_acknowledged_without_sending_bytes() -> None:
    data = b"x" * 1000
    signed = signed_for(data)
    server = FakeServer(committed={signed.file_id: data})
    device = FakeDevice(data, signed)
    seen = run_link(device, server)
    assert len(seen) == 1 and seen[0].endswith("/init")
    assert isinstance(device.outcome, TransferFinished) and device.outcome.duplicate


def test_different_bytes_at_a_held_offset_are_a_conflict_and_nothing_is_overwritten() -> None:
    data = b"a" * (CHUNK + 10)
    signed = signed_for(data)
    server = FakeServer()
    server.manifests[signed.file_id] = signed
    server.staged[signed.file_id] = bytearray(b"b" * CHUNK)
    server.held[signed.file_id] = RangeSet.of([(0, CHUNK)])
    # The server believes it holds nothing, so the device sends offset 0 with its own bytes.
    device = FakeDevice(data, signed)
    topic, payload = device.perform([SendChunk(0, CHUNK)])[0]
    (reply,) = server.handle(topic, payload)
    ack = decode(*reply)
    assert isinstance(ack, TransferAck)
    assert (ack.state, ack.code, ack.offset) == (AckState.CONFLICT, "chunk_conflict", 0)
    assert bytes(server.staged[signed.file_id]) == b"b" * CHUNK
    device.sender.state = SenderState.SENDING
    device.sender.in_flight[0] = 0.0
    outcome = device.sender.receive_ack(ack, 0.0)
    assert isinstance(outcome[0], TransferFailed) and device.sender.state is SenderState.FAILED


def test_staging_corruption_found_at_finalize_makes_the_device_resend_everything() -> None:
    data = random.Random(8).randbytes(CHUNK * 2)
    device, server = FakeDevice(data, signed_for(data)), FakeServer(corrupt_next_finalize=True)
    topics_seen = run_link(device, server)
    assert sum(t.endswith("/init") for t in topics_seen) == 1
    assert sum("/fin/" in t for t in topics_seen) == 2
    assert server.committed[device.signed.file_id] == data


def test_bad_signature_and_unknown_device_fail_the_transfer_without_storing() -> None:
    data = b"z" * 500
    forged = signed_for(data, Ed25519PrivateKey.generate())
    device, server = FakeDevice(data, forged), FakeServer()
    run_link(device, server)
    assert isinstance(device.outcome, TransferFailed) and device.outcome.code == "bad_signature"
    assert not server.committed and not server.staged
    device, server = FakeDevice(data, signed_for(data)), FakeServer(device_key=None)
    run_link(device, server)
    assert isinstance(device.outcome, TransferFailed) and device.outcome.code == "unknown_device"


def test_chunk_past_the_declared_size_is_rejected_and_retried_then_failed() -> None:
    data = b"q" * 100
    signed = signed_for(data)
    server = FakeServer()
    server.handle(*encode(FileInit(device_id=DEV, file_id=signed.file_id, signed=signed)))
    (reply,) = server.handle(
        *encode(FileChunk(device_id=DEV, file_id=signed.file_id, offset=90, data=b"q" * 20))
    )
    ack = decode(*reply)
    assert isinstance(ack, TransferAck) and (ack.state, ack.code) == (AckState.REJECTED, "out_of_bounds")


def test_fin_before_all_chunks_reports_what_is_held() -> None:
    data = random.Random(9).randbytes(CHUNK * 2)
    signed = signed_for(data)
    server = FakeServer()
    fid = signed.file_id
    server.handle(*encode(FileInit(device_id=DEV, file_id=fid, signed=signed)))
    server.handle(*encode(FileChunk(device_id=DEV, file_id=fid, offset=CHUNK, data=data[CHUNK:])))
    digest = hashlib.sha256(data).hexdigest()
    (reply,) = server.handle(*encode(FileFin(device_id=DEV, file_id=fid, size=len(data), sha256=digest)))
    assert reply[1] == b'{"ranges":[[262144,524288]],"state":"incomplete"}'
    assert fid not in server.committed
