"""One error root for the server: every error class derives from ZfjlError and every kind has its mapping."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from flask.testing import FlaskClient

import server
from server.errors import HTTP_STATUS, RETRY_KINDS, ErrorKind, ZfjlError
from server.http.errors import ApiError

# Exceptions used for control flow, not failures a caller is told about.
CONTROL_FLOW = {"server.domain.evidence.scrub.ScrubStopped"}


def _server_exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(server.__path__, "server."):
        if ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        for _name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.append(obj)
    return found


def test_every_server_error_class_derives_from_the_one_root() -> None:
    """A new error class outside the root would reach the API as a 500 and ingest as a crash."""
    classes = _server_exception_classes()
    assert len(classes) > 20  # the walk found the server's errors, not nothing
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if not issubclass(cls, ZfjlError) and f"{cls.__module__}.{cls.__qualname__}" not in CONTROL_FLOW
    ]
    assert strays == []


def test_every_kind_has_an_http_status_and_only_our_faults_are_retried() -> None:
    """The HTTP edge maps every kind; the MQTT edge stays silent only on failures that are ours."""
    assert set(HTTP_STATUS) == set(ErrorKind)
    assert all(HTTP_STATUS[kind] >= 500 for kind in RETRY_KINDS)
    assert all(HTTP_STATUS[kind] < 500 for kind in set(ErrorKind) - RETRY_KINDS)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/cases/999999", 404, "not_found"),  # a domain NotFound → its kind's status
        ("/api/v1/auth/login", 400, "invalid_request"),  # an ApiError with its own status
    ],
)
def test_errors_of_each_layer_reach_the_client_as_one_json_shape(
    client: FlaskClient, auth: dict[str, str], path: str, status: int, code: str
) -> None:
    """Domain and web-edge errors give the same {"error": {code, message, message_en}} shape."""
    if path.endswith("login"):
        response = client.post(path, data="[]", content_type="application/json")
    else:
        response = client.get(path, headers=auth)
    assert response.status_code == status
    body = response.get_json()["error"]
    assert body["code"] == code
    assert body["message"] and body["message_en"]


def test_an_api_error_is_an_error_of_the_root_with_its_own_status() -> None:
    """ApiError carries a status of its own but is caught like every other server error."""
    error = ApiError(418, "teapot", "茶壶", "teapot")
    assert isinstance(error, ZfjlError)
    assert (error.status, error.code, error.message_en) == (418, "teapot", "teapot")
