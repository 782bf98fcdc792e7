"""The HTTP side of the roles table: a view decorator that checks the caller's token against a role list.

The table itself (``ENDPOINT_ROLES``: which roles may call which endpoint) is a rule of the domain and
stays in :mod:`server.domain.accounts.service`; checking a request's JWT is HTTP, so it lives here, and
:func:`server.http.openapi.api_view` applies it to every view declared with ``auth="roles"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask_jwt_extended import get_jwt, verify_jwt_in_request

from server.domain.accounts.models import ROLES
from server.domain.accounts.service import (
    AccountSuspended,
    Forbidden,
    InvalidToken,
    user_for_token,
    user_id_of,
)
from server.infra.db import session_scope

__all__ = ["require_roles"]

P = ParamSpec("P")
R = TypeVar("R")


def _refuse_suspended(claims: dict[str, Any]) -> None:
    """Refuse tokens that name no user, a suspended account, or were issued before a suspension
    (checked per request, so suspension is immediate and outlives a reinstatement)."""
    if user_id_of(claims) is None:
        raise InvalidToken("令牌无效", "invalid token: subject is not a user")
    with session_scope() as session:
        if user_for_token(session, claims) is None:
            raise AccountSuspended("账户已停用，令牌已失效", "account suspended: token revoked")


def require_roles(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: a valid, unrevoked access token whose role is one of ``roles`` (system_admin always)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            verify_jwt_in_request()
            _refuse_suspended(get_jwt())
            role = get_jwt().get("role")
            if role != "system_admin" and role not in roles:
                raise Forbidden("没有执行此操作的权限", "your role may not do this")
            return view(*args, **kwargs)

        wrapper.zfjl_roles = tuple(roles)  # type: ignore[attr-defined]
        return wrapper

    return decorate
