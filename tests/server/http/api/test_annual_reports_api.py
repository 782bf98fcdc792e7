"""Annual reports over HTTP (GS-17, GS-7): generate, CSV, review roles, precise errors."""

from __future__ import annotations

import csv
import io

from flask.testing import FlaskClient

from tests.fixtures.publicity import ANNUAL_REPORTS as BASE
from tests.fixtures.publicity import Staff, collect, staff

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
    assert rows["transfers.criminal"]["value"] == "" and rows["transfers.criminal"]["fed"] == "0"
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
