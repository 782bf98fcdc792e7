"""The before-enforcement catalogue over HTTP (GS-9): staff API, precise 4xx errors, the public section."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from server.domain.accounts.service import create_user
from server.domain.people.models import Agency
from server.infra.db import session_scope
from tests.fixtures.publicity import PASSWORD, Staff, login, staff

__all__ = ["staff"]  # the fixture, imported so pytest finds it here

BASE = "/api/v1/publicity/catalogue"
INSPECTION: dict[str, Any] = {
    "matter": "食品经营者监督检查",
    "subject": "合肥市市场监督管理局",
    "basis": "《食品安全法》第一百一十条",
    "target": "辖区食品经营者",
    "content": "经营条件、进货查验记录",
    "ratio_percent": "5",
    "method": "双随机、一公开",
    "frequency": "每年一次",
}
CHANGE = {"cause": "law", "effective_on": "2026-09-30", "reference": "食品安全法修正"}


def _error(response: Any) -> str:
    body = response.get_json()
    return f"{body['error']['message']} {body['error']['message_en']}"


def test_gs9_api_refuses_bad_entries_and_another_agencys_editor(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    officer = staff.headers["officer"]
    cases = [
        ({"content": INSPECTION}, 400, "missing fields: kind"),
        ({"kind": "list", "content": INSPECTION}, 400, "kind must be one of"),
        (
            {"kind": "inspection_list", "content": {**INSPECTION, "ratio_percent": "120"}},
            400,
            "content.ratio_percent",
        ),
        ({"kind": "inspection_list", "content": {**INSPECTION, "extra": 1}}, 400, "no field extra"),
        (
            {"kind": "inspection_list", "content": INSPECTION, "change": {**CHANGE, "cause": "mood"}},
            400,
            "change.cause",
        ),
        ({"kind": "inspection_list", "content": INSPECTION, "agency_id": 999999}, 404, "agency not found"),
    ]
    for body, status, words in cases:
        response = client.post(f"{BASE}/entries", json=body, headers=officer)
        assert response.status_code == status, (body, response.get_json())
        assert words in _error(response), (body, _error(response))
    assert client.get(f"{BASE}/entries?kind=gossip", headers=officer).status_code == 400
    # Another agency's reviewer can neither see nor change our entry, nor write into our agency.
    with session_scope(app) as session:
        other = Agency(name="芜湖市市场监督管理局", head="", duties="", address="", contacts="")
        session.add(other)
        session.flush()
        create_user(session, "reviewer-other", PASSWORD, "legal_reviewer", agency_id=other.id)
    intruder = login(client, "reviewer-other")
    entry = client.post(
        f"{BASE}/entries",
        json={"kind": "inspection_list", "content": INSPECTION},
        headers=staff.headers["officer"],
    ).get_json()
    path = f"{BASE}/entries/{entry['id']}"
    assert client.put(path, json={"content": INSPECTION}, headers=intruder).status_code == 404
    assert client.post(f"{path}/submit", headers=intruder).status_code == 404
    assert client.get(path, headers=intruder).status_code == 404
    body = {"kind": "inspection_list", "content": INSPECTION, "agency_id": staff.agency_id}
    assert client.post(f"{BASE}/entries", json=body, headers=intruder).status_code == 404
    assert client.get(f"{BASE}/entries", headers=intruder).get_json()["entries"] == []
    assert client.get(path, headers=staff.headers["supervisor"]).status_code == 200
    assert (
        client.put(path, json={"content": INSPECTION}, headers=staff.headers["supervisor"]).status_code == 403
    )


def test_gs9_api_publishes_an_entry_and_the_anonymous_portal_shows_only_published_ones(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    officer, reviewer = staff.headers["officer"], staff.headers["legal_reviewer"]
    created = client.post(
        f"{BASE}/entries",
        json={"kind": "inspection_list", "content": INSPECTION, "change": CHANGE},
        headers=officer,
    )
    assert created.status_code == 201, created.get_json()
    entry = created.get_json()
    assert entry["state"] == "draft" and entry["paragraph"] == "GS-9(5)"
    (update,) = entry["updates"]
    assert (update["due_on"], update["deadline_provisional"], update["closed_at"]) == (
        "2026-11-03",
        False,
        None,
    )
    draft = client.post(
        f"{BASE}/entries",
        json={
            "kind": "party_right",
            "content": {"right": "hearing", "description": "草稿中的听证权", "how_to_exercise": "-"},
        },
        headers=officer,
    ).get_json()
    path = f"{BASE}/entries/{entry['id']}"
    assert client.post(f"{path}/publish", headers=reviewer).status_code == 409  # not in review yet
    assert client.post(f"{path}/submit", headers=officer).status_code == 200
    assert client.post(f"{path}/publish", headers=officer).status_code == 403  # officers collect only
    published = client.post(f"{path}/publish", headers=reviewer)
    assert published.status_code == 200 and published.get_json()["state"] == "published"
    assert [
        u["id"] for u in client.get(f"{BASE}/updates?open=true", headers=reviewer).get_json()["updates"]
    ] == []
    # A revision waits for review; the portal keeps the published text meanwhile.
    revised = client.put(path, json={"content": {**INSPECTION, "frequency": "每半年一次"}}, headers=officer)
    assert revised.status_code == 200 and revised.get_json()["pending"]["frequency"] == "每半年一次"
    anonymous = app.test_client()
    page = anonymous.get("/portal/before-enforcement")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "执法前公示" in html and "随机抽查事项清单" in html and f'data-entry="{entry["id"]}"' in html
    assert "每年一次" in html and "每半年一次" not in html and "草稿中的听证权" not in html
    assert f'data-entry="{draft["id"]}"' not in html
    assert (
        client.post(f"{path}/correct", json={"reason": "按修正案调整"}, headers=reviewer).status_code == 200
    )
    html = anonymous.get(f"/portal/before-enforcement?agency_id={staff.agency_id}").get_data(as_text=True)
    assert "每半年一次" in html
    english = anonymous.get("/portal/before-enforcement?lang=en").get_data(as_text=True)
    assert "Before enforcement" in english and "Random inspection list" in english and "Frequency" in english
    assert anonymous.get("/portal/before-enforcement?agency_id=x").status_code == 400
    assert anonymous.get("/portal/before-enforcement?agency_id=999999").status_code == 200
    # The staff API is not for the public.
    assert anonymous.get(f"{BASE}/entries").status_code == 401
