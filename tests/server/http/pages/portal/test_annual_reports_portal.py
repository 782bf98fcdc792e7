"""Annual reports on the public portal (GS-5, GS-17): only published ones, printable, with their CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import replace

from flask import Flask
from flask.testing import FlaskClient

from tests.fixtures.publicity import ANNUAL_REPORTS, Staff, collect, published_report, staff

__all__ = ["staff"]  # the fixture, imported so pytest finds it here


def test_gs17_anonymous_public_sees_only_published_reports(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    # More page views than a minute's budget; the rate limit has its own test.
    settings = app.extensions["zfjl.settings"]
    app.extensions["zfjl.settings"] = replace(settings, verify_rate_per_minute=1000)
    app.extensions.pop("zfjl.portal_limiter", None)
    collect(client, staff, decided_on="2024-06-10")
    officer = staff.headers["officer"]
    draft = client.post(ANNUAL_REPORTS, json={"agency_id": staff.agency_id, "year": 2024}, headers=officer)
    assert draft.status_code == 201
    draft_id = draft.get_json()["id"]
    # A draft, and then one in review: not listed, not readable, no CSV, and the staff API wants a token.
    for _ in range(2):
        listing = client.get("/portal/annual-reports").get_data(as_text=True)
        assert f"/portal/annual-reports/{draft_id}" not in listing and "尚无已公布的年度报告" in listing
        assert client.get(f"/portal/annual-reports/{draft_id}").status_code == 404
        assert client.get(f"/portal/annual-reports/{draft_id}.csv").status_code == 404
        assert client.get(f"{ANNUAL_REPORTS}/{draft_id}").status_code == 401
        assert client.post(f"{ANNUAL_REPORTS}/{draft_id}/submit", headers=officer).status_code in (200, 409)

    report = published_report(client, staff)
    listing = client.get("/portal/annual-reports").get_data(as_text=True)
    assert f"/portal/annual-reports/{report['id']}" in listing
    assert f'/portal/annual-reports/{draft_id}"' not in listing
    assert "合肥市市场监督管理局2025年度行政执法数据统计报告" in listing
    page = client.get(f"/portal/annual-reports/{report['id']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-key="penalty.fines"' in html and "0.2 万元" in html
    # Posts were never entered: the line says so instead of printing a zero.
    assert "机关尚未填报" in html and "@media print" not in html  # the print rules live in the stylesheet
    english = client.get(f"/portal/annual-reports/{report['id']}?lang=en").get_data(as_text=True)
    assert "not yet entered by the agency" in english and "0.2 10,000 yuan" in english
    exported = client.get(f"/portal/annual-reports/{report['id']}.csv")
    assert exported.status_code == 200 and exported.get_data().startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True).lstrip("\ufeff"))))
    assert {r["key"]: r["value"] for r in rows}["penalty.fines"] == "0.2"
    assert "年度报告" in client.get("/portal/").get_data(as_text=True)


def test_gs17_portal_shows_the_correction_by_default_and_keeps_the_superseded_report(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    settings = app.extensions["zfjl.settings"]
    app.extensions["zfjl.settings"] = replace(settings, verify_rate_per_minute=1000)
    app.extensions.pop("zfjl.portal_limiter", None)
    first = published_report(client, staff)
    officer, reviewer, head = (staff.headers[r] for r in ("officer", "legal_reviewer", "agency_head"))
    entered = client.post(
        f"{ANNUAL_REPORTS}/figures", json={"year": 2025, "key": "staff.posts", "value": 12}, headers=officer
    )
    assert entered.status_code == 201
    made = client.post(
        f"{ANNUAL_REPORTS}/{first['id']}/correct", json={"reason": "补填执法岗位数"}, headers=head
    )
    correction = made.get_json()
    # The correction's draft is not public; the first report is still the current one.
    assert client.get(f"/portal/annual-reports/{correction['id']}").status_code == 404
    assert 'id="superseded"' not in client.get(f"/portal/annual-reports/{first['id']}").get_data(as_text=True)
    assert client.post(f"{ANNUAL_REPORTS}/{correction['id']}/submit", headers=officer).status_code == 200
    assert client.post(f"{ANNUAL_REPORTS}/{correction['id']}/publish", headers=reviewer).status_code == 200

    listing = client.get("/portal/annual-reports").get_data(as_text=True)
    assert f"/portal/annual-reports/{correction['id']}" in listing and 'data-corrected="true"' in listing
    assert f'/portal/annual-reports/{first["id"]}"' not in listing  # the year's default is the current one
    current = client.get(f"/portal/annual-reports/{correction['id']}").get_data(as_text=True)
    assert "本报告为更正版本（第 2 版），更正理由：补填执法岗位数" in current
    assert f'href="/portal/annual-reports/{first["id"]}"' in current  # the earlier one stays reachable
    assert '<tr data-key="staff.posts" data-source="agency">' in current
    old = client.get(f"/portal/annual-reports/{first['id']}")
    assert old.status_code == 200
    html = old.get_data(as_text=True)
    assert 'id="superseded"' in html and "更正理由：补填执法岗位数" in html
    assert f'id="current-version" href="/portal/annual-reports/{correction["id"]}"' in html
    assert "机关尚未填报" in html  # as it was published, never overwritten
    english = client.get(f"/portal/annual-reports/{first['id']}?lang=en").get_data(as_text=True)
    assert "no longer current. Reason: 补填执法岗位数" in english
    assert client.get(f"/portal/annual-reports/{first['id']}.csv").status_code == 200
