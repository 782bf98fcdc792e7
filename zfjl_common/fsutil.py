"""File helpers every side needs the same way: hash a file in chunks, make a directory entry durable.

They live in one module so that the agent (which signs a segment's hash), the server (which checks it
before committing, JL-6) and the firmware tools (which sign bundles) cannot drift apart. Standard
library only: the agent installs without Flask, SQLAlchemy or boto3, and `protocol/` stays sans-IO.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = [
    "HASH_CHUNK_BYTES",
    "chunk_count",
    "fsync_dir",
    "sha256_fd",
    "sha256_file",
    "size_and_sha256_file",
    "size_sha256_and_chunk_digests",
]

# Big enough to stream at disk speed, small enough that a multi-gigabyte segment never sits in memory.
HASH_CHUNK_BYTES = 1024 * 1024


def size_and_sha256_file(path: Path | str) -> tuple[int, str]:
    """(size in bytes, hex SHA-256) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def chunk_count(size: int, chunk_bytes: int) -> int:
    """How many chunks of ``chunk_bytes`` a file of ``size`` bytes is cut into (0 for an empty file)."""
    return -(-size // chunk_bytes)


def size_sha256_and_chunk_digests(path: Path | str, chunk_bytes: int) -> tuple[int, str, list[bytes]]:
    """(size, hex SHA-256 of the file, raw SHA-256 of each ``chunk_bytes`` piece) in ONE read of the file.

    The pieces lie on the grid the uploader cuts chunks on (offset 0, ``chunk_bytes``, …; the last one
    may be shorter), so each digest is the SHA-256 a chunk's topic names (docs/protocol.md). Both
    hashes are fed from the same buffer: the file is read once, not once per hash.
    """
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    whole = hashlib.sha256()
    digests: list[bytes] = []
    piece = hashlib.sha256()
    piece_len = 0
    size = 0
    # A multiple of the chunk size near HASH_CHUNK_BYTES: a read never splits more chunks than needed.
    read_bytes = chunk_bytes * max(1, HASH_CHUNK_BYTES // chunk_bytes)
    with Path(path).open("rb") as stream:
        while block := stream.read(read_bytes):
            view = memoryview(block)
            whole.update(view)
            size += len(view)
            start = 0
            while start < len(view):
                take = min(chunk_bytes - piece_len, len(view) - start)
                piece.update(view[start : start + take])
                piece_len += take
                start += take
                if piece_len == chunk_bytes:
                    digests.append(piece.digest())
                    piece, piece_len = hashlib.sha256(), 0
    if piece_len:
        digests.append(piece.digest())
    return size, whole.hexdigest(), digests


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return size_and_sha256_file(path)[1]


def sha256_fd(fd: int) -> tuple[int, str]:
    """(size, hex SHA-256) of an open file descriptor, read with pread so its offset is left alone."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, HASH_CHUNK_BYTES, offset):
        digest.update(chunk)
        offset += len(chunk)
    return offset, digest.hexdigest()


def fsync_dir(path: Path | str) -> None:
    """Flush a directory so the entries created, linked or renamed in it survive a power cut (POSIX fsync)."""
    # O_DIRECTORY makes a mistaken file path fail loudly instead of syncing the wrong thing.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
