"""The before-enforcement catalogue pages of the workspace (GS-9, GS-7): an editor drafts an entry by form,
a bad field is refused with the domain's precise message and the input kept, another user publishes it
and it shows on the public portal; another agency's user finds no such entry."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from server.domain.accounts.service import create_user
from server.domain.people.models import Agency
from server.infra.db import session_scope
from tests.fixtures.publicity import PASSWORD, Staff, staff
from tests.server.http.pages.workspace.conftest import login

__all__ = ["staff"]

_FLASH = re.compile(r'<p class="flash (\w+)" id="flash" role="status">([^<]*)</p>')
INSPECTION = {
    "content.matter": "餐饮服务单位监督检查",
    "content.subject": "合肥市市场监督管理局",
    "content.basis": "《食品安全法》第一百一十条",
    "content.target": "辖区餐饮服务单位",
    "content.content": "经营条件、进货查验记录",
    "content.ratio_percent": "120",
    "content.method": "双随机、一公开",
    "content.frequency": "每年一次",
    "change.cause": "law",
    "change.effective_on": "2026-09-30",
    "change.reference": "食品安全法修正",
}


def _flash(client: FlaskClient, response: Any) -> tuple[str, str, str]:
    """Follow a form's 303: (category, message, page URL)."""
    assert response.status_code == 303, response.get_data(as_text=True)
    location = response.headers["Location"]
    match = _FLASH.search(client.get(location).get_data(as_text=True))
    assert match is not None
    return match.group(1), unescape(match.group(2)), location


def test_gs9_workspace_drafts_refuses_a_bad_field_and_publishes_an_entry_to_the_portal(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    editor = app.test_client()
    csrf = login(editor, "officer-p", PASSWORD)
    form = editor.get("/workspace/catalogue/new?kind=inspection_list").get_data(as_text=True)
    assert 'name="content.ratio_percent"' in form and "抽查比例（%）" in form
    english = editor.get("/workspace/catalogue/new?kind=complaint_channel&lang=en").get_data(as_text=True)
    assert 'name="content.postcode"' in english and "Postcode" in english
    editor.get("/workspace/catalogue?lang=zh")  # back to Chinese for the rest

    # A share of 120 % is refused with the domain's words; what was typed stays in the form.
    refused = editor.post(
        "/workspace/catalogue", data={"csrf_token": csrf, "kind": "inspection_list", **INSPECTION}
    )
    page = unescape(refused.get_data(as_text=True))
    assert refused.status_code == 400
    assert 'data-field="content.ratio_percent"' in page
    assert "content.ratio_percent：须为大于 0、不超过 100 的数（字符串） (invalid_catalogue_entry)" in page
    assert 'value="餐饮服务单位监督检查"' in page and 'value="120"' in page
    assert 'value="law" selected' in page

    category, _message, location = _flash(
        editor,
        editor.post(
            "/workspace/catalogue",
            data={"csrf_token": csrf, "kind": "inspection_list", **INSPECTION, "content.ratio_percent": "5"},
        ),
    )
    assert category == "ok"
    entry_id = int(location.rsplit("/", 1)[1])
    listing = editor.get("/workspace/catalogue").get_data(as_text=True)
    assert f'data-entry="{entry_id}" data-state="draft"' in listing
    # The law change opened its update item: 20 working days after 2026-09-30, past the National Day week.
    assert re.search(rf'<tr data-update="\d+" data-entry="{entry_id}"', listing)
    assert "2026-11-03" in listing
    assert _flash(editor, editor.post(f"{location}/submit", data={"csrf_token": csrf}))[0] == "ok"
    # The author may not publish (GS-7), and is not offered to.
    assert 'id="publish"' not in editor.get(location).get_data(as_text=True)

    reviewer = app.test_client()
    reviewer_csrf = login(reviewer, "legal_reviewer-p", PASSWORD)
    assert _flash(reviewer, reviewer.post(f"{location}/return", data={"csrf_token": reviewer_csrf}))[0] == (
        "error"
    )
    assert _flash(reviewer, reviewer.post(f"{location}/publish", data={"csrf_token": reviewer_csrf}))[0] == (
        "ok"
    )
    entry_page = reviewer.get(location).get_data(as_text=True)
    assert 'data-state="published"' in entry_page and 'id="withdraw"' in entry_page
    portal = client.get("/portal/before-enforcement").get_data(as_text=True)
    assert "餐饮服务单位监督检查" in portal and "双随机、一公开" in portal

    # Another agency's user: the entry does not exist for them, in any form.
    with session_scope(app) as session:
        other = Agency(name="芜湖市市场监督管理局", head="", duties="", address="", contacts="")
        session.add(other)
        session.flush()
        create_user(session, "reviewer-other", PASSWORD, "legal_reviewer", agency_id=other.id)
    stranger = app.test_client()
    stranger_csrf = login(stranger, "reviewer-other", PASSWORD)
    assert stranger.get(location).status_code == 404
    assert stranger.post(f"{location}/withdraw", data={"csrf_token": stranger_csrf}).status_code == 404
    assert (
        stranger.post(
            f"{location}/withdraw", data={"csrf_token": stranger_csrf, "reason": "依据已废止"}
        ).status_code
        == 404
    )
    assert "餐饮服务单位监督检查" not in stranger.get("/workspace/catalogue").get_data(as_text=True)
