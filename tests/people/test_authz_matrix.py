"""Every role-protected /api/ endpoint, called as every role: exactly ENDPOINT_ROLES (+ system_admin) pass.

Generic over ``app.url_map``, so endpoints other capabilities add are covered the day they land.
"""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from server.models import ROLES
from server.services.auth import ENDPOINT_ROLES
from tests.people.conftest import World, login

_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def _concrete(rule: str) -> str:
    """The rule with every path parameter filled by a value that names nothing."""

    def fill(match: re.Match[str]) -> str:
        return "999999" if match.group(1) in ("int", "float") else "no-such-thing"

    return _PARAM.sub(fill, rule)


def _calls(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) of every /api/ route that is role-protected."""
    calls = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        doc = getattr(app.view_functions[rule.endpoint], "zfjl_doc", None)
        assert doc is not None, f"{rule.endpoint} is not declared with api_view"
        if doc.auth != "roles":
            assert rule.endpoint.startswith("auth."), f"{rule.endpoint} under /api/ is not role-protected"
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            calls.append((rule.endpoint, method, _concrete(rule.rule)))
    return calls


def test_every_api_endpoint_allows_exactly_its_roles(app: Flask, client: FlaskClient, world: World) -> None:
    headers = {role: login(client, f"{role}-a") for role in ROLES}
    calls = _calls(app)
    assert len(calls) >= 30
    wrong = []
    for endpoint, method, path in calls:
        allowed = set(ENDPOINT_ROLES[endpoint]) | {"system_admin"}
        for role in ROLES:
            response = client.open(path, method=method, headers=headers[role], json={})
            refused = response.status_code == 403
            if refused == (role in allowed):
                wrong.append(f"{method} {path} as {role}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_every_api_endpoint_needs_a_token(app: Flask, client: FlaskClient) -> None:
    for _endpoint, method, path in _calls(app):
        response = client.open(path, method=method, json={})
        assert response.status_code == 401, (method, path, response.status_code)
