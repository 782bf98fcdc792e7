"""Automatic interruption detection (JL-16) with injected clocks, disks and a stand-in recorder."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.errors import EncoderError
from edge_agent.interruptions import DiskUsage, InterruptionWatchdog
from edge_agent.prompts import MemoryPrompter, PromptKind
from edge_agent.recorder import _is_no_space


class Conditions:
    """Records what the watchdog reports."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def condition_started(
        self, cause: str, *, at: datetime | None = None, mono_ns: int | None = None, note: str = ""
    ) -> str:
        self.log.append(("start", cause))
        return "m"

    def condition_cleared(self, cause: str) -> None:
        self.log.append(("clear", cause))


class FakeRecorder:
    """The recorder attributes the watchdog reads."""

    def __init__(self) -> None:
        self.failure: BaseException | None = None
        self.last_audio_at: float | None = 0.0
        self.running = True
        self.paused = False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False


class Clock:
    """A settable monotonic clock and a UTC clock that can jump."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.utc = datetime(2026, 5, 1, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.utc += timedelta(seconds=seconds)


def _watchdog(
    tmp_path: Path, free: dict[str, int]
) -> tuple[InterruptionWatchdog, Conditions, FakeRecorder, Clock, MemoryPrompter]:
    clock = Clock()
    conditions = Conditions()
    prompter = MemoryPrompter()
    dog = InterruptionWatchdog(
        conditions,
        prompter,
        storage_dir=tmp_path,
        microphone_timeout_s=3.0,
        clock_jump_threshold_s=2.0,
        storage_warn_bytes=1000,
        storage_stop_bytes=100,
        disk_usage=lambda path: DiskUsage(10_000, 0, free["bytes"]),
        utc_now=lambda: clock.utc,
        monotonic=lambda: clock.mono,
    )
    recorder = FakeRecorder()
    recorder.last_audio_at = clock.mono
    dog.attach_recorder(recorder)
    return dog, conditions, recorder, clock, prompter


def test_jl16_microphone_silence_opens_and_closes_a_marker(tmp_path: Path) -> None:
    """No audio block for longer than the timeout → microphone_failure; audio back → cleared."""
    dog, conditions, recorder, clock, _ = _watchdog(tmp_path, {"bytes": 5000})
    clock.advance(2)
    dog.step()
    assert conditions.log == []
    clock.advance(2)
    dog.step()
    assert conditions.log == [("start", "microphone_failure")]
    recorder.last_audio_at = clock.mono
    dog.step()
    assert conditions.log[-1] == ("clear", "microphone_failure")


def test_jl16_clock_jump_is_a_marker(tmp_path: Path) -> None:
    """UTC stepping 30 s against the monotonic clock opens and resumes a clock_jump marker."""
    dog, conditions, recorder, clock, _ = _watchdog(tmp_path, {"bytes": 5000})
    clock.advance(1)
    recorder.last_audio_at = clock.mono
    dog.step()
    assert conditions.log == []
    clock.utc += timedelta(seconds=30)
    dog.step()
    assert conditions.log == [("start", "clock_jump"), ("clear", "clock_jump")]
    dog.step()
    assert len(conditions.log) == 2


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (EncoderError("cannot encode"), "encoder_error"),
        (OSError(errno.EIO, "I/O error"), "storage_error"),
        (OSError(errno.ENOSPC, "No space left on device"), "storage_full"),
    ],
)
def test_jl16_recorder_failure_is_a_marker(tmp_path: Path, failure: BaseException, cause: str) -> None:
    """A recorder that died of an encoder or storage error opens a marker with that cause, once."""
    dog, conditions, recorder, _clock, _ = _watchdog(tmp_path, {"bytes": 5000})
    recorder.failure = failure
    dog.step()
    dog.step()
    assert conditions.log == [("start", cause)]


def test_jl16_storage_warns_stops_and_resumes(tmp_path: Path) -> None:
    """Low: warn once; out of space: pause + storage_full; free again (2× stop): resume by itself."""
    free = {"bytes": 5000}
    dog, conditions, recorder, _clock, prompter = _watchdog(tmp_path, free)
    free["bytes"] = 500
    dog.step()
    dog.step()
    assert len(prompter.of_kind(PromptKind.STORAGE_LOW)) == 1 and dog.storage_low
    free["bytes"] = 50
    dog.step()
    assert recorder.paused and dog.storage_full and conditions.log == [("start", "storage_full")]
    free["bytes"] = 150  # above the stop threshold but not yet twice it: stay stopped
    dog.step()
    assert recorder.paused
    free["bytes"] = 250
    dog.step()
    assert not recorder.paused and not dog.storage_full
    assert conditions.log[-1] == ("clear", "storage_full")


def test_jl16_real_enospc_is_recognised() -> None:
    """A real ENOSPC (writing to /dev/full), also wrapped in an EncoderError, counts as storage full."""
    full = Path("/dev/full")
    if not full.exists():
        pytest.fail("/dev/full is missing")
    try:
        with full.open("wb") as stream:
            stream.write(b"x" * 4096)
            stream.flush()
    except OSError as exc:
        assert _is_no_space(exc)
        try:
            raise EncoderError("cannot write segment") from exc
        except EncoderError as wrapped:
            assert _is_no_space(wrapped)
    else:
        pytest.fail("writing to /dev/full did not fail")
    assert not _is_no_space(OSError(errno.EIO, "I/O error"))
