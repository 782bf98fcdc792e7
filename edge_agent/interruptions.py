"""Detects interruptions of recording by itself (JL-16) and turns them into session conditions.

Sources: the recorder's stall hooks (a marker opens when the stall is *detected*, and resumes when
video returns), a watchdog thread for the microphone, clock jumps, recorder failures (encoder or
storage I/O errors) and free disk space. Crash or power loss is found at the next start by
``SessionController.recover``. Storage: evidence not yet stored by the server is never deleted
(JL-19); when space runs out the current segment is closed cleanly, a ``storage_full`` marker opens,
and recording resumes by itself once space is free again.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple, Protocol

from edge_agent.errors import EncoderError
from edge_agent.prompts import Prompt, Prompter, PromptKind

__all__ = ["DiskUsage", "InterruptionWatchdog", "WatchedRecorder"]

logger = logging.getLogger(__name__)

_POLL_S = 0.25
# Space must come back to twice the stop threshold before writing resumes (no flapping at the edge).
_RESUME_FACTOR = 2


class DiskUsage(NamedTuple):
    """``shutil.disk_usage``'s result shape."""

    total: int
    used: int
    free: int


class Conditions(Protocol):
    """What the watchdog reports to (``SessionController`` fits)."""

    def condition_started(
        self, cause: str, *, at: datetime | None = None, mono_ns: int | None = None, note: str = ""
    ) -> str: ...

    def condition_cleared(self, cause: str) -> None: ...


class WatchedRecorder(Protocol):
    """What the watchdog reads from and does to the recorder."""

    @property
    def failure(self) -> BaseException | None: ...

    @property
    def last_audio_at(self) -> float | None: ...

    @property
    def running(self) -> bool: ...

    @property
    def paused(self) -> bool: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class InterruptionWatchdog:
    """The ``interruption-watchdog`` thread plus the recorder's stall and ENOSPC hooks."""

    def __init__(
        self,
        conditions: Conditions,
        prompter: Prompter,
        *,
        storage_dir: Path,
        stall_threshold_s: float = 1.0,
        microphone_timeout_s: float = 3.0,
        clock_jump_threshold_s: float = 2.0,
        storage_warn_bytes: int = 512 * 1024 * 1024,
        storage_stop_bytes: int = 32 * 1024 * 1024,
        disk_usage: Callable[[Path], DiskUsage] | None = None,
        free_space: Callable[[], None] | None = None,
        before_resume: Callable[[], None] | None = None,
        utc_now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Collaborators come in so tests can hand in a filling disk or a jumping clock."""
        self.conditions = conditions
        self.prompter = prompter
        self.storage_dir = storage_dir
        self.stall_threshold_s = stall_threshold_s
        self.microphone_timeout_s = microphone_timeout_s
        self.clock_jump_threshold_s = clock_jump_threshold_s
        self.storage_warn_bytes = storage_warn_bytes
        self.storage_stop_bytes = storage_stop_bytes
        self.disk_usage = disk_usage or _disk_usage
        self.free_space = free_space
        self.before_resume = before_resume
        self.utc_now = utc_now
        self.monotonic = monotonic
        self.recorder: WatchedRecorder | None = None
        self.storage_low = False
        self.storage_full = False
        self.free_bytes: int | None = None
        self._mic_failed = False
        self._failure_reported = False
        self._clock_offset = self._offset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def attach_recorder(self, recorder: WatchedRecorder) -> None:
        """The recorder to watch."""
        self.recorder = recorder

    def start(self) -> None:
        """Start the watchdog thread."""
        self._thread = threading.Thread(target=self._run, name="interruption-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- recorder hooks (recorder thread) -------------------------------------------------------

    def on_stall_begin(self, missing_s: float) -> None:
        """Video has been missing for ``missing_s``: the marker starts at the last frame (JL-16)."""
        self.conditions.condition_started(
            "camera_stall",
            at=self.utc_now() - timedelta(seconds=missing_s),
            mono_ns=int((self.monotonic() - missing_s) * 1e9),
            note=f"no video frame for {missing_s:.1f} s",
        )

    def on_stall_end(self, duration_s: float) -> None:
        """Video is back after ``duration_s``."""
        logger.info("camera stall over after %.1f s", duration_s)
        self.conditions.condition_cleared("camera_stall")

    def on_storage_full(self, exc: BaseException) -> None:
        """A write failed with ENOSPC: the recorder paused itself; wait for space (JL-19, JL-16)."""
        with self._lock:
            self.storage_full = True
        self.conditions.condition_started("storage_full", note=str(exc)[:400])
        self._show(PromptKind.INTERRUPTED, "storage full: recording stopped until space is free")

    # -- watchdog -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                logger.exception("interruption watchdog step failed")
            self._stop.wait(_POLL_S)

    def step(self) -> None:
        """One check of every condition."""
        self._check_storage()
        self._check_clock()
        recorder = self.recorder
        if recorder is None:
            return
        self._check_microphone(recorder)
        self._check_failure(recorder)

    def _offset(self) -> float:
        return self.utc_now().timestamp() - self.monotonic()

    def _check_clock(self) -> None:
        offset = self._offset()
        drift = offset - self._clock_offset
        if abs(drift) <= self.clock_jump_threshold_s:
            return
        # The wall clock stepped (NTP, RTC battery, manual change): segment times around it need an
        # explanation, so the jump is a marker that opens and resumes at once.
        self._clock_offset = offset
        logger.warning("clock jumped by %.1f s", drift)
        self.conditions.condition_started("clock_jump", note=f"UTC moved {drift:+.1f} s against monotonic")
        self.conditions.condition_cleared("clock_jump")

    def _check_microphone(self, recorder: WatchedRecorder) -> None:
        last = recorder.last_audio_at
        if last is None or not recorder.running or recorder.paused:
            return
        missing = self.monotonic() - last
        if not self._mic_failed and missing > self.microphone_timeout_s:
            self._mic_failed = True
            self.conditions.condition_started(
                "microphone_failure",
                at=self.utc_now() - timedelta(seconds=missing),
                mono_ns=int(last * 1e9),
                note=f"no audio for {missing:.1f} s",
            )
        elif self._mic_failed and missing <= self.microphone_timeout_s:
            self._mic_failed = False
            self.conditions.condition_cleared("microphone_failure")

    def _check_failure(self, recorder: WatchedRecorder) -> None:
        failure = recorder.failure
        if failure is None or self._failure_reported:
            return
        self._failure_reported = True
        if getattr(failure, "errno", None) == errno.ENOSPC:
            cause = "storage_full"
        elif isinstance(failure, EncoderError):
            cause = "encoder_error"
        else:
            cause = "storage_error"
        self.conditions.condition_started(cause, note=str(failure)[:400])

    def _check_storage(self) -> None:
        try:
            free = self.disk_usage(self.storage_dir).free
        except OSError as exc:
            logger.error("cannot read free space of %s: %s", self.storage_dir, exc)
            return
        if free < self.storage_stop_bytes and self.free_space is not None:
            # Only files the server has confirmed are ever deleted (Outbox.free_space, JL-19).
            self.free_space()
            free = self.disk_usage(self.storage_dir).free
        self.free_bytes = free
        low = free < self.storage_warn_bytes
        if low and not self.storage_low:
            self._show(PromptKind.STORAGE_LOW, f"storage low: {free // (1024 * 1024)} MiB free")
        self.storage_low = low
        recorder = self.recorder
        with self._lock:
            full = self.storage_full
        if not full and free < self.storage_stop_bytes:
            with self._lock:
                self.storage_full = True
            if recorder is not None:
                recorder.pause_writing()  # closes the current segment cleanly
            logger.error("storage full (%d bytes free): recording stopped", free)
            self.conditions.condition_started("storage_full", note=f"{free} bytes free")
            self._show(PromptKind.INTERRUPTED, "storage full: recording stopped until space is free")
        elif full and free >= max(self.storage_stop_bytes * _RESUME_FACTOR, 1):
            if self.before_resume is not None:
                self.before_resume()  # journal what an ENOSPC left behind
            with self._lock:
                self.storage_full = False
            # Resume the session (RESUMED, the explanation clip asked for) before writing restarts, so
            # the first file after the pause is the whole clip, not one frame cut short (JL-16).
            self.conditions.condition_cleared("storage_full")
            if recorder is not None:
                recorder.resume_writing()
            logger.warning("storage free again (%d bytes): recording resumes", free)

    def _show(self, kind: PromptKind, message: str) -> None:
        try:
            self.prompter.show(Prompt(kind=kind, message=message))
        except Exception:
            logger.exception("prompt failed")


def _disk_usage(path: Path) -> DiskUsage:
    usage = shutil.disk_usage(path)
    return DiskUsage(usage.total, usage.used, usage.free)
