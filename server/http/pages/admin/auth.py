"""Console login and logout on the shared cookie session of ``server/http/pages/common``.

The login form carries its own pre-session CSRF token (a double-submit cookie of the area); a login
goes through ``authenticate`` (lockout, audit) and opens a session only for roles that may enter the
console; logout revokes the token, so the old cookie value is refused afterwards.
"""

from __future__ import annotations

from typing import cast

from flask import Response, g, redirect, request, url_for
from flask.typing import ResponseReturnValue

from server.domain.accounts import service as auth_service
from server.domain.accounts.roles import ENDPOINT_ROLES
from server.http.context import client_ip
from server.http.pages.admin.base import (
    AREA,
    LOGIN_CSRF_COOKIE,
    ROLE_ENTER,
    bp,
    console_view,
    error_page,
    render,
    texts,
)
from server.http.pages.common.session import issue_token, new_login_token, revoke_session
from server.infra.db import session_scope

__all__ = ["index", "login", "login_form", "logout"]


@bp.get("/")
def index() -> ResponseReturnValue:
    """The console starts at the device list."""
    return redirect(url_for("admin_console.devices"), 303)


@bp.get("/login")
def login_form() -> ResponseReturnValue:
    """The login form, with a pre-session CSRF token (double-submit cookie)."""
    token = new_login_token()
    response = render("login.html", login_csrf=token, next=request.args.get("next", ""), error=None)
    AREA.new_login_csrf(response, token)
    return response


@bp.post("/login")
def login() -> ResponseReturnValue:
    """Check the password (``authenticate``: lockout, audit) and open a console session for fleet roles."""
    from flask_jwt_extended import set_access_cookies

    t = texts()
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not AREA.login_csrf_ok():
        return error_page(400, t["csrf"])

    def again(status: int, message: str) -> Response:
        return render(
            "login.html", status, login_csrf=expected, next=request.form.get("next", ""), error=message
        )

    try:
        with session_scope() as session:
            user = auth_service.authenticate(
                session,
                request.form.get("username", ""),
                request.form.get("password", ""),
                client_ip=client_ip(),
            )
            claims, identity, role = auth_service.token_claims(user), str(user.id), user.role
    except auth_service.LoginThrottled as exc:
        response = again(429, t["locked"])
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except auth_service.InvalidCredentials:
        return again(401, t["login_failed"])
    if role != "system_admin" and role not in ENDPOINT_ROLES[ROLE_ENTER]:
        return again(403, t["forbidden"])
    target = request.form.get("next", "")
    if not (target.startswith("/admin/") and not target.startswith("//")) or target.startswith(
        "/admin/login"
    ):
        target = url_for("admin_console.devices")
    redirected = cast(Response, redirect(target, 303))  # flask's redirect builds the app's response class
    set_access_cookies(redirected, issue_token(identity, claims))
    redirected.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")
    return redirected


@bp.post("/logout")
@console_view()
def logout() -> ResponseReturnValue:
    """Revoke the session token and drop the cookie."""
    from flask_jwt_extended import get_jwt, unset_access_cookies

    revoke_session(get_jwt())
    g.pop("console_new_token", None)
    response = redirect(url_for("admin_console.login_form"), 303)
    unset_access_cookies(cast(Response, response))  # flask's redirect builds the app's response class
    return response
