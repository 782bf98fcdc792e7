"""Rate limiting of the public verification pages per client network (GS-10(1))."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.domain.people.models import CredentialScan
from server.http.pages.verify import LIMITER_KEY
from server.http.rate_limit import TokenBucketLimiter
from server.infra.config import load_settings
from server.infra.db import session_scope
from tests.fixtures.people import World


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_per_network_refills_over_time() -> None:
    clock = _Clock()
    limiter = TokenBucketLimiter(3, clock=clock)
    assert [limiter.take("198.51.100.1") for _ in range(3)] == [0, 0, 0]
    # Same /24, another host: the same bucket.
    assert limiter.take("198.51.100.200") == 20
    # Another /24 has its own bucket.
    assert limiter.take("198.51.101.1") == 0
    clock.now += 20
    assert limiter.take("198.51.100.9") == 0
    assert limiter.take("198.51.100.9") == 20
    # IPv6: one bucket per /48.
    assert limiter.take("2001:db8:1:2::1", cost=3) == 0
    assert limiter.take("2001:db8:1:ffff::1") == 20
    assert limiter.take("2001:db8:2::1") == 0
    # A cost of two needs two tokens back.
    clock.now += 20
    assert limiter.take("2001:db8:1::5", cost=2) == 20
    assert limiter.key(None) == limiter.key("not an address") == "unknown"


def test_setting_from_environment_and_default(tmp_path: Path) -> None:
    # Loading settings makes the data dir's ingest key: never in the working directory.
    data_dir = str(tmp_path / "data")
    settings = load_settings({"data_dir": data_dir, "jwt_secret": "s" * 16}, environ={})
    assert settings.verify_rate_per_minute == 30
    env = {"ZFJL_VERIFY_RATE_PER_MINUTE": "7", "ZFJL_JWT_SECRET": "s" * 16}
    assert load_settings({"data_dir": data_dir}, environ=env).verify_rate_per_minute == 7


def test_verify_pages_answer_429_with_retry_after_and_cert_lookups_count_double(
    app: Flask, client: FlaskClient, world: World
) -> None:
    here = {"REMOTE_ADDR": "203.0.113.7"}
    # Default 30 per minute: 15 certificate lookups use it all.
    for _ in range(15):
        assert client.get("/verify?cert=AH-0001", environ_base=here).status_code == 200
    refused = client.get("/verify?cert=AH-0001", environ_base=here)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["Cache-Control"] == "no-store"
    page = refused.get_data(as_text=True)
    assert 'data-outcome="rate_limited"' in page and "请求过于频繁" in page
    english = client.get("/verify/whatever?lang=en", environ_base={"REMOTE_ADDR": "203.0.113.99"})
    assert english.status_code == 429 and "Too many checks" in english.get_data(as_text=True)
    # Another network is unaffected; refused requests are not logged as scans.
    assert client.get("/verify?cert=AH-0001", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 200
    with session_scope(app) as session:
        assert session.scalar(select(func.count()).select_from(CredentialScan)) == 16


def test_qr_scans_cost_one(app: Flask, client: FlaskClient, world: World) -> None:
    app.extensions[LIMITER_KEY] = TokenBucketLimiter(4)
    here = {"REMOTE_ADDR": "2001:db8:5:1::1"}
    assert [client.get("/verify/x", environ_base=here).status_code for _ in range(5)] == [200] * 4 + [429]
    assert client.get("/verify", environ_base={"REMOTE_ADDR": "2001:db8:6::1"}).status_code == 200
    assert client.get("/.well-known/zfjl-credential-key.json", environ_base=here).status_code == 200
