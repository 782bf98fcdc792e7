"""Case status lifecycle: the transition table, status changes as case events, forced closing (JL-2, JL-9)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from server.domain.cases import service as case_service
from tests.fixtures.people import World, login


def _case(client: FlaskClient, headers: dict[str, str], world: World, **extra: Any) -> int:
    body = {"number": "合市监罚〔2026〕9号", "act_kind": "penalty", "origin": "ex_officio", **extra}
    response = client.post("/api/v1/cases", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def _status(client: FlaskClient, headers: dict[str, str], case_id: int, status: str, **extra: Any) -> Any:
    body = {"status": status, "reason": f"转为 {status}", **extra}
    return client.post(f"/api/v1/cases/{case_id}/status", json=body, headers=headers)


def test_transition_table_is_closed_and_consistent() -> None:
    assert set(case_service.STATUS_TRANSITIONS) == set(case_service.CASE_STATUSES)
    for targets in case_service.STATUS_TRANSITIONS.values():
        assert set(targets) <= set(case_service.CASE_STATUSES)
    for final in ("closed", "withdrawn", "revoked"):
        assert case_service.STATUS_TRANSITIONS[final] == ()


def test_jl2_lifecycle_each_change_is_a_case_event_and_incomplete_close_needs_the_head(
    client: FlaskClient, world: World
) -> None:
    officer = login(client, "officer-a")
    reviewer = login(client, "legal_reviewer-a")
    head = login(client, "agency_head-a")
    case_id = _case(client, officer, world)
    assert _status(client, officer, case_id, "under_review").status_code == 403
    for status in ("under_review", "decided", "executed"):
        response = _status(client, reviewer, case_id, status)
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["case"]["status"] == status
    # The record lacks items: closing is refused and the answer lists them.
    refused = _status(client, reviewer, case_id, "closed")
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert error["code"] == "record_incomplete"
    assert {m["requirement"] for m in error["missing"]} >= {"decision.decided"}
    # Only a head may force it.
    assert _status(client, reviewer, case_id, "closed", force=True).status_code == 403
    assert _status(client, head, case_id, "closed", force=True, reason="").status_code == 400
    forced = _status(client, head, case_id, "closed", force=True, reason="当事人死亡，案件终结")
    assert forced.status_code == 201, forced.get_json()
    event = forced.get_json()["event"]
    assert event["event_type"] == "case.status_changed"
    assert event["text"] == "当事人死亡，案件终结"
    assert event["data"]["from"] == "executed" and event["data"]["to"] == "closed"
    assert event["data"]["force"] is True and "decision.decided" in event["data"]["missing"]
    # The record shows every change, with who and when.
    record = client.get(f"/api/v1/cases/{case_id}/record", headers=officer).get_json()
    changes = [e for s in record["stages"] if s["stage"] == "case" for e in s["events"]]
    assert [(e["data"]["from"], e["data"]["to"]) for e in changes] == [
        ("open", "under_review"),
        ("under_review", "decided"),
        ("decided", "executed"),
        ("executed", "closed"),
    ]
    assert all(e["recorded_by"] and e["recorded_at"] for e in changes)
    assert record["case"]["status"] == "closed"
    # closed is final.
    again = _status(client, head, case_id, "open")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"


def test_illegal_transitions_and_bad_requests_are_refused(client: FlaskClient, world: World) -> None:
    officer = login(client, "officer-a")
    head = login(client, "agency_head-a")
    case_id = _case(client, officer, world)
    for status in ("decided", "executed", "revoked", "open"):
        assert _status(client, head, case_id, status).status_code == 409, status
    assert _status(client, head, case_id, "archived").status_code == 400
    assert _status(client, head, case_id, "under_review", force=True).status_code == 400
    assert _status(client, head, case_id, "under_review", force="yes").status_code == 400
    no_reason = client.post(f"/api/v1/cases/{case_id}/status", json={"status": "withdrawn"}, headers=head)
    assert no_reason.status_code == 400
    # Nobody writes a status event through the ordinary event endpoint.
    forged = client.post(
        f"/api/v1/cases/{case_id}/events",
        json={"event_type": "case.status_changed", "data": {"to": "closed"}},
        headers=officer,
    )
    assert forged.status_code == 400
    assert _status(client, head, case_id, "withdrawn").status_code == 201
    assert _status(client, head, case_id, "under_review").status_code == 409
    case = client.get(f"/api/v1/cases/{case_id}", headers=officer).get_json()
    assert case["status"] == "withdrawn"


def test_a_complete_inspection_closes_without_force(client: FlaskClient, world: World) -> None:
    officer = login(client, "officer-a")
    reviewer = login(client, "legal_reviewer-a")
    case_id = _case(client, officer, world, act_kind="inspection", officer_ids=[world.officer_a])
    for event_type in (
        "initiation.ex_officio_source",
        "investigation.credential_shown",
        "investigation.on_site_inspection",
    ):
        response = client.post(
            f"/api/v1/cases/{case_id}/events",
            json={"event_type": event_type, "officer_ids": [world.officer_a]},
            headers=officer,
        )
        assert response.status_code == 201, response.get_json()
    closed = _status(client, reviewer, case_id, "closed")
    assert closed.status_code == 201, closed.get_json()
    assert closed.get_json()["event"]["data"] == {"from": "open", "to": "closed", "force": False}


def test_another_agencys_case_is_not_found(client: FlaskClient, world: World) -> None:
    other = login(client, "officer-b")
    case_id = _case(client, other, world)
    for role in ("agency_head", "legal_reviewer"):
        response = _status(client, login(client, f"{role}-a"), case_id, "under_review")
        assert response.status_code == 404, role
    assert client.get(f"/api/v1/cases/{case_id}", headers=other).get_json()["status"] == "open"


def test_officers_keep_unfinished_cases_on_their_credential_page(client: FlaskClient, world: World) -> None:
    officer = login(client, "officer-a")
    head = login(client, "agency_head-a")
    case_id = _case(client, officer, world, officer_ids=[world.officer_a])
    assert _status(client, head, case_id, "under_review").status_code == 201
    mine = client.get("/api/v1/me/cases", headers=officer).get_json()["items"]
    assert [(c["id"], c["status"]) for c in mine] == [(case_id, "under_review")]
    assert _status(client, head, case_id, "withdrawn").status_code == 201
    assert client.get("/api/v1/me/cases", headers=officer).get_json()["items"] == []
