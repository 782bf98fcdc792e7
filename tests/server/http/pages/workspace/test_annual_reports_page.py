"""The annual report pages of the workspace (GS-17, GS-7): generate by form, the printable report, the
review forms with the domain's refusals, and another agency's report reading as missing."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from server.domain.accounts.service import create_user
from server.domain.people.models import Agency
from server.infra.db import session_scope
from tests.fixtures.publicity import PASSWORD, Staff, collect, published_report, staff
from tests.server.http.pages.workspace.conftest import login

__all__ = ["staff"]

_FLASH = re.compile(r'<p class="flash (\w+)" id="flash" role="status">([^<]*)</p>')


def _flash(client: FlaskClient, response: Any) -> tuple[str, str, str]:
    """Follow a form's 303: (category, message, page URL)."""
    assert response.status_code == 303, response.get_data(as_text=True)
    location = response.headers["Location"]
    match = _FLASH.search(client.get(location).get_data(as_text=True))
    assert match is not None
    return match.group(1), match.group(2), location


def test_gs17_workspace_generates_prints_and_publishes_a_report(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    collect(client, staff, decided_on="2025-06-10")
    officer = app.test_client()
    csrf = login(officer, "officer-p", PASSWORD)
    assert _flash(
        officer, officer.post("/workspace/annual-reports", data={"csrf_token": csrf, "year": "25"})
    )[0] == ("error")
    category, _message, location = _flash(
        officer, officer.post("/workspace/annual-reports", data={"csrf_token": csrf, "year": "2025"})
    )
    assert category == "ok"
    report_id = int(location.rsplit("/", 1)[1])
    page = officer.get(location).get_data(as_text=True)
    assert 'data-key="penalty.fines"' in page and "0.2 万元" in page and "机关尚未填报" in page
    assert 'id="submit"' in page and 'id="publish"' not in page
    assert "@media print" in officer.get("/static/workspace/workspace.css").get_data(as_text=True)
    listing = officer.get("/workspace/annual-reports").get_data(as_text=True)
    assert f'data-report="{report_id}"' in listing and 'data-overdue="true"' in listing
    assert _flash(officer, officer.post(f"{location}/submit", data={"csrf_token": csrf}))[0] == "ok"

    # The reviewer who submitted would be refused; here the officer submitted, so the reviewer publishes.
    reviewer = app.test_client()
    reviewer_csrf = login(reviewer, "legal_reviewer-p", PASSWORD)
    assert (
        _flash(reviewer, reviewer.post(f"{location}/return", data={"csrf_token": reviewer_csrf}))[0]
        == "error"
    )
    assert (
        _flash(reviewer, reviewer.post(f"{location}/publish", data={"csrf_token": reviewer_csrf}))[0] == "ok"
    )
    assert 'data-state="published"' in reviewer.get(location).get_data(as_text=True)

    # An agency head of another agency: the report does not exist for them.
    with session_scope(app) as session:
        other = Agency(name="芜湖市市场监督管理局", head="", duties="", address="", contacts="")
        session.add(other)
        session.flush()
        create_user(session, "head-other", PASSWORD, "agency_head", agency_id=other.id)
    stranger = app.test_client()
    stranger_csrf = login(stranger, "head-other", PASSWORD)
    assert stranger.get(location).status_code == 404
    assert stranger.post(f"{location}/submit", data={"csrf_token": stranger_csrf}).status_code == 404
    assert f'data-report="{report_id}"' not in stranger.get("/workspace/annual-reports").get_data(
        as_text=True
    )


def test_gs17_workspace_enters_posts_and_corrects_a_published_report(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    report = published_report(client, staff)
    location = f"/workspace/annual-reports/{report['id']}"
    officer = app.test_client()
    csrf = login(officer, "officer-p", PASSWORD)
    page = officer.get(location).get_data(as_text=True)
    # An officer enters figures but does not correct what was published.
    assert 'id="enter-figure"' in page and 'id="correct"' not in page
    bad = _flash(
        officer,
        officer.post(f"{location}/figures", data={"csrf_token": csrf, "key": "staff.posts", "value": "x"}),
    )
    assert bad[0] == "error" and "invalid_request" in bad[1]
    for odd in ("²", "1" * 5000, "-3"):
        refused = officer.post(
            f"{location}/figures", data={"csrf_token": csrf, "key": "staff.posts", "value": odd}
        )
        assert _flash(officer, refused)[0] == "error"
    unknown = _flash(
        officer, officer.post(f"{location}/figures", data={"csrf_token": csrf, "key": "nope", "value": "3"})
    )
    assert unknown[0] == "error" and "key" in unknown[1]
    entered = _flash(
        officer,
        officer.post(
            f"{location}/figures",
            data={"csrf_token": csrf, "key": "staff.posts", "value": "12", "note": "岗位清单"},
        ),
    )
    assert entered[0] == "ok"
    page = officer.get(location).get_data(as_text=True)
    assert 'id="figure-entries"' in page and "岗位清单" in page
    assert "机关尚未填报" in page  # the published report keeps the figures it was published with

    head = app.test_client()
    head_csrf = login(head, "agency_head-p", PASSWORD)
    assert 'id="correct"' in head.get(location).get_data(as_text=True)
    no_reason = _flash(head, head.post(f"{location}/correct", data={"csrf_token": head_csrf, "reason": " "}))
    assert no_reason[0] == "error"
    category, _message, corrected = _flash(
        head, head.post(f"{location}/correct", data={"csrf_token": head_csrf, "reason": "补填执法岗位数"})
    )
    assert category == "ok" and corrected != location
    page = head.get(corrected).get_data(as_text=True)
    assert 'id="correction"' in page and "补填执法岗位数" in page and 'data-state="draft"' in page
    assert 'data-source="agency"' in page and ">12<" in page
    again = _flash(head, head.post(f"{location}/correct", data={"csrf_token": head_csrf, "reason": "再次"}))
    assert again[0] == "error" and "(conflict)" in again[1]
