"""Hash staged bytes once as they arrive, and prove at finalize that the file was not changed since."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import zlib
from pathlib import Path

from protocol.ranges import RangeSet
from zfjl_common.fsutil import HASH_CHUNK_BYTES

__all__ = []

_LOG = logging.getLogger(__name__)

# Bytes handed to the hashing thread and not hashed yet, per process: a chunk handler that gets ahead
# by more waits (bounds memory at a few windows of chunks).
_MAX_PENDING_BYTES = 32 * 1024 * 1024
# The hashing thread ends after this long without work and is started again by the next feed.
_IDLE_EXIT_S = 30.0
# How long finalize waits for the hashing thread before it gives up on the running hash (and hashes the
# staged file itself, as after a restart).
_SETTLE_TIMEOUT_S = 120.0


class _Hasher:
    """The one thread per process that does the SHA-256 (and CRC-32) work of every running hash.

    The chunk handler runs in the MQTT client's network thread; hashing a 256 KiB chunk there (≈ 1 ms
    without SHA extensions) kept that thread from reading the next message. Here the handler only hands
    the bytes over and goes on; hashlib releases the GIL while it hashes, so the two run on two cores.
    Feeds are taken in order (one queue, one thread), so every running hash sees its prefix in order.
    The thread ends after a while without work and is started again when needed, so nothing has to
    stop it and an idle process keeps no thread (or a forked child a dead one).
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[_RunningHash, bytes | memoryview]] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def submit(self, running: _RunningHash, data: bytes | memoryview) -> None:
        with self._cond:
            while self._pending >= _MAX_PENDING_BYTES and self._alive():
                self._cond.wait(1.0)
            self._pending += len(data)
            self._queue.put((running, data))
            if not self._alive():
                self._thread = threading.Thread(target=self._run, name="zfjl-staging-hash", daemon=True)
                self._thread.start()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                running, data = self._queue.get(timeout=_IDLE_EXIT_S)
            except queue.Empty:
                with self._cond:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                running.hash_now(data)
            except Exception:  # never leave a finalize waiting: the running hash is given up instead
                _LOG.exception("staging: hashing a chunk failed; the transfer is hashed at finalize")
                running.give_up()
            with self._cond:
                self._pending -= len(data)
                self._cond.notify_all()


_hasher = _Hasher()


def _reset_after_fork() -> None:
    global _hasher
    _hasher = _Hasher()


os.register_at_fork(after_in_child=_reset_after_fork)


class _RunningHash:
    """SHA-256 of the bytes ``[0, position)`` of one generation of a transfer's data file.

    Advanced as chunks are staged in order (an out-of-order chunk waits on disk and is read back when
    the gap before it fills), so each staged byte is hashed once. The hash proves what the device sent;
    finalize must also know the file still holds those bytes (the local store links that very file), so
    the state carries a seal: the data file's (inode, size, mtime, ctime) after this process's last write,
    or, where the kernel's file times are too coarse to show every write, a CRC-32 of the bytes hashed,
    checked by re-reading the file (docs/performance.md). hashlib states cannot be saved, so a restarted
    process starts without one and finalize hashes the staged file.
    """

    __slots__ = ("_crc", "_done", "_failed", "_hashed", "_sha", "generation", "position", "seal", "with_crc")

    def __init__(self, generation: tuple[bytes, int], *, with_crc: bool) -> None:
        self.generation = generation
        self._sha = hashlib.sha256()
        self.with_crc = with_crc
        self._crc = 0
        # ``position``: the bytes accepted into the prefix (the chunk path's view, advanced at once);
        # ``_hashed``: the bytes the hashing thread has taken so far. They meet in :meth:`settled`.
        self.position = 0
        self._hashed = 0
        self._failed = False
        self._done = threading.Condition()
        self.seal: tuple[int, int, int, int] | None = None

    def feed(self, data: bytes | memoryview) -> None:
        """Add the next bytes of the prefix; they are hashed by the process's hashing thread.

        ``data`` must not change afterwards (chunk payloads and ``pread`` blocks are immutable bytes).
        """
        if not data:
            return
        self.position += len(data)
        _hasher.submit(self, data)

    def hash_now(self, data: bytes | memoryview) -> None:
        """Called by the hashing thread, in feed order."""
        self._sha.update(data)
        if self.with_crc:
            self._crc = zlib.crc32(data, self._crc)
        with self._done:
            self._hashed += len(data)
            self._done.notify_all()

    def give_up(self) -> None:
        with self._done:
            self._failed = True
            self._done.notify_all()

    def settled(self, timeout: float = _SETTLE_TIMEOUT_S) -> tuple[str, int] | None:
        """(SHA-256 hex, CRC-32) of ``[0, position)`` once hashed; None if hashing failed or timed out.

        The caller holds the transfer's lock, so no feed races the wait.
        """
        with self._done:
            if not self._done.wait_for(lambda: self._failed or self._hashed >= self.position, timeout):
                _LOG.warning("staging: running hash not caught up in %.0f s; hashing the file", timeout)
                return None
            if self._failed or self._hashed != self.position:
                return None
            return self._sha.hexdigest(), self._crc

    def catch_up(self, data_fd: int, held: RangeSet) -> None:
        """Hash staged bytes that extend the prefix (chunks that arrived before the gap filled)."""
        for start, end in held.spans:
            if start <= self.position < end:
                while self.position < end:
                    block = os.pread(data_fd, min(HASH_CHUNK_BYTES, end - self.position), self.position)
                    if not block:
                        return  # shorter than the index says (lost bytes): finalize hashes the file
                    self.feed(block)
                return


def _seal(data_fd: int) -> tuple[int, int, int, int]:
    """What changes when anyone writes the file: inode, size, mtime and ctime (ns)."""
    return _seal_of(os.fstat(data_fd))


def _seal_of(info: os.stat_result) -> tuple[int, int, int, int]:
    """The seal of a file from its ``stat`` (the same as :func:`_seal` of its open descriptor)."""
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _file_times_show_every_write(root: Path) -> bool:
    """Whether a write right after an ``fstat`` always changes the file's ctime here.

    True on kernels with fine-grained ("multigrain") timestamps for this file system (Linux 6.13+ on
    ext4, xfs, btrfs, tmpfs): once a ctime has been read, the next change gets a new, finer one. With
    coarse timestamps two writes within one clock tick (1–10 ms) leave the same ctime, so a seal of
    file times could miss a write and the CRC-32 seal is used instead.
    """
    probe = root / f".times-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        for n in range(32):
            os.pwrite(fd, b"x", n)
            before = os.fstat(fd)
            os.pwrite(fd, b"y", n)
            after = os.fstat(fd)
            if (before.st_ctime_ns, before.st_mtime_ns) == (after.st_ctime_ns, after.st_mtime_ns):
                return False
        return True
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _crc32_fd(fd: int, size: int) -> int | None:
    """CRC-32 of the first ``size`` bytes of an open file; None when it is shorter."""
    crc, offset = 0, 0
    while offset < size:
        block = os.pread(fd, min(HASH_CHUNK_BYTES, size - offset), offset)
        if not block:
            return None
        crc = zlib.crc32(block, crc)
        offset += len(block)
    return crc
