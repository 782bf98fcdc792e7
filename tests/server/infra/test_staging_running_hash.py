"""The running hash: each staged byte hashed once as it arrives, never a wrong digest at finalize.

Whatever order, repetition or restart the chunks come with, :meth:`Staging.finish` gives either the true
SHA-256 of the staged file or None (then the caller hashes the file): never a digest of other bytes.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from protocol.messages import FileChunk
from protocol.transfer import StageOutcome
from server.infra import staging_seal
from server.infra.staging import DATA_NAME, Staging

DEV, FILE = "dev-001", "e" * 32
STEP = 1000


def chunk(offset: int, data: bytes) -> FileChunk:
    """The chunk of ``data`` at ``offset`` (one grid cell)."""
    return FileChunk(device_id=DEV, file_id=FILE, offset=offset, data=data[offset : offset + STEP])


def stage_all(staging: Staging, data: bytes, offsets: list[int]) -> list[StageOutcome]:
    """Stage the chunks at ``offsets`` in that order (no manifest needed at this level)."""
    return [staging.stage(chunk(offset, data), require_manifest=False) for offset in offsets]


@pytest.fixture(params=[True, False], ids=["seal-of-file-times", "seal-of-crc32"])
def fine_times(request: pytest.FixtureRequest) -> bool:
    """Both seals: file times (kernels that show every write) and the CRC-32 re-read (coarse times)."""
    return bool(request.param)


@pytest.fixture
def new_staging(tmp_path: Path, fine_times: bool) -> Callable[[], Staging]:
    """Make a Staging over the same root (a new one = a restarted process or another worker)."""

    def make() -> Staging:
        made = Staging(tmp_path / "staging")
        made._times_show_writes = fine_times  # the probe's answer, forced so both seals are tested
        return made

    return make


@pytest.fixture
def staging(new_staging: Callable[[], Staging]) -> Staging:
    """Staging under a fresh directory."""
    return new_staging()


@pytest.fixture
def data() -> bytes:
    """Ten and a half chunks of random bytes."""
    return random.Random(12).randbytes(10 * STEP + 500)


def grid(data: bytes) -> list[int]:
    """Every chunk offset of ``data``."""
    return list(range(0, len(data), STEP))


def test_in_order_chunks_give_the_file_hash_without_hashing_the_file_again(
    staging: Staging, data: bytes
) -> None:
    """Chunks in order: finalize has the file's SHA-256 from the chunks, and it is the right one."""
    stage_all(staging, data, grid(data))
    staged = staging.finish(DEV, FILE, len(data))
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.path.read_bytes() == data
    assert (staging.finalize_hashed_on_arrival, staging.finalize_rehashed) == (1, 0)


def test_out_of_order_chunks_are_hashed_when_the_gap_before_them_fills(staging: Staging, data: bytes) -> None:
    """A window delivered backwards (a shared subscription reorders): still one digest, still right."""
    offsets = grid(data)
    stage_all(staging, data, [*offsets[4:0:-1], 0, *offsets[5:]])
    assert staging.finish(DEV, FILE, len(data)).sha256 == hashlib.sha256(data).hexdigest()


def test_resent_and_duplicate_chunks_are_not_hashed_twice(staging: Staging, data: bytes) -> None:
    """Chunks sent again after a timeout are duplicates; the digest counts each byte once."""
    offsets = grid(data)
    outcomes = stage_all(staging, data, offsets[:3] + offsets[:3] + offsets[2:] + [offsets[-1]])
    assert outcomes.count(StageOutcome.SAME) == 5
    assert staging.finish(DEV, FILE, len(data)).sha256 == hashlib.sha256(data).hexdigest()


def test_a_chunk_overlapping_the_hashed_prefix_feeds_only_its_new_bytes(staging: Staging) -> None:
    """A device that changed its chunk size mid-transfer resends across the grid: no byte twice."""
    data = random.Random(5).randbytes(3000)
    staging.stage(FileChunk(device_id=DEV, file_id=FILE, offset=0, data=data[:1000]), require_manifest=False)
    outcome = staging.stage(
        FileChunk(device_id=DEV, file_id=FILE, offset=500, data=data[500:2000]), require_manifest=False
    )
    assert outcome is StageOutcome.WRITTEN
    tail = FileChunk(device_id=DEV, file_id=FILE, offset=2000, data=data[2000:])
    staging.stage(tail, require_manifest=False)
    assert staging.finish(DEV, FILE, 3000).sha256 == hashlib.sha256(data).hexdigest()


def test_after_a_restart_the_staged_file_is_hashed_instead(
    new_staging: Callable[[], Staging], data: bytes
) -> None:
    """A hash state cannot be saved: a restarted process says so, and the caller hashes the file."""
    first = new_staging()
    offsets = grid(data)
    stage_all(first, data, offsets[:5])
    restarted = new_staging()
    stage_all(restarted, data, offsets[5:])
    staged = restarted.finish(DEV, FILE, len(data))
    assert staged.sha256 is None
    assert (restarted.finalize_hashed_on_arrival, restarted.finalize_rehashed) == (0, 1)
    assert staged.path.read_bytes() == data


@pytest.mark.parametrize("last", ["a", "b"])
def test_bytes_staged_by_another_worker_are_read_back_into_the_hash(
    new_staging: Callable[[], Staging], fine_times: bool, data: bytes, last: str
) -> None:
    """Two worker processes share a transfer: the one that saw byte 0 has the digest, or none; never wrong.

    With the CRC-32 seal it reads the other's chunks back from disk; with the seal of file times any
    write by the other process ends the running hash (the file is hashed at finalize).
    """
    a, b = new_staging(), new_staging()
    offsets = grid(data)
    for n, offset in enumerate(offsets[:-1]):
        (a if n % 2 == 0 else b).stage(chunk(offset, data), require_manifest=False)
    (a if last == "a" else b).stage(chunk(offsets[-1], data), require_manifest=False)
    assert b.finish(DEV, FILE, len(data)).sha256 is None  # never saw byte 0
    expected = None if fine_times else hashlib.sha256(data).hexdigest()
    assert a.finish(DEV, FILE, len(data)).sha256 == expected


def test_bytes_changed_while_the_transfer_arrives_are_hashed_again(staging: Staging, data: bytes) -> None:
    """A byte already hashed is changed in place before the next chunk: the running hash is not used."""
    offsets = grid(data)
    stage_all(staging, data, offsets[:4])
    with (staging.path_of(DEV, FILE) / DATA_NAME).open("r+b") as fh:
        fh.seek(1234)
        fh.write(bytes([data[1234] ^ 0x01]))
    stage_all(staging, data, offsets[4:])
    assert staging.finish(DEV, FILE, len(data)).sha256 is None


def test_bytes_changed_on_disk_after_staging_are_hashed_again(staging: Staging, data: bytes) -> None:
    """The file no longer holds what was hashed (another writer, in place): no digest from memory."""
    stage_all(staging, data, grid(data))
    with (staging.path_of(DEV, FILE) / DATA_NAME).open("r+b") as fh:
        fh.seek(4321)
        fh.write(bytes([data[4321] ^ 0x01]))
    assert staging.finish(DEV, FILE, len(data)).sha256 is None


def test_the_probe_finds_whether_file_times_show_every_write(tmp_path: Path) -> None:
    """The seal of file times is used only where a write right after a stat always changes the ctime."""
    from server.infra.staging_seal import _file_times_show_every_write

    probe_says = _file_times_show_every_write(tmp_path)
    target = tmp_path / "f"
    target.write_bytes(b"a")
    changes = 0
    for _ in range(200):
        before = target.stat().st_ctime_ns
        with target.open("r+b") as fh:
            fh.write(b"b")
        changes += target.stat().st_ctime_ns != before
    if probe_says:
        assert changes == 200
    assert list(tmp_path.iterdir()) == [target]  # the probe leaves nothing behind


def test_a_discarded_transfer_starts_a_new_hash(staging: Staging, data: bytes) -> None:
    """After a discard (hash mismatch, abort, janitor) the digest is of the bytes staged since."""
    other = random.Random(99).randbytes(len(data))
    stage_all(staging, other, grid(other)[:6])
    staging.discard(DEV, FILE, keep_manifest=True)
    stage_all(staging, data, grid(data))
    assert staging.finish(DEV, FILE, len(data)).sha256 == hashlib.sha256(data).hexdigest()


def test_a_discard_by_another_worker_is_noticed(new_staging: Callable[[], Staging], data: bytes) -> None:
    """Another process discarded and restaged: this process's older hash is not used for the new bytes."""
    a, b = new_staging(), new_staging()
    other = random.Random(98).randbytes(len(data))
    stage_all(a, other, grid(other))
    b.discard(DEV, FILE, keep_manifest=True)
    stage_all(b, data, grid(data))
    staged = a.finish(DEV, FILE, len(data))
    assert staged.sha256 is None
    assert staged.path.read_bytes() == data


def test_a_rewritten_index_ends_the_running_hash(staging: Staging, data: bytes) -> None:
    """Entries dropped after an unclean stop (new index generation): finalize hashes the file."""
    offsets = grid(data)
    stage_all(staging, data, offsets[:3])
    part = staging.path_of(DEV, FILE) / DATA_NAME
    lost = bytearray(part.read_bytes())
    lost[STEP : 2 * STEP] = bytes(STEP)  # the second chunk never reached the disk
    part.write_bytes(bytes(lost))
    # The device resends it: the damaged entry is dropped (index rewritten) and the chunk written again.
    assert staging.stage(chunk(STEP, data), require_manifest=False) is StageOutcome.WRITTEN
    stage_all(staging, data, offsets[3:])
    assert len(staging.entries(DEV, FILE)) == len(offsets)  # the lost entry went, its resend came
    staged = staging.finish(DEV, FILE, len(data))
    assert staged.sha256 is None
    assert staged.path.read_bytes() == data


@pytest.mark.parametrize("seed", range(6))
def test_any_order_with_repeats_never_gives_a_wrong_digest(
    new_staging: Callable[[], Staging], data: bytes, seed: int
) -> None:
    """Shuffled chunks, repeats and a restart at a random point: the digest is right or absent."""
    rng = random.Random(seed)
    offsets = grid(data)
    sends = offsets + rng.sample(offsets, 4)
    rng.shuffle(sends)
    cut = rng.randrange(len(sends) + 1) if seed % 2 else len(sends)
    staging = new_staging()
    stage_all(staging, data, sends[:cut])
    if cut < len(sends):
        staging = new_staging()  # restarted mid-transfer
    stage_all(staging, data, sends[cut:])
    staged = staging.finish(DEV, FILE, len(data))
    assert staged.sha256 in (None, hashlib.sha256(data).hexdigest())
    if cut == len(sends):
        assert staged.sha256 == hashlib.sha256(data).hexdigest()  # one process saw it all


# -- the hashing thread (docs/performance.md, "The running hash off the network thread") ------------


def test_chunks_are_hashed_off_the_thread_that_stages_them(
    staging: Staging, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MQTT network thread only hands the bytes over; the process's hashing thread hashes them."""
    hashed_in: set[str] = set()
    original = staging_seal._RunningHash.hash_now

    def spy(self: staging_seal._RunningHash, block: bytes | memoryview) -> None:
        hashed_in.add(threading.current_thread().name)
        original(self, block)

    monkeypatch.setattr(staging_seal._RunningHash, "hash_now", spy)
    stage_all(staging, data, grid(data))
    assert staging.finish(DEV, FILE, len(data)).sha256 == hashlib.sha256(data).hexdigest()
    assert hashed_in == {"zfjl-staging-hash"}


def test_finalize_waits_for_the_hashing_thread_to_catch_up(
    staging: Staging, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hashing thread far behind the chunks: finalize waits for it and still gives the true digest."""
    original = staging_seal._RunningHash.hash_now

    def slow(self: staging_seal._RunningHash, block: bytes | memoryview) -> None:
        time.sleep(0.05)
        original(self, block)

    monkeypatch.setattr(staging_seal._RunningHash, "hash_now", slow)
    stage_all(staging, data, grid(data))  # returns long before 11 × 50 ms of hashing is done
    staged = staging.finish(DEV, FILE, len(data))
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert (staging.finalize_hashed_on_arrival, staging.finalize_rehashed) == (1, 0)


def test_a_hashing_failure_makes_finalize_hash_the_file_not_trust_a_partial_digest(
    staging: Staging, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the hashing thread fails on a block, the running hash is given up: the file is hashed instead."""
    original = staging_seal._RunningHash.hash_now
    calls = 0

    def failing_once(self: staging_seal._RunningHash, block: bytes | memoryview) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise MemoryError("simulated")
        original(self, block)

    monkeypatch.setattr(staging_seal._RunningHash, "hash_now", failing_once)
    stage_all(staging, data, grid(data))
    staged = staging.finish(DEV, FILE, len(data))
    assert staged.sha256 is None  # the caller hashes the staged file, as after a restart
    assert (staging.finalize_hashed_on_arrival, staging.finalize_rehashed) == (0, 1)
    assert staged.path.read_bytes() == data


def test_the_hashing_thread_ends_when_idle_and_comes_back_when_needed(
    new_staging: Callable[[], Staging], data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread is left behind by an idle process; the next chunk starts one again."""
    monkeypatch.setattr(staging_seal, "_IDLE_EXIT_S", 0.05)

    def hashing_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "zfjl-staging-hash"]

    staging = new_staging()
    stage_all(staging, data, grid(data))
    assert staging.finish(DEV, FILE, len(data)).sha256 == hashlib.sha256(data).hexdigest()
    deadline = time.monotonic() + 10
    while hashing_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not hashing_threads()
    staging.discard(DEV, FILE)
    stage_all(staging, data, grid(data))
    assert staging.finish(DEV, FILE, len(data)).sha256 == hashlib.sha256(data).hexdigest()
