"""Login, token refresh and logout (JWT with role claim; revocation in revoked_tokens)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from flask_jwt_extended import create_access_token, create_refresh_token, get_jwt, get_jwt_identity

from server.domain.accounts import service as auth_service
from server.domain.accounts.service import InvalidCredentials, LoginThrottled
from server.http.context import client_ip, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.db import session_scope

bp = Blueprint("auth", __name__)

_TOKENS = {
    "type": "object",
    "properties": {
        "access_token": {"type": "string"},
        "refresh_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
    },
}


def _expires_in() -> int:
    return int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())


@bp.post("/login")
@api_view(
    "auth.login",
    "登录 / log in",
    auth="public",
    request={
        "type": "object",
        "required": ["username", "password"],
        "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
    },
    response=_TOKENS,
    responses={
        401: "用户名或密码错误（不区分账户是否存在）/ invalid credentials (same for unknown accounts)",
        429: "失败次数过多，按 Retry-After 等待 / too many failed logins: wait Retry-After seconds",
    },
)
def login() -> ResponseReturnValue:
    """Exchange username and password for an access and a refresh token."""
    body = json_body(("username", "password"))
    if not isinstance(body["username"], str) or not isinstance(body["password"], str):
        raise InvalidCredentials("用户名或密码错误", "invalid username or password")
    try:
        with session_scope() as session:
            user = auth_service.authenticate(
                session, body["username"], body["password"], client_ip=client_ip()
            )
            claims = auth_service.token_claims(user)
            identity = str(user.id)
    except LoginThrottled as exc:
        raise ApiError(
            429, exc.code, exc.message, exc.message_en, headers={"Retry-After": str(exc.retry_after)}
        ) from None
    return jsonify(
        access_token=create_access_token(identity=identity, additional_claims=claims),
        refresh_token=create_refresh_token(identity=identity, additional_claims=claims),
        token_type="Bearer",
        expires_in=_expires_in(),
    )


@bp.post("/refresh")
@api_view("auth.refresh", "刷新访问令牌 / refresh the access token", auth="refresh", response=_TOKENS)
def refresh() -> ResponseReturnValue:
    """A new access token for a valid refresh token of a still-active user (role re-read); a refresh
    token issued before the account's last suspension is refused like its access tokens."""
    with session_scope() as session:
        user = auth_service.user_for_token(session, get_jwt())
        if user is None:
            raise InvalidCredentials("用户不存在或已停用", "user missing or disabled")
        claims = auth_service.token_claims(user)
        identity = str(user.id)
    return jsonify(
        access_token=create_access_token(identity=identity, additional_claims=claims),
        token_type="Bearer",
        expires_in=_expires_in(),
    )


@bp.post("/logout")
@api_view("auth.logout", "注销令牌 / revoke the presented token (access or refresh)", auth="token")
def logout() -> ResponseReturnValue:
    """Revoke the token used for this request; call once with each token to end the session."""
    jwt = get_jwt()
    expires = datetime.fromtimestamp(jwt["exp"], UTC) if "exp" in jwt else None
    with session_scope() as session:
        auth_service.revoke_token(
            session,
            jwt["jti"],
            token_type=jwt.get("type", "access"),
            user_id=str(get_jwt_identity()),
            expires_at=expires,
        )
    return jsonify(revoked=True)
