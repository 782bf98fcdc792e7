"""Agencies as tenants, account suspension with immediate token revocation, and isolation (GS-9(1), JL-20)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.fixtures.people import World, login


def test_gs9_agency_particulars_created_and_published(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {
        "name": "宣城市生态环境局",
        "head": "钱局长",
        "duties": "生态环境执法",
        "address": "宣城市",
        "contacts": "0563-1",
    }
    response = client.post("/api/v1/agencies", json=body, headers=auth)
    assert response.status_code == 201, response.get_json()
    agency = response.get_json()
    assert {k: agency[k] for k in body} == body
    assert client.post("/api/v1/agencies", json=body, headers=auth).status_code == 409
    patched = client.patch(f"/api/v1/agencies/{agency['id']}", json={"contacts": "0563-2"}, headers=auth)
    assert patched.get_json()["contacts"] == "0563-2"


def test_suspending_an_account_refuses_its_existing_tokens(
    client: FlaskClient, auth: dict[str, str], world: World
) -> None:
    officer = login(client, "officer-a")
    assert client.get("/api/v1/me/credential", headers=officer).status_code == 200
    response = client.post(f"/api/v1/users/{world.users['officer']}/suspend", headers=auth)
    assert response.status_code == 200 and response.get_json()["active"] is False
    refused = client.get("/api/v1/me/credential", headers=officer)
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "token_revoked"
    # A suspended account cannot log in again either.
    assert (
        client.post(
            "/api/v1/auth/login", json={"username": "officer-a", "password": "people-pass-123"}
        ).status_code
        == 401
    )
    client.post(f"/api/v1/users/{world.users['officer']}/reinstate", headers=auth)
    # Tokens issued before the suspension stay dead; a new login works.
    assert client.get("/api/v1/me/credential", headers=officer).status_code == 401
    assert client.get("/api/v1/me/credential", headers=login(client, "officer-a")).status_code == 200


def test_admin_creates_accounts_in_an_agency(client: FlaskClient, auth: dict[str, str], world: World) -> None:
    body = {
        "username": "reviewer-b",
        "password": "long-enough-1",
        "role": "legal_reviewer",
        "agency_id": world.agency_b,
    }
    response = client.post("/api/v1/users", json=body, headers=auth)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["agency_id"] == world.agency_b
    assert client.post("/api/v1/users", json={**body, "role": "emperor"}, headers=auth).status_code == 400


def test_jl20_officer_sees_only_own_agency_supervisor_sees_all(client: FlaskClient, world: World) -> None:
    officer = login(client, "officer-a")
    names = {
        o["certificate_number"] for o in client.get("/api/v1/officers", headers=officer).get_json()["items"]
    }
    assert names == {"AH-0001"}
    assert client.get(f"/api/v1/officers/{world.officer_b}", headers=officer).status_code == 404
    assert [a["id"] for a in client.get("/api/v1/agencies", headers=officer).get_json()["items"]] == [
        world.agency_a
    ]
    assert client.get(f"/api/v1/agencies/{world.agency_b}", headers=officer).status_code == 404

    supervisor = login(client, "supervisor-a")
    names = {
        o["certificate_number"]
        for o in client.get("/api/v1/officers", headers=supervisor).get_json()["items"]
    }
    assert names == {"AH-0001", "AH-0002"}
    assert client.get(f"/api/v1/officers/{world.officer_b}", headers=supervisor).status_code == 200


def test_jl20_cases_are_isolated_between_agencies(client: FlaskClient, world: World) -> None:
    officer_b = login(client, "officer-b")
    case = client.post(
        "/api/v1/cases",
        json={
            "number": "芜城管罚〔2026〕1号",
            "act_kind": "penalty",
            "origin": "ex_officio",
            "officer_ids": [world.officer_b],
        },
        headers=officer_b,
    )
    assert case.status_code == 201, case.get_json()
    case_id = case.get_json()["id"]
    officer_a = login(client, "officer-a")
    assert client.get(f"/api/v1/cases/{case_id}", headers=officer_a).status_code == 404
    assert client.get(f"/api/v1/cases/{case_id}/record", headers=officer_a).status_code == 404
    event = {"event_type": "investigation.inquiry"}
    assert client.post(f"/api/v1/cases/{case_id}/events", json=event, headers=officer_a).status_code == 404
    assert client.get("/api/v1/cases", headers=officer_a).get_json()["items"] == []
    # Officers of another agency cannot be put on a case.
    bad = client.post(
        "/api/v1/cases",
        json={
            "number": "X-1",
            "act_kind": "penalty",
            "origin": "ex_officio",
            "officer_ids": [world.officer_b],
        },
        headers=officer_a,
    )
    assert bad.status_code == 400
    supervisor = login(client, "supervisor-a")
    assert client.get(f"/api/v1/cases/{case_id}/record", headers=supervisor).status_code == 200
    # Supervisors read across agencies but do not write there.
    assert client.post(f"/api/v1/cases/{case_id}/events", json=event, headers=supervisor).status_code == 403
