"""GS-12 withdrawal orders from the workspace in real headless Chromium: a legal reviewer records on a
published item's page that a reconsideration decision revoked it, sees the refusal of a half-filled record
with what was typed kept, then the order with its source and its 3-working-day deadline; an officer (no
such role) and a reviewer of another agency are refused; the reviewer then withdraws the item."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.accounts.service import create_user
from server.domain.audit import AuditLog
from server.domain.people.models import Agency
from server.domain.publicity.models import PublicationItem, WithdrawalOrder
from server.infra.db import session_scope
from tests.fixtures.browser import CHROMIUM, LAUNCH_ARGS, requires_chromium, serve_app
from tests.fixtures.publicity import PASSWORD, Staff, published, staff

__all__ = ["staff"]

pytestmark = [pytest.mark.browser, requires_chromium]

# Friday 20 November 2026: 3 working days later is Wednesday 25 November (the weekend not counted).
REVOKED_ON, DUE_ON = "2026-11-20", "2026-11-25"
BODY, DOCUMENT, DECIDED_ON = "合肥市人民政府", "合政复决字〔2026〕15号", "2026-11-18"


@pytest.fixture
def scene(app: Flask, client: FlaskClient, staff: Staff) -> Iterator[tuple[str, int]]:
    """A published penalty decision of the staff's agency, a reviewer of another agency, the live URL."""
    item = published(client, staff)
    with session_scope(app) as session:
        other = Agency(name="芜湖市市场监督管理局", head="", duties="", address="", contacts="")
        session.add(other)
        session.flush()
        create_user(session, "reviewer-other", PASSWORD, "legal_reviewer", agency_id=other.id)
    with serve_app(app) as url:
        yield url, int(item["id"])


def _login(browser: Any, url: str, path: str, username: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
    page.goto(f"{url}{path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    return page


def test_gs12_a_reviewer_records_a_withdrawal_order_with_its_source_and_sees_its_deadline_in_chromium(
    app: Flask, scene: tuple[str, int]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, item_id = scene
    path = f"/workspace/publication-review/{item_id}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = _login(browser, url, path, "legal_reviewer-p")
            expect(page.locator("#item-state")).to_have_attribute("data-state", "published")
            expect(page.locator("#withdrawal-due")).to_have_count(0)
            form = page.locator("#withdrawal-order")
            form.locator("input[name=reason]").fill("复议决定撤销原处罚决定")
            form.locator("input[name=revoked_on]").fill(REVOKED_ON)
            form.locator('select[name="source.kind"]').select_option("reconsideration")
            form.locator('input[name="source.body"]').fill(BODY)
            form.locator('input[name="source.decided_on"]').fill(DECIDED_ON)
            # The document number is left out: the API's parser refuses the record by name.
            form.locator("button[type=submit]").click()
            expect(page.locator("#order-error")).to_have_text(
                "source.document_number 须为不超过 128 字的非空文本（复议决定书或裁判文书的文号） "
                "(invalid_request)"
            )
            expect(page.locator('#withdrawal-order input[name="source.body"]')).to_have_value(BODY)
            expect(page.locator("#withdrawal-order input[name=revoked_on]")).to_have_value(REVOKED_ON)
            expect(page.locator("#withdrawal-orders")).to_have_count(0)

            page.locator('#withdrawal-order input[name="source.document_number"]').fill(DOCUMENT)
            page.locator("#withdrawal-order button[type=submit]").click()
            expect(page.locator("#flash")).to_have_text(f"撤回令已登记，撤回期限 {DUE_ON}")
            expect(page.locator("#item-state")).to_have_attribute("data-state", "published")
            due = page.locator("#withdrawal-due")
            expect(due).to_have_text(DUE_ON)
            # Past its deadline and still published (the run is after 25 November 2026): marked late.
            expect(due).to_have_attribute("data-overdue", "true")
            expect(page.locator("#item-state")).to_contain_text("已逾期未撤回")
            order = page.locator("#withdrawal-orders li")
            expect(order).to_have_count(1)
            expect(order).to_have_attribute("data-due", DUE_ON)
            expect(order).to_contain_text(f"撤销之日 {REVOKED_ON}")
            expect(order).to_contain_text("复议决定撤销原处罚决定")
            expect(order.locator(".order-source")).to_have_text(
                f"行政复议决定: {BODY} {DOCUMENT}（{DECIDED_ON}）"
            )

            english = browser.new_context(locale="en-US").new_page()
            english.context.add_cookies(page.context.cookies())
            english.goto(f"{url}{path}?lang=en")
            expect(english.locator("#withdrawal-orders .order-source")).to_contain_text(
                f"reconsideration decision: {BODY} {DOCUMENT}"
            )
            expect(english.locator("#item-state")).to_contain_text(f"Withdraw by: {DUE_ON}")

            # An officer may read the item but holds no reviewer's duty: no form, and a forged POST is 403.
            officer = _login(browser, url, path, "officer-p")
            expect(officer.locator("#item-state")).to_have_attribute("data-state", "published")
            expect(officer.locator("#withdrawal-orders li")).to_have_count(1)
            expect(officer.locator("#withdrawal-order")).to_have_count(0)
            csrf = officer.locator("input[name=csrf_token]").first.get_attribute("value")
            forged = officer.request.post(
                f"{url}{path}/withdrawal-order",
                form={"csrf_token": csrf or "", "reason": "越权登记", "revoked_on": REVOKED_ON},
                max_redirects=0,
            )
            assert forged.status == 403

            # A reviewer of another agency: the item does not exist for them, in any form (JL-20).
            stranger = _login(browser, url, "/workspace/publication-review", "reviewer-other")
            response = stranger.goto(f"{url}{path}")
            assert response is not None and response.status == 404
            expect(stranger.locator("body")).not_to_contain_text(DOCUMENT)
            csrf = stranger.locator("input[name=csrf_token]").first.get_attribute("value")
            foreign = stranger.request.post(
                f"{url}{path}/withdrawal-order",
                form={"csrf_token": csrf or "", "reason": "越权登记", "revoked_on": REVOKED_ON},
                max_redirects=0,
            )
            assert foreign.status == 404

            # The reviewer finds the item among the published ones, and withdraws it: the deadline stands.
            page.goto(f"{url}/workspace/publication-review")
            row = page.locator(f'#published tr[data-item="{item_id}"]')
            expect(row).to_contain_text(DUE_ON)
            row.locator("a").click()
            page.locator("#withdraw input[name=reason]").fill("该处罚决定已被复议机关撤销")
            page.locator("#withdraw button[type=submit]").click()
            expect(page.locator("#flash")).to_have_text("已撤回，公示页仅保留撤回说明")
            expect(page.locator("#item-state")).to_have_attribute("data-state", "withdrawn")
            expect(page.locator("#withdrawal-due")).to_have_text(DUE_ON)
            expect(page.locator("#withdrawal-due")).not_to_have_attribute("data-overdue", "true")
            expect(page.locator("#withdrawal-order")).to_have_count(0)
        finally:
            browser.close()

    with session_scope(app) as session:
        [stored] = session.scalars(select(WithdrawalOrder)).all()
        assert (stored.source_kind, stored.source_body, stored.source_document) == (
            "reconsideration",
            BODY,
            DOCUMENT,
        )
        assert (stored.source_decided_on.isoformat() if stored.source_decided_on else None) == DECIDED_ON
        assert (stored.revoked_on.isoformat(), stored.due_on.isoformat()) == (REVOKED_ON, DUE_ON)
        item = session.get(PublicationItem, item_id)
        assert item is not None and item.state == "withdrawn"
        assert item.withdrawal_reason == "该处罚决定已被复议机关撤销"
        assert item.withdrawal_due_on is not None and item.withdrawal_due_on.isoformat() == DUE_ON
        # Audited as the API audits it: one row, by the service, naming the source.
        [audit] = session.scalars(
            select(AuditLog).where(AuditLog.action == "publicity.order_withdrawal")
        ).all()
        assert audit.detail_dict()["source"]["document_number"] == DOCUMENT
        assert audit.detail_dict()["due_on"] == DUE_ON
