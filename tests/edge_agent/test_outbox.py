"""The outbox: gap-free signed chain, crash safety, recovery and disk-space rules (JL-19)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.keys import generate_private_key, load_private_key, public_key_raw, save_private_key
from edge_agent.outbox import Outbox, OutboxError
from protocol.manifest import GENESIS_HASH

DEVICE = "dev-1"


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


def make_segment(folder: Path, index: int, size: int = 1000) -> FakeSegment:
    """Write a segment file of random bytes and describe it."""
    data = os.urandom(size)
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=index)
    path = folder / f"seg-{start:%Y%m%dT%H%M%S%f}Z.mp4"
    path.write_bytes(data)
    return FakeSegment(
        path=path,
        size=size,
        sha256=hashlib.sha256(data).hexdigest(),
        started_utc=start,
        ended_utc=start + timedelta(seconds=1),
        started_mono_ns=index * 10**9,
        ended_mono_ns=(index + 1) * 10**9,
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """A device key."""
    return generate_private_key()


def add(box: Outbox, seg: FakeSegment, key: Ed25519PrivateKey) -> int:
    """Journal a segment and return its sequence."""
    return box.add_segment(seg, device_id=DEVICE, officer_id="o-7", private_key=key).manifest.sequence


def test_chain_is_gap_free_and_signed_across_reopen(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Sequences run 0..n-1 across reopen, each links to the previous manifest, signatures verify."""
    db = tmp_path / "outbox.sqlite3"
    box = Outbox(db)
    assert [add(box, make_segment(tmp_path, i), key) for i in range(3)] == [0, 1, 2]
    box.close()
    box = Outbox(db)
    assert add(box, make_segment(tmp_path, 3), key) == 3
    segments = box.all_segments()
    assert segments[0].signed.manifest.prev_manifest_hash == GENESIS_HASH
    for prev, seg in itertools.pairwise(segments):
        assert seg.signed.manifest.prev_manifest_hash == prev.signed.manifest_hash
    assert all(seg.signed.verify(public_key_raw(key)) for seg in segments)
    assert box.verify_chain(public_key_raw(key)) == []
    assert box.verify_chain(public_key_raw(generate_private_key()))  # another key: every signature fails
    assert [s.sequence for s in box.pending(10)] == [0, 1, 2, 3]
    stats = box.stats()
    assert (stats.segments_recorded, stats.segments_pending, stats.last_sequence) == (4, 4, 3)
    assert stats.backlog_bytes == 4000 and stats.oldest_pending_age_s is not None
    box.close()


def test_duplicate_path_and_wrong_size_are_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """A file cannot be journalled twice, nor with a size other than what is on disk."""
    box = Outbox(tmp_path / "o.db")
    seg = make_segment(tmp_path, 0)
    add(box, seg, key)
    with pytest.raises(OutboxError):
        add(box, seg, key)
    other = make_segment(tmp_path, 1)
    with pytest.raises(OutboxError):
        box.add_segment(
            FakeSegment(**{**other.__dict__, "size": 5}), device_id=DEVICE, officer_id="", private_key=key
        )
    assert box.stats().segments_recorded == 1
    box.close()


def test_rows_are_never_deleted(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """A trigger refuses deleting outbox rows or changing signed facts, whoever tries (JL-19)."""
    db = tmp_path / "o.db"
    box = Outbox(db)
    add(box, make_segment(tmp_path, 0), key)
    box.close()
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM segments")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE segments SET sha256='x'")
    conn.close()


def test_complete_and_failed_states(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """complete is sticky; failed segments leave the queue and are reported."""
    box = Outbox(tmp_path / "o.db")
    for i in range(3):
        add(box, make_segment(tmp_path, i), key)
    box.mark_complete(0, 41)
    box.mark_failed(1, "bad_signature", "nope")
    box.mark_failed(0, "late", "ignored")  # complete wins
    assert [s.sequence for s in box.pending(10)] == [2]
    assert [(s.sequence, s.error_code) for s in box.failed()] == [(1, "bad_signature")]
    first = box.get(0)
    assert first is not None and first.state == "complete" and first.recording_id == 41
    stats = box.stats()
    assert (stats.segments_pending, stats.segments_complete, stats.segments_failed) == (1, 1, 1)
    box.close()


def test_free_space_deletes_only_complete_oldest_first(
    tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only server-confirmed files are deleted, oldest first; pending and failed ones never (JL-19)."""
    box = Outbox(tmp_path / "o.db")
    segs = [make_segment(tmp_path, i) for i in range(5)]
    for seg in segs:
        add(box, seg, key)
    box.mark_complete(0, 1)
    box.mark_failed(1, "bad_signature", "")
    box.mark_complete(3, 2)
    # Seq 2 and 4 stay pending.
    Usage = namedtuple("Usage", "total used free")
    free = {"bytes": 0}
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: Usage(10**9, 10**9, free["bytes"]))

    freed = box.free_space(10**6)  # never enough: everything deletable goes, nothing more
    assert freed == [0, 3]
    assert [s.path.exists() for s in box.all_segments()] == [False, True, True, False, True]
    assert box.get(0) is not None and box.get(0).file_deleted_at is not None  # type: ignore[union-attr]
    assert box.free_space(10**6) == []
    free["bytes"] = 10**7
    assert box.free_space(10**6) == []
    assert box.stats().files_deleted == 2
    box.close()


def test_free_space_stops_when_enough(
    tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deletion stops as soon as the target free space is reached."""
    box = Outbox(tmp_path / "o.db")
    for i in range(3):
        add(box, make_segment(tmp_path, i), key)
        box.mark_complete(i, i)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(
        shutil,
        "disk_usage",
        lambda _p: Usage(1, 1, 0 if box.stats().files_deleted == 0 else 10**9),
    )
    assert box.free_space(100) == [0]
    box.close()


def test_recover_adds_partial_and_keeps_unrecoverable(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Files left by a crash are repaired and journalled; unplayable ones are renamed, never deleted."""
    segdir = tmp_path / "segments"
    segdir.mkdir()
    box = Outbox(tmp_path / "o.db")
    add(box, make_segment(segdir, 0), key)
    cut = make_segment(segdir, 1, size=500)
    junk = segdir / "seg-20250101T000009000000Z.mp4"
    junk.write_bytes(b"\0" * 10)

    def repair(path: Path) -> int | None:
        if path == junk:
            return None
        with path.open("r+b") as stream:
            stream.truncate(300)
        return 300

    report = box.recover(segdir, repair, device_id=DEVICE, officer_id="", private_key=key)
    assert report.added == [1]
    assert report.unrecoverable == [segdir / (junk.name + ".unrecoverable")]
    assert (segdir / (junk.name + ".unrecoverable")).exists() and not junk.exists()
    seg = box.get(1)
    assert seg is not None and seg.recovered and seg.size == 300
    manifest = seg.signed.manifest
    assert manifest.sha256 == hashlib.sha256(cut.path.read_bytes()).hexdigest()
    assert manifest.started_at == cut.started_utc  # from the file name
    assert manifest.boot_id == ""
    assert box.verify_chain(public_key_raw(key)) == []
    again = box.recover(segdir, repair, device_id=DEVICE, officer_id="", private_key=key)
    assert again.added == [] and again.unrecoverable == []
    box.close()


_WRITER = textwrap.dedent(
    """
    import hashlib, os, sys
    from dataclasses import dataclass
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from edge_agent.keys import load_private_key
    from edge_agent.outbox import Outbox

    @dataclass(frozen=True)
    class Seg:
        path: Path
        size: int
        sha256: str
        started_utc: datetime
        ended_utc: datetime
        started_mono_ns: int
        ended_mono_ns: int

    folder, key = Path(sys.argv[1]), load_private_key(sys.argv[2])
    box = Outbox(folder / "o.db")
    i = 0
    while True:
        data = os.urandom(200)
        path = folder / f"s{os.getpid()}-{i}.mp4"
        path.write_bytes(data)
        t = datetime.now(UTC)
        box.add_segment(
            Seg(path, 200, hashlib.sha256(data).hexdigest(), t, t, 0, 1),
            device_id="dev-1", officer_id="", private_key=key,
        )
        i += 1
        if i == 5:
            print("ready", flush=True)
    """
)


def test_crash_while_adding_leaves_a_consistent_chain(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """SIGKILL a process that journals segments in a loop, twice: the chain stays gap-free and valid."""
    key_file = tmp_path / "k.pem"
    save_private_key(key, key_file)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for _round in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(key_file)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)  # let it be somewhere in the middle of a transaction
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    box = Outbox(tmp_path / "o.db")
    segments = box.all_segments()
    assert len(segments) >= 10
    assert [s.sequence for s in segments] == list(range(len(segments)))
    assert box.verify_chain(public_key_raw(load_private_key(key_file))) == []
    # A file written just before the kill may be missing from the outbox; recovery would journal it.
    journalled = {s.path.name for s in segments}
    orphans = [p for p in tmp_path.glob("*.mp4") if p.name not in journalled]
    assert len(orphans) <= 2
    assert add(box, make_segment(tmp_path, 99), key) == len(segments)
    box.close()


@dataclass(frozen=True)
class SealedSegment(FakeSegment):
    """A segment as the recorder seals it: with each chunk's SHA-256 for the uploader's chunk size."""

    chunk_digests: tuple[bytes, ...] | None = None
    chunk_bytes: int = 0


def sealed(folder: Path, index: int, size: int = 2500, chunk_bytes: int = 1000) -> SealedSegment:
    """Write a segment and describe it with its chunk digests."""
    seg = make_segment(folder, index, size)
    data = seg.path.read_bytes()
    digests = tuple(hashlib.sha256(data[i : i + chunk_bytes]).digest() for i in range(0, size, chunk_bytes))
    return SealedSegment(*dataclasses.astuple(seg), chunk_digests=digests, chunk_bytes=chunk_bytes)


def test_chunk_digests_are_journalled_with_their_segment(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Stored in the same transaction, read back for their chunk size only; none for a plain segment."""
    box = Outbox(tmp_path / "outbox.sqlite3")
    seg = sealed(tmp_path, 0)
    assert add(box, seg, key) == 0
    assert add(box, make_segment(tmp_path, 1), key) == 1
    assert box.chunk_digests(0, 1000) == list(seg.chunk_digests or ())
    assert box.chunk_digests(0, 2000) is None
    assert box.chunk_digests(1, 1000) is None
    box.mark_complete(0, recording_id=7)
    assert box.chunk_digests(0, 1000) is None  # a stored segment is never uploaded again


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-1],  # one digest too few
        lambda d: (*d, d[0]),  # one too many
        lambda d: (d[0][:31], *d[1:]),  # a digest that is not 32 bytes
    ],
)
def test_chunk_digests_that_cannot_be_the_segments_are_refused_and_nothing_is_journalled(
    tmp_path: Path, key: Ed25519PrivateKey, damage: Callable[[tuple[bytes, ...]], tuple[bytes, ...]]
) -> None:
    """ceil(size / chunk_bytes) digests of 32 bytes, or OutboxError and no row at all."""
    box = Outbox(tmp_path / "outbox.sqlite3")
    seg = sealed(tmp_path, 0)
    assert seg.chunk_digests is not None
    with pytest.raises(OutboxError):
        add(box, dataclasses.replace(seg, chunk_digests=damage(seg.chunk_digests)), key)
    assert box.all_segments() == []


def test_a_digest_row_that_does_not_fit_its_segment_is_ignored(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """A truncated row (a damaged card, a bug) reads as no digests: the uploader hashes at send."""
    db = tmp_path / "outbox.sqlite3"
    box = Outbox(db)
    add(box, sealed(tmp_path, 0), key)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE chunk_digests SET digests=substr(digests, 1, 40)")
    assert box.chunk_digests(0, 1000) is None
    box.forget_chunk_digests(0)
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT count(*) FROM chunk_digests").fetchone() == (0,)


def test_an_outbox_without_the_digest_table_upgrades_in_place(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """An outbox of the older schema opens (read-only too), keeps its version and takes digests again."""
    db = tmp_path / "outbox.sqlite3"
    box = Outbox(db)
    add(box, make_segment(tmp_path, 0), key)
    box.close()
    with sqlite3.connect(db) as raw:
        raw.execute("DROP TABLE chunk_digests")
    reader = Outbox(db, readonly=True)
    assert reader.chunk_digests(0, 1000) is None
    reader.close()
    box = Outbox(db)
    seg = sealed(tmp_path, 1)
    assert add(box, seg, key) == 1
    assert box.chunk_digests(0, 1000) is None
    assert box.chunk_digests(1, 1000) == list(seg.chunk_digests or ())
    assert box.verify_chain(public_key_raw(key)) == []
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
