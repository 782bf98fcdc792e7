"""The workspace blueprint, its session (a cookie scoped to ``/workspace``), rendering and audit helpers.

Who may open a page is the roles table (``ENDPOINT_ROLES``) of the JSON API endpoint that serves the
same data: each page names that endpoint, so a role sees in the workspace exactly what it may read
through the API. Views of evidence are audited with the API's action names and ``via: workspace``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
)
from flask import url_for as flask_url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from server.domain.accounts.roles import ENDPOINT_ROLES
from server.domain.errors import ServiceError
from server.http.context import audit_request
from server.http.pages.common.session import Area, configure_cookie_sessions, read_session, slid_token
from server.http.pages.common.web import choose_lang, lang_url, remember_lang, secure_headers
from server.http.pages.workspace.texts import TEXT, VERDICT_WORDS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["AREA", "ENTRY_ENDPOINTS", "bp", "may", "render", "workspace_view"]

bp = Blueprint("workspace", __name__, url_prefix="/workspace")
AREA = Area(prefix="/workspace", cookie_prefix="zfjl_workspace")
# The pages of the navigation, each with the API endpoint whose roles it takes; a role that may call
# none of them has nothing to do in the workspace and is refused at login.
ENTRY_ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("workspace.cases", "cases.list_cases", "cases"),
    ("workspace.sessions", "sessions.list_sessions", "sessions"),
    ("workspace.devices", "devices.chain", "devices"),
    ("workspace.statistics_page", "statistics.get_statistics", "statistics"),
)
# The review screens of publicity (the publication review: redactions to accept or undo) and governance
# (the access and disposal approval queue) are pages of this workspace, registered on this blueprint
# under these endpoint names by the work that builds their logic. The navigation links each one as soon
# as its endpoint exists and never shows a link to a page that does not.
REVIEW_ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("workspace.publication_review", "publication_review"),
    ("workspace.publication_deadlines", "publication_deadlines"),
    ("workspace.approvals", "approvals"),
    ("workspace.annual_reports", "annual_reports"),
    ("workspace.catalogue_page", "catalogue"),
)
# Media may come from this origin only; explanation clips and segments are served by /workspace itself.
_MEDIA_CSP = "media-src 'self'"


@bp.record_once
def _configure(state: Any) -> None:
    app: Flask = state.app
    configure_cookie_sessions(app)


def lang() -> str:
    """The page language of this request."""
    return choose_lang(AREA.lang_cookie)


def t() -> dict[str, str]:
    """The texts in the page language."""
    return TEXT[lang()]


def may(endpoint: str, role: str | None = None) -> bool:
    """Whether the session's role may do what the API endpoint of that name does (the one roles table)."""
    role = role if role is not None else g.ws_user["role"]
    return bool(role == "system_admin" or role in ENDPOINT_ROLES[endpoint])


def may_enter(role: str) -> bool:
    """Whether ``role`` may open any page of the workspace."""
    return any(may(api, role) for _page, api, _key in ENTRY_ENDPOINTS)


def home_for(role: str) -> str:
    """The first page of the navigation the role may open."""
    for page, api, _key in ENTRY_ENDPOINTS:
        if may(api, role):
            return flask_url_for(page)
    return flask_url_for("workspace.login_form")


class Format:
    """Display helpers for the templates."""

    def when(self, value: datetime | str | None) -> str:
        """Date and time to the second, in the server's zone (what the officer's device showed)."""
        if value is None or value == "":
            return "—"
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")

    def day(self, value: datetime | str | None) -> str:
        """The date only."""
        return self.when(value)[:10]

    def hours(self, seconds: float | None) -> str:
        """An age in hours."""
        return "—" if seconds is None else f"{seconds / 3600:.1f} h"

    def seconds(self, value: float) -> str:
        """A duration in seconds, one decimal."""
        return f"{value:.1f} s"


def _nav() -> list[tuple[str, str]]:
    """(url, text key) of the pages the user may open, and of review screens that exist."""
    links = [(flask_url_for(page), key) for page, api, key in ENTRY_ENDPOINTS if may(api)]
    views = current_app.view_functions
    links += [(flask_url_for(endpoint), key) for endpoint, key in REVIEW_ENDPOINTS if endpoint in views]
    return links


def render(template: str, status: int = 200, **context: Any) -> Response:
    """A workspace page with the shared context (texts, user, CSRF value, flash) and strict headers."""
    language = lang()
    flash = AREA.take_flash()
    user = getattr(g, "ws_user", None)
    html = render_template(
        f"workspace/{template}",
        t=TEXT[language],
        verdict_words=VERDICT_WORDS[language],
        lang=language,
        user=user,
        nav=_nav() if user else [],
        csrf=getattr(g, "ws_csrf", ""),
        flash=flash,
        lang_url=lang_url("zh" if language == "en" else "en"),
        fmt=Format(),
        may=may if user else (lambda _endpoint: False),
        **context,
    )
    response = secure_headers(make_response(html, status), extra_csp=_MEDIA_CSP)
    if flash is not None:
        response.delete_cookie(AREA.flash_cookie, path=AREA.prefix)
    return response


def error_page(status: int, message: str) -> Response:
    """An error as a page of the workspace."""
    return render("error.html", status, message=message)


def message_of(exc: ServiceError) -> str:
    """A service refusal in the page language, with its code (the same code the API answers)."""
    code = getattr(exc, "code", "") or exc.kind
    text = exc.message_en if lang() == "en" else exc.message
    return f"{text} ({code})"


def to_login() -> Response:
    """Send the browser to the login form, keeping the page it asked for."""
    target = request.full_path if request.method == "GET" else ""
    response = redirect(flask_url_for("workspace.login_form", next=target or None), 303)
    AREA.clear_session(response)
    return response


def workspace_view(endpoint: str) -> Callable[[Callable[..., ResponseReturnValue]], Callable[..., Any]]:
    """Decorator: a valid workspace cookie (CSRF-checked on POST) of an active user whose role may call the
    API endpoint ``endpoint``; the token slides forward while the user works."""
    if endpoint not in ENDPOINT_ROLES:
        raise ValueError(f"unknown API endpoint {endpoint}")

    def decorate(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            outcome, user, claims = read_session()
            if outcome == "csrf":
                return error_page(400, t()["csrf"])
            if outcome == "login" or user is None:
                return to_login()
            g.ws_user, g.ws_csrf = user, claims.get("csrf", "")
            if not may_enter(user["role"]):
                return error_page(403, t()["forbidden"])
            if not may(endpoint):
                return error_page(403, t()["forbidden_action"])
            token = slid_token(claims, user)
            if token is not None:
                g.ws_new_token = token
            return view(*args, **kwargs)

        wrapper.zfjl_api_endpoint = endpoint  # type: ignore[attr-defined]
        return wrapper

    return decorate


@bp.after_request
def _after(response: Response) -> Response:
    """Install a slid session token and remember an explicit ``?lang=``."""
    token = g.pop("ws_new_token", None)
    if token is not None:
        AREA.set_session(response, token)
    remember_lang(response, AREA.lang_cookie, AREA.prefix)
    return response


@bp.errorhandler(ServiceError)
def _service_error(exc: ServiceError) -> Response:
    """A service refusal as a page; another agency's object reads exactly like a missing one (JL-20)."""
    if exc.kind == "not_found":
        return error_page(404, t()["not_found"])
    status = {"conflict": 409, "forbidden": 403}.get(exc.kind, 400)
    return error_page(status, message_of(exc))


def audit_view(
    session: Session, action: str, target_type: str, target_id: str | int | None, **detail: Any
) -> None:
    """Audit a page view of evidence like the API view of the same data, marked as a workspace view."""
    audit_request(session, action, target_type, target_id, detail={"via": "workspace", **detail})


def back(fallback: str, category: str, message: str) -> Response:
    """303 to the form's ``next`` (workspace pages only, so no open redirect) with a flash message."""
    target = request.form.get("next", "")
    if not AREA.owns(target):
        target = fallback
    return AREA.flash(redirect(target, 303), category, message)
