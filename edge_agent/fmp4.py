"""ISO-BMFF box walker that cuts a crash-truncated fragmented MP4 back to its last whole fragment."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["Box", "is_complete_fragmented_mp4", "iter_boxes", "recover_fragmented_mp4"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I4s")
_LARGE_SIZE = struct.Struct(">Q")
# Top-level boxes that may sit between fragments without affecting playability.
_NEUTRAL_BOXES = frozenset({b"free", b"skip", b"styp", b"sidx", b"ssix", b"prft", b"emsg", b"uuid", b"meta"})


@dataclass(frozen=True, kw_only=True)
class Box:
    """One box header: its type, where it starts, its full size and whether all its bytes are present."""

    type: bytes
    offset: int
    size: int
    header_size: int
    complete: bool

    @property
    def end(self) -> int:
        """Offset just past the box."""
        return self.offset + self.size


def iter_boxes(stream: BinaryIO, start: int, end: int) -> Iterator[Box]:
    """Boxes between start and end; the last one yielded may be incomplete, then iteration stops."""
    offset = start
    while offset < end:
        stream.seek(offset)
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size or offset + _HEADER.size > end:
            yield Box(type=b"", offset=offset, size=end - offset, header_size=0, complete=False)
            return
        size, box_type = _HEADER.unpack(header)
        header_size = _HEADER.size
        if size == 1:
            large = stream.read(_LARGE_SIZE.size)
            if len(large) < _LARGE_SIZE.size or offset + 16 > end:
                yield Box(type=box_type, offset=offset, size=end - offset, header_size=0, complete=False)
                return
            (size,) = _LARGE_SIZE.unpack(large)
            header_size += _LARGE_SIZE.size
        elif size == 0:
            # "Extends to end of file": a writer that never came back to fix the size; treat as cut.
            yield Box(
                type=box_type, offset=offset, size=end - offset, header_size=header_size, complete=False
            )
            return
        if size < header_size:
            # Garbage where a header should be (e.g. a torn write): nothing after this can be trusted.
            yield Box(type=box_type, offset=offset, size=end - offset, header_size=0, complete=False)
            return
        complete = offset + size <= end
        yield Box(
            type=box_type,
            offset=offset,
            size=size if complete else end - offset,
            header_size=header_size,
            complete=complete,
        )
        if not complete:
            return
        offset += size


def _children_intact(stream: BinaryIO, box: Box) -> bool:
    """Whether a container box's children tile it exactly (catches zero-filled or torn tails)."""
    children = list(iter_boxes(stream, box.offset + box.header_size, box.end))
    return all(child.complete and child.type for child in children)


def _playable_end(stream: BinaryIO, file_size: int) -> tuple[int | None, bool]:
    """(end of the last whole moof+mdat pair or None, whether every top-level box is whole)."""
    seen_ftyp = seen_moov = False
    pending_moof: Box | None = None
    playable_end: int | None = None
    all_complete = True
    for box in iter_boxes(stream, 0, file_size):
        if not box.complete:
            all_complete = False
            break
        if box.type == b"ftyp":
            seen_ftyp = True
        elif box.type == b"moov":
            if not seen_ftyp or not _children_intact(stream, box):
                return None, False
            seen_moov = True
        elif box.type == b"moof":
            if not seen_moov or not _children_intact(stream, box):
                all_complete = False
                break
            pending_moof = box
        elif box.type == b"mdat":
            if pending_moof is not None:
                playable_end = box.end
                pending_moof = None
        elif box.type == b"mfra":
            pass  # random-access index written on a clean close; optional for playback
        elif box.type not in _NEUTRAL_BOXES:
            logger.debug("unexpected top-level box %r at %d", box.type, box.offset)
    if not seen_moov:
        return None, False
    return playable_end, all_complete and pending_moof is None


def is_complete_fragmented_mp4(path: Path) -> bool:
    """Whether the file has ftyp+moov, at least one fragment, and no cut-off box at the end."""
    path = Path(path)
    with path.open("rb") as stream:
        playable_end, all_complete = _playable_end(stream, path.stat().st_size)
    return playable_end is not None and all_complete


def recover_fragmented_mp4(path: Path) -> int | None:
    """Truncate a crash-cut fragmented MP4 after its last whole fragment; new size, or None if unplayable."""
    path = Path(path)
    with path.open("rb") as stream:
        file_size = os.fstat(stream.fileno()).st_size
        playable_end, all_complete = _playable_end(stream, file_size)
    if playable_end is None:
        logger.warning("segment %s has no complete moov or fragment; nothing to recover", path)
        return None
    if all_complete:
        return file_size
    with path.open("r+b") as stream:
        stream.truncate(playable_end)
        stream.flush()
        os.fsync(stream.fileno())
    logger.info("recovered segment %s: truncated %d -> %d bytes", path, file_size, playable_end)
    return playable_end
