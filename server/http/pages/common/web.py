"""Language choice (zh-CN first, English available) and the strict response headers of every page."""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import urlencode

from flask import request
from werkzeug.wrappers import Response

__all__ = ["BASE_CSP", "choose_lang", "lang_url", "remember_lang", "secure_headers"]

R = TypeVar("R", bound=Response)

# No inline script or style anywhere: pages load their scripts and styles from /static only.
BASE_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def choose_lang(cookie_name: str) -> str:
    """``?lang=`` (remembered in a cookie), else Accept-Language, else Simplified Chinese."""
    asked = request.args.get("lang", "").lower()
    if asked:
        return "en" if asked.startswith("en") else "zh"
    remembered = request.cookies.get(cookie_name)
    if remembered in ("zh", "en"):
        return remembered
    best = request.accept_languages.best_match(["zh-CN", "zh", "en"])
    return "en" if best == "en" else "zh"


def lang_url(lang: str) -> str:
    """The current page in ``lang`` (other query arguments kept)."""
    args = request.args.to_dict(flat=False)
    args["lang"] = [lang]
    return f"{request.path}?{urlencode(args, doseq=True)}"


def remember_lang(response: Response, cookie_name: str, path: str) -> None:
    """Keep an explicit ``?lang=`` for the next pages of the area."""
    asked = request.args.get("lang", "").lower()
    if asked:
        response.set_cookie(
            cookie_name, "en" if asked.startswith("en") else "zh", path=path, samesite="Strict"
        )


def secure_headers(response: R, *, extra_csp: str = "") -> R:
    """No caching of pages with personal data, no referrer, no sniffing, and the strict CSP."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = BASE_CSP + (f"; {extra_csp}" if extra_csp else "")
    return response
