"""The evidence workspace ``/workspace/`` (issue 13): pages where handlers, reviewers, heads and supervisors
work with cases, sessions, recordings and devices.

Same session model and security as the admin console (``server/http/pages/common``): a cookie JWT
scoped to ``/workspace``, CSRF on every form, a strict CSP without inline scripts, roles from the one
roles table, agency scope, and every view of evidence audited like the API.
"""

from server.http.pages.workspace import (
    annual_reports,
    approvals,
    cases,
    catalogue,
    deadlines,
    devices,
    login,
    media,
    publication,
    reviews,
    sessions,
    statistics,
)
from server.http.pages.workspace.core import AREA, bp

__all__ = [
    "AREA",
    "annual_reports",
    "approvals",
    "bp",
    "cases",
    "catalogue",
    "deadlines",
    "devices",
    "login",
    "media",
    "publication",
    "reviews",
    "sessions",
    "statistics",
]
