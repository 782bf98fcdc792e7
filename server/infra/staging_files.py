"""The staging folder's files: the chunk index format and the positioned reads and writes of the data file."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from protocol.ranges import RangeSet

# The files of one transfer's staging folder (server/infra/staging.py).
MANIFEST_NAME = "manifest.json"
DATA_NAME = "data.part"
INDEX_NAME = "index"
LOCK_NAME = "lock"

# The staging log: an unreadable index line is reported with the rest of staging's messages.
_LOG = logging.getLogger("server.infra.staging")
# Reads of staged bytes go in blocks of this size.
_READ_BLOCK = 1024 * 1024

__all__ = ["IndexEntry"]


INDEX_LINE = re.compile(r"(0|[1-9][0-9]{0,15}) ([1-9][0-9]{0,15}) ([0-9a-f]{64})")


@dataclass(frozen=True)
class IndexEntry:
    """One staged chunk as the index names it."""

    offset: int
    length: int
    sha256: str

    @property
    def end(self) -> int:
        """Offset just past the chunk."""
        return self.offset + self.length

    def line(self) -> bytes:
        """The entry as one index line."""
        return f"{self.offset} {self.length} {self.sha256}\n".encode("ascii")


@dataclass(frozen=True)
class ParsedIndex:
    """What this process parsed of one generation of an index (append-only, so only the tail is new)."""

    header: bytes
    consumed: int
    entries: tuple[IndexEntry, ...]
    held: RangeSet


def new_header() -> bytes:
    return f"# {os.urandom(12).hex()}\n".encode("ascii")


def parse_index(data: bytes) -> list[IndexEntry]:
    entries: list[IndexEntry] = []
    # A crash can leave a torn last line; only newline-terminated, well-formed lines count.
    for raw in data.split(b"\n")[:-1]:
        if raw.startswith(b"#"):
            continue
        match = INDEX_LINE.fullmatch(raw.decode("ascii", "replace"))
        if match is None:
            if raw:
                _LOG.warning("staging: ignoring malformed index line %r", raw[:200])
            continue
        entries.append(IndexEntry(int(match[1]), int(match[2]), match[3]))
    return entries


def read_at(fd: int, offset: int, length: int) -> bytes:
    parts: list[bytes] = []
    while length > 0:
        block = os.pread(fd, min(length, _READ_BLOCK), offset)
        if not block:
            break
        parts.append(block)
        offset += len(block)
        length -= len(block)
    return b"".join(parts)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
