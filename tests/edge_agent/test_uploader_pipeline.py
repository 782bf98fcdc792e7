"""Scheduling: a transfer waiting only for its ``complete`` gives up its sending slot, and frees nothing.

Driven step by step over a fake link and clock, with the server's answers given by hand, so each test
states exactly which ack arrived when.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key
from edge_agent.outbox import Outbox
from edge_agent.uploader import Uploader
from protocol.manifest import SignedManifest
from protocol.messages import AckState, FileChunk, FileFin, FileInit, FileStatusQuery, TransferAck
from protocol.ranges import RangeSet
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS
from tests.edge_agent.test_uploader import DEVICE, FakeLink, FakeSegment

SIZE = 2500  # three chunks of 1000 bytes
SEGMENTS = 4


class Rig:
    """Four journalled segments and an uploader on a fake link; ``reopen`` simulates a restart."""

    def __init__(self, tmp_path: Path, *, max_active: int = 1, max_awaiting: int | None = 1) -> None:
        """Journal the segments and build the uploader (not started)."""
        self.tmp_path = tmp_path
        key: Ed25519PrivateKey = generate_private_key()
        self.config = AgentConfig(
            device_id=DEVICE,
            private_key_file=tmp_path / "k.pem",
            data_dir=tmp_path,
            mqtt_url="mqtt://127.0.0.1:1",
            ingest_public_keys=INGEST_PUBLIC_KEYS,
            chunk_bytes=1000,
            window=4,
            ack_timeout_s=5,
        )
        self.box = Outbox(tmp_path / "o.db")
        self.signed: list[SignedManifest] = []
        self.paths: list[Path] = []
        t0 = datetime(2025, 1, 1, tzinfo=UTC)
        for i in range(SEGMENTS):
            data = os.urandom(SIZE)
            path = tmp_path / f"s{i}.mp4"
            path.write_bytes(data)
            start = t0 + timedelta(seconds=i)
            seg = FakeSegment(path, SIZE, hashlib.sha256(data).hexdigest(), start, start, i, i + 1)
            self.signed.append(self.box.add_segment(seg, device_id=DEVICE, officer_id="", private_key=key))
            self.paths.append(path)
        self.max_active, self.max_awaiting = max_active, max_awaiting
        self.link, self.now = FakeLink(), [100.0]
        self.up = self._uploader()

    def _uploader(self) -> Uploader:
        return Uploader(
            self.box,
            self.link,
            self.config,
            clock=lambda: self.now[0],
            max_active=self.max_active,
            max_awaiting=self.max_awaiting,
        )

    def reopen(self) -> None:
        """A crash and restart: the uploader is gone; the outbox is read again from disk."""
        self.up.stop()
        self.box.close()
        self.box = Outbox(self.tmp_path / "o.db")
        self.link = FakeLink()
        self.up = self._uploader()

    def ack(self, seg: int, state: AckState, **kw: object) -> None:
        """The server's answer about segment ``seg``; the uploader reacts in one step."""
        fid = self.signed[seg].file_id
        self.up.on_ack(TransferAck(device_id=DEVICE, file_id=fid, state=state, **kw))  # type: ignore[arg-type]
        self.up.step()

    def send_all_chunks(self, seg: int) -> None:
        """Answer the init of ``seg`` and store every chunk: the uploader sends fin."""
        self.ack(seg, AckState.READY, ranges=RangeSet())
        for offset in range(0, SIZE, 1000):
            self.ack(seg, AckState.STORED, offset=offset, length=min(1000, SIZE - offset))
        assert self.fins()[-1] == seg

    def complete(self, seg: int, recording_id: int) -> None:
        """The server's signed ``complete`` for ``seg``."""
        self.ack(seg, AckState.COMPLETE, recording_id=recording_id, sha256=self.signed[seg].manifest.sha256)

    def _index(self, file_id: str) -> int:
        return next(i for i, s in enumerate(self.signed) if s.file_id == file_id)

    def inits(self) -> list[int]:
        """Segments whose init was published, in order."""
        return [self._index(m.file_id) for m in self.link.sent if isinstance(m, FileInit)]

    def fins(self) -> list[int]:
        """Segments whose fin was published, in order."""
        return [self._index(m.file_id) for m in self.link.sent if isinstance(m, FileFin)]

    def states(self) -> list[str]:
        """Each segment's state in the outbox."""
        found = [self.box.get(s.manifest.sequence) for s in self.signed]
        return [seg.state if seg is not None else "missing" for seg in found]

    def close(self) -> None:
        """Stop the uploader and close the outbox."""
        self.up.stop()
        self.box.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """One sending slot and one transfer awaiting complete."""
    made = Rig(tmp_path)
    yield made
    made.close()


def test_jl17_next_segment_starts_while_the_previous_waits_for_complete(rig: Rig) -> None:
    """Once every chunk of segment 0 is held and its fin sent, segment 1's init goes out at once."""
    rig.up.step()
    assert rig.inits() == [0]  # one sending slot
    rig.send_all_chunks(0)
    assert rig.inits() == [0, 1]  # in the same step as the fin: segment 0's commit overlaps segment 1
    assert rig.up.stats().awaiting_complete == 1 and rig.up.stats().active == 2
    # Segment 1 sends while segment 0 is being committed; segment 0 is still pending and its file kept.
    rig.send_all_chunks(1)
    assert rig.states() == ["pending"] * SEGMENTS and all(p.exists() for p in rig.paths)
    # Bounded: segment 1 now waits too, but one slot sending plus one awaiting is all that is allowed.
    rig.up.step()
    assert rig.inits() == [0, 1] and rig.up.stats().awaiting_complete == 2
    rig.complete(0, recording_id=10)
    assert rig.states()[:2] == ["complete", "pending"]
    assert rig.inits() == [0, 1, 2]  # room again: the next segment starts


def test_nothing_is_freed_before_a_complete_naming_the_segment(rig: Rig) -> None:
    """Awaiting transfers keep their segments pending; a ``complete`` for other bytes frees nothing."""
    rig.up.step()
    rig.send_all_chunks(0)
    rig.send_all_chunks(1)
    # A ``complete`` whose sha256 is segment 1's, sent about segment 0: ignored (finding 1).
    rig.ack(0, AckState.COMPLETE, recording_id=10, sha256=rig.signed[1].manifest.sha256)
    assert rig.states() == ["pending"] * SEGMENTS
    assert rig.up.stats().awaiting_complete == 2 and rig.inits() == [0, 1]
    # Completes may come in any order: each frees only its own segment.
    rig.complete(1, recording_id=11)
    assert rig.states() == ["pending", "complete", "pending", "pending"]
    rig.complete(0, recording_id=10)
    assert rig.states()[:2] == ["complete", "complete"]
    stored = [rig.box.get(s.manifest.sequence) for s in rig.signed[:2]]
    assert [s.recording_id for s in stored if s is not None] == [10, 11]


def test_a_fin_answered_incomplete_takes_a_sending_slot_again(rig: Rig) -> None:
    """A damaged chunk found at fin sends the transfer back to sending; the bound still holds."""
    rig.up.step()
    rig.send_all_chunks(0)
    assert rig.inits() == [0, 1]
    rig.ack(0, AckState.INCOMPLETE, ranges=RangeSet.of([(0, 1000), (2000, SIZE)]), code="chunk_hash_mismatch")
    chunks = [m for m in rig.link.sent if isinstance(m, FileChunk) and m.file_id == rig.signed[0].file_id]
    assert chunks[-1].offset == 1000  # only the dropped chunk is resent
    rig.send_all_chunks(1)
    rig.up.step()
    assert rig.inits() == [0, 1]  # segment 0 sends again: no slot for segment 2
    rig.ack(0, AckState.STORED, offset=1000, length=1000)
    assert rig.fins().count(0) == 2
    rig.complete(0, recording_id=10)
    rig.complete(1, recording_id=11)
    assert rig.states() == ["complete", "complete", "pending", "pending"]


def test_jl17_a_crash_while_several_await_complete_loses_nothing(tmp_path: Path) -> None:
    """Stopped with two transfers awaiting complete: all stay pending; after restart each resumes.

    The server committed segment 0 while the device was down (its ``complete`` was lost) and still
    commits segment 1: the restart asks, gets ``complete`` for 0 without sending a byte, and only a fin
    for 1, whose chunks the server holds.
    """
    rig = Rig(tmp_path, max_active=2, max_awaiting=2)
    try:
        rig.up.step()
        assert rig.inits() == [0, 1]
        rig.send_all_chunks(0)
        rig.send_all_chunks(1)
        assert rig.inits() == [0, 1, 2, 3]  # both slots taken by the next two segments
        assert rig.up.stats().awaiting_complete == 2
        rig.reopen()
        assert rig.states() == ["pending"] * SEGMENTS and all(p.exists() for p in rig.paths)
        rig.up.step()
        assert rig.inits() == [0, 1]  # oldest first; the two that were awaiting complete come first
        rig.complete(0, recording_id=10)  # init of a committed segment is answered complete
        rig.ack(1, AckState.READY, ranges=RangeSet.of([(0, SIZE)]))
        assert rig.fins() == [1] and not [m for m in rig.link.sent if isinstance(m, FileChunk)]
        rig.complete(1, recording_id=11)
        assert rig.states()[:2] == ["complete", "complete"]
        stored = [rig.box.get(s.manifest.sequence) for s in rig.signed[:2]]
        assert [s.recording_id for s in stored if s is not None] == [10, 11]
    finally:
        rig.close()


def test_awaiting_transfers_resync_after_a_reconnect(rig: Rig) -> None:
    """After a reconnect an awaiting transfer asks for its status, exactly as before."""
    rig.up.step()
    rig.send_all_chunks(0)
    rig.link.connected = False
    rig.up.on_connected()
    rig.link.connected = True
    rig.up.step()
    queried = [m.file_id for m in rig.link.sent if isinstance(m, FileStatusQuery)]
    assert rig.signed[0].file_id in queried and rig.signed[1].file_id in queried
    rig.complete(0, recording_id=10)
    assert rig.states()[0] == "complete"


def test_max_awaiting_zero_keeps_the_slot_until_complete(tmp_path: Path) -> None:
    """``max_awaiting=0``: the old scheduling, one slot held until the commit is confirmed."""
    rig = Rig(tmp_path, max_active=1, max_awaiting=0)
    try:
        rig.up.step()
        rig.send_all_chunks(0)
        rig.up.step()
        assert rig.inits() == [0]
        rig.complete(0, recording_id=10)
        assert rig.inits() == [0, 1]
    finally:
        rig.close()


def test_scheduling_bounds_are_validated(tmp_path: Path) -> None:
    """No sending slot, or a negative bound, is a programming error caught at construction."""
    rig = Rig(tmp_path)
    try:
        with pytest.raises(ValueError, match="max_active"):
            Uploader(rig.box, rig.link, rig.config, max_active=0)
        with pytest.raises(ValueError, match="max_awaiting"):
            Uploader(rig.box, rig.link, rig.config, max_awaiting=-1)
    finally:
        rig.close()


def test_jl17_a_staging_quota_refusal_is_retried_when_an_awaiting_segment_commits(rig: Rig) -> None:
    """The server's per-device staging is full of segments being committed: retry at the next complete.

    Each commit frees its staging, so waiting the usual minute would idle the device for nothing.
    """
    rig.up.step()
    rig.send_all_chunks(0)
    assert rig.inits() == [0, 1]
    rig.ack(1, AckState.REJECTED, code="staging_quota", message="full")
    assert rig.states()[1] == "pending"  # not now, never failed
    rig.up.step()
    assert rig.inits() == [0, 1, 2]  # segment 1 waits; the slot goes on
    rig.ack(2, AckState.REJECTED, code="staging_quota", message="full")
    rig.up.step()
    assert rig.inits() == [0, 1, 2, 3]
    rig.ack(3, AckState.REJECTED, code="staging_quota", message="full")
    rig.up.step()
    assert rig.inits() == [0, 1, 2, 3]  # everything else is blocked for now
    rig.complete(0, recording_id=10)
    assert rig.inits() == [0, 1, 2, 3, 1]  # at once, oldest first, not a minute later
    assert rig.states() == ["complete", "pending", "pending", "pending"]


def test_a_staging_quota_refusal_with_nothing_awaiting_waits_the_usual_delay(tmp_path: Path) -> None:
    """Without a commit to come, the refusal is retried after ``retry_blocked_s`` as before."""
    rig = Rig(tmp_path, max_active=1, max_awaiting=0)
    try:
        rig.up.step()
        rig.ack(0, AckState.REJECTED, code="staging_quota", message="full")
        rig.up.step()
        assert rig.inits() == [0, 1]  # segment 0 is held back, segment 1 tries
        rig.send_all_chunks(1)
        rig.complete(1, recording_id=11)
        assert rig.inits() == [0, 1, 2]  # segment 0 is still held back: nothing was awaiting
        for seg in (2, 3):
            rig.send_all_chunks(seg)
            rig.complete(seg, recording_id=10 + seg)
        rig.up.step()
        assert rig.inits() == [0, 1, 2, 3]  # nothing left but segment 0, still held back
        rig.now[0] += 61.0
        rig.up.step()
        assert rig.inits() == [0, 1, 2, 3, 0]
    finally:
        rig.close()
