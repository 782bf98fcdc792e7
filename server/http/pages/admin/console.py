"""Device admin console ``/admin/`` (issue #5): server-rendered pages over the fleet domain.

This module assembles the console: the blueprint ``admin_console`` is defined once in ``base`` (with the
cookie session, rendering and audit every page shares) and each page module adds its views to it —
``auth`` (login, logout), ``devices`` (the list, bulk actions, alerts), ``device`` (one device, its
forms, revocation, credentials), ``provisioning`` (requests, allow-list), ``groups`` and ``rollouts``.
Texts are ``i18n``, the health charts ``charts``; every query is a domain function
(``server/domain/fleet/queries.py`` and the fleet services), so no page module runs SQL of its own.
"""

from __future__ import annotations

# Importing the page modules registers their views on the blueprint.
from server.http.pages.admin import auth, device, devices, groups, provisioning, rollouts
from server.http.pages.admin.base import bp
from server.http.pages.admin.charts import svg_chart
from server.http.pages.admin.devices import PAGE_SIZE
from server.http.pages.admin.forms import BULK_COMMANDS
from server.http.pages.admin.i18n import TEXT

__all__ = ["BULK_COMMANDS", "PAGES", "PAGE_SIZE", "TEXT", "bp", "svg_chart"]

# The page modules, in the order of the console's navigation.
PAGES = (auth, devices, device, provisioning, groups, rollouts)
