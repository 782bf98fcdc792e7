"""The client address behind a reverse proxy (``ZFJL_TRUSTED_PROXY_HOPS``).

Behind a proxy every request comes from the proxy's socket: without the setting, the login throttle's
per-address key throttles every officer together and the audit rows name the proxy. With it, only the
entries the trusted proxies appended to ``X-Forwarded-For`` count; with the default 0 a client's own
header is ignored, so an attacker cannot choose the address it is throttled and audited under.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.app import create_app
from server.domain.accounts.service import create_user
from server.domain.accounts.throttle import ADDRESS_FREE_FAILURES
from server.domain.audit import AuditLog
from server.infra.config import ConfigError, load_settings
from server.infra.db import get_engine, run_migrations, session_scope
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, TEST_JWT_SECRET

PROXY = "10.0.0.2"


def _app(tmp_path: Path, sqlite_url: str, hops: int) -> Flask:
    app = create_app(
        {
            "data_dir": str(tmp_path / "var"),
            "database_url": sqlite_url,
            "jwt_secret": TEST_JWT_SECRET,
            "trusted_proxy_hops": hops,
            "TESTING": True,
        }
    )
    run_migrations(sqlite_url)
    with session_scope(app) as session:
        create_user(session, ADMIN_USER, ADMIN_PASSWORD, "system_admin")
    return app


@pytest.fixture
def proxied(tmp_path: Path, sqlite_url: str) -> Iterator[Flask]:
    """The app behind one trusted proxy."""
    app = _app(tmp_path, sqlite_url, 1)
    yield app
    get_engine(app).dispose()


def _login(client: FlaskClient, username: str, password: str, forwarded: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    response = client.post(
        "/api/v1/auth/login",
        json={"username": username, "password": password},
        headers=headers,
        environ_base={"REMOTE_ADDR": PROXY},
    )
    return response.status_code


def _login_addresses(app: Flask) -> list[str | None]:
    with session_scope(app) as session:
        rows = session.scalars(
            select(AuditLog.client_ip).where(AuditLog.action.in_(["auth.login", "auth.login_failed"]))
        )
        return list(rows)


def test_behind_a_trusted_proxy_each_client_is_throttled_and_audited_by_its_own_address(
    proxied: Flask,
) -> None:
    client = proxied.test_client()
    sprayer, officer = "203.0.113.66", "198.51.100.7"
    statuses = [_login(client, f"user-{i}", "Winter2026!", sprayer) for i in range(ADDRESS_FREE_FAILURES + 2)]
    assert statuses[-1] == 429
    # The officer behind the same proxy is not throttled with the sprayer.
    assert _login(client, ADMIN_USER, ADMIN_PASSWORD, officer) == 200
    # A forged entry the client put first does not change the address the proxy appended.
    assert _login(client, ADMIN_USER, ADMIN_PASSWORD, f"{officer}, {sprayer}") == 429
    addresses = _login_addresses(proxied)
    assert addresses.count(sprayer) == ADDRESS_FREE_FAILURES + 1 and officer in addresses
    assert PROXY not in addresses


def test_without_trusted_proxies_a_client_cannot_choose_its_address(tmp_path: Path, sqlite_url: str) -> None:
    app = _app(tmp_path, sqlite_url, 0)
    try:
        client = app.test_client()
        # A sprayer rotating X-Forwarded-For is still one address: it is throttled all the same.
        statuses = [
            _login(client, f"user-{i}", "Winter2026!", f"192.0.2.{i}")
            for i in range(ADDRESS_FREE_FAILURES + 2)
        ]
        assert statuses[-1] == 429
        assert set(_login_addresses(app)) == {PROXY}
    finally:
        get_engine(app).dispose()


def test_proxy_hops_are_validated() -> None:
    assert load_settings({"trusted_proxy_hops": "2"}).trusted_proxy_hops == 2
    for bad in ("-1", "6", "one"):
        with pytest.raises(ConfigError):
            load_settings({"trusted_proxy_hops": bad})
