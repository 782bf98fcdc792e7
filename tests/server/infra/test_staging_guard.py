"""Staging only behind an accepted manifest, per-device quota, abandoned transfers, flood-proof security log.

Everything goes through the real :class:`~server.ingest.service.IngestService` and
:class:`~server.infra.staging.Staging`
(JL-6, JL-19: nothing recorded is silently dropped, and nobody fills the server's disk through ingest).
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from protocol.manifest import SignedManifest
from protocol.messages import AckState, FileChunk, encode
from protocol.ranges import RangeSet
from server.domain.evidence.models import IngestRejection, Recording
from server.domain.fleet.devices import register_device
from server.infra.config import load_settings
from server.infra.db import session_scope
from server.infra.staging import DATA_NAME, MANIFEST_NAME, TRANSFER_CHARGE, Staging, StagingBusy
from server.ingest.rejections import REJECTION_ROWS_PER_DEVICE_MINUTE
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory
from tests.server.ingest.test_ingest import CHUNK, acks, chunk, count, fin, init, one, status, upload


class FakeClock:
    """A monotonic clock the test moves by hand (the rejection windows and device cache use it)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """The service's clock."""
    return FakeClock()


@pytest.fixture
def service(app: Flask, clock: FakeClock) -> IngestService:
    """An ingest service over the test app, on a hand-moved clock."""
    base = IngestService.from_app(app)
    return IngestService(base.settings, app, base.store, base.staging, clock=clock)


@pytest.fixture
def device(app: Flask, segments: SegmentFactory) -> SegmentFactory:
    """The segment factory's device, registered."""
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    return segments


def rows(app: Flask, **where: object) -> list[IngestRejection]:
    """Security-log rows matching equality filters, oldest first."""
    with session_scope(app) as session:
        query = select(IngestRejection).order_by(IngestRejection.id)
        for column, value in where.items():
            query = query.where(getattr(IngestRejection, column) == value)
        found = list(session.scalars(query))
        session.expunge_all()
    return found


def bad_hash_chunk(device_id: str, file_id: str, offset: int = 0) -> tuple[str, bytes]:
    """A malformed chunk (no bytes, a hash that is not theirs): refused as ``bad_message`` when decoded.

    (A chunk's hash is checked only when it is staged, docs/protocol.md "Chunk hashes", so the cheap
    refusal a flood is made of is a malformed message.)
    """
    topic, _ = encode(FileChunk(device_id=device_id, file_id=file_id, offset=offset, data=b"z" * 10))
    return topic.rsplit("/", 1)[0] + "/" + "0" * 64, b""


def staged_bytes(root: Path) -> int:
    """Bytes of every file under the staging root (what a flood costs the disk)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# -- finding 5: the security log under a flood ----------------------------------------------------


def test_bad_signature_after_a_flood_still_leaves_a_rejection_row(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """≥ 30 refused messages in a minute, then a forged manifest: the forgery is in the security log."""
    for n in range(REJECTION_ROWS_PER_DEVICE_MINUTE + 10):
        service.handle(*bad_hash_chunk(device.device_id, f"{n:032x}"))
    forged, _ = device.make(b"f" * 100, key=Ed25519PrivateKey.generate())
    ack = one(service, *init(forged))
    assert (ack.state, ack.code) == (AckState.REJECTED, "bad_signature")
    (row,) = rows(app, code="bad_signature")
    assert row.device_id == device.device_id and row.file_id == forged.file_id
    assert row.manifest_text == forged.manifest_text  # the forged manifest itself is kept as evidence


def test_flood_is_bounded_and_every_refusal_is_counted(
    app: Flask, service: IngestService, device: SegmentFactory, clock: FakeClock
) -> None:
    """5,000 refusals in a minute write a bounded number of rows whose counts add up to 5,000."""
    flood = 5_000
    for n in range(flood):
        service.handle(*bad_hash_chunk(device.device_id, f"{n:032x}"))
    during = rows(app, code="bad_message")
    assert len(during) <= REJECTION_ROWS_PER_DEVICE_MINUTE + 1
    clock.now += 61  # the window closes: what was not written one by one is summarised
    service.flush_rejections()
    after = rows(app, code="bad_message")
    assert len(after) <= REJECTION_ROWS_PER_DEVICE_MINUTE + 2
    assert sum(r.occurrences for r in after) == flood
    (summary,) = [r for r in after if r.occurrences > 1]
    assert summary.device_id == device.device_id and "flood" in summary.message
    service.flush_rejections()  # nothing twice
    assert sum(r.occurrences for r in rows(app, code="bad_message")) == flood


def test_flood_summary_survives_a_database_outage(
    app: Flask,
    service: IngestService,
    device: SegmentFactory,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A summary the database refuses is kept and written by the next flush, not lost."""
    import server.ingest.service as ingest_module

    for n in range(REJECTION_ROWS_PER_DEVICE_MINUTE + 5):
        service.handle(*bad_hash_chunk(device.device_id, f"{n:032x}"))
    clock.now += 61

    def down(*args: object, **kwargs: object) -> None:
        raise OSError("database unreachable")

    original = ingest_module.record_rejection
    monkeypatch.setattr(ingest_module, "record_rejection", down)
    assert service.flush_rejections() == 0
    monkeypatch.setattr(ingest_module, "record_rejection", original)
    assert service.flush_rejections() == 1
    assert sum(r.occurrences for r in rows(app, code="bad_message")) == REJECTION_ROWS_PER_DEVICE_MINUTE + 5


def test_flood_from_random_device_ids_is_bounded(
    app: Flask, service: IngestService, clock: FakeClock
) -> None:
    """Refusals naming 3,000 made-up devices: bounded rows, one summary for the unregistered ones."""
    flood = 3_000
    for n in range(flood):
        service.handle(*bad_hash_chunk(f"fake-{n}", "0" * 32))
    clock.now += 61
    service.flush_rejections()
    logged = rows(app, code="bad_message")
    assert len(logged) <= 600 + 2
    assert sum(r.occurrences for r in logged) == flood


def test_every_forged_manifest_of_a_registered_device_is_logged_once_per_window_at_least(
    app: Flask, service: IngestService, device: SegmentFactory, clock: FakeClock
) -> None:
    """Even past the global budget, a registered device's first refusal of a kind gets its own row."""
    for n in range(700):  # exhaust the global budget with unregistered ids
        service.handle(*bad_hash_chunk(f"fake-{n}", "0" * 32))
    forged, _ = device.make(b"g" * 100, key=Ed25519PrivateKey.generate())
    one(service, *init(forged))
    (row,) = rows(app, code="bad_signature")
    assert row.manifest_text == forged.manifest_text and row.occurrences == 1


# -- finding 5: no staging without an accepted manifest ------------------------------------------


def test_chunk_for_a_file_id_without_manifest_is_not_staged(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """A chunk for a transfer whose init was never accepted: `unknown`/`no_manifest`, no byte on disk."""
    data = os.urandom(CHUNK)
    signed, _ = device.make(data)
    ack = one(service, *chunk(signed, data, 0))
    assert (ack.state, ack.code, ack.offset, ack.length) == (AckState.UNKNOWN, "no_manifest", 0, CHUNK)
    assert not service.staging.exists(device.device_id, signed.file_id)
    assert staged_bytes(service.staging.root) == 0
    assert [r.code for r in rows(app)] == ["no_manifest"]


@pytest.mark.parametrize("left", ["empty", "gone"])
def test_a_manifest_lost_by_a_power_cut_costs_only_a_new_init(
    app: Flask, service: IngestService, device: SegmentFactory, left: str
) -> None:
    """The staged manifest is not fsynced (its ``ready`` is flow control): if a power cut loses it, or leaves
    the renamed file empty, the next chunk is answered `no_manifest`, the device sends init again, and the
    segment is stored with the bytes already staged kept."""
    data = os.urandom(3 * CHUNK)
    signed, _ = device.make(data)
    assert one(service, *init(signed)).state is AckState.READY
    assert one(service, *chunk(signed, data, 0)).state is AckState.STORED
    manifest = service.staging.path_of(device.device_id, signed.file_id) / MANIFEST_NAME
    if left == "empty":
        manifest.write_bytes(b"")
    else:
        manifest.unlink()
    restarted = IngestService(service.settings, app, service.store, Staging(service.staging.root))
    lost = one(restarted, *chunk(signed, data, CHUNK))
    assert (lost.state, lost.code, lost.offset) == (AckState.UNKNOWN, "no_manifest", CHUNK)
    ready = one(restarted, *init(signed))
    assert ready.state is AckState.READY and ready.ranges == RangeSet.of([(0, CHUNK)])
    assert upload(restarted, signed, data).state is AckState.COMPLETE
    assert count(app, Recording) == 1


def test_chunks_after_a_forged_init_are_not_staged(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """A refused (bad-signature) init does not open the transfer: its chunks stage nothing."""
    data = os.urandom(2 * CHUNK)
    forged, _ = device.make(data, key=Ed25519PrivateKey.generate())
    assert one(service, *init(forged)).code == "bad_signature"
    for offset in (0, CHUNK):
        assert one(service, *chunk(forged, data, offset)).code == "no_manifest"
    assert staged_bytes(service.staging.root) == 0


def test_flood_of_chunks_for_random_file_ids_uses_no_staging_disk(
    app: Flask, service: IngestService, device: SegmentFactory
) -> None:
    """200 × 1 MiB chunks for random file ids from a registered device: 0 bytes staged."""
    data = os.urandom(1024 * 1024)
    rng = random.Random(5)
    for _ in range(200):
        file_id = f"{rng.getrandbits(128):032x}"
        msg = FileChunk(device_id=device.device_id, file_id=file_id, offset=0, data=data)
        (ack,) = acks(service.handle(*encode(msg)))
        assert ack.code == "no_manifest"
    assert staged_bytes(service.staging.root) == 0
    assert list(service.staging.transfers()) == []
    assert service.stats()["bytes_staged"] == 0


def test_stage_refuses_a_chunk_when_the_manifest_vanished_under_it(
    service: IngestService, device: SegmentFactory
) -> None:
    """The manifest is checked under the transfer's lock: an abort racing a chunk cannot stage bytes."""
    data = b"v" * 100
    signed, _ = device.make(data)
    one(service, *init(signed))
    service.staging.discard(device.device_id, signed.file_id)
    msg = FileChunk(device_id=device.device_id, file_id=signed.file_id, offset=0, data=data)
    from protocol.transfer import StageOutcome

    assert service.staging.stage(msg) is StageOutcome.NO_MANIFEST
    assert not service.staging.exists(device.device_id, signed.file_id)


# -- per-device staging quota ---------------------------------------------------------------------


def quota_service(app: Flask, quota: int) -> IngestService:
    """A service whose per-device staging quota is ``quota`` bytes."""
    base = IngestService.from_app(app)
    settings = load_settings(
        {
            "data_dir": str(base.settings.data_dir),
            "database_url": base.settings.database_url,
            "jwt_secret": base.settings.jwt_secret,
            "staging_quota_bytes": quota,
            "max_segment_bytes": quota,
        }
    )
    return IngestService(settings, app, base.store, base.staging)


def test_init_beyond_the_device_quota_is_refused_for_later_and_nothing_is_lost(
    app: Flask, device: SegmentFactory
) -> None:
    """Quota full: init answers `staging_quota` (retry later); once the first commits, the second goes."""
    service = quota_service(app, 3 * CHUNK)
    first_data, second_data = os.urandom(2 * CHUNK), os.urandom(2 * CHUNK)
    first, _ = device.make(first_data)
    second, _ = device.make(second_data)
    assert one(service, *init(first)).state is AckState.READY
    one(service, *chunk(first, first_data, 0))
    refused = one(service, *init(second))
    assert (refused.state, refused.code) == (AckState.REJECTED, "staging_quota")
    assert not service.staging.exists(device.device_id, second.file_id)
    assert one(service, *chunk(second, second_data, 0)).code == "no_manifest"
    one(service, *chunk(first, first_data, CHUNK))
    assert one(service, *fin(first)).state is AckState.COMPLETE
    assert upload(service, second, second_data).state is AckState.COMPLETE
    assert count(app, Recording) == 2


def test_chunks_of_two_transfers_are_held_to_the_quota_between_scans(
    app: Flask, device: SegmentFactory
) -> None:
    """A chunk's quota check may use a scan up to a second old, but this process's own writes count at once.

    Two transfers admitted together (each init fits) then fill the quota chunk by chunk: the chunk that
    would pass it is refused for later (`staging_quota`) within the same second, not let in; after the
    first commits, the second completes.
    """
    service = quota_service(app, 3 * CHUNK + 2 * TRANSFER_CHARGE)
    first_data, second_data = os.urandom(2 * CHUNK), os.urandom(2 * CHUNK)
    first, _ = device.make(first_data)
    second, _ = device.make(second_data)
    assert one(service, *init(first)).state is AckState.READY
    assert one(service, *init(second)).state is AckState.READY
    assert one(service, *chunk(second, second_data, 0)).state is AckState.STORED  # scans the device once
    assert one(service, *chunk(first, first_data, 0)).state is AckState.STORED
    assert one(service, *chunk(second, second_data, CHUNK)).state is AckState.STORED  # 3 chunks staged
    refused = one(service, *chunk(first, first_data, CHUNK))  # a 4th would pass the quota
    assert (refused.state, refused.code) == (AckState.REJECTED, "staging_quota")
    assert one(service, *fin(second)).state is AckState.COMPLETE  # its staging is freed...
    assert one(service, *chunk(first, first_data, CHUNK)).state is AckState.STORED  # ...counted free at once
    assert one(service, *fin(first)).state is AckState.COMPLETE
    assert count(app, Recording) == 2


def test_an_init_counts_what_another_worker_staged_at_once(app: Flask, device: SegmentFactory) -> None:
    """An init always scans the device's staging: bytes another ingest process staged a moment ago count."""
    service = quota_service(app, 3 * CHUNK)
    first_data, second_data = os.urandom(2 * CHUNK), os.urandom(2 * CHUNK)
    first, _ = device.make(first_data)
    second, _ = device.make(second_data)
    assert one(service, *init(first)).state is AckState.READY
    assert one(service, *chunk(first, first_data, 0)).state is AckState.STORED  # the device's usage cached
    other_worker = Staging(service.staging.root)  # another process on the same staging root
    other_worker.stage(
        FileChunk(device_id=device.device_id, file_id=first.file_id, offset=CHUNK, data=first_data[CHUNK:])
    )
    refused = one(service, *init(second))
    assert (refused.state, refused.code) == (AckState.REJECTED, "staging_quota")


def test_a_paused_holder_of_a_transfer_lock_holds_up_the_worker_only_for_the_lock_wait(
    app: Flask, device: SegmentFactory
) -> None:
    """A process paused while it holds a transfer's lock (SIGSTOP, a frozen machine): a chunk of that
    transfer is given up unanswered after the lock wait instead of holding the worker's network thread (and
    every other device) until the holder resumes; other transfers go on; once the lock is free the resent
    chunk is stored (the device's status query and resend, JL-17)."""
    base = IngestService.from_app(app)
    service = IngestService(base.settings, app, base.store, Staging(base.staging.root, lock_wait_s=0.3))
    held_data, other_data = os.urandom(CHUNK), os.urandom(CHUNK)
    held, _ = device.make(held_data)
    other, _ = device.make(other_data)
    assert one(service, *init(held)).state is AckState.READY
    lock_path = service.staging.path_of(device.device_id, held.file_id) / "lock"
    with lock_path.open("rb") as paused_holder:
        fcntl.flock(paused_holder, fcntl.LOCK_EX)
        answers: list[list[tuple[str, bytes]]] = []
        handler = threading.Thread(target=lambda: answers.append(service.handle(*chunk(held, held_data, 0))))
        started = time.monotonic()
        handler.start()
        handler.join(10)
        assert not handler.is_alive(), "the worker waited for the paused holder"
        assert answers == [[]] and time.monotonic() - started < 5  # given up unanswered, after the wait
        assert upload(service, other, other_data).state is AckState.COMPLETE  # other transfers go on
    assert upload(service, held, held_data).state is AckState.COMPLETE  # resent once the lock is free
    assert count(app, Recording) == 2


def test_a_committed_segment_is_answered_complete_even_if_its_staging_cannot_be_discarded_yet(
    app: Flask, service: IngestService, device: SegmentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The discard after a commit may meet a busy lock: the commit stands and `complete` still goes out."""
    data = os.urandom(CHUNK)
    signed, _ = device.make(data)

    def busy(*_args: object, **_kwargs: object) -> bool:
        raise StagingBusy("暂存锁被占用", "a staging lock stayed held")

    assert one(service, *init(signed)).state is AckState.READY
    assert one(service, *chunk(signed, data, 0)).state is AckState.STORED
    monkeypatch.setattr(service.staging, "discard", busy)
    assert one(service, *fin(signed)).state is AckState.COMPLETE
    assert count(app, Recording) == 1


def test_quota_counts_only_this_device(app: Flask, device: SegmentFactory, tmp_path: Path) -> None:
    """Another device's staged bytes do not use this device's quota."""
    service = quota_service(app, 2 * CHUNK)
    other = SegmentFactory(tmp_path, device_id="dev-002")
    with session_scope(app) as session:
        register_device(session, other.device_id, other.public_key)
    other_data = os.urandom(2 * CHUNK - 100_000)
    other_signed, _ = other.make(other_data)
    one(service, *init(other_signed))
    one(service, *chunk(other_signed, other_data, 0))
    data = os.urandom(CHUNK)
    signed, _ = device.make(data)
    assert upload(service, signed, data).state is AckState.COMPLETE


def test_staging_quota_setting_is_validated() -> None:
    """ZFJL_STAGING_QUOTA_BYTES must be a positive integer; the abandon hours too."""
    from server.infra.config import ConfigError

    with pytest.raises(ConfigError):
        load_settings({"staging_quota_bytes": "0"})
    with pytest.raises(ConfigError):
        load_settings({"staging_abandon_hours": "0"})
    with pytest.raises(ConfigError):  # a maximum-size segment could never be staged
        load_settings({"staging_quota_bytes": 1000, "max_segment_bytes": 1001})
    assert load_settings({}).staging_abandon_hours == 6


# -- abandoned transfers ---------------------------------------------------------------------------


def half_upload(service: IngestService, signed: SignedManifest, data: bytes) -> None:
    """Init and the first chunk only."""
    assert one(service, *init(signed)).state is AckState.READY
    assert one(service, *chunk(signed, data, 0)).state is AckState.STORED


def age(staging: Staging, device_id: str, file_id: str, seconds: float) -> None:
    """Make a transfer look untouched for ``seconds``."""
    then = os.path.getmtime(staging.path_of(device_id, file_id)) - seconds
    path = staging.path_of(device_id, file_id)
    for item in [*path.iterdir(), path]:
        os.utime(item, (then, then))


def test_abandoned_transfer_bytes_are_cleaned_within_hours_and_the_manifest_kept(
    service: IngestService, device: SegmentFactory
) -> None:
    """Untouched past the abandon time: bytes gone, signed manifest kept, the device restarts cleanly."""
    data = os.urandom(2 * CHUNK)
    signed, _ = device.make(data)
    half_upload(service, signed, data)
    age(service.staging, device.device_id, signed.file_id, 7 * 3600)
    removed = service.staging.purge_abandoned(idle_s=6 * 3600, manifest_max_age_s=14 * 86400)
    assert removed == [(device.device_id, signed.file_id)]
    path = service.staging.path_of(device.device_id, signed.file_id)
    assert (path / MANIFEST_NAME).exists() and not (path / DATA_NAME).exists()
    ack = one(service, *status(signed))
    assert (ack.state, ack.ranges) == (AckState.READY, RangeSet())
    assert upload(service, signed, data).state is AckState.COMPLETE


def test_transfer_resumed_before_the_deadline_keeps_its_bytes(
    service: IngestService, device: SegmentFactory
) -> None:
    """Paused for less than the abandon time: nothing is cleaned and the resume sends only what is missing."""
    data = os.urandom(2 * CHUNK)
    signed, _ = device.make(data)
    half_upload(service, signed, data)
    age(service.staging, device.device_id, signed.file_id, 5 * 3600)
    assert service.staging.purge_abandoned(idle_s=6 * 3600, manifest_max_age_s=14 * 86400) == []
    ack = one(service, *status(signed))
    assert ack.ranges == RangeSet(((0, CHUNK),))
    one(service, *chunk(signed, data, CHUNK))
    assert one(service, *fin(signed)).state is AckState.COMPLETE


def test_manifest_only_leftovers_and_manifestless_bytes_are_removed(
    service: IngestService, device: SegmentFactory
) -> None:
    """A kept manifest goes after the long age; bytes without a manifest (older server) after the short."""
    signed, _ = device.make(b"m" * 100)
    one(service, *init(signed))
    age(service.staging, device.device_id, signed.file_id, 15 * 86400)
    legacy = FileChunk(device_id=device.device_id, file_id="f" * 32, offset=0, data=b"x" * 10)
    service.staging.stage(legacy, require_manifest=False)
    age(service.staging, device.device_id, "f" * 32, 7 * 3600)
    removed = service.staging.purge_abandoned(idle_s=6 * 3600, manifest_max_age_s=14 * 86400)
    assert sorted(removed) == sorted([(device.device_id, signed.file_id), (device.device_id, "f" * 32)])
    assert list(service.staging.transfers()) == []


def test_housekeeping_cleans_abandoned_staging_with_the_configured_hours(
    app: Flask, device: SegmentFactory
) -> None:
    """The service's housekeeping step uses ZFJL_STAGING_ABANDON_HOURS."""
    base = IngestService.from_app(app)
    settings = load_settings(
        {
            "data_dir": str(base.settings.data_dir),
            "database_url": base.settings.database_url,
            "jwt_secret": base.settings.jwt_secret,
            "staging_abandon_hours": 2,
        }
    )
    service = IngestService(settings, app, base.store, base.staging)
    data = os.urandom(CHUNK + 10)
    signed, _ = device.make(data)
    half_upload(service, signed, data)
    age(service.staging, device.device_id, signed.file_id, 3 * 3600)
    assert service.housekeep() == {"staging_abandoned": 1}
    assert not (service.staging.path_of(device.device_id, signed.file_id) / DATA_NAME).exists()


def test_rejection_rows_carry_their_occurrences_on_every_database(db_session: Session) -> None:
    """Migration 0012 on SQLite and PostgreSQL: old-style rows count 1, a flood summary its sum."""
    from server.domain.evidence.commit import record_rejection

    single = record_rejection(db_session, code="bad_signature", message="one", device_id="dev-001")
    summary = record_rejection(
        db_session, code="bad_signature", message="flood", device_id="dev-001", occurrences=4_321
    )
    db_session.commit()
    db_session.expire_all()
    assert [
        r.occurrences for r in db_session.scalars(select(IngestRejection).order_by(IngestRejection.id))
    ] == [
        1,
        4_321,
    ]
    raw = db_session.execute(
        text("INSERT INTO ingest_rejections (code, message, at) VALUES ('x', 'y', CURRENT_TIMESTAMP)")
    )
    assert raw.rowcount == 1
    assert db_session.scalar(select(IngestRejection.occurrences).where(IngestRejection.code == "x")) == 1
    assert single.id != summary.id
    # The security log is append-only (migration 0011): a summary cannot be inflated or shrunk later.
    with pytest.raises(DBAPIError, match="append-only"):
        db_session.execute(text("UPDATE ingest_rejections SET occurrences = 1"))
    db_session.rollback()
