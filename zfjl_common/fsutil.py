"""File helpers every side needs the same way: hash a file in chunks, make a directory entry durable.

They live in one module so that the agent (which signs a segment's hash), the server (which checks it
before committing, JL-6) and the firmware tools (which sign bundles) cannot drift apart. Standard
library only: the agent installs without Flask, SQLAlchemy or boto3, and `protocol/` stays sans-IO.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["HASH_CHUNK_BYTES", "fsync_dir", "sha256_fd", "sha256_file", "size_and_sha256_file"]

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
