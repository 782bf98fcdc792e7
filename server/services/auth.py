"""Users, password hashing (scrypt), login lockout, token revocation and role checks."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import ROLES, RevokedToken, User, utcnow
from server.services import Conflict, Invalid, ServiceError, write_audit

__all__ = [
    "ENDPOINT_ROLES",
    "LOCKOUT_AFTER",
    "LOCKOUT_FOR",
    "ROLES",
    "AccountLocked",
    "AccountSuspended",
    "Forbidden",
    "InvalidCredentials",
    "authenticate",
    "create_user",
    "hash_password",
    "is_token_revoked",
    "require_roles",
    "revoke_token",
    "verify_password",
]

LOCKOUT_AFTER = 5
LOCKOUT_FOR = timedelta(minutes=15)
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


class AccountLocked(ServiceError):
    """Too many failed logins; the account is locked for a while."""

    code = "account_locked"
    kind = "locked"


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


def authenticate(
    session: Session,
    username: str,
    password: str,
    *,
    now: datetime | None = None,
    client_ip: str | None = None,
) -> User:
    """Check a login; counts failures and locks after LOCKOUT_AFTER. Commits its bookkeeping."""
    now = now or utcnow()
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        verify_password(password, _DUMMY_HASH)
        write_audit(
            session,
            actor="anonymous",
            action="auth.login_failed",
            target_type="user",
            target_id=None,
            detail={"username": username},
            client_ip=client_ip,
        )
        session.commit()
        raise InvalidCredentials("用户名或密码错误", "invalid username or password")
    if user.locked_until is not None and user.locked_until > now:
        session.rollback()
        raise AccountLocked(
            "登录失败次数过多，账户已锁定，请稍后再试",
            "too many failed logins: account locked, try again later",
        )
    if not verify_password(password, user.password_hash):
        user.failed_logins += 1
        locked = user.failed_logins >= LOCKOUT_AFTER
        if locked:
            user.locked_until = now + LOCKOUT_FOR
            user.failed_logins = 0
        write_audit(
            session,
            actor=str(user.id),
            action="auth.locked" if locked else "auth.login_failed",
            target_type="user",
            target_id=user.id,
            client_ip=client_ip,
        )
        session.commit()
        raise InvalidCredentials("用户名或密码错误", "invalid username or password")
    user.failed_logins = 0
    user.locked_until = None
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


P = ParamSpec("P")
R = TypeVar("R")


class AccountSuspended(ServiceError):
    """The token's account was suspended: every token issued before is refused at once."""

    code = "token_revoked"
    kind = "unauthorized"


def _refuse_suspended(claims: dict[str, Any]) -> None:
    """Refuse tokens of suspended or deleted accounts (checked per request, so suspension is immediate)."""
    from server.db import session_scope

    try:
        user_id = int(claims["sub"])
    except (KeyError, TypeError, ValueError):
        return  # not a user token
    with session_scope() as session:
        if get_active_user(session, user_id) is None:
            raise AccountSuspended("账户已停用，令牌已失效", "account suspended: token revoked")


def require_roles(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: a valid, unrevoked access token whose role is one of ``roles`` (system_admin always)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            from flask_jwt_extended import get_jwt, verify_jwt_in_request

            verify_jwt_in_request()
            _refuse_suspended(get_jwt())
            role = get_jwt().get("role")
            if role != "system_admin" and role not in roles:
                raise Forbidden("没有执行此操作的权限", "your role may not do this")
            return view(*args, **kwargs)

        wrapper.zfjl_roles = tuple(roles)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def token_claims(user: User) -> dict[str, Any]:
    """Extra JWT claims for a user."""
    return {"role": user.role, "username": user.username, "agency_id": user.agency_id}
