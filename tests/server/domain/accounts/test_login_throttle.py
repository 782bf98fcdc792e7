"""Login throttling without an enumeration oracle or a lock anyone can trigger; token lifetime after
suspension; tokens whose subject is not a user (issue: accounts)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from server.app import create_app
from server.domain.accounts.service import InvalidCredentials, LoginThrottled, authenticate, create_user
from server.domain.accounts.throttle import ACCOUNT_FREE_FAILURES, ADDRESS_FREE_FAILURES, MAX_BACKOFF
from server.domain.base import utcnow
from server.infra.db import session_scope
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, TEST_JWT_SECRET

ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"


def _login(
    client: FlaskClient, username: str, password: str, address: str = ATTACKER
) -> tuple[int, dict[str, Any], str | None]:
    response = client.post(
        "/api/v1/auth/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )
    return response.status_code, response.get_json(), response.headers.get("Retry-After")


def test_unknown_and_existing_accounts_answer_alike_under_repeated_failures(client: FlaskClient) -> None:
    """The old lockout answered 423 for existing accounts only: an enumeration oracle."""
    known = [_login(client, ADMIN_USER, "wrong-password", "203.0.113.1") for _ in range(12)]
    unknown = [_login(client, "ghost-user", "wrong-password", "203.0.113.2") for _ in range(12)]
    # Same status, same body, same presence of Retry-After, attempt by attempt.
    assert [(s, b, r is not None) for s, b, r in known] == [(s, b, r is not None) for s, b, r in unknown]
    assert {s for s, _, _ in known} == {401, 429}
    assert all(b["error"]["code"] in ("invalid_credentials", "too_many_attempts") for _, b, _ in known)


def test_throttled_login_answers_429_with_retry_after_even_for_the_right_password(
    client: FlaskClient,
) -> None:
    for _ in range(ACCOUNT_FREE_FAILURES):
        assert _login(client, ADMIN_USER, "wrong-password")[0] == 401
    assert _login(client, ADMIN_USER, "wrong-password")[0] == 401  # this one starts the backoff
    status, body, retry_after = _login(client, ADMIN_USER, ADMIN_PASSWORD)
    assert status == 429 and body["error"]["code"] == "too_many_attempts"
    assert retry_after is not None and int(retry_after) >= 1
    assert body["error"]["message"] and body["error"]["message_en"]


def test_attacker_cannot_lock_the_owner_out_from_another_address(client: FlaskClient) -> None:
    """Anyone could lock admin out for 15 minutes with five wrong passwords; the owner must get in."""
    statuses = {_login(client, ADMIN_USER, f"guess-{i}", ATTACKER)[0] for i in range(25)}
    assert 429 in statuses
    status, body, _ = _login(client, ADMIN_USER, ADMIN_PASSWORD, OWNER)
    assert status == 200, body
    # And the attacker's address stays throttled.
    assert _login(client, ADMIN_USER, ADMIN_PASSWORD, ATTACKER)[0] == 429


def test_one_address_spraying_many_accounts_is_throttled(client: FlaskClient) -> None:
    statuses = [
        _login(client, f"user-{i}", "Winter2026!", ATTACKER)[0] for i in range(ADDRESS_FREE_FAILURES + 3)
    ]
    assert statuses[:ADDRESS_FREE_FAILURES] == [401] * ADDRESS_FREE_FAILURES
    assert statuses[-1] == 429
    # A never-tried account from that address is throttled too; other addresses are not.
    assert _login(client, ADMIN_USER, ADMIN_PASSWORD, ATTACKER)[0] == 429
    assert _login(client, ADMIN_USER, ADMIN_PASSWORD, OWNER)[0] == 200


def test_backoff_grows_exponentially_is_bounded_and_expires(db_session: Session) -> None:
    create_user(db_session, "alice", "alice-password", "officer")
    db_session.commit()
    now = utcnow()
    for _ in range(ACCOUNT_FREE_FAILURES):
        with pytest.raises(InvalidCredentials):
            authenticate(db_session, "alice", "bad-password", now=now, client_ip=ATTACKER)
    delays = []
    for _ in range(14):
        with pytest.raises(InvalidCredentials):
            authenticate(db_session, "alice", "bad-password", now=now, client_ip=ATTACKER)
        with pytest.raises(LoginThrottled) as throttled:
            authenticate(db_session, "alice", "alice-password", now=now, client_ip=ATTACKER)
        delays.append(throttled.value.retry_after)
        now += timedelta(seconds=throttled.value.retry_after)
    assert delays[:4] == [2, 4, 8, 16]
    assert max(delays) == int(MAX_BACKOFF.total_seconds())
    # Once the backoff has passed, the right password works and clears the count.
    user = authenticate(db_session, "alice", "alice-password", now=now, client_ip=ATTACKER)
    assert user.username == "alice"
    with pytest.raises(InvalidCredentials):
        authenticate(db_session, "alice", "bad-password", now=now, client_ip=ATTACKER)


def test_throttle_state_is_shared_by_server_processes(app: Flask, tmp_path: Any) -> None:
    """Two app instances on one database (as gunicorn workers would be) see the same throttle."""
    other = create_app(
        {
            "data_dir": str(tmp_path / "var"),
            "database_url": app.extensions["zfjl.settings"].database_url,
            "jwt_secret": TEST_JWT_SECRET,
            "TESTING": True,
        }
    )
    first, second = app.test_client(), other.test_client()
    for i in range(ACCOUNT_FREE_FAILURES + 1):
        client = first if i % 2 else second
        assert _login(client, ADMIN_USER, "wrong-password")[0] == 401
    assert _login(first, ADMIN_USER, ADMIN_PASSWORD)[0] == 429
    assert _login(second, ADMIN_USER, ADMIN_PASSWORD)[0] == 429


def _token(sub: str, **claims: Any) -> dict[str, str]:
    now = int(utcnow().timestamp())
    payload = {
        "sub": sub,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": f"forged-{sub}",
        "type": "access",
        "fresh": False,
        "role": "system_admin",
        "username": "x",
        "agency_id": None,
        **claims,
    }
    return {"Authorization": f"Bearer {pyjwt.encode(payload, TEST_JWT_SECRET, algorithm='HS256')}"}


@pytest.mark.parametrize("sub", ["admin", "1.0", "01", "-1", "99999"])
def test_token_whose_subject_is_not_a_user_is_refused(client: FlaskClient, sub: str) -> None:
    """A non-numeric ``sub`` skipped the suspended check (a leaked secret or a token of another system)."""
    response = client.get("/api/v1/devices", headers=_token(sub))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] in ("invalid_token", "token_revoked")


def test_refresh_token_whose_subject_is_not_a_user_is_refused(client: FlaskClient) -> None:
    response = client.post("/api/v1/auth/refresh", headers=_token("admin", type="refresh", jti="r1"))
    assert response.status_code == 401


def test_tokens_issued_before_a_suspension_stay_dead_after_reinstatement(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    with session_scope(app) as session:
        user_id = create_user(session, "officer-x", "officer-password", "officer").id
    tokens = client.post(
        "/api/v1/auth/login", json={"username": "officer-x", "password": "officer-password"}
    ).get_json()
    old_access = {"Authorization": f"Bearer {tokens['access_token']}"}
    old_refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    assert client.get("/api/v1/recordings", headers=old_access).status_code == 200
    assert client.post(f"/api/v1/users/{user_id}/suspend", headers=auth).status_code == 200
    assert client.post(f"/api/v1/users/{user_id}/reinstate", headers=auth).status_code == 200
    refused = client.get("/api/v1/recordings", headers=old_access)
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "token_revoked"
    assert client.post("/api/v1/auth/refresh", headers=old_refresh).status_code == 401
    # A fresh login after reinstatement works at once.
    fresh = client.post("/api/v1/auth/login", json={"username": "officer-x", "password": "officer-password"})
    assert fresh.status_code == 200
    headers = {"Authorization": f"Bearer {fresh.get_json()['access_token']}"}
    assert client.get("/api/v1/recordings", headers=headers).status_code == 200


def test_console_cookie_whose_subject_is_not_a_user_goes_back_to_the_login(client: FlaskClient) -> None:
    """``int(sub)`` on the console's cookie path turned a non-numeric subject into a 500."""
    token = _token("admin", csrf="c")["Authorization"].removeprefix("Bearer ")
    client.set_cookie("zfjl_console", token, path="/admin")
    response = client.get("/admin/devices")
    assert response.status_code == 303 and "/admin/login" in response.headers["Location"]


def test_unknown_names_cost_the_same_scrypt_work_as_wrong_passwords(client: FlaskClient) -> None:
    """Comparable timing: an unknown name is hashed against a dummy, so it is not answered faster."""
    import time

    def elapsed(username: str, address: str) -> float:
        start = time.perf_counter()
        assert _login(client, username, "wrong-password", address)[0] == 401
        return time.perf_counter() - start

    known, unknown = [], []
    for i in range(4):  # interleaved, each from its own address so no backoff starts
        known.append(elapsed(ADMIN_USER, f"192.0.2.{10 + i}"))
        unknown.append(elapsed(f"nobody-{i}", f"192.0.2.{20 + i}"))
    ratio = sorted(unknown)[1] / sorted(known)[1]
    assert 0.3 < ratio < 3.0, (known, unknown)


def test_token_cut_off_at_suspension_on_both_databases(db_session: Session) -> None:
    """``tokens_valid_after`` keeps its millisecond precision on SQLite and PostgreSQL."""
    from server.domain.accounts.service import cut_off_tokens, user_for_token

    user = create_user(db_session, "bob", "bob-password", "officer")
    db_session.commit()
    at = utcnow()
    at_ms = int(at.timestamp() * 1000)
    before = {"sub": str(user.id), "iat_ms": at_ms - 1, "iat": at_ms // 1000}
    legacy_same_second = {"sub": str(user.id), "iat": at_ms // 1000}  # no iat_ms: whole seconds only
    after = {"sub": str(user.id), "iat_ms": at_ms + 2, "iat": at_ms // 1000}
    assert user_for_token(db_session, before) is not None
    cut_off_tokens(user, now=at)
    user.active = False
    db_session.commit()
    assert user_for_token(db_session, after) is None  # suspended
    user.active = True  # reinstated
    db_session.commit()
    db_session.expire_all()
    assert user_for_token(db_session, before) is None
    assert user_for_token(db_session, legacy_same_second) is None
    assert user_for_token(db_session, after) is not None
    assert user_for_token(db_session, {"sub": "bob", "iat_ms": at_ms + 2}) is None
