"""Annual reports over HTTP (GS-17, GS-7): generate, CSV, review roles, precise errors."""

from __future__ import annotations

import csv
import io

from flask.testing import FlaskClient

from tests.fixtures.publicity import ANNUAL_REPORTS as BASE
from tests.fixtures.publicity import Staff, collect, published_report, staff

__all__ = ["staff"]  # the fixture, imported so pytest finds it here


def test_gs17_generate_export_csv_and_review_over_the_api(client: FlaskClient, staff: Staff) -> None:
    collect(client, staff, decided_on="2025-06-10")
    officer, reviewer = staff.headers["officer"], staff.headers["legal_reviewer"]
    for body, code in (
        ({"agency_id": staff.agency_id, "year": "twenty"}, 400),
        ({"agency_id": staff.agency_id, "year": 2999}, 400),  # a year not over
        ({"agency_id": True, "year": 2025}, 400),
        ({"agency_id": 999999, "year": 2025}, 404),
    ):
        answer = client.post(BASE, json=body, headers=officer)
        assert answer.status_code == code, (body, answer.get_json())
    made = client.post(BASE, json={"agency_id": staff.agency_id, "year": 2025}, headers=officer)
    assert made.status_code == 201
    report = made.get_json()
    values = {line["key"]: line["value"] for line in report["lines"]}
    assert values["penalty.kind.fine"] == 1 and values["penalty.fines"] == "0.2"
    assert report["due_on"] == "2026-01-31" and report["overdue"] is True
    assert [h["action"] for h in report["history"]] == ["generate"]

    exported = client.get(f"{BASE}/{report['id']}/export.csv", headers=officer)
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    raw = exported.get_data()
    assert raw.startswith("\ufeff".encode())
    rows = {row["key"]: row for row in csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))}
    assert rows["penalty.fines"]["value"] == "0.2" and rows["penalty.fines"]["unit"] == "万元"
    assert rows["penalty.fines"]["item"] == "罚款金额" and rows["penalty.fines"]["section"] == "行政处罚"
    assert rows["transfers.criminal"]["value"] == "0" and rows["transfers.criminal"]["fed"] == "1"
    # A figure the agency keeps and has not entered: no value, not fed.
    assert rows["staff.posts"]["value"] == "" and rows["staff.posts"]["fed"] == "0"
    assert len(rows) == len(report["lines"])

    path = f"{BASE}/{report['id']}"
    assert client.post(f"{path}/return", json={}, headers=reviewer).status_code == 400  # no reason
    assert client.post(f"{path}/submit", headers=officer).status_code == 200
    refused = client.post(f"{path}/publish", headers=officer)
    assert refused.status_code == 403  # an officer collects, never publishes
    assert client.post(f"{path}/publish", headers=reviewer).status_code == 200
    again = client.post(BASE, json={"agency_id": staff.agency_id, "year": 2025}, headers=officer)
    assert again.status_code == 409  # a published report is not recounted
    listed = client.get(f"{BASE}?year=2025", headers=staff.headers["supervisor"]).get_json()["reports"]
    assert [(r["id"], r["state"], r["overdue"]) for r in listed] == [(report["id"], "published", False)]
    assert client.get(f"{BASE}?year=20x5", headers=officer).status_code == 400


def test_gs17_correct_a_published_report_over_the_api(client: FlaskClient, staff: Staff) -> None:
    officer, reviewer, head = (staff.headers[r] for r in ("officer", "legal_reviewer", "agency_head"))
    report = published_report(client, staff)
    path = f"{BASE}/{report['id']}"
    # The posts, entered by the agency: a precise 400 for a bad entry, then appended and audited.
    for body, message in (
        ({"year": 2025, "key": "posts", "value": 3}, "key"),
        ({"year": 2025, "key": "staff.posts", "value": -2}, "field value out of range [0, 1000000]"),
        ({"year": 2025, "key": "staff.posts", "value": "12"}, None),
        ({"year": 2025, "key": "staff.posts"}, "missing fields: value"),
    ):
        answer = client.post(f"{BASE}/figures", json=body, headers=officer)
        assert answer.status_code == 400, answer.get_json()
        if message:
            assert message in answer.get_json()["error"]["message_en"], answer.get_json()
    entered = client.post(
        f"{BASE}/figures",
        json={"year": 2025, "key": "staff.posts", "value": 12, "note": "岗位清单"},
        headers=officer,
    )
    assert entered.status_code == 201, entered.get_json()
    assert entered.get_json()["value"] == 12 and entered.get_json()["note"] == "岗位清单"
    assert client.get(f"{BASE}/figures", headers=officer).status_code == 400  # which year?
    for odd in ("²⁰²⁵", "2025x"):
        assert client.get(f"{BASE}/figures?year={odd}", headers=officer).status_code == 400
    assert client.get(f"{BASE}/figures?year=2025&agency_id=²", headers=officer).status_code == 400
    figures = client.get(
        f"{BASE}/figures?year=2025&agency_id={staff.agency_id}", headers=staff.headers["auditor"]
    )
    assert figures.get_json()["current"]["staff.posts"]["value"] == 12
    # The published report keeps its figures; a correction needs a reason and a reviewer.
    assert client.get(path, headers=officer).get_json()["lines"][0]["value"] is None
    assert client.post(f"{path}/correct", json={}, headers=head).status_code == 400
    assert client.post(f"{path}/correct", json={"reason": "补填"}, headers=officer).status_code == 403
    made = client.post(f"{path}/correct", json={"reason": "补填执法岗位数"}, headers=head)
    assert made.status_code == 201, made.get_json()
    correction = made.get_json()
    assert (correction["revision"], correction["state"], correction["corrects_report_id"]) == (
        2,
        "draft",
        report["id"],
    )
    assert {line["key"]: line["value"] for line in correction["lines"]}["staff.posts"] == 12
    again = client.post(f"{path}/correct", json={"reason": "再次"}, headers=head)
    assert again.status_code == 409 and "already open" in again.get_json()["error"]["message_en"]
    fixed = f"{BASE}/{correction['id']}"
    assert client.post(f"{fixed}/correct", json={"reason": "x"}, headers=head).status_code == 409  # a draft
    assert client.post(f"{fixed}/submit", headers=officer).status_code == 200
    assert client.post(f"{fixed}/publish", headers=head).status_code == 403  # opened it: not its reviewer
    assert client.post(f"{fixed}/publish", headers=reviewer).status_code == 200
    earlier = client.get(path, headers=officer).get_json()
    assert (earlier["state"], earlier["current"], earlier["superseded_by_id"]) == (
        "superseded",
        False,
        correction["id"],
    )
    assert earlier["superseded_reason"] == "补填执法岗位数"
    assert [h["action"] for h in earlier["history"]][-1] == "supersede"
    listed = client.get(f"{BASE}?year=2025", headers=officer).get_json()["reports"]
    assert [(r["revision"], r["state"]) for r in listed] == [(2, "published"), (1, "superseded")]
