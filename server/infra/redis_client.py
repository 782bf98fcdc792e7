"""The Redis client of ``ZFJL_REDIS_URL``: short timeouts, because it sits on the path of public requests."""

from __future__ import annotations

from typing import Any

__all__ = ["CONNECT_TIMEOUT_S", "SOCKET_TIMEOUT_S", "make_redis"]

# A Redis that does not answer must cost a public request a fraction of a second, not a hang.
CONNECT_TIMEOUT_S = 0.5
SOCKET_TIMEOUT_S = 0.5


def make_redis(url: str) -> Any:
    """A ``redis.Redis`` for ``url`` (redis://, rediss:// or unix://); connects lazily, on first use."""
    import redis

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )
