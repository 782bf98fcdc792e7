"""What the server-rendered page areas share: cookie sessions scoped to a path, CSRF, flash, i18n, CSP.

An *area* is one set of pages under one path prefix (the admin console at ``/admin``, the evidence
workspace at ``/workspace``). Each area gets its own session cookie, scoped to its prefix, so a browser
never sends one area's session to another area nor to the bearer-only JSON API.
"""

from server.http.pages.common.session import Area, CookieUser, configure_cookie_sessions
from server.http.pages.common.web import choose_lang, lang_url, secure_headers

__all__ = ["Area", "CookieUser", "choose_lang", "configure_cookie_sessions", "lang_url", "secure_headers"]
