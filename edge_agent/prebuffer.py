"""The pre-event buffer: the last ``prerecord_seconds`` of video **and audio** before a session starts.

Raw frames are far too big for a Pi's RAM (30 s of 640x360 BGR at 15 fps is ~300 MB), so while idle
(``idle_recording = "prebuffer"``) the recorder keeps writing short encoded fMP4 pieces (~2 s, about
100 KB/s) and this buffer keeps only the pieces inside the window; older ones are deleted (they are
not evidence: no session was open). When a session starts, the pieces in the window are joined by
stream copy — no re-encoding — into the session's first segment, whose manifest start time is the
oldest buffered frame. The window is trimmed to whole pieces, so it holds up to one piece more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av

from edge_agent.encoder import SegmentFile, fsync_path

__all__ = ["JoinedSegment", "PreBuffer", "join_pieces"]

logger = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000
_MUX_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


@dataclass(frozen=True, kw_only=True)
class JoinedSegment:
    """The pre-record joined into one segment (fits ``outbox.SegmentLike``)."""

    path: Path
    size: int
    sha256: str
    started_utc: datetime
    ended_utc: datetime
    started_mono_ns: int
    ended_mono_ns: int


class PreBuffer:
    """Keeps idle pieces inside the window in ``directory``; thread-safe."""

    def __init__(self, directory: Path, seconds: float) -> None:
        """Pieces live in ``directory`` (emptied now: pieces of an earlier run are stale)."""
        self.directory = directory
        self.seconds = seconds
        self._pieces: list[SegmentFile] = []
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.mp4"):
            stale.unlink(missing_ok=True)

    def add(self, piece: SegmentFile) -> None:
        """Take a closed idle piece (moved into the buffer folder), dropping pieces out of the window."""
        moved = self.directory / piece.path.name
        os.replace(piece.path, moved)
        kept = dataclasses.replace(piece, path=moved)
        with self._lock:
            self._pieces.append(kept)
            self._trim(kept.ended_mono_ns)

    def _trim(self, now_mono_ns: int) -> None:
        window_start = now_mono_ns - int(self.seconds * _NS_PER_S)
        while self._pieces and self._pieces[0].ended_mono_ns <= window_start:
            old = self._pieces.pop(0)
            old.path.unlink(missing_ok=True)

    def take(self, start_mono_ns: int, out_path: Path) -> JoinedSegment | None:
        """Join the pieces within ``seconds`` before ``start_mono_ns`` into ``out_path``; empty the buffer."""
        with self._lock:
            self._trim(start_mono_ns)
            pieces, self._pieces = self._pieces, []
        if not pieces or self.seconds <= 0:
            for piece in pieces:
                piece.path.unlink(missing_ok=True)
            return None
        try:
            return join_pieces(pieces, out_path)
        finally:
            for piece in pieces:
                piece.path.unlink(missing_ok=True)


def join_pieces(pieces: list[SegmentFile], out_path: Path) -> JoinedSegment:
    """Stream-copy consecutive fMP4 pieces into one fMP4, each placed at its capture time."""
    first = pieces[0]
    last_dts: dict[int, int] = {}
    with av.open(str(out_path), "w", format="mp4", options=dict(_MUX_OPTIONS)) as out:
        out_streams: dict[int, Any] = {}
        with av.open(str(first.path)) as template:
            for stream in template.streams:
                if stream.type in ("video", "audio"):
                    out_streams[stream.index] = out.add_stream_from_template(stream)
        for piece in pieces:
            offset_ns = piece.started_mono_ns - first.started_mono_ns
            with av.open(str(piece.path)) as source:
                for packet in source.demux():
                    if packet.dts is None or packet.stream.index not in out_streams:
                        continue
                    time_base = packet.time_base
                    assert time_base is not None
                    shift = offset_ns * time_base.denominator // (time_base.numerator * _NS_PER_S)
                    dts = packet.dts + shift
                    index = packet.stream.index
                    if dts <= last_dts.get(index, -1):
                        # Audio padded to the end of one piece can overlap the next piece's first
                        # moments by a few ms; keep the earlier copy.
                        continue
                    last_dts[index] = dts
                    packet.dts = dts
                    if packet.pts is not None:
                        packet.pts += shift
                    packet.stream = out_streams[index]
                    out.mux(packet)
    fsync_path(out_path)
    digest = hashlib.sha256(out_path.read_bytes()).hexdigest()
    last = pieces[-1]
    logger.info(
        "pre-record of %.1f s joined from %d piece(s) into %s",
        (last.ended_mono_ns - first.started_mono_ns) / _NS_PER_S,
        len(pieces),
        out_path.name,
    )
    return JoinedSegment(
        path=out_path,
        size=out_path.stat().st_size,
        sha256=digest,
        started_utc=first.started_utc,
        ended_utc=last.ended_utc,
        started_mono_ns=first.started_mono_ns,
        ended_mono_ns=last.ended_mono_ns,
    )
