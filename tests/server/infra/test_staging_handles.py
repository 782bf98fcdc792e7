"""A transfer's staging files kept open between chunks (server/infra/staging_handles.py).

The descriptors, parsed index and manifest a process keeps must never let it write into a folder another
process moved away, miss an index another process rewrote, keep a removed file's disk space for long, or
let two threads (or a forked child) both believe they hold a transfer's lock. JL-19 (nothing lost,
altered or silently dropped) depends on each of these.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from protocol.messages import FileChunk
from protocol.ranges import RangeSet
from protocol.transfer import StageOutcome
from server.infra import staging_handles
from server.infra.staging import DATA_NAME, INDEX_NAME, Staging, StagingBusy

DEV = "dev-001"


def file_id(n: int) -> str:
    return hashlib.md5(str(n).encode()).hexdigest()


def chunk(offset: int, data: bytes, fid: str = file_id(0)) -> FileChunk:
    return FileChunk(device_id=DEV, file_id=fid, offset=offset, data=data)


def stage(staging: Staging, offset: int, data: bytes, fid: str = file_id(0)) -> StageOutcome:
    return staging.stage(chunk(offset, data, fid), require_manifest=False)


def open_fds_into(folder: Path) -> list[str]:
    """This process's descriptors on files under ``folder`` (deleted ones included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "staging"


def test_a_worker_never_writes_into_a_transfer_another_process_discarded(root: Path) -> None:
    """Worker A keeps the transfer's files open; worker B commits it and discards the folder. A's next
    chunk for it finds no staging (its own open files are in the trash) instead of writing there."""
    a, b = Staging(root), Staging(root)
    assert stage(a, 0, b"a" * 10) is StageOutcome.WRITTEN
    assert b.discard(DEV, file_id(0))
    assert a.stage(chunk(10, b"b" * 10)) is StageOutcome.NO_MANIFEST
    assert not a.exists(DEV, file_id(0))
    # Staged again from the start (no manifest needed at this level): a fresh folder, fresh files.
    assert stage(a, 0, b"c" * 10) is StageOutcome.WRITTEN
    assert (a.path_of(DEV, file_id(0)) / DATA_NAME).read_bytes() == b"c" * 10
    assert b.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 10),))


def test_an_index_another_process_rewrote_is_read_again(root: Path) -> None:
    """B finds a damaged chunk and rewrites the index without it: A, which had the old index open and
    parsed, sees the chunk gone and takes the resend instead of calling it a duplicate."""
    a, b = Staging(root), Staging(root)
    assert stage(a, 0, b"a" * 10) is StageOutcome.WRITTEN
    assert stage(a, 10, b"b" * 10) is StageOutcome.WRITTEN
    data = a.path_of(DEV, file_id(0)) / DATA_NAME
    with data.open("r+b") as fh:
        fh.seek(12)
        fh.write(b"X")  # the second chunk damaged on disk
    bad = b.drop_bad_claims(DEV, file_id(0))
    assert [e.offset for e in bad] == [10]
    assert a.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 10),))
    assert stage(a, 10, b"b" * 10) is StageOutcome.WRITTEN
    assert data.read_bytes() == b"a" * 10 + b"b" * 10
    assert b.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 20),))


def test_bytes_a_janitor_removed_are_staged_again_into_a_new_file(root: Path) -> None:
    """The janitor of another process drops the bytes and keeps the manifest: this process's next chunk
    goes into the new data file in place, not into the removed one it still had open."""
    a, janitor = Staging(root), Staging(root)
    assert stage(a, 0, b"a" * 10) is StageOutcome.WRITTEN
    assert janitor.discard(DEV, file_id(0), keep_manifest=True)
    assert a.view_parts(DEV, file_id(0))[1] == RangeSet()
    assert stage(a, 0, b"z" * 10) is StageOutcome.WRITTEN
    assert (a.path_of(DEV, file_id(0)) / DATA_NAME).read_bytes() == b"z" * 10
    assert janitor.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 10),))
    # Again, and this time the other process stages the first chunk of the new file.
    assert janitor.discard(DEV, file_id(0), keep_manifest=True)
    assert stage(janitor, 0, b"y" * 10) is StageOutcome.WRITTEN
    assert stage(a, 10, b"w" * 10) is StageOutcome.WRITTEN
    staged = a.finish(DEV, file_id(0), 20)
    assert staged.path.read_bytes() == b"y" * 10 + b"w" * 10


def test_chunks_appended_by_another_process_are_seen(root: Path) -> None:
    """Both workers of a shared subscription stage chunks of one transfer: each sees the other's."""
    a, b = Staging(root), Staging(root)
    assert stage(a, 0, b"a" * 10) is StageOutcome.WRITTEN
    assert stage(b, 10, b"b" * 10) is StageOutcome.WRITTEN
    assert stage(a, 10, b"b" * 10) is StageOutcome.SAME
    assert stage(a, 10, b"c" * 10) is StageOutcome.DIFFERENT
    assert stage(a, 20, b"d" * 10) is StageOutcome.WRITTEN
    assert b.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 30),))
    assert (root / DEV / file_id(0) / DATA_NAME).read_bytes() == b"a" * 10 + b"b" * 10 + b"d" * 10


def test_open_files_are_bounded_and_idle_ones_closed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many transfers at once keep at most MAX_OPEN handles; a transfer left alone is closed, so the
    disk space of one another process committed and removed is given back."""
    monkeypatch.setattr(staging_handles, "MAX_OPEN", 8)
    a, b = Staging(root), Staging(root)
    for n in range(20):
        assert stage(a, 0, bytes([n]) * 100, file_id(n)) is StageOutcome.WRITTEN
    assert a._handles.open_count() <= 8
    assert len(open_fds_into(root)) <= 3 * 8
    for n in range(20):  # every transfer still reads back whole, evicted or not
        assert stage(a, 100, bytes([n]) * 100, file_id(n)) is StageOutcome.WRITTEN
        assert (root / DEV / file_id(n) / INDEX_NAME).is_file()
        assert a.view_parts(DEV, file_id(n))[1] == RangeSet(((0, 200),))

    assert b.discard(DEV, file_id(19))  # committed and removed by another worker
    assert any("(deleted)" in target for target in open_fds_into(root))  # a still holds its files
    monkeypatch.setattr(staging_handles, "IDLE_CLOSE_S", 0.0)
    time.sleep(1.1)  # idle handles are swept at most once a second, when a handle is taken
    stage(a, 0, b"x" * 10, file_id(99))
    assert not any("(deleted)" in target for target in open_fds_into(root))


def test_threads_sharing_the_open_lock_still_exclude_each_other(root: Path) -> None:
    """The lock file's descriptor is shared by the process's threads, and flock would let them all in:
    while one thread holds a transfer, another thread's chunk for it waits."""
    staging = Staging(root)
    assert stage(staging, 0, b"a" * 10) is StageOutcome.WRITTEN
    done = threading.Event()

    def other() -> None:
        stage(staging, 10, b"b" * 10)
        done.set()

    with staging.hold(DEV, file_id(0)):
        worker = threading.Thread(target=other)
        worker.start()
        assert not done.wait(0.5)
        # Inside its own hold this thread stages without waiting on itself.
        assert stage(staging, 20, b"c" * 10) is StageOutcome.WRITTEN
    assert done.wait(5)
    worker.join()
    assert staging.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 30),))


def test_a_thread_waits_for_another_threads_hold_only_for_the_lock_wait(root: Path) -> None:
    """A thread that never lets go (paused, stuck) holds up another thread's chunk for at most the
    configured wait, as a paused process does (StagingBusy; the message stays unanswered)."""
    staging = Staging(root, lock_wait_s=0.3)
    assert stage(staging, 0, b"a" * 10) is StageOutcome.WRITTEN
    outcome: list[object] = []

    def other() -> None:
        try:
            outcome.append(stage(staging, 10, b"b" * 10))
        except StagingBusy as exc:
            outcome.append(exc)

    with staging.hold(DEV, file_id(0)):
        worker = threading.Thread(target=other)
        started = time.monotonic()
        worker.start()
        worker.join(5)
        waited = time.monotonic() - started
    assert len(outcome) == 1 and isinstance(outcome[0], StagingBusy)
    assert 0.25 <= waited < 3
    assert staging.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 10),))


def test_a_forked_child_does_not_inherit_the_parents_hold(root: Path) -> None:
    """A child forked while the parent holds a transfer must not take the parent's open lock for its
    own, nor release it: it waits like any other process, and the parent still holds it afterwards."""
    staging = Staging(root, lock_wait_s=0.3)
    assert stage(staging, 0, b"a" * 10) is StageOutcome.WRITTEN
    with staging.hold(DEV, file_id(0)):
        pid = os.fork()
        if pid == 0:  # the child: it must find the lock taken, and leave it taken
            code = 1
            try:
                stage(staging, 10, b"b" * 10)
            except StagingBusy:
                code = 0
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        other = Staging(root, lock_wait_s=0.3)  # another process's view: the lock is still held
        with pytest.raises(StagingBusy):
            stage(other, 10, b"b" * 10)
    assert staging.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 10),))


def test_an_index_left_torn_by_a_crash_reads_the_same_in_every_process(root: Path) -> None:
    """A crash left only half a line in a new index: the process that stages next keeps no view of its
    own that another process would not read from the file (its first line is unreadable to both)."""
    a, b = Staging(root), Staging(root)
    folder = a.path_of(DEV, file_id(0))
    folder.mkdir(parents=True)
    (folder / INDEX_NAME).write_bytes(b"10 10 ab")  # no header, no newline
    assert stage(a, 0, b"a" * 10) is StageOutcome.WRITTEN
    assert a.view_parts(DEV, file_id(0))[1] == b.view_parts(DEV, file_id(0))[1]
    assert stage(a, 10, b"b" * 10) is StageOutcome.WRITTEN
    assert a.view_parts(DEV, file_id(0))[1] == b.view_parts(DEV, file_id(0))[1] == RangeSet(((10, 20),))
    # The chunk the torn line swallowed is taken again when resent, and then both see it.
    assert stage(b, 0, b"a" * 10) is StageOutcome.WRITTEN
    assert a.view_parts(DEV, file_id(0))[1] == RangeSet(((0, 20),))
