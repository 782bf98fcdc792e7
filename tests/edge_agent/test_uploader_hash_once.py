"""The uploader hashes a segment once per upload (its chunks), and still keeps an altered file back."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import edge_agent.uploader as uploader_module
from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key
from edge_agent.outbox import Outbox
from edge_agent.uploader import Uploader
from protocol.messages import AckState, FileChunk, FileFin, FileInit, TransferAck
from protocol.ranges import RangeSet
from tests.edge_agent.server_stub import INGEST_PUBLIC_KEYS
from tests.edge_agent.test_uploader import DEVICE, FakeLink, FakeSegment

SIZE = 2500


@pytest.fixture
def file_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Whole-file hashes the uploader takes (each an extra pass over the segment)."""
    seen: list[int] = []
    original = uploader_module.sha256_fd

    def counting(fd: int) -> tuple[int, str]:
        seen.append(fd)
        return original(fd)

    monkeypatch.setattr(uploader_module, "sha256_fd", counting)
    return seen


class Rig:
    """One journalled segment, an uploader on a fake link, driven step by step."""

    def __init__(self, tmp_path: Path) -> None:
        """Journal a random segment and build the uploader (not started)."""
        key: Ed25519PrivateKey = generate_private_key()
        config = AgentConfig(
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
        self.data = os.urandom(SIZE)
        self.path = tmp_path / "s.mp4"
        self.path.write_bytes(self.data)
        t0 = datetime(2025, 1, 1, tzinfo=UTC)
        seg = FakeSegment(self.path, SIZE, hashlib.sha256(self.data).hexdigest(), t0, t0, 0, 1)
        self.signed = self.box.add_segment(seg, device_id=DEVICE, officer_id="", private_key=key)
        self.link, self.now = FakeLink(), [100.0]
        self.up = Uploader(self.box, self.link, config, clock=lambda: self.now[0], retry_blocked_s=1.0)

    def ack(self, state: AckState, **kw: object) -> None:
        """Deliver one ack and let the uploader react."""
        ack = TransferAck(device_id=DEVICE, file_id=self.signed.file_id, state=state, **kw)  # type: ignore[arg-type]
        self.up.on_ack(ack)
        self.up.step()

    def send_everything(self) -> None:
        """Start the transfer and ack every chunk, up to the fin."""
        self.up.step()
        assert isinstance(self.link.sent[-1], FileInit)
        self.ack(AckState.READY, ranges=RangeSet())
        for offset in range(0, SIZE, 1000):
            self.ack(AckState.STORED, offset=offset, length=min(1000, SIZE - offset))
        assert isinstance(self.link.sent[-1], FileFin)

    def chunks(self) -> list[FileChunk]:
        """Chunks published so far."""
        return [m for m in self.link.sent if isinstance(m, FileChunk)]

    def close(self) -> None:
        """Stop the uploader and close the outbox."""
        self.up.stop()
        self.box.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """A fresh rig, closed afterwards."""
    made = Rig(tmp_path)
    yield made
    made.close()


def test_a_segment_is_uploaded_without_a_whole_file_hash(rig: Rig, file_hashes: list[int]) -> None:
    """Sending hashes each chunk (the topic names it) and nothing else: no pass over the whole file."""
    rig.send_everything()
    rig.ack(AckState.COMPLETE, recording_id=1, sha256=rig.signed.manifest.sha256)
    assert file_hashes == []
    assert b"".join(c.data for c in rig.chunks()) == rig.data
    stored = rig.box.get(0)
    assert stored is not None and stored.state == "complete"


def test_a_server_hash_mismatch_with_a_good_file_resends_it(rig: Rig, file_hashes: list[int]) -> None:
    """The server's staged bytes were damaged, the file here is fine: checked once, then resent."""
    rig.send_everything()
    rig.ack(AckState.INCOMPLETE, ranges=RangeSet(), code="hash_mismatch")
    assert len(file_hashes) == 1
    assert [c.offset for c in rig.chunks()] == [0, 1000, 2000, 0, 1000, 2000]
    stored = rig.box.get(0)
    assert stored is not None and stored.state == "pending"


def test_a_file_altered_after_signing_is_kept_and_not_sent_again(rig: Rig, file_hashes: list[int]) -> None:
    """JL-19: the file no longer matches its signed hash: reported, kept pending, never resent in a loop."""
    rig.send_everything()
    with rig.path.open("r+b") as fh:  # a flipped bit on the card, same size
        fh.seek(1234)
        fh.write(bytes([rig.data[1234] ^ 0x01]))
    rig.ack(AckState.INCOMPLETE, ranges=RangeSet(), code="hash_mismatch")
    sent = len(rig.link.sent)
    assert rig.up.stats().active == 0 and rig.up.stats().blocked == 1
    for _ in range(3):  # retried after the blocked delay: checked in full each time, never sent
        rig.now[0] += 2.0
        rig.up.step()
    assert len(rig.link.sent) == sent
    assert len(file_hashes) == 4  # the check after the server's refusal, then one per retry
    assert rig.path.exists()
    stored = rig.box.get(0)
    assert stored is not None and stored.state == "pending"


def test_a_file_of_the_wrong_size_is_not_sent_at_all(rig: Rig, file_hashes: list[int]) -> None:
    """A truncated file is caught before any byte leaves (a size check costs no hash)."""
    rig.path.write_bytes(rig.data[:1000])
    rig.up.step()
    assert rig.link.sent == []
    assert rig.up.stats().blocked == 1
