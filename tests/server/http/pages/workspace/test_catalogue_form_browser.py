"""The before-enforcement catalogue form (GS-9) in real headless Chromium: an officer picks the kind
"procedure", fills its fields (the flowchart one step a line), submits, and lands on the draft; edits a
draft and revises a published entry that another reviewer applies; a supervisor's list names each
entry's agency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity import catalogue_service
from server.domain.publicity.inputs import NewCatalogueEntry
from server.domain.publicity.models import CatalogueEntry, CatalogueHistory
from server.infra.db import session_scope
from tests.fixtures.browser import CHROMIUM, LAUNCH_ARGS, requires_chromium, serve_app
from tests.fixtures.publicity import PASSWORD, Staff, staff

__all__ = ["staff"]

pytestmark = [pytest.mark.browser, requires_chromium]


@pytest.fixture
def live_url(app: Flask, staff: Staff) -> Iterator[str]:
    """The app with one agency's staff, served over HTTP on a free loopback port."""
    with serve_app(app) as url:
        yield url


def test_gs9_an_officer_fills_the_procedure_form_and_saves_a_draft_in_chromium(
    app: Flask, live_url: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
            page.goto(f"{live_url}/workspace/catalogue")
            page.fill("input[name=username]", "officer-p")
            page.fill("input[name=password]", PASSWORD)
            page.click("#login button[type=submit]")
            page.click('a.new-entry[data-kind="procedure"]')
            expect(page.locator("h1")).to_contain_text("执法程序")
            page.fill('input[name="content.matter"]', "食品经营许可")
            page.fill('input[name="content.accepting_body"]', "政务服务中心市场监管窗口")
            page.fill('input[name="content.approving_body"]', "合肥市市场监督管理局")
            page.fill('textarea[name="content.conditions"]', "具有与经营的食品品种相适应的经营场所")
            page.fill('input[name="content.time_limit_days"]', "10")
            page.fill('textarea[name="content.flow_steps"]', "申请\n受理\n审查\n决定")
            page.fill('textarea[name="content.service_guide"]', "申请材料：申请书、营业执照复印件")
            page.click("#catalogue-form button[type=submit]")
            expect(page.locator("#flash")).to_contain_text("草稿已创建")
            expect(page.locator("#entry-state")).to_have_attribute("data-state", "draft")
            expect(page.locator("#content")).to_contain_text("申请 → 受理 → 审查 → 决定")
            expect(page.locator("#submit")).to_be_visible()
        finally:
            browser.close()

    with session_scope(app) as session:
        stored = session.scalars(select(CatalogueEntry)).one()
        assert (stored.kind, stored.state, stored.content["time_limit_days"]) == ("procedure", "draft", 10)
        assert stored.content["flow_steps"] == ["申请", "受理", "审查", "决定"]


PROCEDURE = {
    "matter": "食品经营许可",
    "accepting_body": "政务服务中心市场监管窗口",
    "approving_body": "合肥市市场监督管理局",
    "conditions": "具有与经营的食品品种相适应的经营场所",
    "time_limit_days": 10,
    "flow_steps": ["申请", "受理", "审查", "决定"],
    "service_guide": "申请材料：申请书、营业执照复印件",
}


def _login(browser: Any, url: str, path: str, username: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
    page.goto(f"{url}{path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    return page


def test_gs9_an_officer_edits_a_draft_and_revises_a_published_entry_another_reviewer_applies_in_chromium(
    app: Flask, client: FlaskClient, staff: Staff, live_url: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    officer, reviewer = staff.headers["officer"], staff.headers["legal_reviewer"]
    made = client.post(
        "/api/v1/publicity/catalogue/entries",
        json={"kind": "procedure", "content": PROCEDURE},
        headers=officer,
    )
    assert made.status_code == 201, made.get_json()
    entry_id = made.get_json()["id"]
    path = f"/workspace/catalogue/{entry_id}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = _login(browser, live_url, path, "officer-p")
            page.click("#edit")
            expect(page.locator("h1")).to_contain_text("修改草稿：食品经营许可")
            # The form holds the draft as stored: the flowchart one step a line, the days as digits.
            expect(page.locator('textarea[name="content.flow_steps"]')).to_have_value(
                "申请\n受理\n审查\n决定"
            )
            expect(page.locator('input[name="content.time_limit_days"]')).to_have_value("10")
            page.fill('input[name="content.time_limit_days"]', "400")
            page.fill('textarea[name="content.flow_steps"]', "申请\n受理\n现场核查\n审查\n决定")
            page.click("#catalogue-form button[type=submit]")
            expect(page.locator("#form-error")).to_have_text(
                "content.time_limit_days：须为 1 至 365 之间的整数 (invalid_catalogue_entry)"
            )
            expect(page.locator("#form-error")).to_have_attribute("data-field", "content.time_limit_days")
            expect(page.locator('textarea[name="content.flow_steps"]')).to_have_value(
                "申请\n受理\n现场核查\n审查\n决定"
            )
            page.fill('input[name="content.time_limit_days"]', "8")
            page.click("#catalogue-form button[type=submit]")
            expect(page.locator("#flash")).to_have_text("草稿已修改。")
            expect(page.locator("#entry-state")).to_have_attribute("data-state", "draft")
            expect(page.locator("#content")).to_contain_text("申请 → 受理 → 现场核查 → 审查 → 决定")
            expect(page.locator("#content")).to_contain_text("8")
            page.click("#submit button")
            expect(page.locator("#entry-state")).to_have_attribute("data-state", "in_review")
            expect(page.locator("#edit")).to_have_count(0)  # an entry in review is returned, not edited
            assert (
                client.post(
                    f"/api/v1/publicity/catalogue/entries/{entry_id}/publish", headers=reviewer
                ).status_code
                == 200
            )

            # Revise the published entry because a rule changed: the portal keeps the published text.
            page.goto(f"{live_url}{path}")
            page.click("#edit")
            expect(page.locator("h1")).to_contain_text("修订已公示条目：食品经营许可")
            expect(page.locator("#revise-note")).to_be_visible()
            page.fill('input[name="content.time_limit_days"]', "5")
            page.select_option('select[name="change.cause"]', "law")
            page.fill('input[name="change.effective_on"]', "2026-09-30")
            page.fill('input[name="change.reference"]', "食品经营许可审查通则修订")
            page.click("#catalogue-form button[type=submit]")
            expect(page.locator("#flash")).to_have_text("修订已保存，待审核发布。")
            expect(page.locator("#entry-state")).to_have_attribute("data-state", "published")
            expect(page.locator("#pending")).to_contain_text("5")
            expect(page.locator("#content")).to_contain_text("8")
            expect(page.locator("#updates")).to_contain_text("2026-11-03")  # 20 working days after the change
            expect(page.locator("#apply-revision")).to_have_count(0)  # an officer does not publish
            portal = _login(browser, live_url, path, "legal_reviewer-p")
            portal.goto(f"{live_url}/portal/before-enforcement")
            expect(portal.locator("body")).to_contain_text("现场核查")
            expect(portal.locator("body")).not_to_contain_text("食品经营许可审查通则修订")

            # Another reviewer publishes the revision with a reason: the entry and the portal change.
            portal.goto(f"{live_url}{path}")
            portal.fill("#apply-revision input[name=reason]", "办理时限依新规缩短")
            portal.click("#apply-revision button[type=submit]")
            expect(portal.locator("#flash")).to_have_text("修订已发布。")
            expect(portal.locator("#entry-state")).to_have_attribute("data-state", "corrected")
            expect(portal.locator("#pending")).to_have_count(0)
            expect(portal.locator("#history")).to_contain_text("办理时限依新规缩短")
            expect(portal.locator("#updates li")).to_contain_text("逾期完成")  # closed after 3 November
        finally:
            browser.close()

    with session_scope(app) as session:
        stored = session.get(CatalogueEntry, entry_id)
        assert stored is not None and stored.state == "corrected" and stored.pending is None
        assert stored.content["time_limit_days"] == 5
        assert stored.published is not None and stored.published["content"]["time_limit_days"] == 5
        actions = [
            h.action
            for h in session.scalars(select(CatalogueHistory).where(CatalogueHistory.entry_id == entry_id))
        ]
        assert actions == ["create", "edit", "submit", "publish", "revise", "correct"]


def test_gs9_supervisors_see_the_agency_of_each_catalogue_entry_in_chromium(
    app: Flask, staff: Staff, live_url: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with session_scope(app) as session:
        other = Agency(name="芜湖市城市管理局", head="", duties="", address="", contacts="")
        session.add(other)
        session.flush()
        ids = {}
        for agency_id, name in ((staff.agency_id, "合肥投诉渠道"), (other.id, "芜湖投诉渠道")):
            data = NewCatalogueEntry.from_json(
                {
                    "kind": "complaint_channel",
                    "content": {"name": name, "conditions": "受理条件", "phone": "12345"},
                },
                default_agency=agency_id,
            )
            ids[name] = catalogue_service.create_entry(
                session, Caller(user_id="1", role="system_admin", agency_id=None), data
            ).id
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = _login(browser, live_url, "/workspace/catalogue", "supervisor-p")
            section = page.locator('section[data-kind="complaint_channel"]')
            expect(section.locator("thead th").first).to_have_text("机关")
            expect(section.locator(f'tr[data-entry="{ids["合肥投诉渠道"]}"] td.agency')).to_have_text(
                "合肥市市场监督管理局"
            )
            expect(section.locator(f'tr[data-entry="{ids["芜湖投诉渠道"]}"] td.agency')).to_have_text(
                "芜湖市城市管理局"
            )
            page.goto(f"{live_url}/workspace/catalogue?lang=en")
            expect(page.locator('section[data-kind="complaint_channel"] thead th').first).to_have_text(
                "Agency"
            )

            # Agency staff read their own catalogue only: no column to tell agencies apart, no other entry.
            own = _login(browser, live_url, "/workspace/catalogue", "officer-p")
            mine = own.locator('section[data-kind="complaint_channel"]')
            expect(mine.locator(f'tr[data-entry="{ids["合肥投诉渠道"]}"]')).to_be_visible()
            expect(mine.locator("td.agency")).to_have_count(0)
            expect(own.locator("body")).not_to_contain_text("芜湖投诉渠道")
        finally:
            browser.close()
