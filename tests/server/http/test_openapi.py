"""OpenAPI document completeness and the roles registry."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from server.domain.accounts.roles import ENDPOINT_ROLES


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def test_every_api_route_documented(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    routes = [r for r in app.url_map.iter_rules() if r.rule.startswith("/api/")]
    assert routes
    for rule in routes:
        path = _openapi_path(rule.rule)
        assert path in doc["paths"], path
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = doc["paths"][path][method.lower()]
            assert op["summary"] and op["operationId"] == rule.endpoint
            assert "security" in op or rule.endpoint == "auth.login"
    assert "/healthz" in doc["paths"] and "/openapi.json" in doc["paths"]
    assert doc["paths"]["/api/v1/devices"]["post"]["x-roles"] == ["device_admin", "system_admin"]


def test_roles_registry_matches_routes(app: Flask) -> None:
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    assert set(ENDPOINT_ROLES) <= endpoints
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and not rule.endpoint.startswith("auth."):
            assert rule.endpoint in ENDPOINT_ROLES, rule.endpoint
