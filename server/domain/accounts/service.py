"""Users, password hashing (scrypt), login throttling, token revocation and role checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import time
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.domain.accounts.models import ROLES, LoginThrottle, RevokedToken, User
from server.domain.accounts.throttle import ThrottleKeys, record_failure, seconds_to_wait, throttle_rows
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, ServiceError
from server.errors import ErrorKind

__all__ = [
    "ROLES",
    "AccountSuspended",
    "Forbidden",
    "InvalidCredentials",
    "InvalidToken",
    "LoginThrottled",
    "authenticate",
    "create_user",
    "cut_off_tokens",
    "hash_password",
    "is_token_revoked",
    "revoke_token",
    "token_claims",
    "user_for_token",
    "user_id_of",
    "verify_password",
]

# scrypt cost: ~16 MiB and tens of ms per hash; stored in the hash string so it can be raised later.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _DKLEN = 2**14, 8, 1, 32


class InvalidCredentials(ServiceError):
    """Wrong username or password (deliberately not saying which)."""

    code = "invalid_credentials"
    kind = ErrorKind.UNAUTHORIZED
    # The failure counts towards the throttle and is audited even though the login is refused.
    keeps_writes = True


class LoginThrottled(ServiceError):
    """Too many failed logins for this name or from this address: wait ``retry_after`` seconds.

    Raised alike for existing and unknown names, so it reveals nothing about which accounts exist.
    """

    code = "too_many_attempts"
    kind = ErrorKind.THROTTLED

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"登录失败次数过多，请 {retry_after} 秒后再试",
            f"too many failed logins: try again in {retry_after} seconds",
        )
        self.retry_after = retry_after


class InvalidToken(ServiceError):
    """A token that does not name a user of this server."""

    code = "invalid_token"
    kind = ErrorKind.UNAUTHORIZED


class Forbidden(ServiceError):
    """The caller's role may not do this."""

    code = "forbidden"
    kind = ErrorKind.FORBIDDEN


def hash_password(password: str) -> str:
    """Self-describing scrypt hash: ``scrypt$n$r$p$salt_b64$hash_b64``."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_DKLEN
    )
    return "$".join(
        [
            "scrypt",
            str(_SCRYPT_N),
            str(_SCRYPT_R),
            str(_SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against a stored hash."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=128 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


# Verified against when the user does not exist, so timing does not reveal valid usernames.
_DUMMY_HASH = hash_password(os.urandom(8).hex())


def create_user(
    session: Session,
    username: str,
    password: str,
    role: str,
    *,
    agency_id: int | None = None,
    actor: str = "system",
) -> User:
    """Create a user; refuses unknown roles, short passwords and taken usernames."""
    username = username.strip()
    if not username or len(username) > 64:
        raise Invalid("用户名长度须为 1–64 个字符", "username must be 1–64 characters")
    if role not in ROLES:
        raise Invalid(f"未知角色 {role}", f"unknown role {role}")
    if len(password) < 8:
        raise Invalid("密码至少 8 个字符", "password must be at least 8 characters")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"用户名 {username} 已存在", f"username {username} already exists")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role,
        agency_id=agency_id,
        active=True,
        failed_logins=0,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="user.create",
        target_type="user",
        target_id=user.id,
        detail={"username": username, "role": role},
    )
    return user


def authenticate(
    session: Session,
    username: str,
    password: str,
    *,
    now: datetime | None = None,
    client_ip: str | None = None,
) -> User:
    """Check a login under the throttle; its bookkeeping is flushed, the caller commits.

    A refused login raises InvalidCredentials, which ``keeps_writes``: the caller's ``session_scope``
    commits the failure count and the audit row rather than rolling them back.

    Unknown, suspended and wrong-password logins all raise InvalidCredentials after one scrypt hash;
    a throttled attempt raises LoginThrottled before any lookup, for existing and unknown names alike.
    """
    now = now or utcnow()
    keys = ThrottleKeys.of(username, client_ip)
    rows = throttle_rows(session, keys, now)
    retry_after = seconds_to_wait(rows, keys, now)
    if retry_after:
        # The caller rolls back with this error (so the stale counts reset above are not kept).
        raise LoginThrottled(retry_after)
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        # Hash anyway, so the answer takes as long as for a real account.
        verify_password(password, _DUMMY_HASH)
        ok = False
    else:
        ok = verify_password(password, user.password_hash)
    if not ok:
        record_failure(session, keys, now)
        write_audit(
            session,
            actor=str(user.id) if user is not None else "anonymous",
            action="auth.login_failed",
            target_type="user",
            target_id=user.id if user is not None else None,
            detail=None if user is not None else {"username": username[:64]},
            client_ip=client_ip,
        )
        session.flush()
        raise InvalidCredentials("用户名或密码错误", "invalid username or password")
    assert user is not None
    # Success clears this account's counts (not the address's: logging in to one's own account must
    # not reset a spraying address).
    session.execute(delete(LoginThrottle).where(LoginThrottle.key.in_([keys.account, keys.pair])))
    write_audit(
        session,
        actor=str(user.id),
        action="auth.login",
        target_type="user",
        target_id=user.id,
        client_ip=client_ip,
    )
    session.flush()
    return user


def get_active_user(session: Session, user_id: int) -> User | None:
    """The user if it exists and is active."""
    user = session.get(User, user_id)
    return user if user is not None and user.active else None


def user_id_of(claims: dict[str, Any]) -> int | None:
    """The user id a token names, or None when ``sub`` is not the canonical decimal id of a user row."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit() or str(int(sub)) != sub:
        return None
    user_id = int(sub)
    return user_id if 0 < user_id < 2**63 else None


def issued_at_ms(claims: dict[str, Any]) -> int | None:
    """When the token was issued, in ms: our ``iat_ms`` claim, else ``iat`` (whole seconds, rounded down)."""
    value = claims.get("iat_ms")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    iat = claims.get("iat")
    if isinstance(iat, int | float) and not isinstance(iat, bool):
        return int(iat) * 1000
    return None


def user_for_token(session: Session, claims: dict[str, Any]) -> User | None:
    """The active user a token stands for; None for a bad subject, a suspended account, or a token
    issued before the account's last suspension (``tokens_valid_after``)."""
    user_id = user_id_of(claims)
    if user_id is None:
        return None
    user = get_active_user(session, user_id)
    if user is None:
        return None
    if user.tokens_valid_after is not None:
        issued = issued_at_ms(claims)
        if issued is None or issued < math.ceil(user.tokens_valid_after.timestamp() * 1000):
            return None
    return user


def cut_off_tokens(user: User, *, now: datetime | None = None) -> None:
    """Refuse every token issued to ``user`` until now, for good (suspension)."""
    user.tokens_valid_after = now or utcnow()


def revoke_token(
    session: Session, jti: str, *, token_type: str, user_id: str | None, expires_at: datetime | None
) -> None:
    """Mark a token as revoked (idempotent)."""
    if session.get(RevokedToken, jti) is None:
        session.add(
            RevokedToken(
                jti=jti, token_type=token_type, user_id=user_id, revoked_at=utcnow(), expires_at=expires_at
            )
        )
        session.flush()


def is_token_revoked(session: Session, jti: str) -> bool:
    """Whether a token id was revoked."""
    return session.get(RevokedToken, jti) is not None


class AccountSuspended(ServiceError):
    """The token's account was suspended: every token issued before is refused at once."""

    code = "token_revoked"
    kind = ErrorKind.UNAUTHORIZED


def token_claims(user: User) -> dict[str, Any]:
    """Extra JWT claims for a user."""
    # iat_ms: the issue time to the millisecond, so a token from just before a suspension is told apart
    # from one issued just after the reinstatement (``iat`` has whole seconds only).
    return {
        "role": user.role,
        "username": user.username,
        "agency_id": user.agency_id,
        "iat_ms": time.time_ns() // 1_000_000,
    }
