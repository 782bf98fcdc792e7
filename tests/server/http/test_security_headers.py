"""X-Content-Type-Options: nosniff on every response: API, errors, pages, static files."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient


@pytest.mark.parametrize(
    ("method", "path", "authenticated"),
    [
        ("GET", "/api/v1/devices", True),  # JSON answer
        ("GET", "/api/v1/devices", False),  # 401 from the token check
        ("GET", "/api/v1/no-such-thing", False),  # 404 from the router
        ("DELETE", "/api/v1/auth/login", False),  # 405
        ("POST", "/api/v1/auth/login", False),  # 400 JSON error
        ("GET", "/openapi.json", False),
        ("GET", "/verify", False),  # HTML page
        ("GET", "/admin/login", False),  # console page
        ("GET", "/static/admin/console.css", False),  # static file
        ("GET", "/.well-known/zfjl-credential-key.json", False),
    ],
)
def test_every_response_says_nosniff(
    client: FlaskClient, auth: dict[str, str], method: str, path: str, authenticated: bool
) -> None:
    """Without it a browser may sniff an uploaded or echoed body into HTML or script."""
    response = client.open(path, method=method, headers=auth if authenticated else {})
    assert response.headers.get("X-Content-Type-Options") == "nosniff", (path, response.status_code)


def test_a_crash_answer_says_nosniff_too(app: Flask) -> None:
    def crash() -> str:
        raise RuntimeError("boom")

    app.add_url_rule("/crash-for-test", "crash_for_test", crash)
    response = app.test_client().get("/crash-for-test")
    assert response.status_code == 500
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
