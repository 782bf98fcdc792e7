"""In-process token buckets per client network, for the public verification pages (GS-10(1))."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from server.domain.people.credentials import truncate_ip

__all__ = ["TokenBucketLimiter"]

# Above this many tracked networks, buckets that have refilled completely are dropped.
_MAX_TRACKED = 10_000


class TokenBucketLimiter:
    """``per_minute`` tokens per client network (IPv4 /24, IPv6 /48, as the scan log keeps them)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(client_ip: str | None) -> str:
        """The bucket of an address: its truncated network, or one shared bucket for unknown ones."""
        return truncate_ip(client_ip) or "unknown"

    def take(self, client_ip: str | None, cost: int = 1) -> int:
        """Spend ``cost`` tokens; 0 if allowed, else whole seconds until enough tokens are back."""
        key = self.key(client_ip)
        cost_f = min(float(cost), self.capacity)
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens >= cost_f:
                self._buckets[key] = (tokens - cost_f, now)
                self._prune(now)
                return 0
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((cost_f - tokens) / self.refill_per_second))

    def _prune(self, now: float) -> None:
        if len(self._buckets) <= _MAX_TRACKED:
            return
        full_after = self.capacity / self.refill_per_second
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
