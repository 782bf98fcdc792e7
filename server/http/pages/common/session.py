"""Cookie sessions of a page area: a JWT in an HttpOnly, SameSite=Strict, Secure cookie scoped to the area.

The cookie is read **only** by page views (``verify_jwt_in_request(locations=["cookies"])``); the JSON
API stays bearer-header only, so a browser's cookie never authorises an ``/api/`` call. Every area uses
the same cookie name with its own ``Path`` (``/admin``, ``/workspace``): the browser sends each area only
its own session. POST forms carry the token's ``csrf`` claim in a hidden ``csrf_token`` field
(flask-jwt-extended's double-submit check, ``JWT_CSRF_CHECK_FORM``); the login form has its own
pre-session token in a cookie of the area.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from flask import Flask, current_app, request
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.wrappers import Response

from server.domain.accounts import service as auth_service
from server.infra.db import session_scope

__all__ = [
    "SESSION_COOKIE",
    "Area",
    "CookieUser",
    "configure_cookie_sessions",
    "issue_token",
    "read_session",
    "revoke_session",
    "slid_token",
]

SESSION_COOKIE = "zfjl_console"
R = TypeVar("R", bound=Response)
# ``auth_service.token_claims(user) | {"id": user.id}``: username, role, agency_id and the user id.
CookieUser = dict[str, Any]


def configure_cookie_sessions(app: Flask) -> None:
    """Cookie settings shared by every area (only cookie-located JWTs, i.e. only page views)."""
    app.config.update(
        JWT_ACCESS_COOKIE_NAME=SESSION_COOKIE,
        JWT_COOKIE_SAMESITE="Strict",
        JWT_COOKIE_CSRF_PROTECT=True,
        JWT_CSRF_CHECK_FORM=True,
        # The CSRF value travels in the page's hidden form fields, not in a script-readable cookie.
        JWT_CSRF_IN_COOKIES=False,
    )
    app.config.setdefault("ZFJL_CONSOLE_COOKIE_SECURE", True)
    app.config["JWT_COOKIE_SECURE"] = bool(app.config["ZFJL_CONSOLE_COOKIE_SECURE"])


@dataclass(frozen=True)
class Area:
    """One set of pages under one path prefix, with its own session, login, flash and language cookies."""

    prefix: str  # "/workspace": the Path of every cookie of the area
    cookie_prefix: str  # "zfjl_workspace": names of the area's auxiliary cookies

    @property
    def login_csrf_cookie(self) -> str:
        """The pre-session CSRF cookie of the login form."""
        return f"{self.cookie_prefix}_login"

    @property
    def flash_cookie(self) -> str:
        """The one-message flash cookie."""
        return f"{self.cookie_prefix}_flash"

    @property
    def lang_cookie(self) -> str:
        """The remembered language."""
        return f"{self.cookie_prefix}_lang"

    def owns(self, target: str) -> bool:
        """Whether ``target`` is a page of this area (redirect targets only: no open redirect)."""
        return target.startswith(self.prefix + "/") and not target.startswith("//")

    # -- cookies ---------------------------------------------------------------------------------

    def _cookie(self, response: Response, name: str, value: str) -> None:
        response.set_cookie(
            name,
            value,
            path=self.prefix,
            httponly=True,
            samesite="Strict",
            secure=current_app.config["JWT_COOKIE_SECURE"],
        )

    def set_session(self, response: Response, token: str) -> None:
        """Install the session token (a browser-session cookie, like ``set_access_cookies``)."""
        self._cookie(response, SESSION_COOKIE, token)

    def clear_session(self, response: Response) -> None:
        """Drop the session cookie of this area."""
        response.delete_cookie(SESSION_COOKIE, path=self.prefix)

    def new_login_csrf(self, response: Response, token: str) -> None:
        """Set the login form's pre-session CSRF cookie."""
        self._cookie(response, self.login_csrf_cookie, token)

    def login_csrf_ok(self) -> bool:
        """The login form's hidden ``login_csrf`` equals the area's pre-session cookie."""
        sent, expected = request.form.get("login_csrf", ""), request.cookies.get(self.login_csrf_cookie, "")
        return bool(sent and expected and hmac.compare_digest(sent, expected))

    # -- flash -----------------------------------------------------------------------------------

    def _serializer(self) -> URLSafeSerializer:
        salt = f"{self.cookie_prefix.replace('_', '-')}-flash"  # "zfjl-console-flash" for the console
        return URLSafeSerializer(current_app.config["JWT_SECRET_KEY"], salt=salt)

    def flash(self, response: R, category: str, message: str) -> R:
        """Carry one message to the next page (a signed, HttpOnly cookie scoped to the area)."""
        self._cookie(response, self.flash_cookie, self._serializer().dumps([category, message]))
        return response

    def take_flash(self) -> tuple[str, str] | None:
        """The flash message sent with this request, if any and if correctly signed."""
        raw = request.cookies.get(self.flash_cookie)
        if not raw:
            return None
        try:
            category, message = self._serializer().loads(raw)
        except (BadSignature, ValueError, TypeError):
            return None
        return str(category), str(message)


def new_login_token() -> str:
    """A fresh pre-session CSRF value for a login form."""
    return secrets.token_urlsafe(24)


def read_session() -> tuple[Literal["ok", "login", "csrf"], CookieUser | None, dict[str, Any]]:
    """Verify the cookie JWT (signature, expiry, revocation, CSRF on POST) and load its active user.

    ``("login", …)``: no valid session, send the browser to the login form; ``("csrf", …)``: a POST
    without the token's CSRF value; ``("ok", user, claims)`` otherwise.
    """
    from flask_jwt_extended import get_jwt, verify_jwt_in_request
    from flask_jwt_extended.exceptions import CSRFError, JWTExtendedException
    from jwt.exceptions import PyJWTError

    try:
        verify_jwt_in_request(locations=["cookies"])
    except CSRFError:
        return "csrf", None, {}
    except (JWTExtendedException, PyJWTError):
        return "login", None, {}
    claims = get_jwt()
    with session_scope() as session:
        user = auth_service.user_for_token(session, claims)
        if user is None:
            return "login", None, claims
        return "ok", auth_service.token_claims(user) | {"id": user.id}, claims


def issue_token(identity: str, claims: dict[str, Any]) -> str:
    """A session token for a user who just logged in (flask-jwt-extended adds the ``csrf`` claim)."""
    from flask_jwt_extended import create_access_token

    return str(create_access_token(identity=identity, additional_claims=claims))


def slid_token(claims: dict[str, Any], user: CookieUser) -> str | None:
    """Past half its life, a replacement token (role re-read, same CSRF value so open forms work)."""
    from flask_jwt_extended import create_access_token

    ttl: timedelta = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    left = datetime.fromtimestamp(claims["exp"], UTC) - datetime.now(UTC)
    if left > ttl / 2:
        return None
    return str(
        create_access_token(
            identity=str(user["id"]),
            additional_claims={
                "role": user["role"],
                "username": user["username"],
                "agency_id": user["agency_id"],
                "iat_ms": time.time_ns() // 1_000_000,
                "csrf": claims.get("csrf", ""),
            },
        )
    )


def revoke_session(claims: dict[str, Any]) -> None:
    """Revoke the session token at logout: the old cookie value is refused afterwards, not just forgotten."""
    with session_scope() as session:
        auth_service.revoke_token(
            session,
            claims["jti"],
            token_type="access",
            user_id=str(claims["sub"]),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )
