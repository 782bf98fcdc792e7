"""``zfjl-agent retry --config F --sequence N``: a refused segment goes back to pending, nothing else does."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key
from edge_agent.outbox import Outbox

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (
    'device_id = "dev-1"\nprivate_key_file = "k.pem"\ndata_dir = "data"\nmqtt_url = "mqtt://broker:1884"\n'
)


@dataclass(frozen=True)
class _Segment:
    """Stands in for the recorder's SegmentFile."""

    path: Path
    size: int
    sha256: str
    started_utc: datetime
    ended_utc: datetime
    started_mono_ns: int
    ended_mono_ns: int


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """agent.toml with an outbox holding segment 0 (refused: bad_signature) and segment 1 (pending)."""
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG)
    config = AgentConfig.load(path)
    config.segment_dir.mkdir(parents=True)
    key = generate_private_key()
    outbox = Outbox(config.outbox_path)
    try:
        for index in range(2):
            data = os.urandom(1000)
            start = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=index)
            seg = _Segment(
                path=config.segment_dir / f"seg-{index}.mp4",
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                started_utc=start,
                ended_utc=start + timedelta(seconds=1),
                started_mono_ns=index,
                ended_mono_ns=index + 1,
            )
            seg.path.write_bytes(data)
            outbox.add_segment(seg, device_id=config.device_id, officer_id="", private_key=key)
        outbox.mark_failed(0, "bad_signature", "signature does not verify")
    finally:
        outbox.close()
    return path


def _state(config_file: Path, sequence: int) -> str:
    outbox = Outbox(AgentConfig.load(config_file).outbox_path, readonly=True)
    try:
        segment = outbox.get(sequence)
        assert segment is not None
        return segment.state
    finally:
        outbox.close()


def test_retry_puts_a_failed_segment_back_to_pending(config_file: Path) -> None:
    """The failed segment becomes pending; the JSON names it and the error it had."""
    result = _cli("retry", "--config", str(config_file), "--sequence", "0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "device_id": "dev-1",
        "sequence": 0,
        "state": "pending",
        "previous_error_code": "bad_signature",
        "previous_error_message": "signature does not verify",
    }
    assert _state(config_file, 0) == "pending"
    status = json.loads(_cli("status", "--config", str(config_file)).stdout)
    assert status["segments_failed"] == 0


@pytest.mark.parametrize(
    ("sequence", "message"),
    [("7", "segment 7 is not in the outbox"), ("1", "segment 1 is pending, not failed")],
)
def test_unknown_or_not_failed_sequence_is_refused(config_file: Path, sequence: str, message: str) -> None:
    """Exit 1 with a clear message on stderr, nothing on stdout, the outbox unchanged."""
    result = _cli("retry", "--config", str(config_file), "--sequence", sequence)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stdout == ""
    assert (_state(config_file, 0), _state(config_file, 1)) == ("failed", "pending")


def test_retry_without_an_outbox_is_refused(tmp_path: Path) -> None:
    """A config that never recorded has nothing to retry (and no outbox is created by asking)."""
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG)
    result = _cli("retry", "--config", str(path), "--sequence", "0")
    assert result.returncode == 1
    assert "no outbox" in result.stderr
    assert not AgentConfig.load(path).outbox_path.exists()
