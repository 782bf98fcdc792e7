"""The mobile credential page and the verification page in real headless Chromium (GS-10(1), JL-8(1)).

The QR code is decoded from a screenshot with zxing-cpp, and the decoded URL is opened in the browser:
what a party's phone would do.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask

from server.domain.cases.models import CaseEvent
from server.infra.db import session_scope
from tests.fixtures.browser import CHROMIUM, LAUNCH_ARGS, requires_chromium, serve_app
from tests.fixtures.people import PASSWORD, World

pytestmark = [
    pytest.mark.browser,
    requires_chromium,
]


@pytest.fixture
def live_url(app: Flask, world: World) -> Iterator[str]:
    """The app served over HTTP on a free loopback port."""
    with serve_app(app) as url:
        yield url


def _decode_qr(png: bytes) -> str:
    """The text of the one QR code in a PNG screenshot."""
    cv2 = pytest.importorskip("cv2")
    numpy = pytest.importorskip("numpy")
    zxingcpp = pytest.importorskip("zxingcpp")
    image = cv2.imdecode(numpy.frombuffer(png, dtype=numpy.uint8), cv2.IMREAD_GRAYSCALE)
    results = zxingcpp.read_barcodes(image)
    assert len(results) == 1, f"expected one QR code, found {len(results)}"
    return str(results[0].text)


def test_gs10_mobile_credential_qr_decodes_to_a_token_the_verify_page_accepts(
    app: Flask, live_url: str, world: World
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page.goto(f"{live_url}/m/")
            page.wait_for_selector("#app[data-ready='1']")
            manifest = page.evaluate(
                "fetch(document.querySelector('link[rel=manifest]').href).then(r => r.json())"
            )
            assert manifest["display"] == "standalone" and manifest["icons"]
            page.fill("#username", "officer-a")
            page.fill("#password", PASSWORD)
            page.click("#login button[type=submit]")
            page.wait_for_selector("#qr svg")
            assert page.text_content("#c-name") == "王执法"
            assert page.text_content("#c-number") == "AH-0001"
            token = page.get_attribute("#qr", "data-token")
            assert token

            decoded = _decode_qr(page.locator("#qr").screenshot())
            assert decoded == f"{live_url}/verify/{token}"

            page.click("#show")
            # (No wait_for_function: the page's CSP forbids the eval it needs, as it should.)
            expect(page.locator("#shown")).to_contain_text("已记录出示证件")

            scan = browser.new_page(viewport={"width": 390, "height": 844})
            scan.goto(decoded)
            assert scan.get_attribute(".verdict", "data-outcome") == "valid"
            assert "该执法证件当前有效" in (scan.text_content(".verdict") or "")
            assert scan.text_content("[data-field=name]") == "王执法"
            assert scan.evaluate("document.querySelector('.photo').naturalWidth") >= 1
            scan.click("a.lang")
            assert "This credential is valid now" in (scan.text_content(".verdict") or "")

            scan.goto(f"{live_url}/verify")
            scan.fill("#cert", "AH-0002")
            scan.click("form.lookup button")
            assert scan.get_attribute(".verdict", "data-outcome") == "valid"
            scan.goto(decoded[:-6] + ("AAAAAA" if not decoded.endswith("AAAAAA") else "BBBBBB"))
            assert scan.get_attribute(".verdict", "data-outcome") == "forged"
        finally:
            browser.close()
    with session_scope(app) as session:
        shown = session.query(CaseEvent).filter_by(event_type="investigation.credential_shown").one()
        assert shown.source == "mobile" and shown.officer_ids == [world.officer_a]


def test_gs10_offline_credential_page_rotates_to_the_next_minutes_code(live_url: str, world: World) -> None:
    """GS-10(1) offline: with the network gone, the page still shows the code of the current minute, moves
    to the next minute's code when the minute turns (the page's clock is driven, not waited for), and
    reloads from its service worker; ``/verify`` takes each code in its own minute only."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page = context.new_page()
            page.clock.install()
            page.goto(f"{live_url}/m/")
            page.wait_for_selector("#app[data-ready='1']")
            page.fill("#username", "officer-a")
            page.fill("#password", PASSWORD)
            page.click("#login button[type=submit]")
            page.wait_for_selector("#qr svg")
            assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")
            batch = page.evaluate("JSON.parse(localStorage.getItem('zfjl.credential_batch'))")
            codes = [t["token"] for t in batch["tokens"]]
            assert len(codes) == 720  # 12 h, one per minute
            now_code = page.get_attribute("#qr", "data-token")
            assert now_code in codes
            next_code = codes[codes.index(now_code) + 1]

            context.set_offline(True)
            page.clock.fast_forward(60_000)
            expect(page.locator("#qr")).to_have_attribute("data-token", next_code)
            assert _decode_qr(page.locator("#qr").screenshot()) == f"{live_url}/verify/{next_code}"
            assert page.text_content("#c-name") == "王执法"

            page.reload()  # no network: the service worker serves the page, the batch is in storage
            page.wait_for_selector("#qr svg")
            expect(page.locator("#qr")).to_have_attribute("data-token", next_code)
            assert page.evaluate("navigator.serviceWorker.controller !== null")

            # A party's phone, online, at the real time: the code of this minute is taken (it stays valid
            # 10 s past its minute, the clock skew), the one two minutes ahead is not yet.
            real = datetime.now(UTC)
            [current] = [
                i
                for i, t in enumerate(batch["tokens"])
                if datetime.fromisoformat(t["valid_from"]) <= real < datetime.fromisoformat(t["valid_to"])
            ]
            scan = browser.new_page()
            scan.goto(f"{live_url}/verify/{codes[current]}")
            assert scan.get_attribute(".verdict", "data-outcome") == "valid"
            scan.goto(f"{live_url}/verify/{codes[current + 2]}")
            assert scan.get_attribute(".verdict", "data-outcome") == "replayed"
        finally:
            browser.close()
