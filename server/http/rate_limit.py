"""Token buckets per client network for the public verification pages (GS-10(1)).

Two backends with one rule: ``per_minute`` tokens per network, refilled continuously, a request spends
``cost`` of them. :class:`TokenBucketLimiter` keeps the buckets in this process (the one-machine default);
:class:`RedisTokenBucketLimiter` keeps them in Redis so that several API processes share one limit
(``ZFJL_REDIS_URL``). When Redis does not answer, the Redis limiter falls back to its own in-process
buckets and logs a warning: the public page stays up (a citizen checking an officer's credential must not
be turned away because a cache is down), and each process still limits on its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from server.domain.people.credentials import truncate_ip

__all__ = ["RateLimiter", "RedisTokenBucketLimiter", "TokenBucketLimiter", "make_limiter"]

_LOG = logging.getLogger(__name__)

# Above this many tracked networks, buckets that have refilled completely are dropped.
_MAX_TRACKED = 10_000
REDIS_KEY_PREFIX = "zfjl:verify:"
# After Redis failed, use the local buckets this long before trying Redis again, so a dead Redis does not
# add a connection attempt to every request.
REDIS_RETRY_AFTER_S = 5.0


class RateLimiter(Protocol):
    """What the verify pages need of a limiter."""

    def take(self, client_ip: str | None, cost: int = 1) -> int:
        """Spend ``cost`` tokens; 0 if allowed, else whole seconds until enough tokens are back."""
        ...


def bucket_key(client_ip: str | None) -> str:
    """The bucket of an address: its truncated network, or one shared bucket for unknown ones."""
    return truncate_ip(client_ip) or "unknown"


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
        return bucket_key(client_ip)

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


# The same arithmetic as TokenBucketLimiter.take, run atomically inside Redis: read, refill, spend and
# write happen in one script, so two processes can never both spend the last token. The time is Redis's
# own clock (one clock for all API processes) unless the caller passes one (tests). The key expires once
# the bucket would be full again, which is the in-process limiter's pruning rule.
_TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = math.min(tonumber(ARGV[3]), capacity)
local now = tonumber(ARGV[4])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1])
local last = tonumber(bucket[2])
if tokens == nil or last == nil then
  tokens = capacity
  last = now
end
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.max(1, math.ceil((cost - tokens) / rate))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return wait
"""


class RedisTokenBucketLimiter:
    """The token buckets in Redis, shared by every API process that uses the same Redis."""

    def __init__(
        self,
        client: Any,
        per_minute: int,
        *,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = per_minute
        self.refill_per_second = per_minute / 60.0
        self._client = client
        self._script = client.register_script(_TAKE_SCRIPT)
        self._clock = clock
        self._monotonic = monotonic
        self._fallback = TokenBucketLimiter(per_minute, clock=monotonic)
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and the in-process buckets are used."""
        return self._monotonic() < self._down_until

    def take(self, client_ip: str | None, cost: int = 1) -> int:
        """Spend ``cost`` tokens of the shared bucket; on a Redis failure, of this process's bucket."""
        import redis

        if self.degraded:
            return self._fallback.take(client_ip, cost)
        args: list[Any] = [self.capacity, repr(self.refill_per_second), cost]
        if self._clock is not None:
            args.append(repr(self._clock()))
        try:
            wait = self._script(keys=[REDIS_KEY_PREFIX + bucket_key(client_ip)], args=args)
        except redis.RedisError as exc:
            with self._lock:
                first = self._down_until == 0.0  # warn once per outage, not per request
                self._down_until = self._monotonic() + REDIS_RETRY_AFTER_S
            log = _LOG.warning if first else _LOG.debug
            log("verify rate limit: Redis unavailable (%s); limiting per process until it answers", exc)
            return self._fallback.take(client_ip, cost)
        with self._lock:
            if self._down_until:
                _LOG.warning("verify rate limit: Redis answers again; the limit is shared again")
                self._down_until = 0.0
        return int(wait)


def make_limiter(per_minute: int, redis_url: str) -> RateLimiter:
    """The Redis limiter when ``redis_url`` is set (several API processes), else the in-process one."""
    if not redis_url:
        return TokenBucketLimiter(per_minute)
    from server.infra.redis_client import make_redis

    return RedisTokenBucketLimiter(make_redis(redis_url), per_minute)
