"""The security log's flood guard: rows per device and overall per window, the rest summed into one row."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from server.domain.base import utcnow

__all__ = [
    "MAX_DUE_SUMMARIES",
    "REJECTION_ROWS_PER_DEVICE_MINUTE",
    "REJECTION_ROWS_PER_MINUTE",
    "REJECTION_WINDOW_S",
    "HeldRejections",
    "RejectionLog",
    "RejectionSummary",
]


# Rows in the security log per device and in total per minute: a broken or hostile client must not be
# able to fill the database through it. What is not written one by one is summed into one row per
# device (or "unregistered") and code when its window closes, so no refusal vanishes without trace.
REJECTION_ROWS_PER_DEVICE_MINUTE = 30
REJECTION_ROWS_PER_MINUTE = 600
REJECTION_WINDOW_S = 60


@dataclass
class HeldRejections:
    """Refusals of one device (None: any unregistered id) and code not written one by one this window."""

    count: int
    first_at: datetime
    last_at: datetime
    file_id: str | None
    message: str
    manifest_text: str | None


@dataclass(frozen=True)
class RejectionSummary:
    """One security-log row standing for ``count`` refusals of a flood."""

    device_id: str | None
    code: str
    count: int
    file_id: str | None
    message: str
    manifest_text: str | None


class RejectionLog:
    """Fixed windows bounding security-log rows per device and overall, and summing what is held back.

    Bounded both ways: rows per window are at most ``total`` + 2 × (registered devices + 1) × codes,
    and memory holds one :class:`HeldRejections` per registered device and code plus one per code for every
    unregistered id together (ids from the network never become keys of their own). A registered
    device's first refusal of each kind in a window is always written whole (a forged manifest keeps
    its text as evidence), whatever the budget says.
    """

    def __init__(self, per_device: int, total: int, window_s: float, clock: Callable[[], float]) -> None:
        self.per_device, self.total, self.window_s, self.clock = per_device, total, window_s, clock
        self._window = -1
        self._counts: Counter[str] = Counter()
        self._firsts: set[tuple[str, str]] = set()
        self._registered: set[str] = set()
        self._held: dict[tuple[str | None, str], HeldRejections] = {}
        self._due: list[RejectionSummary] = []
        self._lock = threading.Lock()
        self._last_flush = -1

    def admit(
        self,
        device_id: str | None,
        code: str,
        registered: Callable[[], bool],
        *,
        file_id: str | None,
        message: str,
        manifest_text: str | None,
    ) -> bool:
        """Whether to write this refusal's row now; if not, it is held and summed into a summary."""
        with self._lock:
            self._roll()
            key = device_id or ""
            if self._counts["*"] < self.total and self._counts[key] < self.per_device:
                self._counts["*"] += 1
                self._counts[key] += 1
                if device_id is not None:
                    self._firsts.add((device_id, code))
                return True
        # Outside the lock: registered() may query the database.
        known = device_id is not None and (device_id in self._registered or registered())
        with self._lock:
            self._roll()
            if known and device_id is not None:
                self._registered.add(device_id)
                if (device_id, code) not in self._firsts:
                    self._firsts.add((device_id, code))
                    return True
            now = utcnow()
            bucket = (device_id if known else None, code)
            held = self._held.get(bucket)
            if held is None:
                self._held[bucket] = HeldRejections(1, now, now, file_id, message, manifest_text)
            else:
                held.count += 1
                held.last_at = now
            return False

    def _roll(self) -> None:
        window = int(self.clock() // self.window_s)
        if window != self._window:
            self._window, self._counts, self._firsts = window, Counter(), set()
            self._registered.clear()  # a device deleted since is not "registered" for ever
            self._close_held()

    def _close_held(self) -> None:
        for (device_id, code), held in self._held.items():
            who = f"device {device_id}" if device_id is not None else "unregistered device ids"
            text = (
                f"flood: {held.count} '{code}' refusals from {who} between "
                f"{held.first_at:%Y-%m-%dT%H:%M:%SZ} and {held.last_at:%Y-%m-%dT%H:%M:%SZ} were not "
                f"logged one by one; the first: {held.message}"
            )
            self._due.append(
                RejectionSummary(device_id, code, held.count, held.file_id, text, held.manifest_text)
            )
        self._held = {}

    def requeue(self, summaries: list[RejectionSummary]) -> None:
        """Keep summaries the database did not take for the next flush (bounded: oldest dropped, logged)."""
        with self._lock:
            self._due = (summaries + self._due)[-MAX_DUE_SUMMARIES:]

    def due(self, *, everything: bool = False) -> list[RejectionSummary]:
        """Summaries of closed windows (and, with ``everything``, of the open one: at shutdown)."""
        with self._lock:
            self._roll()
            if everything:
                self._close_held()
            due, self._due = self._due, []
            self._last_flush = self._window
            return due

    def flush_due(self) -> bool:
        """Cheap, lock-free hint: something waits and no flush was tried in this window yet."""
        return bool(self._held or self._due) and int(self.clock() // self.window_s) != self._last_flush


# Summaries waiting for a database that is down; past this many the oldest are only in the log.
MAX_DUE_SUMMARIES = 10_000
