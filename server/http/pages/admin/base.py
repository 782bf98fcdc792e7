"""The console's blueprint and what every console page shares: the session check, rendering, flash, audit.

The session is a JWT in an HttpOnly, SameSite=Strict, Secure cookie scoped to ``/admin``, read **only**
by page views (``server/http/pages/common``, shared with the evidence workspace, which has its own
cookie scoped to ``/workspace``): the JSON API stays bearer-header only, so a
browser's cookie never authorises an ``/api/`` call. POST forms carry the token's ``csrf`` claim in a
hidden field (flask-jwt-extended's double-submit check, ``JWT_CSRF_CHECK_FORM``); the login form has its
own pre-session token. Who may see or do what is ``ENDPOINT_ROLES`` of the matching fleet API endpoint.

The blueprint is defined here once; the page modules (``auth``, ``devices``, ``device``, ``provisioning``,
``groups``, ``rollouts``) add their views to it and ``console`` imports them all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from server.domain.accounts.roles import ENDPOINT_ROLES
from server.domain.audit import write_audit
from server.domain.errors import ServiceError
from server.domain.fleet import alerts as alert_service
from server.http.context import client_ip
from server.http.pages.admin.i18n import TEXT
from server.http.pages.common.session import Area, configure_cookie_sessions, read_session, slid_token
from server.http.pages.common.web import choose_lang, lang_url, remember_lang, secure_headers
from server.infra.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "AREA",
    "LOGIN_CSRF_COOKIE",
    "ROLE_ENTER",
    "SESSION_COOKIE",
    "actor",
    "audit",
    "bp",
    "console_view",
    "current_lang",
    "error_page",
    "flash",
    "last_seen",
    "may",
    "message_of",
    "redirect_back",
    "render",
    "settings",
    "texts",
]

bp = Blueprint("admin_console", __name__, url_prefix="/admin")

SESSION_COOKIE = "zfjl_console"
LOGIN_CSRF_COOKIE = "zfjl_console_login"
FLASH_COOKIE = "zfjl_console_flash"
LANG_COOKIE = "zfjl_console_lang"
# The console's cookies (session, login CSRF, flash, language), all with Path=/admin.
AREA = Area(prefix="/admin", cookie_prefix="zfjl_console")
# Entering the console at all takes the role that may list the fleet.
ROLE_ENTER = "fleet.list_devices"


@bp.record_once
def _configure(state: Any) -> None:
    """Cookie settings of the console session (only cookie-located JWTs, i.e. only this blueprint)."""
    app: Flask = state.app
    configure_cookie_sessions(app)
    # set_access_cookies / unset_access_cookies of the console write the cookie with this path.
    app.config["JWT_ACCESS_COOKIE_PATH"] = AREA.prefix


# -- request helpers -------------------------------------------------------------------------------


def settings() -> Settings:
    """The app's frozen settings."""
    found: Settings = current_app.extensions["zfjl.settings"]
    return found


def current_lang() -> str:
    """``?lang=`` (remembered in a cookie), else Accept-Language, else Simplified Chinese."""
    return choose_lang(LANG_COOKIE)


def texts() -> dict[str, str]:
    """The console's texts in the request's language."""
    return TEXT[current_lang()]


def may(endpoint: str) -> bool:
    """Whether the session's role may do what the fleet API endpoint of that name does."""
    role = g.console_user["role"]
    return bool(role == "system_admin" or role in ENDPOINT_ROLES[endpoint])


def flash(response: BaseResponse, category: str, message: str) -> BaseResponse:
    """Carry one message to the next page (a signed, HttpOnly cookie scoped to the console)."""
    return AREA.flash(response, category, message)


def render(template: str, status: int = 200, **context: Any) -> Response:
    """A console page with the shared context (texts, user, CSRF value, flash) and strict headers."""
    lang = current_lang()
    shown = AREA.take_flash()
    html = render_template(
        f"admin/{template}",
        t=TEXT[lang],
        lang=lang,
        user=getattr(g, "console_user", None),
        csrf=getattr(g, "console_csrf", ""),
        flash=shown,
        lang_url=lang_url("zh" if lang == "en" else "en"),
        fmt=_Format(),
        **context,
    )
    response = secure_headers(make_response(html, status))
    if shown is not None:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


def redirect_back(fallback: str, category: str, message: str) -> BaseResponse:
    """303 to the form's ``next`` (console pages only, so no open redirect) with a flash message."""
    target = request.form.get("next", "")
    if not (target.startswith("/admin/") and not target.startswith("//")):
        target = fallback
    return flash(redirect(target, 303), category, message)


def error_page(status: int, message: str) -> Response:
    """The console's error page with ``status``."""
    return render("error.html", status, message=message)


def message_of(exc: ServiceError) -> str:
    """A service refusal's message in the request's language."""
    return exc.message_en if current_lang() == "en" else exc.message


def last_seen(row: dict[str, Any]) -> str | None:
    """The later of a device overview's presence and health times (ISO 8601), if either."""
    seen = [v for v in (row["presence_at"], row["health_at"]) if v]
    return max(seen, key=datetime.fromisoformat) if seen else None


class _Format:
    """Display helpers for the templates."""

    def when(self, value: datetime | str | None) -> str:
        """Local date and time, to the minute."""
        if value is None:
            return "—"
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.astimezone().strftime("%Y-%m-%d %H:%M")

    def size(self, value: int | None) -> str:
        """Bytes as GiB or MiB."""
        if value is None:
            return "—"
        if value >= 1024**3:
            return f"{value / 1024**3:.1f} GiB"
        return f"{value // 1024**2} MiB"

    def hours(self, seconds: float | None) -> str:
        """An age in hours."""
        return "—" if seconds is None else f"{seconds / 3600:.1f} h"

    def overdue(self, seconds: float | None) -> bool:
        """Whether a backlog age is at the JL-17 warning threshold (20 h of the 24 h limit)."""
        return seconds is not None and seconds >= alert_service.BACKLOG_ALERT_S


# -- the session -----------------------------------------------------------------------------------


def console_view(endpoint: str = ROLE_ENTER) -> Callable[[Callable[..., ResponseReturnValue]], Any]:
    """Decorator: a valid console cookie (CSRF-checked on POST) of an active user whose role may call
    the fleet API endpoint ``endpoint``; the token slides forward while the admin works."""

    def decorate(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            outcome, user, claims = read_session()
            if outcome == "csrf":
                return error_page(400, texts()["csrf"])
            if outcome == "login" or user is None:
                return _to_login()
            g.console_user = user
            g.console_csrf = claims.get("csrf", "")
            if not may(ROLE_ENTER):
                return error_page(403, texts()["forbidden"])
            if not may(endpoint):
                return error_page(403, texts()["forbidden_action"])
            _slide(claims)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _to_login() -> BaseResponse:
    target = request.full_path if request.method == "GET" else ""
    response = redirect(url_for("admin_console.login_form", next=target or None), 303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


def _slide(claims: dict[str, Any]) -> None:
    """Past half its life, replace the session token (role re-read, same CSRF value so open forms work)."""
    token = slid_token(claims, g.console_user)
    if token is not None:
        g.console_new_token = token  # installed by _after


@bp.after_request
def _after(response: Response) -> Response:
    """Install a slid session token and remember an explicit ``?lang=``."""
    from flask_jwt_extended import set_access_cookies

    token = g.pop("console_new_token", None)
    if token is not None:
        set_access_cookies(response, token)
    remember_lang(response, LANG_COOKIE, AREA.prefix)
    return response


@bp.errorhandler(ServiceError)
def _service_error(exc: ServiceError) -> Response:
    """A service refusal on a page (an unknown device, say) as an HTML page, not JSON."""
    status = {"not_found": 404, "conflict": 409, "forbidden": 403}.get(exc.kind, 400)
    return error_page(status, message_of(exc))


def audit(session: Session, action: str, target_id: str | None, detail: dict[str, Any]) -> None:
    """Record a page view of device data, like the API's list/view audit."""
    write_audit(
        session,
        actor=actor(),
        action=action,
        target_type="device",
        target_id=target_id,
        detail={"via": "console"} | detail,
        client_ip=client_ip(),
    )


def actor() -> str:
    """The signed-in user's id, as the services record who acted."""
    return str(g.console_user["id"])
