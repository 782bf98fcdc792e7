"""A chunk's own SHA-256 is checked only where the running whole-file hash does not cover it (JL-6).

In order, a chunk's bytes are hashed once, into the running SHA-256 of the file; its topic's hash is a
claim checked only if the file turns out wrong. Out of order or resent, the claim is checked on arrival.
Either way a damaged chunk is refused (at once, or at fin with its offset) before the device is told
``complete``, so it never frees a segment the server does not hold intact.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from flask import Flask

from protocol import topics
from protocol.errors import ChunkHashMismatch
from protocol.messages import AckState, FileChunk, decode
from protocol.ranges import RangeSet
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.infra.db import session_scope
from server.infra.staging import DATA_NAME
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory
from tests.server.ingest.test_ingest import CHUNK, chunk, count, fin, init, one
from tests.server.ingest.test_ingest_hash_once import stored_sha256


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


@pytest.fixture
def chunk_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Offsets of the chunks whose own SHA-256 was computed (the pass the running hash saves)."""
    seen: list[int] = []
    original = FileChunk.hash_matches

    def counting(self: FileChunk) -> bool:
        seen.append(self.offset)
        return original(self)

    monkeypatch.setattr(FileChunk, "hash_matches", counting)
    return seen


def damaged(signed_device: str, file_id: str, data: bytes, offset: int) -> tuple[str, bytes]:
    """The chunk at ``offset`` with one byte flipped on the way, its topic naming the good bytes' hash."""
    part = bytearray(data[offset : offset + CHUNK])
    part[7] ^= 0x01
    good = hashlib.sha256(data[offset : offset + CHUNK]).hexdigest()
    return topics.file_chunk(signed_device, file_id, offset, good), bytes(part)


def test_jl6_in_order_chunks_are_hashed_once_into_the_file_hash(
    app: Flask, service: IngestService, device: SegmentFactory, chunk_hashes: list[int]
) -> None:
    """In order: no chunk hashed on its own, the running hash commits the right bytes."""
    data = random.Random(11).randbytes(4 * CHUNK + 9)
    signed, _ = device.make(data)
    one(service, *init(signed))
    for offset in range(0, len(data), CHUNK):
        assert one(service, *chunk(signed, data, offset)).state is AckState.STORED
    ack = one(service, *fin(signed))
    assert (ack.state, ack.sha256) == (AckState.COMPLETE, hashlib.sha256(data).hexdigest())
    assert chunk_hashes == []
    stats = service.stats()
    assert (stats["chunks_checked_on_arrival"], stats["finalize_hashed_on_arrival"]) == (0, 1)
    assert stored_sha256(app) == [hashlib.sha256(data).hexdigest()]


def test_jl6_out_of_order_and_resent_chunks_are_checked_and_give_the_right_file_hash(
    app: Flask, service: IngestService, device: SegmentFactory, chunk_hashes: list[int]
) -> None:
    """Shuffled, some twice: out-of-order ones checked on arrival, resends cost nothing, one commit."""
    data = random.Random(12).randbytes(6 * CHUNK + 100)
    signed, _ = device.make(data)
    one(service, *init(signed))
    order = [2 * CHUNK, 0, CHUNK, 5 * CHUNK, 2 * CHUNK, 3 * CHUNK, 6 * CHUNK, 4 * CHUNK, 0]
    states = [one(service, *chunk(signed, data, offset)).state for offset in order]
    assert states.count(AckState.DUPLICATE) == 2 and states.count(AckState.STORED) == 7
    # 0, CHUNK, 3·CHUNK and 4·CHUNK extend the hashed prefix; the others arrived ahead of it.
    assert sorted(chunk_hashes) == [2 * CHUNK, 5 * CHUNK, 6 * CHUNK]
    ack = one(service, *fin(signed))
    assert (ack.state, ack.sha256) == (AckState.COMPLETE, hashlib.sha256(data).hexdigest())
    assert service.stats()["finalize_hashed_on_arrival"] == 1
    assert count(app, Recording) == 1
    assert stored_sha256(app) == [hashlib.sha256(data).hexdigest()]


def test_jl6_wrong_chunk_in_order_is_refused_at_fin_with_its_offset_before_anything_is_freed(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """Damaged on the way, in order: staged as a claim; fin answers incomplete without it, never complete."""
    data = random.Random(13).randbytes(3 * CHUNK)
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, data, 0))
    assert one(service, *damaged(device.device_id, signed.file_id, data, CHUNK)).state is AckState.STORED
    one(service, *chunk(signed, data, 2 * CHUNK))
    ack = one(service, *fin(signed))
    assert (ack.state, ack.code) == (AckState.INCOMPLETE, "chunk_hash_mismatch")
    assert ack.ranges == RangeSet.of([(0, CHUNK), (2 * CHUNK, 3 * CHUNK)])
    assert f"offsets {CHUNK})" in ack.message
    assert count(app, Recording) == 0
    # The device resends exactly the missing chunk; the file is then hashed at finalize and stored.
    assert one(service, *chunk(signed, data, CHUNK)).state is AckState.STORED
    done = one(service, *fin(signed))
    assert (done.state, done.sha256) == (AckState.COMPLETE, hashlib.sha256(data).hexdigest())
    assert stored_sha256(app) == [hashlib.sha256(data).hexdigest()]


def test_jl6_wrong_chunk_out_of_order_or_resent_is_refused_on_arrival_and_never_a_conflict(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """Ahead of the prefix, or over held bytes: refused at once with its offset, staged bytes untouched."""
    data = random.Random(14).randbytes(3 * CHUNK)
    signed, _ = device.make(data)
    one(service, *init(signed))
    ahead = one(service, *damaged(device.device_id, signed.file_id, data, 2 * CHUNK))
    assert (ahead.state, ahead.code, ahead.offset, ahead.length) == (
        AckState.REJECTED,
        "chunk_hash_mismatch",
        2 * CHUNK,
        CHUNK,
    )
    one(service, *chunk(signed, data, 0))
    resent = one(service, *damaged(device.device_id, signed.file_id, data, 0))
    assert (resent.state, resent.code, resent.offset) == (AckState.REJECTED, "chunk_hash_mismatch", 0)
    part = service.staging.path_of(device.device_id, signed.file_id) / DATA_NAME
    assert part.read_bytes() == data[:CHUNK]
    assert service.staging.view_parts(device.device_id, signed.file_id)[1] == RangeSet.of([(0, CHUNK)])
    assert service.stats()["conflicts"] == 0


def test_jl6_the_server_decodes_chunks_without_hashing_them(device: SegmentFactory) -> None:
    """decode(check_chunk_hash=False) keeps the topic's hash as a claim; the default still refuses."""
    topic = topics.file_chunk(device.device_id, "0" * 32, 0, hashlib.sha256(b"other").hexdigest())
    msg = decode(topic, b"bytes", check_chunk_hash=False)
    assert isinstance(msg, FileChunk) and not msg.hash_checked and not msg.hash_matches()
    with pytest.raises(ChunkHashMismatch, match="offset 0"):
        decode(topic, b"bytes")
