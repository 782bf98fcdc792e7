"""The before-enforcement catalogue form (GS-9) in real headless Chromium: an officer picks the kind
"procedure", fills its fields (the flowchart one step a line), submits, and lands on the draft."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from server.domain.publicity.models import CatalogueEntry
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
