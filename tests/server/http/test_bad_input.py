"""Ordinary bad input gets a precise 4xx, never a 500: one test per cause the OpenAPI fuzzing found.

Each test sends the request that used to answer 500 and checks the status and the stable ``code``
a client can act on, and that nothing was stored.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.domain.evidence.commit import commit_segment
from server.http.context import get_store
from server.infra.db import session_scope
from tests.conftest import SegmentFactory

INT64_MAX = 2**63 - 1
TOO_BIG = 2**63  # one past the widest integer column


def _code(response: object) -> str:
    return response.get_json()["error"]["code"]  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def recording_id(app: Flask, client: FlaskClient, auth: dict[str, str], segments: SegmentFactory) -> int:
    """One stored segment of dev-001 (1024 bytes); its recording id."""
    response = client.post(
        "/api/v1/devices",
        headers=auth,
        json={"device_id": segments.device_id, "public_key": base64.b64encode(segments.public_key).decode()},
    )
    assert response.status_code == 201, response.get_json()
    with app.app_context(), session_scope(app) as session:
        signed, path = segments.make(bytes(range(256)) * 4)
        commit_segment(session, get_store(), signed, path)
    items = client.get("/api/v1/recordings", headers=auth).get_json()["items"]
    return int(items[0]["id"])


@pytest.fixture
def agencies(client: FlaskClient, auth: dict[str, str]) -> tuple[int, int]:
    """Two agencies created through the API."""
    ids = []
    for name in ("合肥市市场监督管理局", "芜湖市城市管理局"):
        response = client.post("/api/v1/agencies", headers=auth, json={"name": name})
        assert response.status_code == 201, response.get_json()
        ids.append(response.get_json()["id"])
    return ids[0], ids[1]


# --- integers the database cannot hold --------------------------------------------------------------


@pytest.mark.parametrize("value", [2**31, TOO_BIG, 10**30])
def test_path_id_past_what_an_id_column_holds_is_not_found(
    client: FlaskClient, auth: dict[str, str], value: int
) -> None:
    response = client.get(f"/api/v1/recordings/{value}", headers=auth)
    assert response.status_code == 404
    assert _code(response) == "not_found"
    assert client.get(f"/api/v1/agencies/{value}", headers=auth).status_code == 404
    assert client.get(f"/api/v1/recordings/{INT64_MAX}", headers=auth).status_code == 404


def test_query_integer_past_64_bits_is_refused(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get(f"/api/v1/recordings?before={TOO_BIG}", headers=auth)
    assert response.status_code == 400
    assert _code(response) == "invalid_query"
    assert "before" in response.get_json()["error"]["message_en"]
    response = client.get(f"/api/v1/officers?agency_id={TOO_BIG}", headers=auth)
    assert (response.status_code, _code(response)) == (400, "invalid_query")
    # 5,000 digits are past Python's own int() limit: still a precise 400.
    response = client.get("/api/v1/sessions?before=" + "9" * 5000, headers=auth)
    assert (response.status_code, _code(response)) == (400, "invalid_query")


def test_body_integer_past_64_bits_is_refused(
    client: FlaskClient, auth: dict[str, str], agencies: tuple[int, int]
) -> None:
    response = client.post(
        "/api/v1/cases",
        headers=auth,
        json={"number": "罚〔2026〕1号", "act_kind": "penalty", "origin": "ex_officio", "agency_id": TOO_BIG},
    )
    assert response.status_code == 400
    assert _code(response) == "number_out_of_range"
    raw = '{"number": "x", "act_kind": "penalty", "origin": "ex_officio", "agency_id": ' + "9" * 5000 + "}"
    response = client.post("/api/v1/cases", headers=auth, data=raw, content_type="application/json")
    assert (response.status_code, _code(response)) == (400, "number_out_of_range")
    assert client.get("/api/v1/cases", headers=auth).get_json()["items"] == []


def test_huge_ttl_is_refused_before_any_arithmetic(
    client: FlaskClient, auth: dict[str, str], recording_id: int
) -> None:
    for ttl in (2**62, INT64_MAX, 10**12):
        response = client.post(
            "/api/v1/fleet/devices/dev-001/commands", headers=auth, json={"kind": "reboot", "ttl_s": ttl}
        )
        assert response.status_code == 400, response.get_json()
        assert _code(response) == "invalid_field"
        assert "ttl_s" in response.get_json()["error"]["message_en"]
    response = client.post(
        "/api/v1/fleet/rollouts", headers=auth, json={"bundle_id": "b", "group": "g", "ttl_s": 2**62}
    )
    assert (response.status_code, _code(response)) == (400, "invalid_field")
    assert client.get("/api/v1/fleet/devices/dev-001/commands", headers=auth).get_json()["items"] == []


# --- the JSON parser itself, unauthenticated ----------------------------------------------------------


@pytest.mark.parametrize("depth", [40, 10_000, 100_000])
def test_deeply_nested_json_on_login_is_refused_unauthenticated(client: FlaskClient, depth: int) -> None:
    body = '{"username": "admin", "password": ' + "[" * depth + "]" * depth + "}"
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    assert response.status_code == 400
    assert _code(response) == "json_too_deep"


@pytest.mark.parametrize(
    "body",
    [
        '{"username": "\\ud800", "password": "x"}',
        '{"username": "admin", "password": "\\udfff"}',
        '{"\\ud83d": 1, "username": "admin", "password": "x"}',
    ],
)
def test_lone_surrogate_on_login_is_refused_unauthenticated(client: FlaskClient, body: str) -> None:
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    assert response.status_code == 400
    assert _code(response) == "invalid_unicode"


def test_a_paired_surrogate_is_ordinary_text(client: FlaskClient) -> None:
    body = '{"username": "\\ud83d\\ude00", "password": "x"}'
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"username": "admin", "password": NaN}', "invalid_json"),
        ('{"username": "admin", "password": 1e999}', "number_out_of_range"),
        (b'{"username": "\xff", "password": "x"}', "invalid_json"),
        ('{"username": "admin", "password": ', "invalid_json"),
    ],
)
def test_malformed_json_is_a_precise_400(client: FlaskClient, body: str | bytes, code: str) -> None:
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    assert (response.status_code, _code(response)) == (400, code)


# --- wrong JSON types -----------------------------------------------------------------------------------


def test_wrong_json_type_for_a_declared_field_is_refused(
    client: FlaskClient, auth: dict[str, str], agencies: tuple[int, int]
) -> None:
    case = client.post(
        "/api/v1/cases",
        headers=auth,
        json={
            "number": "罚〔2026〕2号",
            "act_kind": "penalty",
            "origin": "ex_officio",
            "agency_id": agencies[0],
        },
    )
    assert case.status_code == 201, case.get_json()
    case_id = case.get_json()["id"]
    for field, value in (("event_type", {}), ("event_type", ["x"]), ("officer_ids", ["1"]), ("data", 3)):
        body = {"event_type": "investigation.inquiry", field: value}
        response = client.post(f"/api/v1/cases/{case_id}/events", headers=auth, json=body)
        assert response.status_code == 400, (field, value, response.get_json())
        assert _code(response) == "invalid_field"
        assert field in response.get_json()["error"]["message_en"]
    record = client.get(f"/api/v1/cases/{case_id}/record", headers=auth).get_json()
    assert not [e for e in record.get("events", []) if e.get("event_type") == "investigation.inquiry"]


# --- duplicates on PATCH ----------------------------------------------------------------------------


def test_patch_to_a_taken_unique_value_is_409(
    client: FlaskClient, auth: dict[str, str], agencies: tuple[int, int]
) -> None:
    first, second = agencies
    response = client.patch(f"/api/v1/agencies/{second}", headers=auth, json={"name": "合肥市市场监督管理局"})
    assert response.status_code == 409
    assert _code(response) in ("duplicate", "agency_name_taken")
    assert client.get(f"/api/v1/agencies/{second}", headers=auth).get_json()["name"] == "芜湖市城市管理局"
    assert client.get(f"/api/v1/agencies/{first}", headers=auth).get_json()["name"] == "合肥市市场监督管理局"


# --- Range headers ----------------------------------------------------------------------------------


def test_range_with_5000_digit_positions_never_500s(
    client: FlaskClient, auth: dict[str, str], recording_id: int
) -> None:
    url = f"/api/v1/recordings/{recording_id}/media"
    huge = "9" * 5000
    response = client.get(url, headers={**auth, "Range": f"bytes=0-{huge}"})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == "bytes 0-1023/1024"
    assert response.data == bytes(range(256)) * 4
    response = client.get(url, headers={**auth, "Range": f"bytes={huge}-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */1024"
    response = client.get(url, headers={**auth, "Range": f"bytes=-{huge}"})
    assert response.status_code == 206
    assert len(response.data) == 1024


# --- the same answers on PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def db_client(db_url: str, tmp_path: Path) -> Iterator[tuple[FlaskClient, dict[str, str]]]:
    """A client of an app on ``db_url`` (SQLite, then PostgreSQL) and an administrator's headers."""
    from server.app import create_app
    from server.domain.accounts.service import create_user
    from server.infra.db import get_engine
    from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, TEST_JWT_SECRET

    app = create_app(
        {
            "data_dir": str(tmp_path / "var"),
            "database_url": db_url,
            "jwt_secret": TEST_JWT_SECRET,
            "TESTING": True,
        }
    )
    with session_scope(app) as session:
        create_user(session, ADMIN_USER, ADMIN_PASSWORD, "system_admin")
    client = app.test_client()
    token = client.post("/api/v1/auth/login", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})
    yield client, {"Authorization": f"Bearer {token.get_json()['access_token']}"}
    get_engine(app).dispose()


def test_duplicates_and_64_bit_ids_on_every_database(db_client: tuple[FlaskClient, dict[str, str]]) -> None:
    client, auth = db_client
    ids = [
        client.post("/api/v1/agencies", headers=auth, json={"name": name}).get_json()["id"]
        for name in ("合肥市市场监督管理局", "芜湖市城市管理局")
    ]
    response = client.patch(f"/api/v1/agencies/{ids[1]}", headers=auth, json={"name": "合肥市市场监督管理局"})
    assert (response.status_code, _code(response)) == (409, "duplicate")
    assert client.get(f"/api/v1/agencies/{ids[1]}", headers=auth).get_json()["name"] == "芜湖市城市管理局"
    for value in (INT64_MAX, 2**31, TOO_BIG):
        assert client.get(f"/api/v1/agencies/{value}", headers=auth).status_code == 404
        assert client.get(f"/api/v1/recordings/{value}", headers=auth).status_code == 404
        response = client.get(f"/api/v1/officers?agency_id={value}", headers=auth)
        assert response.status_code in (200, 400), response.get_json()
