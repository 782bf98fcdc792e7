"""The Flask app factory: settings, database, object store, JWT, error handlers and blueprints."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, Response
from flask_jwt_extended import JWTManager

__all__ = ["create_app"]

ACCESS_TOKEN_TTL = timedelta(minutes=15)
REFRESH_TOKEN_TTL = timedelta(hours=12)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app from defaults, ``ZFJL_*`` env and ``overrides``; no network I/O, no migrations.

    Override keys are setting names (``database_url``) or env names (``ZFJL_DATABASE_URL``); upper-case
    keys without the prefix (``TESTING``) go to Flask's config unchanged.
    """
    from server.http import parsing
    from server.http.blueprints import register_blueprints
    from server.http.errors import register_error_handlers
    from server.infra import db, fsmode
    from server.infra.config import ENV_PREFIX, load_settings
    from server.infra.storage import ARCHIVE_STORE_KEY, STORE_KEY, make_archive_store, make_object_store

    overrides = dict(overrides or {})
    flask_config = {
        k: overrides.pop(k) for k in list(overrides) if k.isupper() and not k.startswith(ENV_PREFIX)
    }
    settings = load_settings(overrides)

    app = Flask(__name__)
    app.config.update(
        JWT_SECRET_KEY=settings.jwt_secret,
        JWT_ACCESS_TOKEN_EXPIRES=ACCESS_TOKEN_TTL,
        JWT_REFRESH_TOKEN_EXPIRES=REFRESH_TOKEN_TTL,
        JWT_TOKEN_LOCATION=["headers"],
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.config.update(flask_config)
    app.extensions["zfjl.settings"] = settings
    if settings.trusted_proxy_hops:
        # Behind N reverse proxies the socket's address is the last proxy's: the login throttle, the
        # /verify rate limit and the audit rows would see one client. Only the N rightmost
        # X-Forwarded-For entries (those the proxies appended) are trusted; with 0, a client's own
        # X-Forwarded-For is ignored, so it cannot pick the address it is throttled under.
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    # The data directory holds the database, evidence and secrets: the server's account only.
    fsmode.private_dir(settings.data_dir)
    fsmode.tighten(settings.data_dir, fsmode.PRIVATE_DIR)

    db.init_app(app, settings.database_url)
    app.extensions[STORE_KEY] = make_object_store(settings)
    app.extensions[ARCHIVE_STORE_KEY] = make_archive_store(settings)
    _init_jwt(app)
    register_error_handlers(app)
    # Before the routes: the bounded <int:…> converter is bound when a rule is added.
    parsing.init_app(app)
    register_blueprints(app)
    app.after_request(_security_headers)
    return app


def _security_headers(response: Response) -> Response:
    """Every answer (API, error, page, static file): the browser must use the declared type, never
    guess one from the bytes, so an uploaded body can never be run as HTML or script."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _init_jwt(app: Flask) -> None:
    from server.domain.accounts.service import is_token_revoked
    from server.http.errors import error_response
    from server.infra.db import session_scope

    jwt = JWTManager(app)

    @jwt.token_in_blocklist_loader
    def _revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        with session_scope(app) as session:
            return is_token_revoked(session, payload["jti"])

    @jwt.unauthorized_loader
    def _missing(reason: str) -> Response:
        return error_response(
            401, "unauthorized", "需要登录（缺少令牌）", f"authentication required: {reason}"
        )

    @jwt.invalid_token_loader
    def _invalid(reason: str) -> Response:
        return error_response(401, "invalid_token", "令牌无效", f"invalid token: {reason}")

    @jwt.expired_token_loader
    def _expired(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return error_response(401, "token_expired", "令牌已过期", "token expired")

    @jwt.revoked_token_loader
    def _revoked_response(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return error_response(401, "token_revoked", "令牌已注销", "token revoked")

    @jwt.needs_fresh_token_loader
    def _fresh(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return error_response(401, "fresh_token_required", "需要重新登录", "fresh login required")

    @jwt.user_lookup_error_loader
    def _lookup(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
        return error_response(401, "invalid_token", "令牌无效", "invalid token")
