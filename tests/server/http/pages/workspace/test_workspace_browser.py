"""The evidence workspace in real headless Chromium: a reviewer reads a case and plays a session's real
H.264/AAC segments, jumps to markers, two officers co-sign a written explanation and the verdict changes
(JL-16); an officer of another agency gets nothing (JL-20); every view leaves an audit row.

The screenshots of the README's officer/reviewer workflow are written here, from these very pages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from server.domain.audit import AuditLog
from server.infra.db import session_scope
from tests.fixtures.browser import CHROMIUM, LAUNCH_ARGS, requires_chromium, serve_app
from tests.server.http.pages.workspace.conftest import PASSWORD, Scene

pytestmark = [pytest.mark.browser, requires_chromium]

SCREENSHOTS = Path(__file__).resolve().parents[5] / "docs" / "img"
# Draws the current video frame on a canvas: how many distinct grey levels a coarse sample shows (a black
# or empty frame shows one or two; the test pattern shows many).
_FRAME_COLOURS = """() => {
  const v = document.getElementById('player');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  if (!c.width) { return 0; }
  const x = c.getContext('2d');
  x.drawImage(v, 0, 0);
  const d = x.getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  for (let i = 0; i < d.length; i += 4 * 97) { seen.add(d[i] >> 3); }
  return seen.size;
}"""


@pytest.fixture
def live_url(app: Flask, scene: Scene) -> Iterator[str]:
    """The app with the scene, served over HTTP on a free loopback port."""
    with serve_app(app) as url:
        yield url


def _until(page: Any, script: str, check: Any, timeout: float = 15.0) -> Any:
    """Poll ``script`` until ``check(value)``: the page's CSP forbids the eval ``wait_for_function`` needs."""
    deadline = time.monotonic() + timeout
    value = page.evaluate(script)
    while not check(value):
        assert time.monotonic() < deadline, f"{script} stayed {value!r}"
        page.wait_for_timeout(100)
        value = page.evaluate(script)
    return value


def _sought(page: Any, recording_id: int) -> float:
    """Wait until the player shows ``recording_id``, loaded and positioned; its session-time position."""
    _until(
        page,
        "[document.getElementById('player-wrap').dataset.segment,"
        " document.getElementById('player-wrap').dataset.loading]",
        lambda v: v == [str(recording_id), "0"],
    )
    return float(page.get_attribute("#player-wrap", "data-position") or 0)


def _login(page: Any, live_url: str, username: str, path: str) -> None:
    page.goto(f"{live_url}{path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")


def _shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"workspace-{name}.png"), full_page=True)


def test_jl16_reviewer_plays_the_session_and_two_officers_cosign_in_chromium(
    app: Flask, live_url: str, scene: Scene
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            reviewer = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page = reviewer.new_page()
            _login(page, live_url, "reviewer", "/workspace/cases")
            expect(page.locator("#cases tbody tr")).to_have_count(1)
            _shoot(page, "cases")
            page.click("#cases a")
            completeness = page.locator("#completeness")
            expect(completeness).to_have_attribute("data-complete", "0")
            expect(completeness.locator('li[data-requirement="decision.decided"]')).to_be_visible()
            expect(page.locator('.stage[data-stage="investigation"] li')).to_have_count(1)
            _shoot(page, "case")

            page.click("#recordings a.session-link >> nth=0")
            expect(page.locator("#verdict")).to_have_attribute("data-verdict", "gaps_unexplained")
            expect(page.locator('#gaps li[data-explained="1"]')).to_have_count(1)
            expect(page.locator('#gaps li[data-explained="0"]')).to_have_count(1)
            expect(page.locator('#markers tr[data-marker="m1"]')).to_have_attribute(
                "data-status", "explained_spoken"
            )
            expect(page.locator('#markers tr[data-marker="m2"]')).to_have_attribute(
                "data-status", "unexplained"
            )
            expect(page.locator("#timeline rect.gap.unexplained")).to_have_count(1)

            # Plays: the clock runs and real frames are decoded (not a page that merely loads).
            page.click("#play")
            _until(page, "document.getElementById('player').currentTime", lambda t: t > 1.0)
            assert page.evaluate("document.getElementById('player').paused") is False
            assert int(page.get_attribute("#player-wrap", "data-frames") or 0) > 5
            assert _until(page, _FRAME_COLOURS, lambda n: n > 8) > 8
            _shoot(page, "session")

            # A marker inside a gap plays from the first recorded moment after it: m2 (14 s) → 18 s.
            page.click('#markers button[data-marker="m2"]')
            assert 18.0 <= _sought(page, scene.recording_ids[3]) < 21.0
            # m1 (4 s) → the spoken explanation clip recorded at 8 s.
            page.click('#markers button[data-marker="m1"]')
            assert 8.0 <= _sought(page, scene.recording_ids[1]) < 10.0
            # A bookmark inside a span seeks to its very moment (2 s into the first segment)…
            page.click("#bookmarks button.seek")
            assert 2.0 <= _sought(page, scene.recording_ids[0]) < 3.5
            # …and so does the marker on the timeline itself, by keyboard (Enter on the focused marker).
            page.focus('#timeline g.marker[data-marker="m2"]')
            page.keyboard.press("Enter")
            assert 18.0 <= _sought(page, scene.recording_ids[3]) < 21.0
            session_url = page.url
            reviewer.close()

            # Officer 王 files a written explanation for m2; officer 李 co-signs; the verdict changes.
            wang = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
            _login(wang, live_url, "officer-wang", session_url.removeprefix(live_url))
            wang.select_option("#file-explanation select[name=marker_id]", "m2")
            wang.fill("#file-explanation textarea[name=text]", "执法记录仪故障，14 秒至 18 秒未能录制。")
            wang.click("#file-explanation button[type=submit]")
            expect(wang.locator("#flash")).to_contain_text("书面说明已提交")
            expect(wang.locator("article.explanation")).to_have_attribute("data-complete", "0")
            expect(wang.locator("#verdict")).to_have_attribute("data-verdict", "gaps_unexplained")
            wang.click("form.cosign button")  # the filer signing again is refused like the API
            expect(wang.locator("#flash")).to_contain_text("already_signed")

            li = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
            _login(li, live_url, "officer-li", session_url.removeprefix(live_url))
            li.click("form.cosign button")
            expect(li.locator("#flash")).to_contain_text("已会签")
            expect(li.locator("article.explanation")).to_have_attribute("data-complete", "1")
            expect(li.locator("#verdict")).to_have_attribute("data-verdict", "gaps_explained")
            expect(li.locator('#markers tr[data-marker="m2"]')).to_have_attribute(
                "data-status", "explained_written"
            )
            _shoot(li, "explanation")
            # Readable on a tablet held upright: nothing wider than the screen (tables scroll in place).
            li.set_viewport_size({"width": 768, "height": 1024})
            for path in (session_url.removeprefix(live_url), f"/workspace/cases/{scene.case_id}"):
                li.goto(f"{live_url}{path}")
                assert li.evaluate("document.documentElement.scrollWidth") <= 768, path

            # An officer of another agency: no case, no session, no bytes.
            other_context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            other = other_context.new_page()
            _login(other, live_url, "officer-other", "/workspace/cases")
            expect(other.locator("#cases")).to_have_count(0)
            for path in (f"/workspace/cases/{scene.case_id}", f"/workspace/sessions/{scene.session_pk}"):
                answer = other.goto(f"{live_url}{path}")
                assert answer is not None and answer.status == 404
                assert "皖合市监罚" not in other.content() and "ws-sess-1" not in other.content()
            media = other_context.request.get(
                f"{live_url}/workspace/recordings/{scene.recording_ids[0]}/media"
            )
            assert media.status == 404 and b"ftyp" not in media.body()
        finally:
            browser.close()

    with session_scope(app) as session:
        rows = list(session.scalars(select(AuditLog)))
    by_actor: dict[str, set[str]] = {}
    refused: list[dict[str, Any]] = []
    for row in rows:
        detail = json.loads(row.detail or "{}")
        if detail.get("via") == "workspace":
            by_actor.setdefault(row.actor, set()).add(row.action)
        if detail.get("refused"):
            refused.append({"actor": row.actor, "action": row.action, **detail})
    reviewer_id = str(scene.users["reviewer"])
    assert {"case.list", "case.record", "session.timeline", "recording.media"} <= by_actor[reviewer_id]
    other_id = str(scene.users["other"])
    assert {(r["action"], r["refused"]) for r in refused if r["actor"] == other_id} == {
        ("case.record", "not_found"),
        ("session.timeline", "out_of_scope"),
        ("recording.media", "out_of_scope"),
    }
    actions = {(row.actor, row.action) for row in rows}
    assert (str(scene.users["wang"]), "session.explanation_file") in actions
    assert (str(scene.users["li"]), "session.explanation_sign") in actions
