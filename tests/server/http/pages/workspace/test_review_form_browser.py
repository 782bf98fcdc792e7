"""The case-file review form (JL-22, 案卷评查) in real headless Chromium: a supervisor opens the checklist
of the case's kind of act from the case file, judges each item, asks for a rectification with a deadline, and
the recorded review (verdict, score, remarks) shows on the case page; the same form in English. An
inconsistent review (``pass`` with a deficient item) is refused with the API's message, and an officer
cannot open the form."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from server.domain.base import utcnow
from server.domain.cases import service as case_service
from server.domain.cases.inputs import NewCase
from server.domain.governance.archives_models import CaseReview
from server.domain.people.service import Caller
from server.infra.db import session_scope
from tests.fixtures.browser import CHROMIUM, LAUNCH_ARGS, requires_chromium, serve_app
from tests.fixtures.people import PASSWORD, World

pytestmark = [pytest.mark.browser, requires_chromium]


@pytest.fixture
def case_id(app: Flask, world: World) -> int:
    """An open inspection case of agency A with nothing recorded yet."""
    with session_scope(app) as session:
        case = case_service.create_case(
            session,
            Caller(str(world.users["agency_head"]), "agency_head", world.agency_a),
            NewCase(
                number="皖合市监检〔2026〕22号",
                act_kind="inspection",
                origin="ex_officio",
                officer_ids=(world.officer_a,),
            ),
        )
        return case.id


@pytest.fixture
def live_url(app: Flask, case_id: int) -> Iterator[str]:
    """The app with the case, served over HTTP on a free loopback port."""
    with serve_app(app) as url:
        yield url


def test_jl22_a_supervisor_fills_the_review_form_and_the_review_shows_on_the_case_page_in_chromium(
    app: Flask, live_url: str, case_id: int
) -> None:
    from playwright.sync_api import expect, sync_playwright

    deadline = (utcnow().date() + timedelta(days=20)).isoformat()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page = context.new_page()
            page.goto(f"{live_url}/workspace/cases/{case_id}")
            page.fill("input[name=username]", "supervisor-a")
            page.fill("input[name=password]", PASSWORD)
            page.click("#login button[type=submit]")
            expect(page.locator("#reviews li")).to_have_count(0)
            page.click("#review-link")
            rows = page.locator("#checklist tbody tr")
            expect(rows.first).to_be_visible()
            assert rows.count() >= 4  # the inspection's record items plus JL-16, JL-17, JL-18
            items = [rows.nth(i).get_attribute("data-item") for i in range(rows.count())]
            assert "recordings.continuity" in items and "archive.on_time" in items
            # Nothing is recorded: the form presets the record items to what the record suggests.
            first = items[0]
            assert page.input_value(f'select[name="result.{first}"]') == "deficient"

            # A pass with a deficient item is refused with the service's own words, nothing stored.
            page.select_option("select[name=verdict]", "pass")
            page.click("#review-form button[type=submit]")
            expect(page.locator("#flash")).to_contain_text("不能评为合格")

            for code in items:
                page.select_option(f'select[name="result.{code}"]', "ok")
            page.select_option(f'select[name="result.{first}"]', "deficient")
            page.fill(f'input[name="note.{first}"]', "未出示执法证件")
            page.fill(f'input[name="rectify.{first}"]', "补充出示证件的记录")
            page.fill(f'input[name="deadline.{first}"]', deadline)
            page.select_option("select[name=verdict]", "rectify")
            page.fill("textarea[name=summary]", "总体规范，个别环节需整改")
            page.click("#review-form button[type=submit]")

            expect(page.locator("#flash")).to_contain_text("评查已记录")
            review = page.locator("#reviews li")
            expect(review).to_have_count(1)
            expect(review).to_have_attribute("data-verdict", "rectify")
            expected_score = round(100 * (len(items) - 1) / len(items))
            expect(review).to_contain_text(f"得分 {expected_score}")
            expect(review).to_contain_text("总体规范，个别环节需整改")
            expect(review).to_contain_text(deadline)

            # The same form in English.
            page.goto(f"{live_url}/workspace/cases/{case_id}/review?lang=en")
            expect(page.locator("#review-form button[type=submit]")).to_have_text("Record the review")
            expect(page.locator("#checklist thead")).to_contain_text("Finding")
            context.close()

            officer = browser.new_context(locale="zh-CN").new_page()
            officer.goto(f"{live_url}/workspace/cases/{case_id}/review")
            officer.fill("input[name=username]", "officer-a")
            officer.fill("input[name=password]", PASSWORD)
            officer.click("#login button[type=submit]")
            expect(officer.locator("body")).to_contain_text("你的角色不能执行此操作")
            expect(officer.locator("#review-form")).to_have_count(0)
        finally:
            browser.close()

    with session_scope(app) as session:
        stored = session.scalars(select(CaseReview)).one()
        assert (stored.verdict, stored.reviewer_role, stored.rectify_by.isoformat()) == (  # type: ignore[union-attr]
            "rectify",
            "supervisor",
            deadline,
        )
