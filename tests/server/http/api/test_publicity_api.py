"""The staff publicity API over HTTP (GS-7, GS-11, GS-12, GS-15, GS-18): roles, deadlines, errors."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.fixtures.publicity import (
    COMPANY_USCC,
    CONTENT,
    MINOR_ID,
    WITNESS_ID,
    Staff,
    collect,
    published,
    staff,
)

__all__ = ["staff"]  # the fixture, imported so pytest finds it here


def test_gs11_item_collected_over_the_api_is_due_in_7_working_days(client: FlaskClient, staff: Staff) -> None:
    item = collect(client, staff)
    assert item["state"] == "draft"
    assert item["due_on"] == "2026-10-15"
    assert item["deadline_provisional"] is False
    late = collect(client, staff, decided_on="2026-12-25")
    assert late["deadline_provisional"] is True and late["due_on"] == "2027-01-05"


def test_gs11_decision_event_in_a_case_opens_its_publication_item(client: FlaskClient, staff: Staff) -> None:
    officer = staff.headers["officer"]
    case = client.post(
        "/api/v1/cases",
        json={
            "number": "合市监立〔2026〕7号",
            "act_kind": "penalty",
            "origin": "ex_officio",
            "party": "合肥某某餐饮有限公司",
        },
        headers=officer,
    )
    assert case.status_code == 201, case.get_json()
    event = client.post(
        f"/api/v1/cases/{case.get_json()['id']}/events",
        json={
            "event_type": "decision.decided",
            "occurred_at": "2026-02-13T16:00:00+08:00",
            "data": {"publication": CONTENT},
        },
        headers=officer,
    )
    assert event.status_code == 201, event.get_json()
    items = client.get("/api/v1/publicity/items", headers=officer).get_json()["items"]
    [item] = [i for i in items if i["source_event_id"] == event.get_json()["id"]]
    assert item["due_on"] == "2026-03-02"  # across the 2026 Spring Festival and its two make-up Saturdays
    assert item["content"]["document_number"] == "合市监罚〔2026〕12号"


def test_gs7_gs18_only_another_reviewer_publishes(client: FlaskClient, staff: Staff) -> None:
    item = collect(client, staff)
    path = f"/api/v1/publicity/items/{item['id']}"
    assert client.post(f"{path}/submit", headers=staff.headers["officer"]).status_code == 200
    # An officer may not review; a supervisor watches but does not publish; the auxiliary has no access.
    assert client.post(f"{path}/publish", headers=staff.headers["officer"]).status_code == 403
    assert client.post(f"{path}/publish", headers=staff.headers["supervisor"]).status_code == 403
    assert client.get(path, headers=staff.headers["auxiliary"]).status_code == 403
    response = client.post(f"{path}/publish", headers=staff.headers["legal_reviewer"])
    assert response.status_code == 200, response.get_json()
    published = response.get_json()
    assert published["state"] == "published"
    assert [h["action"] for h in published["history"]] == ["collect", "submit", "publish"]
    assert WITNESS_ID not in str(published["published"])
    assert client.get("/api/v1/publicity/items", headers=staff.headers["supervisor"]).status_code == 200


def test_gs7_the_author_cannot_publish_even_as_a_reviewer(client: FlaskClient, staff: Staff) -> None:
    body = {"act_kind": "penalty", "decided_on": "2026-09-30", "content": CONTENT}
    head = staff.headers["agency_head"]
    item = client.post("/api/v1/publicity/items", json=body, headers=head).get_json()
    path = f"/api/v1/publicity/items/{item['id']}"
    assert client.post(f"{path}/submit", headers=head).status_code == 200
    refused = client.post(f"{path}/publish", headers=head)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "transition_forbidden"
    assert client.post(f"{path}/publish", headers=staff.headers["legal_reviewer"]).status_code == 200


def test_gs12_withdrawal_needs_a_reason_and_records_its_deadline(client: FlaskClient, staff: Staff) -> None:
    item = published(client, staff)
    path = f"/api/v1/publicity/items/{item['id']}/withdraw"
    reviewer = staff.headers["legal_reviewer"]
    assert client.post(path, json={"reason": " "}, headers=reviewer).status_code == 400
    response = client.post(
        path, json={"reason": "决定已被撤销", "revoked_on": "2026-09-18"}, headers=reviewer
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["withdrawal_due_on"] == "2026-09-22"
    assert response.get_json()["state"] == "withdrawn"


def test_gs12_withdrawal_order_over_the_api_sets_the_deadline_and_answers_precise_errors(
    client: FlaskClient, staff: Staff
) -> None:
    item = published(client, staff)
    path = f"/api/v1/publicity/items/{item['id']}/withdrawal-order"
    reviewer = staff.headers["legal_reviewer"]
    assert client.post(path, json={"reason": " "}, headers=reviewer).status_code == 400
    assert (
        client.post(path, json={"reason": "撤销", "revoked_on": "18/09"}, headers=reviewer).status_code == 400
    )
    assert client.post(path, json={"reason": "撤销"}, headers=staff.headers["officer"]).status_code == 403
    response = client.post(
        path, json={"reason": "复议决定撤销", "revoked_on": "2026-09-18"}, headers=reviewer
    )
    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["state"], response.get_json()["withdrawal_due_on"]) == (
        "published",
        "2026-09-22",
    )
    # Withdrawn later without a date: the ordered deadline stands.
    done = client.post(
        f"/api/v1/publicity/items/{item['id']}/withdraw", json={"reason": "已撤销"}, headers=reviewer
    )
    assert (done.get_json()["state"], done.get_json()["withdrawal_due_on"]) == ("withdrawn", "2026-09-22")
    assert client.post(path, json={"reason": "撤销"}, headers=reviewer).status_code == 409


SOURCE = {
    "kind": "litigation",
    "body": "合肥市中级人民法院",
    "document_number": "(2026)皖01行终88号",
    "decided_on": "2026-09-16",
}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"source": {**SOURCE, "kind": "appeal"}},
            "source.kind 只能是 reconsideration（行政复议决定）或 litigation",
        ),
        (
            {"source": {**SOURCE, "body": " "}},
            "source.body 须为不超过 200 字的非空文本（复议机关或人民法院的名称）",
        ),
        ({"source": {**SOURCE, "document_number": ""}}, "source.document_number 须为不超过 128 字的非空文本"),
        ({"source": {**SOURCE, "decided_on": "16/09/2026"}}, "source.decided_on 须为 YYYY-MM-DD 日期"),
        ({"source": {**SOURCE, "decided_on": "2999-01-01"}}, "source.decided_on 须在 1950 至 2099 年之间"),
        ({"source": {**SOURCE, "court": "x"}}, "source 没有字段：court"),
        (
            {"source": SOURCE, "revoked_on": "2026-09-15"},
            "revoked_on（2026-09-15）不能早于复议决定或裁判作出之日",
        ),
        ({"revoked_on": "9999-12-31"}, "revoked_on 须在 1950 至 2099 年之间"),
        ({"revokedOn": "2026-09-18"}, "没有字段：revokedOn"),
    ],
)
def test_gs12_withdrawal_order_source_is_checked_field_by_field(
    client: FlaskClient, staff: Staff, body: dict[str, Any], message: str
) -> None:
    item = published(client, staff)
    response = client.post(
        f"/api/v1/publicity/items/{item['id']}/withdrawal-order",
        json={"reason": "判决撤销", **body},
        headers=staff.headers["legal_reviewer"],
    )
    assert response.status_code == 400, response.get_json()
    assert message in response.get_json()["error"]["message"]
    # Nothing was recorded: the item has no order and no deadline.
    stored = client.get(f"/api/v1/publicity/items/{item['id']}", headers=staff.headers["legal_reviewer"])
    assert (stored.get_json()["withdrawal_due_on"], stored.get_json()["withdrawal_orders"]) == (None, [])


def test_gs12_withdrawal_order_names_the_judgment_it_comes_from_and_the_api_returns_it(
    client: FlaskClient, staff: Staff
) -> None:
    item = published(client, staff)
    path = f"/api/v1/publicity/items/{item['id']}"
    reviewer = staff.headers["legal_reviewer"]
    response = client.post(
        f"{path}/withdrawal-order",
        json={"reason": "二审判决撤销原处罚决定", "revoked_on": "2026-09-18", "source": SOURCE},
        headers=reviewer,
    )
    assert response.status_code == 200, response.get_json()
    [order] = response.get_json()["withdrawal_orders"]
    assert order["source"] == SOURCE
    assert (order["revoked_on"], order["due_on"], order["reason"]) == (
        "2026-09-18",
        "2026-09-22",
        "二审判决撤销原处罚决定",
    )
    # An order without a source (the agency revoked it itself) keeps ``source: null``; the latest order
    # sets the item's deadline, and both stay on the item.
    again = client.post(
        f"{path}/withdrawal-order",
        json={"reason": "本机关自行撤销", "revoked_on": "2026-09-21"},
        headers=reviewer,
    )
    assert again.status_code == 200, again.get_json()
    first, second = client.get(path, headers=staff.headers["officer"]).get_json()["withdrawal_orders"]
    assert (first["source"], second["source"], second["due_on"]) == (SOURCE, None, "2026-09-24")
    assert again.get_json()["withdrawal_due_on"] == "2026-09-24"


def test_gs15_publishing_a_minors_case_answers_409_and_it_stays_excluded(
    client: FlaskClient, staff: Staff
) -> None:
    item = collect(client, staff, {**CONTENT, "persons": [{"name": "小明", "id_number": MINOR_ID}]})
    assert item["state"] == "excluded"
    response = client.post(
        f"/api/v1/publicity/items/{item['id']}/publish", headers=staff.headers["legal_reviewer"]
    )
    assert response.status_code == 409


def test_gs19_correction_over_the_api(client: FlaskClient, staff: Staff) -> None:
    item = published(client, staff)
    response = client.post(
        f"/api/v1/publicity/items/{item['id']}/correct",
        json={"content": {**CONTENT, "party_name": "合肥某某餐饮管理有限公司"}, "reason": "名称有误"},
        headers=staff.headers["legal_reviewer"],
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["state"] == "corrected"
    assert response.get_json()["corrected_at"]


def test_export_csv_and_json_in_the_national_codes(client: FlaskClient, staff: Staff) -> None:
    published(client, staff)
    response = client.get("/api/v1/publicity/export?table=CF&format=csv", headers=staff.headers["supervisor"])
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0]["CF_WSH"] == "合市监罚〔2026〕12号"
    assert rows[0]["CF_NR_FK"] == "0.2"
    as_json = client.get("/api/v1/publicity/export?table=CF", headers=staff.headers["officer"]).get_json()
    assert as_json == rows


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({**CONTENT, "fine_yuan": 2000.5}, "fine_yuan"),
        ({**CONTENT, "penalty_kinds": ["fine", "flogging"]}, "penalty_kinds"),
        ({**CONTENT, "valid_until": "2027-02-30"}, "valid_until"),
        ({**CONTENT, "nickname": "x"}, "nickname"),
        ({**CONTENT, "persons": [{"name": ""}]}, "persons[0]"),
    ],
)
def test_bad_content_is_a_precise_400(
    client: FlaskClient, staff: Staff, content: dict[str, Any], field: str
) -> None:
    body = {"act_kind": "penalty", "decided_on": "2026-09-30", "content": content}
    response = client.post("/api/v1/publicity/items", json=body, headers=staff.headers["officer"])
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert field in error["message_en"] and error["message"]


@pytest.mark.parametrize("decided_on", ["9999-12-31", "0001-01-01", "2100-01-01"])
def test_gs11_a_decision_date_outside_1950_to_2099_is_a_precise_400_not_a_failed_count(
    client: FlaskClient, staff: Staff, decided_on: str
) -> None:
    body = {"act_kind": "penalty", "decided_on": decided_on, "content": CONTENT}
    response = client.post("/api/v1/publicity/items", json=body, headers=staff.headers["officer"])
    assert response.status_code == 400, response.get_json()
    assert "1950" in response.get_json()["error"]["message_en"]
    listed = client.get("/api/v1/publicity/items", headers=staff.headers["officer"]).get_json()
    assert not [i for i in listed["items"] if i.get("decided_on") == decided_on]


def test_gs11_wrong_check_character_is_refused_at_submission(client: FlaskClient, staff: Staff) -> None:
    item = collect(
        client,
        staff,
        {**CONTENT, "party_uscc": COMPANY_USCC[:-1] + ("0" if COMPANY_USCC[-1] != "0" else "1")},
    )
    response = client.post(f"/api/v1/publicity/items/{item['id']}/submit", headers=staff.headers["officer"])
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_identifier"
    assert "check character" in response.get_json()["error"]["message_en"]


def test_gs14_reviewer_sees_proposed_redactions_and_undoes_one_over_the_api(
    client: FlaskClient, staff: Staff
) -> None:
    item = collect(client, staff)
    path = f"/api/v1/publicity/items/{item['id']}"
    reviewer = staff.headers["legal_reviewer"]
    view = client.get(f"{path}/review", headers=reviewer).get_json()
    kinds = {f["kind"] for f in view["fields"]["facts"]["findings"]}
    assert {"id_number", "mobile", "person_name"} <= kinds
    mobile = next(f for f in view["fields"]["facts"]["findings"] if f["kind"] == "mobile")
    assert client.put(f"{path}/redactions", json={"phone": {}}, headers=reviewer).status_code == 400
    bad_span = {"facts": {"added": [{"start": 0, "end": 10_000, "reason": "x"}]}}
    assert client.put(f"{path}/redactions", json=bad_span, headers=reviewer).status_code == 400
    undo = client.put(f"{path}/redactions", json={"facts": {"undone": [mobile["key"]]}}, headers=reviewer)
    assert undo.status_code == 200, undo.get_json()
    assert client.post(f"{path}/submit", headers=staff.headers["officer"]).status_code == 200
    done = client.post(f"{path}/publish", headers=reviewer).get_json()
    assert "13812345678" in done["published"]["facts"]
    assert WITNESS_ID not in done["published"]["facts"]
