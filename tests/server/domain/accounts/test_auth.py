"""Login, lockout, refresh, logout revocation, role checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from server.domain.accounts.models import LoginThrottle
from server.domain.accounts.service import create_user, hash_password, verify_password
from server.domain.accounts.throttle import ACCOUNT_FREE_FAILURES
from server.domain.base import utcnow
from server.infra.db import session_scope
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER


def _login(
    client: FlaskClient, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD
) -> tuple[int, dict[str, Any]]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    return response.status_code, response.get_json()


def test_password_hash_is_salted_scrypt() -> None:
    a, b = hash_password("secret-pass"), hash_password("secret-pass")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("secret-pass", a) and not verify_password("wrong-pass", a)
    assert not verify_password("secret-pass", "garbage")


def test_login_returns_tokens(client: FlaskClient) -> None:
    status, body = _login(client)
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["access_token"] and body["refresh_token"]


def test_wrong_password_json_error(client: FlaskClient) -> None:
    status, body = _login(client, password="nope-nope")
    assert status == 401
    assert body["error"]["code"] == "invalid_credentials"
    assert body["error"]["message"] and body["error"]["message_en"]
    status, body = _login(client, username="ghost")
    assert status == 401 and body["error"]["code"] == "invalid_credentials"


def test_throttle_after_failures_is_a_backoff_not_a_lock(client: FlaskClient, app: Flask) -> None:
    for _ in range(ACCOUNT_FREE_FAILURES + 1):
        assert _login(client, password="wrong-password")[0] == 401
    status, body = _login(client)  # even the right password waits out the backoff
    assert status == 429 and body["error"]["code"] == "too_many_attempts"
    with session_scope(app) as session:
        for row in session.query(LoginThrottle):
            row.blocked_until = utcnow() - timedelta(seconds=1)
    assert _login(client)[0] == 200


def test_refresh_and_logout_revocation(client: FlaskClient) -> None:
    _, tokens = _login(client)
    access = {"Authorization": f"Bearer {tokens['access_token']}"}
    refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    assert client.get("/api/v1/devices", headers=access).status_code == 200
    # An access token cannot refresh; a refresh token can.
    assert client.post("/api/v1/auth/refresh", headers=access).status_code == 401
    response = client.post("/api/v1/auth/refresh", headers=refresh)
    assert response.status_code == 200
    new_access = {"Authorization": f"Bearer {response.get_json()['access_token']}"}

    assert client.post("/api/v1/auth/logout", headers=access).status_code == 200
    response = client.get("/api/v1/devices", headers=access)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "token_revoked"
    assert client.get("/api/v1/devices", headers=new_access).status_code == 200

    assert client.post("/api/v1/auth/logout", headers=refresh).status_code == 200
    assert client.post("/api/v1/auth/refresh", headers=refresh).status_code == 401


def test_missing_and_bad_token(client: FlaskClient) -> None:
    response = client.get("/api/v1/recordings")
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    response = client.get("/api/v1/recordings", headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "invalid_token"


def test_role_forbidden(client: FlaskClient, app: Flask) -> None:
    with session_scope(app) as session:
        create_user(session, "officer1", "officer-password", "officer")
    _, tokens = _login(client, "officer1", "officer-password")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    response = client.post("/api/v1/devices", headers=headers, json={"device_id": "x", "public_key": "AA=="})
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    assert client.get("/api/v1/recordings", headers=headers).status_code == 200


def test_create_user_validation(db_session: Session) -> None:
    from server.domain.errors import Conflict, Invalid

    create_user(db_session, "bob", "bob-password", "auditor")
    with pytest.raises(Conflict):
        create_user(db_session, "bob", "bob-password", "auditor")
    with pytest.raises(Invalid):
        create_user(db_session, "carol", "carol-password", "emperor")
    with pytest.raises(Invalid):
        create_user(db_session, "dave", "short", "officer")
