"""The public portal in real headless Chromium, on a phone-sized screen (GS-5, GS-8, GS-12, GS-14, GS-19)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.fixtures.browser import CHROMIUM, LAUNCH_ARGS, requires_chromium, serve_app
from tests.fixtures.publicity import CONTENT, WITNESS_ID, Staff, published, published_report, staff

__all__ = ["staff"]  # the fixture, imported so pytest finds it here

pytestmark = [pytest.mark.browser, requires_chromium]


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """The app served over HTTP on a free loopback port."""
    with serve_app(app) as url:
        yield url


def test_gs8_search_detail_withdrawal_and_correction_in_chromium(
    client: FlaskClient, staff: Staff, live_url: str
) -> None:
    from playwright.sync_api import sync_playwright

    kept = published(client, staff)
    gone = published(
        client, staff, {**CONTENT, "party_name": "芜湖某某超市", "document_number": "合市监罚〔2026〕13号"}
    )
    withdrawn = client.post(
        f"/api/v1/publicity/items/{gone['id']}/withdraw",
        json={"reason": "决定已被依法撤销"},
        headers=staff.headers["legal_reviewer"],
    )
    assert withdrawn.status_code == 200

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(f"{live_url}/portal/")
            assert page.get_attribute("[data-total]", "data-total") == "1"
            page.fill("input[name=party]", "某某餐饮")
            page.click("form.search button[type=submit]")
            page.wait_for_selector(f"[data-item='{kept['id']}']")
            assert page.get_attribute("[data-total]", "data-total") == "1"
            page.click(f"[data-item='{kept['id']}'] a")
            page.wait_for_selector("[data-field=facts]")
            body = page.text_content("main") or ""
            assert "合市监罚〔2026〕12号" in body and "李某" in body
            for planted in (WITNESS_ID, "13812345678", "李四"):
                assert planted not in body

            page.fill("form.correction textarea[name=text]", "当事人名称有误")
            page.click("form.correction button[type=submit]")
            page.wait_for_selector("[data-received='1']")

            page.goto(f"{live_url}/portal/?party=芜湖")
            assert page.get_attribute("[data-total]", "data-total") == "0"
            page.goto(f"{live_url}/portal/items/{gone['id']}")
            assert page.get_attribute("[data-state]", "data-state") == "withdrawn"
            assert "决定已被依法撤销" in (page.text_content("[data-field=withdrawal_reason]") or "")

            page.goto(f"{live_url}/portal/?lang=en")
            assert "Administrative enforcement publicity" in (page.text_content("header") or "")
        finally:
            browser.close()


def test_gs17_annual_report_is_listed_opens_and_prints_without_the_bar_in_chromium(
    client: FlaskClient, staff: Staff, live_url: str
) -> None:
    from playwright.sync_api import sync_playwright

    report = published_report(client, staff)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(f"{live_url}/portal/annual-reports")
            page.click(f"a[href^='/portal/annual-reports/{report['id']}']")
            page.wait_for_selector("tr[data-key='penalty.fines']")
            assert "0.2 万元" in (page.text_content("tr[data-key='penalty.fines']") or "")
            assert page.is_visible("header.bar")
            # Printed, the page is the report alone: no bar, no links, no footer.
            page.emulate_media(media="print")
            assert not page.is_visible("header.bar") and not page.is_visible("p.links")
            assert page.is_visible("table.report")
        finally:
            browser.close()


def test_gs17_corrected_annual_report_in_chromium_current_by_default_superseded_kept(
    client: FlaskClient, staff: Staff, live_url: str
) -> None:
    from playwright.sync_api import sync_playwright

    first = published_report(client, staff)
    base = "/api/v1/publicity/annual-reports"
    made = client.post(
        f"{base}/{first['id']}/correct",
        json={"reason": "复议决定数据有误"},
        headers=staff.headers["agency_head"],
    )
    correction = made.get_json()
    assert (
        client.post(f"{base}/{correction['id']}/submit", headers=staff.headers["officer"]).status_code == 200
    )
    published_now = client.post(f"{base}/{correction['id']}/publish", headers=staff.headers["legal_reviewer"])
    assert published_now.status_code == 200
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(f"{live_url}/portal/annual-reports")
            # One entry for the year, the current report, marked corrected.
            assert page.locator("ol.annual-reports li").count() == 1
            assert page.is_visible("[data-corrected='true']")
            page.click(f"a[href^='/portal/annual-reports/{correction['id']}']")
            page.wait_for_selector("#correction")
            assert "复议决定数据有误" in (page.text_content("#correction") or "")
            page.click(f"#versions a[href^='/portal/annual-reports/{first['id']}']")
            page.wait_for_selector("#superseded")
            assert "复议决定数据有误" in (page.text_content("#superseded") or "")
            page.click("#current-version")
            page.wait_for_selector("#correction")
            assert page.url.endswith(f"/portal/annual-reports/{correction['id']}")
        finally:
            browser.close()
