"""Logging in and out of the workspace (the same password check, throttle and audit as the API login)."""

from __future__ import annotations

from flask import g, redirect, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from server.domain.accounts import service as auth_service
from server.http.context import client_ip
from server.http.pages.common.session import issue_token, new_login_token, read_session, revoke_session
from server.http.pages.workspace.core import AREA, bp, error_page, home_for, may_enter, render, t
from server.infra.db import session_scope

__all__ = ["index", "login", "login_form", "logout"]


@bp.get("/")
def index() -> ResponseReturnValue:
    """The workspace starts at the first page the user may open (the login form without a session)."""
    outcome, user, _claims = read_session()
    if outcome != "ok" or user is None:
        return redirect(url_for("workspace.login_form"), 303)
    return redirect(home_for(user["role"]), 303)


@bp.get("/login")
def login_form() -> ResponseReturnValue:
    """The login form, with a pre-session CSRF token (double-submit cookie)."""
    token = new_login_token()
    response = render("login.html", login_csrf=token, next=request.args.get("next", ""), error=None)
    AREA.new_login_csrf(response, token)
    return response


@bp.post("/login")
def login() -> ResponseReturnValue:
    """Check the password (``authenticate``: throttle, audit) and open a workspace session."""
    texts = t()
    if not AREA.login_csrf_ok():
        return error_page(400, texts["csrf"])
    expected = request.cookies.get(AREA.login_csrf_cookie, "")

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
        response = again(429, texts["locked"])
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except auth_service.InvalidCredentials:
        return again(401, texts["login_failed"])
    if not may_enter(role):
        return again(403, texts["forbidden"])
    target = request.form.get("next", "")
    if not AREA.owns(target) or target.startswith(AREA.prefix + "/login"):
        target = home_for(role)
    response = redirect(target, 303)
    AREA.set_session(response, issue_token(identity, claims))
    response.delete_cookie(AREA.login_csrf_cookie, path=AREA.prefix)
    return response


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Revoke the session token (CSRF-checked) and drop the cookie."""
    outcome, user, claims = read_session()
    if outcome == "csrf":
        return error_page(400, t()["csrf"])
    if outcome == "ok" and user is not None:
        revoke_session(claims)
    g.pop("ws_new_token", None)
    response = redirect(url_for("workspace.login_form"), 303)
    AREA.clear_session(response)
    return response
