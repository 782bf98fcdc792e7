"""The /verify rate limit (GS-10(1)) shared by several API processes through Redis (ZFJL_REDIS_URL)."""

from __future__ import annotations

import http.client
import logging
import random
import time
from pathlib import Path

import pytest
import redis

from server.http.pages.verify import LIMITER_KEY
from server.http.rate_limit import (
    REDIS_KEY_PREFIX,
    REDIS_RETRY_AFTER_S,
    RedisTokenBucketLimiter,
    TokenBucketLimiter,
    bucket_key,
    make_limiter,
)
from server.infra.redis_client import make_redis
from tests.conftest import migrated_app
from tests.e2e.harness import ServerProcess
from tests.ops.conftest import RedisServer


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_redis_buckets_follow_the_in_process_rules_step_by_step(redis_url: str, network: str) -> None:
    # The same script of requests and clock steps gives the same answers from both backends.
    clock_local, clock_redis = _Clock(), _Clock()
    local = TokenBucketLimiter(3, clock=clock_local)
    shared = RedisTokenBucketLimiter(make_redis(redis_url), 3, clock=clock_redis)
    other = f"{network[:-1]}{(int(network.rsplit('.', 1)[1]) + 1) % 256}"
    steps: list[tuple[float, str, int]] = [
        (0, f"{network}.1", 1),
        (0, f"{network}.2", 1),
        (0, f"{network}.3", 1),
        (0, f"{network}.200", 1),  # same /24: refused, 20 s to wait
        (0, f"{other}.1", 1),  # another /24: its own bucket
        (20, f"{network}.9", 1),
        (0, f"{network}.9", 1),
        (5, f"{network}.9", 2),  # a certificate lookup needs two tokens back
        (60, f"{network}.9", 5),  # a cost above the capacity spends the whole bucket, never for ever refused
    ]
    answers = []
    for advance, address, cost in steps:
        clock_local.now += advance
        clock_redis.now += advance
        answers.append((local.take(address, cost), shared.take(address, cost)))
    assert [a for a, _ in answers] == [0, 0, 0, 20, 0, 0, 20, 35, 0]
    assert [b for _, b in answers] == [a for a, _ in answers]


def test_two_limiters_on_one_redis_share_one_limit(redis_url: str, network: str) -> None:
    first = RedisTokenBucketLimiter(make_redis(redis_url), 5)
    second = RedisTokenBucketLimiter(make_redis(redis_url), 5)
    answers = [(first if i % 2 else second).take(f"{network}.{i}") for i in range(8)]
    assert answers[:5] == [0] * 5
    assert all(wait >= 1 for wait in answers[5:])
    # The bucket expires once it would be full again (60 s at any rate): no key is left for ever.
    ttl = redis.Redis.from_url(redis_url).ttl(REDIS_KEY_PREFIX + bucket_key(f"{network}.1"))
    assert 0 < ttl <= 61


def test_no_redis_url_keeps_the_in_process_limiter() -> None:
    assert isinstance(make_limiter(30, ""), TokenBucketLimiter)


def test_redis_down_fails_open_to_per_process_limits_with_one_warning(
    tmp_path: Path, own_redis: RedisServer, network: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = migrated_app(tmp_path / "var", f"sqlite:///{tmp_path / 'zfjl.db'}")
    mono = _Clock()
    limiter = RedisTokenBucketLimiter(make_redis(own_redis.url), 4, monotonic=mono)
    app.extensions[LIMITER_KEY] = limiter
    client = app.test_client()
    here = {"REMOTE_ADDR": f"{network}.7"}
    assert [client.get("/verify/x", environ_base=here).status_code for _ in range(5)] == [200] * 4 + [429]

    own_redis.stop()
    with caplog.at_level(logging.DEBUG, logger="server.http.rate_limit"):
        started = time.monotonic()
        # The public page stays up: answered, not a 500, and still limited (now by this process alone).
        codes = [client.get("/verify/x", environ_base=here).status_code for _ in range(6)]
        elapsed = time.monotonic() - started
    assert codes == [200] * 4 + [429] * 2
    assert limiter.degraded
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unavailable" in r.message]
    assert len(warnings) == 1
    assert elapsed < 5, "a dead Redis must not slow every request down"

    own_redis.start()  # back on the same port (empty: it keeps no data on disk)
    mono.now += REDIS_RETRY_AFTER_S + 0.1
    assert client.get("/verify/x", environ_base=here).status_code == 200
    assert not limiter.degraded
    # The request spent a token of the bucket in Redis again, not of this process's own.
    stored = redis.Redis.from_url(own_redis.url).hget(REDIS_KEY_PREFIX + bucket_key(f"{network}.7"), "tokens")
    assert stored is not None and float(stored) == pytest.approx(3.0, abs=0.01)


def _get(base_port: int, path: str, source: str) -> tuple[int, bytes]:
    """GET from a chosen loopback source address, so the test has a client network of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", base_port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_gs10_verify_limit_holds_across_two_api_processes(tmp_path: Path, redis_url: str) -> None:
    # Two `zfjl-server run` processes on one SQLite database and one Redis: requests alternating
    # between them are limited at the same total as one process would allow.
    data = tmp_path / "var"
    data.mkdir()
    settings = {
        "ZFJL_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "ZFJL_REDIS_URL": redis_url,
        "ZFJL_VERIFY_RATE_PER_MINUTE": "6",
        "ZFJL_SCRUB_BYTES_PER_S": "0",
    }
    first = ServerProcess(data, settings)
    first.create_admin()  # migrates the shared database once
    first.start()
    second_dir = tmp_path / "var2"
    second_dir.mkdir()
    # The second process shares the database (and the JWT secret, as a load balancer's pool would).
    (second_dir / "jwt-secret").write_text((data / "jwt-secret").read_text())
    second = ServerProcess(second_dir, settings)
    try:
        second.start()
        source = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.9"
        ports = [first.http_port, second.http_port]
        codes = [_get(ports[i % 2], "/verify/not-a-token", source)[0] for i in range(12)]
        # Per process, each would have allowed its 6 requests (12 in all); shared, 6 in all.
        assert codes == [200] * 6 + [429] * 6, codes
        assert "limiting per process" not in first.log_tail(400) + second.log_tail(400)
        # Each process answers /metrics for the whole deployment, with its own ingest queues.
        status, body = _get(second.http_port, "/metrics", "127.0.0.1")
        assert status == 200
        assert b"zfjl_segments_stored 0.0" in body
        assert b'zfjl_ingest_finalize_queue_depth{worker="w0"}' in body
    finally:
        second.stop()
        first.stop()
