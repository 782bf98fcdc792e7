"""Hash staged bytes once as they arrive, and prove at finalize that the file was not changed since."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

from protocol.ranges import RangeSet
from zfjl_common.fsutil import HASH_CHUNK_BYTES

__all__ = []


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

    __slots__ = ("crc", "generation", "position", "seal", "sha")

    def __init__(self, generation: tuple[bytes, int], *, with_crc: bool) -> None:
        self.generation = generation
        self.sha = hashlib.sha256()
        self.crc: int | None = 0 if with_crc else None
        self.position = 0
        self.seal: tuple[int, int, int, int] | None = None

    def feed(self, data: bytes | memoryview) -> None:
        """Hash the next bytes of the prefix."""
        self.sha.update(data)
        if self.crc is not None:
            self.crc = zlib.crc32(data, self.crc)
        self.position += len(data)

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
    info = os.fstat(data_fd)
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
