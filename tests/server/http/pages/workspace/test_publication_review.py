"""The publication review pages of the workspace (GS-7, GS-11, GS-14): the queue with its deadlines, the
item page with its highlighted redactions and public preview, the reviewer's decisions, and the domain's
refusals shown as they are; CSRF, agency scope (JL-20) and the audit of every view.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.accounts.models import User
from server.domain.accounts.service import create_user
from server.domain.audit import AuditLog
from server.domain.people.models import Agency
from server.infra.db import session_scope
from tests.fixtures.publicity import CONTENT, MINOR_ID, PASSWORD, Staff, collect, staff
from tests.server.http.pages.workspace.conftest import login

__all__ = ["staff"]

_PREVIEW = re.compile(r'<div class="card" id="preview">(.*?)</div>', re.S)
_FLASH = re.compile(r'<p class="flash (\w+)" id="flash" role="status">([^<]*)</p>')
_MOBILE = "13812345678"


def _browser(app: Flask, username: str) -> tuple[FlaskClient, str]:
    """A client logged in to the workspace as ``username``, and its CSRF value."""
    client = app.test_client()
    return client, login(client, username, PASSWORD)


def _in_review(client: FlaskClient, staff: Staff, author: str = "legal_reviewer") -> dict[str, Any]:
    """An item collected and submitted by ``author`` through the API."""
    body = {"act_kind": "penalty", "decided_on": "2026-09-30", "content": CONTENT}
    made = client.post("/api/v1/publicity/items", json=body, headers=staff.headers[author])
    assert made.status_code == 201, made.get_json()
    item_id = made.get_json()["id"]
    sent = client.post(f"/api/v1/publicity/items/{item_id}/submit", headers=staff.headers[author])
    assert sent.status_code == 200, sent.get_json()
    return dict(sent.get_json())


def _preview(html: str) -> str:
    match = _PREVIEW.search(html)
    assert match is not None, html
    return match.group(1)


def _flash(client: FlaskClient, response: Any) -> tuple[str, str]:
    """Follow a form's 303 and read the flash message the page shows."""
    assert response.status_code == 303, response.get_data(as_text=True)
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    match = _FLASH.search(page)
    assert match is not None, page
    return match.group(1), match.group(2)


def _state(client: FlaskClient, staff: Staff, item_id: int) -> str:
    answer = client.get(f"/api/v1/publicity/items/{item_id}", headers=staff.headers["agency_head"])
    return str(answer.get_json()["state"])


def _audits(app: Flask, action: str) -> list[dict[str, Any]]:
    with session_scope(app) as session:
        rows = session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))
        return [{"actor": r.actor, "target": r.target_id, **json.loads(r.detail or "{}")} for r in rows]


def test_gs11_queue_lists_items_in_review_and_drafts_with_overdue_deadlines_marked(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = _in_review(client, staff)
    draft = collect(client, staff)
    browser, _csrf = _browser(app, "agency_head-p")
    page = browser.get("/workspace/publication-review")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    in_review = html.split('id="in-review"')[1].split("</table>")[0]
    drafts = html.split('id="drafts"')[1].split("</table>")[0]
    assert f'data-item="{item["id"]}" data-state="in_review"' in in_review
    assert f'data-item="{draft["id"]}" data-state="draft"' in drafts
    # Decided 2026-09-30: the 7 working days of GS-11 ran out in October, so both are overdue.
    assert item["due_on"] in in_review and item["overdue"] is True
    assert 'data-overdue="true"' in in_review and 'class="badge bad"' in in_review
    assert f'href="/workspace/publication-review/{item["id"]}"' in in_review
    # The navigation now links the real page (REVIEW_ENDPOINTS).
    assert 'href="/workspace/publication-review" data-nav="publication_review"' in html


def test_review_pages_carry_the_strict_csp_without_inline_script_or_style(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = _in_review(client, staff)
    browser, _csrf = _browser(app, "agency_head-p")
    for path in ("/workspace/publication-review", f"/workspace/publication-review/{item['id']}"):
        page = browser.get(path)
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        html = page.get_data(as_text=True)
        assert "<script>" not in html and " on" + "click=" not in html and "style=" not in html
        assert page.headers["Cache-Control"] == "no-store"


def test_gs14_reviewer_undoes_a_redaction_and_the_preview_shows_the_original(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = _in_review(client, staff)
    path = f"/workspace/publication-review/{item['id']}"
    browser, csrf = _browser(app, "agency_head-p")
    html = browser.get(path).get_data(as_text=True)
    # The proposed redaction is highlighted in the source; the preview hides the number.
    assert "<mark" in html and _MOBILE in html
    assert _MOBILE not in _preview(html)
    keys = re.findall(r'name="undone:facts" value="([^"]+)"', html)
    mobile = [k for k in keys if k.startswith("mobile:")]
    assert mobile, keys
    form = {"csrf_token": csrf, **{f"present:{name}": "1" for name in ("facts", "basis", "conclusion")}}
    answer = browser.post(f"{path}/redactions", data={**form, "undone:facts": mobile[0]})
    assert _flash(browser, answer)[0] == "ok"
    html = browser.get(path).get_data(as_text=True)
    assert _MOBILE in _preview(html)
    assert f'value="{mobile[0]}" checked' in html and '<s class="undone"' in html
    # Adding one with a reason hides those words in the preview…
    facts = CONTENT["facts"]
    start = facts.index("超过保质期")
    added = {
        **form,
        "undone:facts": mobile[0],
        "new_field": "facts",
        "new_start": str(start),
        "new_end": str(start + 5),
        "new_reason": "涉及商业秘密",
    }
    assert _flash(browser, browser.post(f"{path}/redactions", data=added))[0] == "ok"
    html = browser.get(path).get_data(as_text=True)
    preview_facts = re.search(r'data-preview="facts">(.*?)</p>', _preview(html))
    assert preview_facts is not None and "超过保质期" not in preview_facts.group(1)
    assert '<mark class="added"' in html
    # …and the same typed errors as the API: a reason is required, the span must lie inside the text.
    category, message = _flash(browser, browser.post(f"{path}/redactions", data={**added, "new_reason": ""}))
    assert category == "error" and message == "facts.added[0]：须说明理由 (publicity_error)"
    out = {**added, "new_end": str(len(facts) + 10)}
    category, message = _flash(browser, browser.post(f"{path}/redactions", data=out))
    assert category == "error" and "超出原文" in message
    category, message = _flash(browser, browser.post(f"{path}/redactions", data={**added, "new_start": "x"}))
    assert category == "error" and "须为整数" in message


def test_gs7_the_author_cannot_publish_and_the_page_says_why(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = _in_review(client, staff, author="legal_reviewer")
    browser, csrf = _browser(app, "legal_reviewer-p")
    answer = browser.post(f"/workspace/publication-review/{item['id']}/publish", data={"csrf_token": csrf})
    category, message = _flash(browser, answer)
    assert category == "error" and "transition_forbidden" in message
    assert _state(client, staff, item["id"]) == "in_review"
    assert 'data-total="0"' in client.get("/portal/").get_data(as_text=True)


def test_gs7_another_reviewer_publishes_and_the_item_is_on_the_portal(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = _in_review(client, staff, author="legal_reviewer")
    browser, csrf = _browser(app, "agency_head-p")
    path = f"/workspace/publication-review/{item['id']}"
    assert 'id="publish"' in browser.get(path).get_data(as_text=True)
    category, _message = _flash(browser, browser.post(f"{path}/publish", data={"csrf_token": csrf}))
    assert category == "ok"
    assert _state(client, staff, item["id"]) == "published"
    portal = client.get("/portal/").get_data(as_text=True)
    assert f'data-item="{item["id"]}"' in portal and 'data-total="1"' in portal
    # Published: no longer in the queue but in the published list (GS-12 orders start there), and no
    # more buttons to publish it again.
    queue = browser.get("/workspace/publication-review").get_data(as_text=True)
    waiting, listed = queue.split('id="published"')
    assert f'data-item="{item["id"]}"' not in waiting
    assert f'data-item="{item["id"]}" data-state="published"' in listed
    assert 'id="publish"' not in browser.get(path).get_data(as_text=True)


def test_gs15_a_minors_case_is_excluded_and_cannot_be_published_from_the_page(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = collect(client, staff, {**CONTENT, "persons": [{"name": "小明", "id_number": MINOR_ID}]})
    browser, csrf = _browser(app, "agency_head-p")
    path = f"/workspace/publication-review/{item['id']}"
    html = browser.get(path).get_data(as_text=True)
    assert 'data-state="excluded"' in html and 'id="publish"' not in html and 'id="redactions"' not in html
    category, message = _flash(browser, browser.post(f"{path}/publish", data={"csrf_token": csrf}))
    # Excluded when collected (GS-15(3)); the domain refuses to publish it and the page says so.
    assert category == "error" and "不予公示" in message and "transition_refused" in message
    assert _state(client, staff, item["id"]) == "excluded"
    assert 'data-total="0"' in client.get("/portal/").get_data(as_text=True)


def test_return_to_draft_needs_a_reason_and_then_moves_the_item_back(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = _in_review(client, staff)
    browser, csrf = _browser(app, "agency_head-p")
    path = f"/workspace/publication-review/{item['id']}/return"
    category, message = _flash(browser, browser.post(path, data={"csrf_token": csrf, "reason": " "}))
    assert category == "error" and "须说明理由" in message
    assert _state(client, staff, item["id"]) == "in_review"
    answer = browser.post(path, data={"csrf_token": csrf, "reason": "文书号有误"})
    category, _message = _flash(browser, answer)
    assert category == "ok" and _state(client, staff, item["id"]) == "draft"


def test_jl20_an_officer_of_another_agency_gets_404(app: Flask, client: FlaskClient, staff: Staff) -> None:
    item = _in_review(client, staff)
    with session_scope(app) as session:
        other = Agency(name="芜湖市城市管理局", head="", duties="", address="", contacts="")
        session.add(other)
        session.flush()
        create_user(session, "officer-other-p", PASSWORD, "officer", agency_id=other.id)
    browser, csrf = _browser(app, "officer-other-p")
    queue = browser.get("/workspace/publication-review").get_data(as_text=True)
    assert f'data-item="{item["id"]}"' not in queue and "合肥某某餐饮" not in queue
    theirs = browser.get(f"/workspace/publication-review/{item['id']}")
    missing = browser.get("/workspace/publication-review/999999")
    assert theirs.status_code == missing.status_code == 404
    assert "合肥某某餐饮" not in theirs.get_data(as_text=True)
    form = {"csrf_token": csrf, "present:facts": "1", "undone:facts": "mobile:0-1"}
    undo = browser.post(f"/workspace/publication-review/{item['id']}/redactions", data=form)
    assert undo.status_code == 404
    refused = [r for r in _audits(app, "publicity.review") if r.get("refused")]
    # Both refusals are audited, and another agency's item is recorded as what the caller saw: missing.
    assert [(r["target"], r["refused"]) for r in refused] == [
        (str(item["id"]), "not_found"),
        ("999999", "not_found"),
    ]


def test_a_form_without_the_csrf_value_is_refused_and_changes_nothing(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = _in_review(client, staff)
    browser, _csrf = _browser(app, "agency_head-p")
    path = f"/workspace/publication-review/{item['id']}"
    refused = browser.post(f"{path}/publish")
    assert refused.status_code == 400
    assert _state(client, staff, item["id"]) == "in_review"
    undo = browser.post(f"{path}/redactions", data={"present:facts": "1", "undone:facts": "mobile:0-1"})
    assert undo.status_code == 400
    assert _MOBILE not in _preview(browser.get(path).get_data(as_text=True))


def test_every_view_of_the_review_pages_writes_an_audit_row(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = _in_review(client, staff)
    browser, _csrf = _browser(app, "agency_head-p")
    with session_scope(app) as session:
        head = session.scalar(select(User.id).where(User.username == "agency_head-p"))
    before = len(_audits(app, "publicity.review_list")), len(_audits(app, "publicity.review"))
    browser.get("/workspace/publication-review")
    browser.get(f"/workspace/publication-review/{item['id']}")
    browser.get(f"/workspace/publication-review/{item['id']}?lang=en")
    lists, views = _audits(app, "publicity.review_list"), _audits(app, "publicity.review")
    assert (len(lists), len(views)) == (before[0] + 1, before[1] + 2)
    assert all(r["via"] == "workspace" for r in lists[before[0] :] + views[before[1] :])
    assert [(r["target"], r["state"]) for r in views[before[1] :]] == [(str(item["id"]), "in_review")] * 2
    assert lists[-1]["in_review"] == 1
    assert {r["actor"] for r in lists[before[0] :] + views[before[1] :]} == {str(head)}


def test_gs12_workspace_refuses_an_order_for_an_unpublished_item_and_a_withdrawal_on_a_bad_day(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    from html import unescape

    from tests.fixtures.publicity import published

    browser, csrf = _browser(app, "agency_head-p")
    draft = _in_review(client, staff)
    refused = browser.post(
        f"/workspace/publication-review/{draft['id']}/withdrawal-order",
        data={"csrf_token": csrf, "reason": "复议撤销", "revoked_on": "2026-09-18"},
    )
    # Shown on the item page as the API answers it (409), though the item offers no order form.
    assert refused.status_code == 409
    assert "只有已公示的事项需要撤回 (conflict)" in unescape(refused.get_data(as_text=True))
    item = published(client, staff)
    path = f"/workspace/publication-review/{item['id']}/withdraw"
    for day, message in (
        ("2026-13-01", "revoked_on 须为 YYYY-MM-DD 日期（决定被撤销之日） (invalid_request)"),
        ("9999-12-31", "revoked_on 须在 1950 至 2099 年之间 (invalid_request)"),
    ):
        answer = browser.post(path, data={"csrf_token": csrf, "reason": "已撤销", "revoked_on": day})
        assert _flash(browser, answer) == ("error", message)
    assert _state(client, staff, item["id"]) == "published"
    # The API refuses the same day with the same words (one parser, inputs.plausible_date).
    api = client.post(
        f"/api/v1/publicity/items/{item['id']}/withdraw",
        json={"reason": "已撤销", "revoked_on": "9999-12-31"},
        headers=staff.headers["legal_reviewer"],
    )
    assert (
        api.status_code == 400 and api.get_json()["error"]["message"] == "revoked_on 须在 1950 至 2099 年之间"
    )
