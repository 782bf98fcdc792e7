"""Users, password hashing (scrypt), login throttling, token revocation and role checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.models import ROLES, LoginThrottle, RevokedToken, User, utcnow
from server.services import Conflict, Invalid, ServiceError, write_audit

__all__ = [
    "ACCOUNT_FREE_FAILURES",
    "ADDRESS_FREE_FAILURES",
    "BACKOFF_BASE",
    "ENDPOINT_ROLES",
    "MAX_BACKOFF",
    "ROLES",
    "AccountSuspended",
    "Forbidden",
    "InvalidCredentials",
    "InvalidToken",
    "LoginThrottled",
    "authenticate",
    "backoff_for",
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

# Login throttle (no hard lock): failures allowed per account and per account-at-address before an
# exponential backoff starts, and per address across all names (password spraying).
ACCOUNT_FREE_FAILURES = 5
ADDRESS_FREE_FAILURES = 20
BACKOFF_BASE = timedelta(seconds=2)
MAX_BACKOFF = timedelta(minutes=15)
# Counts idle this long start again from zero (and their rows are purged).
THROTTLE_WINDOW = timedelta(hours=1)
# scrypt cost: ~16 MiB and tens of ms per hash; stored in the hash string so it can be raised later.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _DKLEN = 2**14, 8, 1, 32

_READ_EVIDENCE = ("officer", "legal_reviewer", "agency_head", "supervisor", "auditor", "system_admin")
_MANAGE_DEVICES = ("device_admin", "system_admin")
_READ_DEVICES = ("device_admin", "supervisor", "auditor", "system_admin")
_MANAGE_PEOPLE = ("agency_head", "system_admin")
_READ_ACCOUNTS = ("agency_head", "supervisor", "auditor", "system_admin")
_CREDENTIAL_HOLDERS = ("officer", "auxiliary")
_READ_CASES = (
    "officer",
    "auxiliary",
    "legal_reviewer",
    "agency_head",
    "supervisor",
    "auditor",
    "system_admin",
)
_WRITE_CASE_EVENTS = ("officer", "auxiliary", "legal_reviewer", "agency_head", "system_admin")

# The one place that says who may call which endpoint (blueprint.view name -> roles).
ENDPOINT_ROLES: dict[str, tuple[str, ...]] = {
    "recordings.list_recordings": _READ_EVIDENCE,
    "recordings.get_recording": _READ_EVIDENCE,
    "recordings.get_media": _READ_EVIDENCE,
    "devices.list_devices": _READ_DEVICES,
    "devices.get_device": _READ_DEVICES,
    "devices.register_device": _MANAGE_DEVICES,
    "devices.chain": ("device_admin", "legal_reviewer", "supervisor", "auditor", "system_admin"),
    "integrity.scrub": ("device_admin", "auditor", "system_admin"),  # JL-6: reads every object
    # The evidence ledger (docs/ledger.md): one tree for the deployment, so cross-agency readers only.
    "ledger.inclusion_proof": ("supervisor", "auditor", "system_admin"),
    "ledger.consistency_proof": ("supervisor", "auditor", "system_admin"),
    "ledger.get_leaf": ("supervisor", "auditor", "system_admin"),
    "ledger.get_row_leaf": ("supervisor", "auditor", "system_admin"),
    "ledger.sign_checkpoint": ("auditor", "system_admin"),
    "ledger.verify": ("auditor", "system_admin"),
    # People and cases (server/api/people.py, credentials.py, cases.py): GS-9, GS-10, JL-7 – JL-11.
    # Reads are further limited to the caller's agency except for supervisors, auditors and admins.
    "people.list_agencies": ROLES,
    "people.get_agency": ROLES,
    "people.create_agency": ("system_admin",),
    "people.update_agency": _MANAGE_PEOPLE,
    "people.list_users": _READ_ACCOUNTS,
    "people.create_user": ("system_admin",),
    "people.suspend_user": ("system_admin",),
    "people.reinstate_user": ("system_admin",),
    "people.list_officers": ROLES,
    "people.get_officer": ROLES,
    "people.get_officer_photo": ROLES,
    "people.create_officer": _MANAGE_PEOPLE,
    "people.update_officer": _MANAGE_PEOPLE,
    "people.put_officer_photo": _MANAGE_PEOPLE,
    "people.import_officers": _MANAGE_PEOPLE,
    "credentials.my_credential": _CREDENTIAL_HOLDERS,
    "credentials.my_photo": _CREDENTIAL_HOLDERS,
    "credentials.show_credential": _CREDENTIAL_HOLDERS,
    "credentials.my_cases": _CREDENTIAL_HOLDERS,
    "credentials.list_scans": _READ_ACCOUNTS,
    "cases.event_types": ROLES,
    "cases.list_cases": _READ_CASES,
    "cases.get_case": _READ_CASES,
    "cases.get_record": _READ_CASES,
    "cases.get_attachment": _READ_CASES,
    "cases.create_case": ("officer", "agency_head", "system_admin"),
    "cases.add_event": _WRITE_CASE_EVENTS,
    "cases.add_attachment": _WRITE_CASE_EVENTS,
    # JL-9(3)(4): moving a case through its lifecycle is for legal reviewers and heads; forcing an
    # incomplete record closed is for heads only (services/cases.py FORCE_CLOSE_ROLES).
    "cases.change_status": ("legal_reviewer", "agency_head", "system_admin"),
    # Fleet (server/api/fleet.py): device admins manage, readers may see the overview and alerts.
    "fleet.provision": _MANAGE_DEVICES,
    "fleet.pending_requests": _MANAGE_DEVICES,
    "fleet.decide_request": _MANAGE_DEVICES,
    "fleet.allowlist_add": _MANAGE_DEVICES,
    "fleet.allowlist_remove": _MANAGE_DEVICES,
    "fleet.list_devices": _READ_DEVICES,
    "fleet.revoke": _MANAGE_DEVICES,
    "fleet.rotate_credentials": _MANAGE_DEVICES,
    "fleet.set_profile": _MANAGE_DEVICES,
    "fleet.check_out": _MANAGE_DEVICES,
    "fleet.check_in": _MANAGE_DEVICES,
    "fleet.assignments": _READ_DEVICES,
    "fleet.alerts": _READ_DEVICES,
    "fleet.evaluate_alerts": _MANAGE_DEVICES,
    "fleet.set_config": _MANAGE_DEVICES,
    "fleet.shadow": _READ_DEVICES,
    "fleet.create_command": _MANAGE_DEVICES,
    "fleet.list_commands": _READ_DEVICES,
    # Signed updates (server/api/rollouts.py); devices download with the token in their command.
    "rollouts.upload_bundle": _MANAGE_DEVICES,
    "rollouts.list_bundles": _READ_DEVICES,
    "rollouts.create_rollout": _MANAGE_DEVICES,
    "rollouts.get_rollout": _READ_DEVICES,
    # Enforcement sessions (server/api/sessions.py): JL-16 continuity; only officers sign explanations.
    "sessions.list_sessions": _READ_EVIDENCE,
    "sessions.get_session": _READ_EVIDENCE,
    "sessions.get_timeline": _READ_EVIDENCE,
    "sessions.file_explanation": ("officer", "agency_head"),
    "sessions.sign_explanation": ("officer", "agency_head"),
}


class InvalidCredentials(ServiceError):
    """Wrong username or password (deliberately not saying which)."""

    code = "invalid_credentials"
    kind = "unauthorized"


class LoginThrottled(ServiceError):
    """Too many failed logins for this name or from this address: wait ``retry_after`` seconds.

    Raised alike for existing and unknown names, so it reveals nothing about which accounts exist.
    """

    code = "too_many_attempts"
    kind = "throttled"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"登录失败次数过多，请 {retry_after} 秒后再试",
            f"too many failed logins: try again in {retry_after} seconds",
        )
        self.retry_after = retry_after


class InvalidToken(ServiceError):
    """A token that does not name a user of this server."""

    code = "invalid_token"
    kind = "unauthorized"


class Forbidden(ServiceError):
    """The caller's role may not do this."""

    code = "forbidden"
    kind = "forbidden"


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


def _address_key(client_ip: str | None) -> str:
    """The throttled unit of an address: IPv4 as is, IPv6 by /64 (one host's usual allocation)."""
    try:
        ip = ipaddress.ip_address(client_ip or "")
    except ValueError:
        return "unknown"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _throttle_key(kind: str, *parts: str) -> str:
    # Hashed: people type passwords into the user name field, and those must not be stored in clear.
    return hashlib.sha256("\0".join((kind, *parts)).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class _ThrottleKeys:
    """The three throttle keys of one login attempt, with the free failures each one allows."""

    account: str
    address: str
    pair: str

    @classmethod
    def of(cls, username: str, client_ip: str | None) -> _ThrottleKeys:
        """Keys of ``username`` tried from ``client_ip`` (the same whether the account exists or not)."""
        address = _address_key(client_ip)
        return cls(
            account=_throttle_key("account", username),
            address=_throttle_key("address", address),
            pair=_throttle_key("pair", username, address),
        )

    def free(self) -> dict[str, int]:
        """Key -> failures allowed before the backoff starts."""
        return {
            self.account: ACCOUNT_FREE_FAILURES,
            self.pair: ACCOUNT_FREE_FAILURES,
            self.address: ADDRESS_FREE_FAILURES,
        }


def backoff_for(failures: int, free: int) -> timedelta:
    """Exponential backoff after ``failures`` (BACKOFF_BASE, doubled per failure, at most MAX_BACKOFF)."""
    over = failures - free
    if over <= 0:
        return timedelta(0)
    doublings: int = min(over - 1, 30)
    return min(MAX_BACKOFF, BACKOFF_BASE * (1 << doublings))


def _throttle_rows(session: Session, keys: _ThrottleKeys, now: datetime) -> dict[str, LoginThrottle]:
    """The keys' rows, with counts older than THROTTLE_WINDOW (and no running backoff) treated as zero."""
    rows = {
        row.key: row
        for row in session.scalars(
            select(LoginThrottle).where(LoginThrottle.key.in_([keys.account, keys.address, keys.pair]))
        )
    }
    for row in rows.values():
        if row.updated_at < now - THROTTLE_WINDOW and (row.blocked_until is None or row.blocked_until <= now):
            row.failures, row.blocked_until = 0, None
    return rows


def _retry_after(rows: dict[str, LoginThrottle], keys: _ThrottleKeys, now: datetime) -> int:
    """Seconds until this attempt may be checked; 0 if it may be checked now."""

    def left(key: str) -> float:
        row = rows.get(key)
        if row is None or row.blocked_until is None or row.blocked_until <= now:
            return 0.0
        return (row.blocked_until - now).total_seconds()

    waits = [left(keys.address), left(keys.pair)]
    pair = rows.get(keys.pair)
    # The account-wide backoff (guessing from many addresses) spares an address that has not failed
    # for this account: otherwise anyone could keep the real owner out from anywhere.
    if pair is not None and pair.failures > 0:
        waits.append(left(keys.account))
    return math.ceil(max(waits))


def _record_failure(session: Session, keys: _ThrottleKeys, now: datetime) -> None:
    """Count a failed check on every key (atomic increments, so concurrent processes add up)."""
    for key, free in keys.free().items():
        if session.get(LoginThrottle, key) is None:
            try:
                with session.begin_nested():
                    session.add(LoginThrottle(key=key, failures=0, blocked_until=None, updated_at=now))
            except IntegrityError:
                # Another process inserted the row meanwhile: it exists either way, and the atomic
                # increment below counts this failure on top of theirs.
                pass
        session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key)
            .values(failures=LoginThrottle.failures + 1, updated_at=now)
        )
        row = session.get(LoginThrottle, key, populate_existing=True)
        assert row is not None
        delay = backoff_for(row.failures, free)
        if delay:
            row.blocked_until = now + delay
    # Keep the table small: forget keys that are idle and not backing off (indexed by updated_at).
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.updated_at < now - THROTTLE_WINDOW,
            or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < now),
        )
    )


def authenticate(
    session: Session,
    username: str,
    password: str,
    *,
    now: datetime | None = None,
    client_ip: str | None = None,
) -> User:
    """Check a login under the throttle; commits its bookkeeping.

    Unknown, suspended and wrong-password logins all raise InvalidCredentials after one scrypt hash;
    a throttled attempt raises LoginThrottled before any lookup, for existing and unknown names alike.
    """
    now = now or utcnow()
    keys = _ThrottleKeys.of(username, client_ip)
    rows = _throttle_rows(session, keys, now)
    retry_after = _retry_after(rows, keys, now)
    if retry_after:
        session.rollback()
        raise LoginThrottled(retry_after)
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        # Hash anyway, so the answer takes as long as for a real account.
        verify_password(password, _DUMMY_HASH)
        ok = False
    else:
        ok = verify_password(password, user.password_hash)
    if not ok:
        _record_failure(session, keys, now)
        write_audit(
            session,
            actor=str(user.id) if user is not None else "anonymous",
            action="auth.login_failed",
            target_type="user",
            target_id=user.id if user is not None else None,
            detail=None if user is not None else {"username": username[:64]},
            client_ip=client_ip,
        )
        session.commit()
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
    session.commit()
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
    kind = "unauthorized"


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
