"""Chunk staging: compare-then-write, overlaps, concurrency, crash leftovers, janitor, path safety."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from protocol.messages import FileChunk
from protocol.ranges import RangeSet
from protocol.transfer import StageOutcome
from server.infra.staging import DATA_NAME, INDEX_NAME, Staging, StagingError
from tests.conftest import SegmentFactory

DEV, FILE = "dev-001", "f" * 32


def chunk(offset: int, data: bytes) -> FileChunk:
    """A chunk of the test transfer."""
    return FileChunk(device_id=DEV, file_id=FILE, offset=offset, data=data)


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    """Staging under a fresh directory."""
    return Staging(tmp_path / "staging")


def test_write_same_different(staging: Staging) -> None:
    """New bytes are written, identical ones are duplicates, different ones are refused untouched."""
    assert staging.view_parts(DEV, FILE) == (None, RangeSet())
    assert staging.stage(chunk(0, b"a" * 10), require_manifest=False) is StageOutcome.WRITTEN
    assert staging.stage(chunk(20, b"c" * 10), require_manifest=False) is StageOutcome.WRITTEN
    assert staging.stage(chunk(0, b"a" * 10), require_manifest=False) is StageOutcome.SAME
    assert staging.stage(chunk(2, b"a" * 5), require_manifest=False) is StageOutcome.SAME
    assert staging.stage(chunk(0, b"x" * 10), require_manifest=False) is StageOutcome.DIFFERENT
    # Partly held, held part equal: the rest is written.
    assert staging.stage(chunk(5, b"a" * 5 + b"b" * 10), require_manifest=False) is StageOutcome.WRITTEN
    # Spans a held range whose bytes differ.
    assert staging.stage(chunk(25, b"c" * 5 + b"d" * 5), require_manifest=False) is StageOutcome.WRITTEN
    assert staging.stage(chunk(15, b"b" * 5 + b"z" * 5), require_manifest=False) is StageOutcome.DIFFERENT
    manifest, held = staging.view_parts(DEV, FILE)
    assert manifest is None
    assert held == RangeSet(((0, 35),))
    data = (staging.path_of(DEV, FILE) / DATA_NAME).read_bytes()
    assert data == b"a" * 10 + b"b" * 10 + b"c" * 10 + b"d" * 5


def test_manifest_is_kept_and_discard(staging: Staging, segments: SegmentFactory) -> None:
    """The init envelope round-trips; discard with keep_manifest drops only the bytes."""
    signed, path = segments.make(b"x" * 100)
    staging.store_manifest(signed)
    staging.store_manifest(signed)  # idempotent
    file_id = signed.file_id
    staging.stage(FileChunk(device_id=DEV, file_id=file_id, offset=0, data=b"x" * 100))
    assert staging.view_parts(DEV, file_id) == (signed, RangeSet(((0, 100),)))
    staged = staging.sync(DEV, file_id, 100)
    assert staged.read_bytes() == path.read_bytes()
    staging.discard(DEV, file_id, keep_manifest=True)
    assert staging.view_parts(DEV, file_id) == (signed, RangeSet())
    staging.discard(DEV, file_id)
    assert not staging.exists(DEV, file_id)
    assert not (staging.root / DEV).exists()
    assert staging.view_parts(DEV, file_id) == (None, RangeSet())
    staging.discard(DEV, file_id)  # nothing left: a no-op


def test_sync_cuts_bytes_past_the_manifest_size(staging: Staging) -> None:
    """A stray chunk past the end is not part of the segment."""
    staging.stage(chunk(0, b"a" * 10), require_manifest=False)
    staging.stage(chunk(10, b"b" * 10), require_manifest=False)
    assert staging.sync(DEV, FILE, 12).read_bytes() == b"a" * 10 + b"bb"
    with pytest.raises(FileNotFoundError):
        staging.sync(DEV, "other", 1)


@pytest.mark.parametrize(
    ("device_id", "file_id"),
    [
        ("..", FILE),
        (DEV, ".."),
        ("a/b", FILE),
        (DEV, "a/../../x"),
        ("", FILE),
        (DEV, "x" * 65),
        ("/etc", FILE),
    ],
)
def test_ids_cannot_escape_the_root(staging: Staging, device_id: str, file_id: str) -> None:
    """Only topic-grammar ids make paths."""
    with pytest.raises(StagingError):
        staging.path_of(device_id, file_id)


def test_lost_bytes_after_unclean_stop_are_not_a_conflict(staging: Staging) -> None:
    """The index names bytes the disk lost: a resend of them is accepted, not refused as a conflict."""
    staging.stage(chunk(0, b"a" * 10), require_manifest=False)
    staging.stage(chunk(10, b"b" * 10), require_manifest=False)
    data = staging.path_of(DEV, FILE) / DATA_NAME
    data.write_bytes(b"a" * 10)  # the second chunk never reached the disk
    assert staging.view_parts(DEV, FILE)[1] == RangeSet(((0, 20),))  # views trust the index
    assert staging.stage(chunk(10, b"b" * 10), require_manifest=False) is StageOutcome.WRITTEN
    assert staging.stage(chunk(0, b"z" * 10), require_manifest=False) is StageOutcome.DIFFERENT
    assert data.read_bytes() == b"a" * 10 + b"b" * 10
    assert staging.view_parts(DEV, FILE)[1] == RangeSet(((0, 20),))


def test_torn_index_line_is_ignored(staging: Staging) -> None:
    """A half-written last line (crash) does not count as held bytes."""
    staging.stage(chunk(0, b"a" * 10), require_manifest=False)
    with (staging.path_of(DEV, FILE) / INDEX_NAME).open("ab") as fh:
        fh.write(b"10 10 abc")
    assert staging.view_parts(DEV, FILE)[1] == RangeSet(((0, 10),))


def test_concurrent_workers_write_each_chunk_once(staging: Staging) -> None:
    """Threads staging the same chunks at once: one WRITTEN per chunk, the rest SAME, bytes intact."""
    size, step = 64 * 1024, 4096
    payload = os.urandom(size)
    outcomes: list[StageOutcome] = []
    lock = threading.Lock()

    def worker() -> None:
        for offset in range(0, size, step):
            result = staging.stage(chunk(offset, payload[offset : offset + step]), require_manifest=False)
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(StageOutcome.WRITTEN) == size // step
    assert outcomes.count(StageOutcome.SAME) == 3 * size // step
    assert staging.sync(DEV, FILE, size).read_bytes() == payload
    assert len(staging.entries(DEV, FILE)) == size // step


def test_janitor_removes_only_stale_transfers(staging: Staging) -> None:
    """Transfers untouched for N days go; fresh ones stay."""
    staging.stage(chunk(0, b"a"), require_manifest=False)
    staging.stage(FileChunk(device_id="dev-002", file_id=FILE, offset=0, data=b"b"), require_manifest=False)
    old = time.time() - 10 * 86400
    for path in staging.path_of(DEV, FILE).iterdir():
        os.utime(path, (old, old))
    os.utime(staging.path_of(DEV, FILE), (old, old))
    assert staging.purge_stale(7) == [(DEV, FILE)]
    assert list(staging.transfers()) == [("dev-002", FILE)]


def test_two_processes_see_each_others_changes(tmp_path: Path) -> None:
    """Index caches follow appends, discards and new generations made by another Staging (process)."""
    first, second = Staging(tmp_path / "s"), Staging(tmp_path / "s")
    first.stage(chunk(0, b"a" * 10), require_manifest=False)
    assert second.view_parts(DEV, FILE)[1] == RangeSet(((0, 10),))
    second.stage(chunk(10, b"b" * 10), require_manifest=False)
    assert first.view_parts(DEV, FILE)[1] == RangeSet(((0, 20),))
    second.discard(DEV, FILE, keep_manifest=True)
    second.stage(chunk(30, b"c" * 5), require_manifest=False)
    assert first.view_parts(DEV, FILE)[1] == RangeSet(((30, 35),))
    assert first.stage(chunk(0, b"z" * 10), require_manifest=False) is StageOutcome.WRITTEN
    assert second.view_parts(DEV, FILE)[1] == RangeSet(((0, 10), (30, 35)))


def test_jl17_sweep_after_death_removes_only_the_dead_process_leftovers(staging: Staging) -> None:
    """What a SIGKILLed ingest process leaves: the staging of a segment it had committed and a folder it
    was deleting. Both go at once; a transfer not stored yet (the recorder resumes it elsewhere), a stored
    one whose lock a live process holds, and a live process's half-deleted folder stay."""
    stored = {(DEV, "a" * 32), (DEV, "b" * 32)}
    for file_id in ("a" * 32, "b" * 32, "c" * 32):
        staging.stage(FileChunk(device_id=DEV, file_id=file_id, offset=0, data=b"x"), require_manifest=False)
    dead, live = 4_000_001, os.getpid()
    for pid in (dead, live):
        (staging.root / f".trash-{pid}-0a0b0c" / "data.part").parent.mkdir()
        (staging.root / f".trash-{pid}-0a0b0c" / "data.part").write_bytes(b"y")
    # A live worker is changing transfer b right now (it holds the transfer's lock).
    held = os.open(staging.path_of(DEV, "b" * 32) / "lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        done = staging.sweep_after_death(dead, lambda d, f: (d, f) in stored)
    finally:
        os.close(held)
    assert (done.stored_leftovers, done.trash_folders, done.busy) == (1, 1, 1)
    assert sorted(staging.transfers()) == [(DEV, "b" * 32), (DEV, "c" * 32)]
    assert [p.name for p in staging.root.glob(".trash-*")] == [f".trash-{live}-0a0b0c"]
    # Once the live worker let go, the next death's sweep takes the stored one too.
    assert staging.sweep_after_death(dead, lambda d, f: (d, f) in stored).stored_leftovers == 1
    assert list(staging.transfers()) == [(DEV, "c" * 32)]
