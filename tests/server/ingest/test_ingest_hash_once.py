"""Ingest hashes each byte once as it arrives, and still stores only the signed bytes (JL-6)."""

from __future__ import annotations

import hashlib
import random

import pytest
from flask import Flask
from sqlalchemy import select

import server.domain.evidence.commit as commit_module
from protocol.messages import AckState
from protocol.ranges import RangeSet
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.infra.db import session_scope
from server.infra.staging import DATA_NAME, Staging
from server.infra.storage import STORE_KEY
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory
from tests.server.ingest.test_ingest import CHUNK, chunk, count, fin, init, one, upload


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
def file_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Files commit_segment hashes in full (the second pass that the running hash saves)."""
    seen: list[str] = []
    original = commit_module.size_and_sha256_file

    def counting(path: object) -> tuple[int, str]:
        seen.append(str(path))
        return original(path)  # type: ignore[arg-type]

    monkeypatch.setattr(commit_module, "size_and_sha256_file", counting)
    return seen


def stored_sha256(app: Flask) -> list[str]:
    """sha256 of every stored recording, and of the bytes in the object store under it."""
    with session_scope(app) as session:
        rows = list(session.scalars(select(Recording)))
        keys = [(row.sha256, row.object_key) for row in rows]
    store = app.extensions[STORE_KEY]
    found = []
    for _, key in keys:
        digest = hashlib.sha256()
        for block in store.open_range(key, 0, store.size(key) - 1):
            digest.update(block)
        found.append(digest.hexdigest())
    return found


def test_in_order_upload_is_committed_without_hashing_the_staged_file(
    app: Flask, service: IngestService, device: SegmentFactory, file_hashes: list[str]
) -> None:
    """A whole upload in order: complete, the right bytes stored, and the staged file not hashed again."""
    data = random.Random(1).randbytes(3 * CHUNK + 77)
    signed, _ = device.make(data)
    ack = upload(service, signed, data)
    assert (ack.state, ack.sha256) == (AckState.COMPLETE, hashlib.sha256(data).hexdigest())
    assert file_hashes == []
    assert service.stats()["finalize_hashed_on_arrival"] == 1
    assert stored_sha256(app) == [hashlib.sha256(data).hexdigest()]


def test_out_of_order_and_resent_chunks_still_commit_from_the_running_hash(
    app: Flask, service: IngestService, device: SegmentFactory, file_hashes: list[str]
) -> None:
    """Chunks reversed and two sent twice: one recording, the signed bytes, no second hash of the file."""
    data = random.Random(2).randbytes(5 * CHUNK + 3)
    signed, _ = device.make(data)
    one(service, *init(signed))
    offsets = list(range(0, len(data), CHUNK))
    for offset in [*reversed(offsets), offsets[0], offsets[3]]:
        assert one(service, *chunk(signed, data, offset)).state in (AckState.STORED, AckState.DUPLICATE)
    assert one(service, *fin(signed)).state is AckState.COMPLETE
    assert file_hashes == []
    assert count(app, Recording) == 1
    assert stored_sha256(app) == [hashlib.sha256(data).hexdigest()]


def test_restart_mid_transfer_hashes_the_staged_file_at_finalize(
    app: Flask, service: IngestService, device: SegmentFactory, file_hashes: list[str]
) -> None:
    """A restarted server has no hash of what was staged before: it hashes the file once and commits."""
    data = random.Random(3).randbytes(4 * CHUNK)
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, data, 0))
    one(service, *chunk(signed, data, CHUNK))
    restarted = IngestService(service.settings, app, service.store, Staging(service.settings.staging_dir))
    one(restarted, *chunk(signed, data, 2 * CHUNK))
    one(restarted, *chunk(signed, data, 3 * CHUNK))
    assert one(restarted, *fin(signed)).state is AckState.COMPLETE
    assert len(file_hashes) == 1
    assert restarted.stats()["finalize_rehashed"] == 1
    assert stored_sha256(app) == [hashlib.sha256(data).hexdigest()]


def test_a_byte_changed_in_staging_after_it_was_hashed_is_still_refused(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """The running hash saw good bytes, the disk now holds a wrong one: that chunk resent, nothing stored."""
    data = random.Random(4).randbytes(2 * CHUNK)
    signed, _ = device.make(data)
    one(service, *init(signed))
    one(service, *chunk(signed, data, 0))
    one(service, *chunk(signed, data, CHUNK))
    part = service.staging.path_of(device.device_id, signed.file_id) / DATA_NAME
    with part.open("r+b") as fh:  # in place, same size: only the content tells
        fh.seek(CHUNK + 5)
        fh.write(bytes([data[CHUNK + 5] ^ 0x80]))
    ack = one(service, *fin(signed))
    assert (ack.state, ack.code, ack.ranges) == (
        AckState.INCOMPLETE,
        "chunk_hash_mismatch",
        RangeSet.of([(0, CHUNK)]),
    )
    assert count(app, Recording) == 0
