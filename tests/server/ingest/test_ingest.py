"""IngestService.handle(): full transfers, duplicates, conflicts, refusals and telemetry, without a broker."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import func, select

from protocol import topics
from protocol.manifest import GENESIS_HASH, SignedManifest
from protocol.messages import (
    AckState,
    DeviceHealth,
    FileChunk,
    FileFin,
    FileInit,
    FileStatusQuery,
    Presence,
    PresenceState,
    TransferAck,
    decode,
    encode,
)
from protocol.ranges import RangeSet
from server.domain.evidence.models import IngestRejection, Recording
from server.domain.fleet.devices import register_device
from server.domain.fleet.telemetry_models import DeviceHealthSample, DevicePresence
from server.infra.db import session_scope
from server.infra.staging import DATA_NAME, Staging
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory

CHUNK = 256 * 1024


@pytest.fixture
def service(app: Flask) -> IngestService:
    """An ingest service over the test app."""
    return IngestService.from_app(app)


@pytest.fixture
def device(app: Flask, segments: SegmentFactory) -> SegmentFactory:
    """The segment factory's device, registered."""
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    return segments


def acks(out: list[tuple[str, bytes]]) -> list[TransferAck]:
    """Decode outgoing acks."""
    decoded = [decode(topic, payload) for topic, payload in out]
    assert all(isinstance(ack, TransferAck) for ack in decoded)
    return decoded  # type: ignore[return-value]


def one(service: IngestService, topic: str, payload: bytes) -> TransferAck:
    """Handle a message that must be answered by exactly one ack."""
    replies = acks(service.handle(topic, payload))
    assert len(replies) == 1, replies
    return replies[0]


def init(signed: SignedManifest) -> tuple[str, bytes]:
    """Topic and payload of an init."""
    return encode(FileInit(device_id=signed.manifest.device_id, file_id=signed.file_id, signed=signed))


def chunk(signed: SignedManifest, data: bytes, offset: int, length: int = CHUNK) -> tuple[str, bytes]:
    """Topic and payload of one chunk of ``data``."""
    part = data[offset : offset + length]
    return encode(
        FileChunk(device_id=signed.manifest.device_id, file_id=signed.file_id, offset=offset, data=part)
    )


def fin(signed: SignedManifest) -> tuple[str, bytes]:
    """Topic and payload of fin."""
    m = signed.manifest
    return encode(FileFin(device_id=m.device_id, file_id=signed.file_id, size=m.size, sha256=m.sha256))


def status(signed: SignedManifest) -> tuple[str, bytes]:
    """Topic and payload of a status query."""
    return encode(FileStatusQuery(device_id=signed.manifest.device_id, file_id=signed.file_id))


def upload(service: IngestService, signed: SignedManifest, data: bytes) -> TransferAck:
    """Init, every chunk in order, fin; return fin's ack."""
    assert one(service, *init(signed)).state is AckState.READY
    for offset in range(0, len(data), CHUNK):
        assert one(service, *chunk(signed, data, offset)).state in (AckState.STORED, AckState.DUPLICATE)
    return one(service, *fin(signed))


def count(app: Flask, model: type, **where: object) -> int:
    """Rows of a model matching equality filters."""
    with session_scope(app) as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(session.scalar(query) or 0)


def rejection_codes(app: Flask) -> list[str]:
    """Codes in the security log, oldest first."""
    with session_scope(app) as session:
        return list(session.scalars(select(IngestRejection.code).order_by(IngestRejection.id)))


def test_full_transfer_shuffled_with_duplicates(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """1.3 MiB in 256 KiB chunks, shuffled, some twice: one recording, same bytes, complete only last."""
    rng = random.Random(7)
    data = rng.randbytes(1_300_000)
    signed, _ = device.make(data)
    ready = one(service, *init(signed))
    assert (ready.state, ready.ranges) == (AckState.READY, RangeSet())
    offsets = list(range(0, len(data), CHUNK))
    sends = offsets + rng.sample(offsets, 3)
    rng.shuffle(sends)
    states = []
    for offset in sends:
        ack = one(service, *chunk(signed, data, offset))
        assert ack.offset == offset
        states.append(ack.state)
        assert count(app, Recording) == 0  # nothing is committed before fin
    assert states.count(AckState.STORED) == len(offsets)
    assert states.count(AckState.DUPLICATE) == 3
    done = one(service, *fin(signed))
    assert done.state is AckState.COMPLETE and done.code == ""
    with session_scope(app) as session:
        recording = session.scalars(select(Recording)).one()
        assert recording.id == done.recording_id
        assert recording.file_id == signed.file_id
    stored = b"".join(service.store.open_range(recording.object_key, 0, len(data) - 1))
    assert stored == data
    assert not service.staging.exists(device.device_id, signed.file_id)
    stats = service.stats()
    assert stats["segments_committed"] == 1
    assert stats["bytes_staged"] == len(data)
    assert stats["chunks_duplicate"] == 3
    assert stats["messages"]["file_chunk"] == len(sends)


def test_no_ack_when_commit_fails_then_retry_succeeds(
    app: Flask, service: IngestService, device: SegmentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the object store fails, fin gets no ack at all (never a premature complete); a later fin commits."""
    data = b"evidence" * 1000
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, data, 0))

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("object store unavailable")

    monkeypatch.setattr(service.store, "put_file", broken)
    assert service.handle(*fin(signed)) == []
    assert count(app, Recording) == 0
    assert service.stats()["errors"] == 1
    monkeypatch.undo()
    assert one(service, *fin(signed)).state is AckState.COMPLETE
    assert count(app, Recording) == 1


def test_replays_after_commit_are_duplicates(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """Every message of a committed transfer is answered as already stored; nothing new is stored."""
    data = b"z" * 300_000
    signed, _ = device.make(data)
    first = upload(service, signed, data)
    assert first.state is AckState.COMPLETE
    assert one(service, *chunk(signed, data, CHUNK)).state is AckState.DUPLICATE
    for message in (init(signed), fin(signed), status(signed)):
        ack = one(service, *message)
        assert (ack.state, ack.code, ack.recording_id) == (AckState.COMPLETE, "duplicate", first.recording_id)
    assert count(app, Recording) == 1
    assert not service.staging.exists(device.device_id, signed.file_id)


def test_different_bytes_at_held_offset_is_conflict(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """Different bytes for a held offset: conflict, staged bytes untouched, logged."""
    data = b"a" * 1000
    signed, _ = device.make(data)
    one(service, *init(signed))
    assert one(service, *chunk(signed, data, 0, 500)).state is AckState.STORED
    forged = encode(FileChunk(device_id=device.device_id, file_id=signed.file_id, offset=0, data=b"b" * 500))
    ack = one(service, *forged)
    assert (ack.state, ack.code, ack.offset) == (AckState.CONFLICT, "chunk_conflict", 0)
    assert (service.staging.path_of(device.device_id, signed.file_id) / DATA_NAME).read_bytes() == b"a" * 500
    assert rejection_codes(app) == ["chunk_conflict"]
    assert service.stats()["conflicts"] == 1


def test_wrong_chunk_hash_is_rejected_with_offset(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """A chunk corrupted in transit, out of order, is refused on arrival with its offset (resend it).

    Out of order its bytes are not covered by the running whole-file hash, so its own SHA-256 is checked
    at once (docs/protocol.md, "Chunk hashes"); an in-order one is caught at fin, see
    test_ingest_chunk_claims.py.
    """
    data = b"q" * 1000
    signed, _ = device.make(data)
    one(service, *init(signed))
    topic = topics.file_chunk(device.device_id, signed.file_id, 500, hashlib.sha256(b"other").hexdigest())
    ack = one(service, topic, data[500:])
    assert (ack.state, ack.code, ack.offset, ack.length) == (
        AckState.REJECTED,
        "chunk_hash_mismatch",
        500,
        500,
    )
    assert service.staging.view_parts(device.device_id, signed.file_id)[1] == RangeSet()
    assert service.stats()["rejections"]["chunk_hash_mismatch"] == 1


def test_bad_signature_is_rejected(app: Flask, service: IngestService, device: SegmentFactory) -> None:
    """A manifest signed by another key is refused and logged; nothing is staged."""
    signed, _ = device.make(b"x" * 100, key=Ed25519PrivateKey.generate())
    ack = one(service, *init(signed))
    assert (ack.state, ack.code) == (AckState.REJECTED, "bad_signature")
    assert not service.staging.exists(device.device_id, signed.file_id)
    assert rejection_codes(app) == ["bad_signature"]


def test_unknown_device_is_rejected(app: Flask, service: IngestService, segments: SegmentFactory) -> None:
    """An unregistered device's init and chunks are refused and logged; nothing is staged."""
    data = b"u" * 100
    signed, _ = segments.make(data)
    assert (one(service, *init(signed)).code) == "unknown_device"
    ack = one(service, *chunk(signed, data, 0))
    assert (ack.state, ack.code, ack.offset) == (AckState.REJECTED, "unknown_device", 0)
    assert not service.staging.exists(segments.device_id, signed.file_id)
    assert rejection_codes(app) == ["unknown_device", "unknown_device"]
    assert count(app, Recording) == 0


FILE_ID = "0" * 32
MALFORMED = [
    pytest.param(f"zfjl/v1/dev-001/up/file/{FILE_ID}/init", b"not json", True, id="non-json-init"),
    pytest.param(f"zfjl/v1/dev-001/up/file/{FILE_ID}/init", b"{" * 2_000_000, True, id="huge-init"),
    pytest.param(f"zfjl/v1/dev-001/up/file/{FILE_ID}/fin/10/{'a' * 64}", b"x", True, id="fin-with-payload"),
    pytest.param(
        f"zfjl/v1/dev-001/up/file/{FILE_ID}/0/{hashlib.sha256(b'').hexdigest()}", b"", True, id="empty"
    ),
    pytest.param(f"zfjl/v2/dev-001/up/file/{FILE_ID}/init", b"{}", False, id="wrong-version"),
    pytest.param("zfjl/v1/../up/presence", b"{}", False, id="dotdot"),
    pytest.param("zfjl/v1/+/up/health", b"{}", False, id="plus"),
    pytest.param("zfjl/v1/dev-001/up/#", b"{}", False, id="hash"),
    pytest.param(f"zfjl/v1/dev-001/up/file/{FILE_ID}/-1/{'a' * 64}", b"x", False, id="negative-offset"),
    pytest.param("zfjl/v1/dev-001/up/file//init", b"{}", False, id="empty-file-id"),
    pytest.param("", b"", False, id="empty-topic"),
    pytest.param("zfjl/v1/dev-001/up/presence", b"\xff\xfe", False, id="presence-not-utf8"),
    pytest.param("zfjl/v1/dev-001/up/health", b'{"backlog_bytes": -1}', False, id="bad-health"),
    pytest.param("zfjl/v1/dev-001/down/ack/" + FILE_ID, b'{"state":"complete"}', False, id="downlink"),
]


@pytest.mark.parametrize(("topic", "payload", "answered"), MALFORMED)
def test_malformed_messages_are_counted_not_stored(
    app: Flask, service: IngestService, device: SegmentFactory, topic: str, payload: bytes, answered: bool
) -> None:
    """Garbage never raises and stores nothing; a transfer is told it was refused, the rest is dropped."""
    out = service.handle(topic, payload)
    if answered:
        (ack,) = acks(out)
        assert ack.state is AckState.REJECTED and ack.code in ("bad_manifest", "bad_message")
    else:
        assert out == []
    stats = service.stats()
    assert sum(stats["rejections"].values()) + sum(stats["dropped"].values()) >= 1
    assert stats["errors"] == 0
    assert count(app, Recording) == 0
    assert count(app, DeviceHealthSample) == 0
    assert list(service.staging.transfers()) == []


def test_fin_before_all_chunks_is_incomplete(service: IngestService, device: SegmentFactory) -> None:
    """fin with gaps answers incomplete with the held ranges."""
    data = b"p" * (3 * CHUNK)
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, data, CHUNK))
    ack = one(service, *fin(signed))
    assert (ack.state, ack.ranges) == (AckState.INCOMPLETE, RangeSet(((CHUNK, 2 * CHUNK),)))


def test_status_after_worker_restart(app: Flask, service: IngestService, device: SegmentFactory) -> None:
    """A new service on the same staging answers status with what the old one staged, and finishes it."""
    data = b"r" * (2 * CHUNK + 10)
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, data, 0))
    one(service, *chunk(signed, data, 2 * CHUNK))
    restarted = IngestService(service.settings, app, service.store, Staging(service.settings.staging_dir))
    ack = one(restarted, *status(signed))
    assert (ack.state, ack.ranges) == (AckState.READY, RangeSet(((0, CHUNK), (2 * CHUNK, 2 * CHUNK + 10))))
    one(restarted, *chunk(signed, data, CHUNK))
    assert one(restarted, *fin(signed)).state is AckState.COMPLETE


def test_status_of_unknown_transfer(service: IngestService, device: SegmentFactory) -> None:
    """A transfer never seen is unknown."""
    signed, _ = device.make(b"n" * 10)
    assert one(service, *status(signed)).state is AckState.UNKNOWN


def test_hash_mismatch_at_finalize_discards_bytes(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """Staged bytes corrupted on disk: incomplete without the damaged chunk, manifest kept; a resend commits.

    The whole-file hash fails at finalize; the one pass over the chunks' own hashes finds the chunk whose
    bytes changed, so only it is dropped and resent.
    """
    data = random.Random(3).randbytes(CHUNK + 1000)
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, data, 0))
    one(service, *chunk(signed, data, CHUNK))
    part = service.staging.path_of(device.device_id, signed.file_id) / DATA_NAME
    corrupt = bytearray(part.read_bytes())
    corrupt[100] ^= 0xFF
    part.write_bytes(bytes(corrupt))
    ack = one(service, *fin(signed))
    assert (ack.state, ack.ranges, ack.code) == (
        AckState.INCOMPLETE,
        RangeSet.of([(CHUNK, CHUNK + 1000)]),
        "chunk_hash_mismatch",
    )
    assert "offsets 0)" in ack.message
    assert service.staging.view_parts(device.device_id, signed.file_id) == (
        signed,
        RangeSet.of([(CHUNK, CHUNK + 1000)]),
    )
    assert count(app, Recording) == 0
    assert "hash_mismatch" in rejection_codes(app)
    one(service, *chunk(signed, data, 0))
    assert one(service, *fin(signed)).state is AckState.COMPLETE


def test_hash_mismatch_with_every_chunk_true_to_its_hash_discards_bytes(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """Chunks that match their own hashes but not the signed file: incomplete, no ranges, manifest kept."""
    data = random.Random(5).randbytes(CHUNK + 1000)
    other = random.Random(6).randbytes(CHUNK + 1000)
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, other, 0))
    one(service, *chunk(signed, other, CHUNK))
    ack = one(service, *fin(signed))
    assert (ack.state, ack.ranges, ack.code) == (AckState.INCOMPLETE, RangeSet(), "hash_mismatch")
    assert service.staging.view_parts(device.device_id, signed.file_id) == (signed, RangeSet())
    assert count(app, Recording) == 0
    one(service, *chunk(signed, data, 0))
    one(service, *chunk(signed, data, CHUNK))
    assert one(service, *fin(signed)).state is AckState.COMPLETE


def test_chain_break_is_logged_but_segment_stored(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """A segment whose prev hash does not match the stored predecessor is stored and raises an alert."""
    first_data, second_data = b"1" * 100, b"2" * 100
    first, _ = device.make(first_data)
    assert upload(service, first, first_data).state is AckState.COMPLETE
    second, _ = device.make(second_data, prev_hash=GENESIS_HASH)
    assert upload(service, second, second_data).state is AckState.COMPLETE
    assert count(app, Recording) == 2
    assert rejection_codes(app) == ["chain_break"]
    assert service.stats()["chain_breaks"] == 1
    # A correct link raises nothing.
    third, _ = device.make(b"3" * 100)
    assert upload(service, third, b"3" * 100).state is AckState.COMPLETE
    assert rejection_codes(app) == ["chain_break"]


def test_later_segment_committed_first_still_checks_link(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """Out-of-order commits check the link against the successor too; missing neighbours are no alert."""
    first, _ = device.make(b"1" * 100)
    second, _ = device.make(b"2" * 100)
    assert upload(service, second, b"2" * 100).state is AckState.COMPLETE
    assert rejection_codes(app) == []
    assert upload(service, first, b"1" * 100).state is AckState.COMPLETE
    assert rejection_codes(app) == []


def test_segment_conflict(app: Flask, service: IngestService, device: SegmentFactory) -> None:
    """Another manifest for a stored sequence is a conflict."""
    original, _ = device.make(b"o" * 100)
    assert upload(service, original, b"o" * 100).state is AckState.COMPLETE
    other, _ = device.make(b"x" * 100, sequence=0)
    ack = upload(service, other, b"x" * 100)
    assert (ack.state, ack.code) == (AckState.CONFLICT, "segment_conflict")
    assert count(app, Recording) == 1
    assert service.stats()["conflicts"] == 1


def test_presence_and_health(app: Flask, service: IngestService, device: SegmentFactory) -> None:
    """Known devices' presence (latest wins) and health are stored; unknown devices' are dropped."""
    online = Presence(
        device_id=device.device_id, state=PresenceState.ONLINE, at="2026-01-02T03:04:05.000000Z"
    )
    offline_old = Presence(device_id=device.device_id, state=PresenceState.OFFLINE, at="2026-01-01T00:00:00Z")
    assert service.handle(*encode(online)) == []
    service.handle(*encode(offline_old))  # older: must not win
    with session_scope(app) as session:
        row = session.get(DevicePresence, device.device_id)
        assert row is not None and row.state == "online"
    health = DeviceHealth(
        device_id=device.device_id,
        at="2026-01-02T03:04:05.000000Z",
        backlog_bytes=10,
        backlog_segments=1,
        oldest_pending_age_s=3.5,
        battery_pct=80,
        extra={"temp_c": 41},
    )
    service.handle(*encode(health))
    stranger = DeviceHealth(
        device_id="dev-999", at="", backlog_bytes=0, backlog_segments=0, oldest_pending_age_s=None
    )
    service.handle(*encode(stranger))
    service.handle(*encode(Presence(device_id="dev-999", state=PresenceState.ONLINE)))
    with session_scope(app) as session:
        (sample,) = session.scalars(select(DeviceHealthSample)).all()
        assert (sample.backlog_bytes, sample.battery_pct, sample.extra) == (10, 80, {"temp_c": 41})
    assert count(app, DevicePresence) == 1
    dropped = service.stats()["dropped"]
    assert dropped["unknown_device_health"] == 1 and dropped["unknown_device_presence"] == 1


def test_repeated_identical_presence_is_not_stored_again(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """A presence repeated as a heartbeat costs no commit; a change of state is stored at once."""
    first = Presence(device_id=device.device_id, state=PresenceState.ONLINE, at="2026-01-02T03:04:05.000000Z")
    again = Presence(device_id=device.device_id, state=PresenceState.ONLINE, at="2026-01-02T03:04:15.000000Z")
    service.handle(*encode(first))
    service.handle(*encode(again))
    with session_scope(app) as session:
        row = session.get(DevicePresence, device.device_id)
        assert row is not None and row.at.second == 5  # the repeat was not written
    gone = Presence(device_id=device.device_id, state=PresenceState.OFFLINE, at="2026-01-02T03:04:20.000000Z")
    service.handle(*encode(gone))
    with session_scope(app) as session:
        row = session.get(DevicePresence, device.device_id)
        assert row is not None and row.state == "offline"


def test_inactive_device_is_refused_up_front(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """A lost device's init is refused before any byte is staged."""
    from server.domain.fleet.models import Device

    with session_scope(app) as session:
        row = session.get(Device, device.device_id)
        assert row is not None
        row.status = "lost"
    signed, _ = device.make(b"l" * 10)
    ack = one(service, *init(signed))
    assert (ack.state, ack.code) == (AckState.REJECTED, "device_inactive")
    assert not service.staging.exists(device.device_id, signed.file_id)


def test_abort_discards_staging(service: IngestService, device: SegmentFactory, tmp_path: Path) -> None:
    """abort drops what was staged for an uncommitted transfer."""
    data = b"a" * 100
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, data, 0))
    assert service.handle(*encode_abort(signed)) == []
    assert not service.staging.exists(device.device_id, signed.file_id)


def encode_abort(signed: SignedManifest) -> tuple[str, bytes]:
    """Topic and payload of abort."""
    return topics.file_abort(signed.manifest.device_id, signed.file_id), b""
