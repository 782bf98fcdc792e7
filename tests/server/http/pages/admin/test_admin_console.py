"""The device admin console ``/admin/``: cookie session, CSRF, roles, filters, bulk actions, charts, audit,
list latency at 2,000 devices, and the whole flow in headless Chromium."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import unquote

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.accounts.service import create_user
from server.domain.audit import AuditLog
from server.domain.base import utcnow
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import DeviceAssignment, DeviceCommand, DeviceConfigVersion
from server.domain.fleet.service import set_profile
from server.domain.fleet.telemetry_models import DeviceHealthSample, DevicePresence
from server.http.pages.admin.console import PAGE_SIZE, TEXT
from server.infra.db import session_scope
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, raw_public_key
from tests.fixtures.browser import CHROMIUM, LAUNCH_ARGS, requires_chromium, serve_app

PASSWORD = "console-pass-123"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LOGIN_CSRF = re.compile(r'name="login_csrf" value="([^"]+)"')


def _health(session: Session, device_id: str, *, ago: timedelta = timedelta(0), **values: object) -> None:
    at = utcnow() - ago
    row = {
        "backlog_bytes": 0,
        "backlog_segments": 0,
        "oldest_pending_age_s": None,
        "free_bytes": 10 * 1024**3,
        "battery_pct": 90,
        "recording": False,
        "extra": {},
        "at": at,
        "received_at": at,
    } | values
    session.add(DeviceHealthSample(device_id=device_id, **row))


def _device(
    session: Session, device_id: str, *, group: str = "", online: bool = False, **health: object
) -> None:
    register_device(
        session, device_id, raw_public_key(Ed25519PrivateKey.generate()), f"SN-{device_id}", "DSJ-X1"
    )
    if group:
        set_profile(session, device_id, group_name=group, actor="test")
    if online:
        session.add(DevicePresence(device_id=device_id, state="online", at=utcnow(), agent_version="1.0"))
    _health(session, device_id, **health)
    session.flush()


@pytest.fixture
def fleet(app: Flask) -> dict[str, int]:
    """Accounts (device admin, supervisor, officer) and four devices with different health."""
    with session_scope(app) as session:
        users = {
            role: create_user(session, f"{role}-c", PASSWORD, role).id
            for role in ("device_admin", "supervisor", "officer", "legal_reviewer")
        }
        _device(session, "rec-a", group="一中队", online=True, battery_pct=95)
        _device(session, "rec-b", group="一中队", battery_pct=30, oldest_pending_age_s=21 * 3600)
        _device(session, "rec-c", group="二中队", online=True, battery_pct=80, oldest_pending_age_s=3600)
        _device(session, "rec-d", group="二中队", battery_pct=60, free_bytes=1024**3)
    return users


def _login(client: FlaskClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; return the CSRF value of the first console page."""
    form = client.get("/admin/login").get_data(as_text=True)
    token = _LOGIN_CSRF.search(form)
    assert token is not None
    answer = client.post(
        "/admin/login", data={"username": username, "password": password, "login_csrf": token.group(1)}
    )
    assert answer.status_code == 303, answer.get_data(as_text=True)
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200
    match = _CSRF.search(page.get_data(as_text=True))
    assert match is not None
    return match.group(1)


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-device="([^"]+)"', html)


def test_login_cookie_is_httponly_strict_secure_and_the_api_stays_bearer_only(
    client: FlaskClient, fleet: dict[str, int], auth: dict[str, str]
) -> None:
    """The console session is a cookie JWT scoped to /admin; bearer headers still work on the API, and the
    console cookie does not authorise an API call."""
    form = client.get("/admin/login").get_data(as_text=True)
    token = _LOGIN_CSRF.search(form)
    assert token is not None
    answer = client.post(
        "/admin/login",
        data={"username": "device_admin-c", "password": PASSWORD, "login_csrf": token.group(1)},
    )
    assert answer.status_code == 303
    cookie = next(h for h in answer.headers.getlist("Set-Cookie") if h.startswith("zfjl_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    assert "Path=/admin" in cookie
    jwt = cookie.split(";")[0].split("=", 1)[1]
    assert client.get("/admin/devices").status_code == 200
    assert client.get("/api/v1/fleet/devices", headers=auth).status_code == 200
    assert client.get("/api/v1/fleet/devices", headers={"Cookie": f"zfjl_console={jwt}"}).status_code == 401
    assert client.get("/api/v1/fleet/devices", headers={"Authorization": f"Bearer {jwt}"}).status_code == 200


def test_login_refuses_bad_passwords_forged_forms_and_roles_outside_the_fleet(
    client: FlaskClient, fleet: dict[str, int]
) -> None:
    """Wrong password 401, no login CSRF token 400, an officer or legal reviewer 403; no session given."""
    form = client.get("/admin/login").get_data(as_text=True)
    token = _LOGIN_CSRF.search(form)
    assert token is not None
    sent = {"username": "device_admin-c", "password": "wrong-password", "login_csrf": token.group(1)}
    assert client.post("/admin/login", data=sent).status_code == 401
    forged = sent | {"password": PASSWORD, "login_csrf": "forged"}
    assert client.post("/admin/login", data=forged).status_code == 400
    for username in ("officer-c", "legal_reviewer-c"):
        refused = client.post("/admin/login", data=sent | {"username": username, "password": PASSWORD})
        assert refused.status_code == 403
        assert not any(h.startswith("zfjl_console=") for h in refused.headers.getlist("Set-Cookie"))
    assert client.get("/admin/devices").status_code == 303


def test_pages_need_a_session_and_redirect_to_the_login(client: FlaskClient) -> None:
    """Without the cookie every page sends the browser to the login form, keeping where it was going."""
    answer = client.get("/admin/devices?status=active")
    assert answer.status_code == 303 and "/admin/login" in answer.headers["Location"]
    assert "next=" in answer.headers["Location"]


def test_posts_without_the_csrf_value_are_refused(
    app: Flask, client: FlaskClient, fleet: dict[str, int]
) -> None:
    """A POST form without (or with a wrong) CSRF value changes nothing."""
    csrf = _login(client, "device_admin-c")
    form = {"action": "assign", "device": "rec-a", "user_id": str(fleet["officer"])}
    assert client.post("/admin/devices/bulk", data=form).status_code == 400
    assert client.post("/admin/devices/bulk", data=form | {"csrf_token": "x" + csrf}).status_code == 400
    with session_scope(app) as session:
        assert session.scalar(select(func.count(DeviceAssignment.id))) == 0


def test_read_only_roles_see_the_fleet_but_cannot_act(
    app: Flask, client: FlaskClient, fleet: dict[str, int]
) -> None:
    """A supervisor may look (fleet.list_devices) but not check out (fleet.check_out), as on the API."""
    csrf = _login(client, "supervisor-c")
    html = client.get("/admin/devices").get_data(as_text=True)
    assert _rows(html) == ["rec-a", "rec-b", "rec-c", "rec-d"]
    assert "bulk-assign" not in html and TEXT["zh"]["read_only"] in html
    form = {"action": "assign", "device": "rec-a", "user_id": str(fleet["officer"]), "csrf_token": csrf}
    assert client.post("/admin/devices/bulk", data=form).status_code == 403
    assert client.get("/admin/devices/rec-a/revoke").status_code == 403
    assert client.get("/admin/alerts").status_code == 200
    with session_scope(app) as session:
        assert session.scalar(select(func.count(DeviceAssignment.id))) == 0


def test_filters_by_status_group_presence_backlog_and_battery(
    client: FlaskClient, fleet: dict[str, int]
) -> None:
    """Each filter narrows the list; a backlog at JL-17's 20 h warning is shown in red."""
    _login(client, "device_admin-c")

    def listed(query: str) -> list[str]:
        return _rows(client.get(f"/admin/devices?{query}").get_data(as_text=True))

    assert listed("") == ["rec-a", "rec-b", "rec-c", "rec-d"]
    assert listed("group=二中队") == ["rec-c", "rec-d"]
    assert listed("presence=online") == ["rec-a", "rec-c"]
    assert listed("presence=offline") == ["rec-b", "rec-d"]
    assert listed("min_backlog_age_h=20") == ["rec-b"]
    assert listed("max_battery_pct=60") == ["rec-b", "rec-d"]
    assert listed("max_battery_pct=60&group=一中队") == ["rec-b"]
    assert listed("status=lost") == []
    assert listed("max_battery_pct=abc") == ["rec-a", "rec-b", "rec-c", "rec-d"]
    html = client.get("/admin/devices?min_backlog_age_h=20").get_data(as_text=True)
    assert 'class="num overdue">21.0 h' in html


def test_bulk_assign_reports_each_device_in_the_flash_message(
    app: Flask, client: FlaskClient, fleet: dict[str, int]
) -> None:
    """rec-a is checked out; rec-b (30 %) is refused by the battery minimum, and the flash says so."""
    csrf = _login(client, "device_admin-c")
    answer = client.post(
        "/admin/devices/bulk",
        data={
            "action": "assign",
            "device": ["rec-a", "rec-b"],
            "user_id": str(fleet["officer"]),
            "csrf_token": csrf,
            "next": "/admin/devices?group=一中队",
        },
    )
    assert answer.status_code == 303 and unquote(answer.headers["Location"]) == "/admin/devices?group=一中队"
    html = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert TEXT["zh"]["done"].format(ok=1, n=2) in html and "rec-b：电量 30%" in html
    assert 'id="flash"' not in client.get("/admin/devices").get_data(as_text=True)  # shown once
    with session_scope(app) as session:
        rows = session.scalars(select(DeviceAssignment)).all()
        assert [(r.device_id, r.user_id) for r in rows] == [("rec-a", fleet["officer"])]


def test_bulk_command_and_config_go_through_the_fleet_services(
    app: Flask, client: FlaskClient, fleet: dict[str, int]
) -> None:
    """Commands are queued and a configuration version stored per device; bad values are refused."""
    csrf = _login(client, "device_admin-c")
    base = {"device": ["rec-c", "rec-d"], "csrf_token": csrf}
    client.post("/admin/devices/bulk", data=base | {"action": "command", "kind": "sync_clock"})
    client.post("/admin/devices/bulk", data=base | {"action": "config", "cfg_segment_seconds": "120"})
    bad = client.post("/admin/devices/bulk", data=base | {"action": "config", "cfg_segment_seconds": "5"})
    assert TEXT["zh"]["done"].format(ok=0, n=2) in client.get(bad.headers["Location"]).get_data(as_text=True)
    with session_scope(app) as session:
        commands = session.scalars(select(DeviceCommand).order_by(DeviceCommand.device_id)).all()
        assert [(c.device_id, c.kind, c.state) for c in commands] == [
            ("rec-c", "sync_clock", "queued"),
            ("rec-d", "sync_clock", "queued"),
        ]
        versions = session.scalars(select(DeviceConfigVersion)).all()
        assert sorted(v.target for v in versions) == ["rec-c", "rec-d"]
        assert all(v.settings == {"segment_seconds": 120} for v in versions)


def test_device_page_draws_24h_health_charts_from_samples(
    app: Flask, client: FlaskClient, fleet: dict[str, int]
) -> None:
    """One point per health sample of the last 24 h (the 30 h old one is left out), as inline SVG."""
    with session_scope(app) as session:
        for hours in (2, 5, 9, 30):
            _health(session, "rec-a", ago=timedelta(hours=hours), battery_pct=90 - hours)
    _login(client, "device_admin-c")
    html = client.get("/admin/devices/rec-a").get_data(as_text=True)
    for series in ("battery", "free_storage", "backlog_age"):
        svg = re.search(
            rf'<svg class="chart" data-series="{series}" data-points="(\d+)".*?</svg>', html, re.S
        )
        assert svg is not None and svg.group(1) == "4"
        assert svg.group(0).count("<circle") == 4
    assert "SN-rec-a" in html and "DSJ-X1" in html
    assert client.get("/admin/devices/no-such").status_code == 404


def test_every_page_view_of_device_data_is_audited(
    app: Flask, client: FlaskClient, fleet: dict[str, int]
) -> None:
    """List, device and alert views leave an audit row naming the viewer, like the API's reads."""
    _login(client, "supervisor-c")
    client.get("/admin/devices?group=一中队")
    client.get("/admin/devices/rec-b")
    client.get("/admin/alerts")
    with session_scope(app) as session:
        rows = session.scalars(select(AuditLog).where(AuditLog.action.like("device.%"))).all()
        views = [(r.action, r.target_id, r.actor) for r in rows if r.detail_dict().get("via") == "console"]
    actor = str(fleet["supervisor"])
    assert views == [
        ("device.list", None, actor),
        ("device.list", None, actor),
        ("device.view", "rec-b", actor),
        ("device.alerts", None, actor),
    ]


def test_revoke_needs_the_confirm_step_and_rotation_shows_the_password_once(
    app: Flask, client: FlaskClient, fleet: dict[str, int]
) -> None:
    """Revocation without the confirm box goes to the confirm page; with it the device is lost."""
    csrf = _login(client, "device_admin-c")
    unconfirmed = client.post("/admin/devices/rec-d/revoke", data={"csrf_token": csrf, "status": "lost"})
    assert unconfirmed.status_code == 303 and unconfirmed.headers["Location"].endswith(
        "/admin/devices/rec-d/revoke"
    )
    confirmed = client.post(
        "/admin/devices/rec-d/revoke", data={"csrf_token": csrf, "status": "lost", "confirm": "yes"}
    )
    assert confirmed.status_code == 303
    assert _rows(client.get("/admin/devices?status=lost").get_data(as_text=True)) == ["rec-d"]
    rotated = client.post("/admin/devices/rec-a/credentials", data={"csrf_token": csrf})
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    assert re.search(r'<code id="password">[\w-]{24,}</code>', rotated.get_data(as_text=True))


def test_logout_revokes_the_session_token(client: FlaskClient, fleet: dict[str, int]) -> None:
    """After logout the old cookie value is refused (revoked), not just forgotten by the browser."""
    csrf = _login(client, "device_admin-c")
    jwt = client.get_cookie("zfjl_console", path="/admin")
    assert jwt is not None
    assert client.post("/admin/logout", data={"csrf_token": csrf}).status_code == 303
    client.set_cookie("zfjl_console", jwt.value, path="/admin")
    assert client.get("/admin/devices").status_code == 303


def test_english_by_query_or_accept_language(client: FlaskClient, fleet: dict[str, int]) -> None:
    """zh-CN by default; ?lang=en or an English Accept-Language switches; both texts have the same keys."""
    assert TEXT["zh"].keys() == TEXT["en"].keys()
    assert "执法记录仪管理控制台" in client.get("/admin/login").get_data(as_text=True)
    assert TEXT["en"]["title"] in client.get("/admin/login?lang=en").get_data(as_text=True)
    client.delete_cookie("zfjl_console_lang", path="/admin")
    english = client.get("/admin/login", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert TEXT["en"]["title"] in english.get_data(as_text=True)


def test_system_admin_may_use_the_console(client: FlaskClient, fleet: dict[str, int]) -> None:
    """system_admin passes every role check, as on the API."""
    _login(client, ADMIN_USER, ADMIN_PASSWORD)
    assert "bulk-assign" in client.get("/admin/devices").get_data(as_text=True)


# -- latency at fleet scale ------------------------------------------------------------------------


def test_device_list_latency_with_2000_devices(app: Flask, client: FlaskClient) -> None:
    """The list page at 2,000 devices (3 health samples each) answers in well under a second: the overview
    is two queries, not five per device. Prints the median of 20 requests (goal < 300 ms)."""
    with session_scope(app) as session:
        create_user(session, "bench-admin", PASSWORD, "device_admin")
        for n in range(2000):
            device_id = f"rec-{n:04d}"
            register_device(session, device_id, raw_public_key(Ed25519PrivateKey.generate()), f"SN{n}", "X1")
            if n % 2:
                session.add(
                    DevicePresence(device_id=device_id, state="online", at=utcnow(), agent_version="1")
                )
            for hours in (1, 5, 9):
                _health(session, device_id, ago=timedelta(hours=hours), battery_pct=(n + hours) % 100)
    _login(client, "bench-admin")
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        answer = client.get("/admin/devices?page=3")
        timings.append(time.perf_counter() - started)
        assert answer.status_code == 200
    assert len(_rows(answer.get_data(as_text=True))) == PAGE_SIZE
    median_ms = statistics.median(timings) * 1000
    print(f"\n/admin/devices with 2000 devices: median {median_ms:.0f} ms of 20 requests")
    assert median_ms < 1000


# -- headless Chromium -----------------------------------------------------------------------------


@pytest.fixture
def live_url(app: Flask, fleet: dict[str, int]) -> Iterator[str]:
    """The app served over HTTP on a free loopback port."""
    with serve_app(app) as url:
        yield url


@pytest.mark.browser
@requires_chromium
def test_console_in_chromium_login_filter_chart_and_bulk_assign(
    app: Flask, live_url: str, fleet: dict[str, int]
) -> None:
    """Log in, filter, open a device (its SVG chart has one point per sample), bulk-assign, see the flash."""
    from playwright.sync_api import expect, sync_playwright

    with session_scope(app) as session:
        for hours in (3, 6):
            _health(session, "rec-c", ago=timedelta(hours=hours), battery_pct=85)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.goto(f"{live_url}/admin/devices")
            page.fill("input[name=username]", "device_admin-c")
            page.fill("input[name=password]", PASSWORD)
            page.click("#login button[type=submit]")
            expect(page.locator("#devices tbody tr")).to_have_count(4)

            page.select_option("select[name=group]", "二中队")
            page.click("#apply-filters")
            expect(page.locator("#devices tbody tr")).to_have_count(2)
            page.click("text=rec-c")
            chart = page.locator('svg.chart[data-series="battery"]')
            expect(chart).to_have_attribute("data-points", "3")
            expect(chart.locator("circle")).to_have_count(3)

            page.click("header >> text=" + TEXT["zh"]["devices"])
            page.check('input.pick[value="rec-a"]')
            page.check('input.pick[value="rec-c"]')
            page.select_option("#bulk-officer", str(fleet["officer"]))
            page.click("#bulk-assign")
            expect(page.locator("#flash")).to_contain_text(TEXT["zh"]["done"].format(ok=2, n=2))
            expect(page.locator('tr[data-device="rec-a"] td.officer')).to_contain_text("officer-c")
            expect(page.locator('tr[data-device="rec-c"] td.officer')).to_contain_text("officer-c")

            page.click("#logout")
            expect(page.locator("#login")).to_be_visible()
        finally:
            browser.close()


def test_session_slides_forward_keeping_the_csrf_value(
    app: Flask, client: FlaskClient, fleet: dict[str, int]
) -> None:
    """Past half its life the token is replaced (same CSRF claim), so open forms keep working."""
    csrf = _login(client, "device_admin-c")
    first = client.get_cookie("zfjl_console", path="/admin")
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(minutes=40)  # the 15 min token is now "old"
    answer = client.get("/admin/devices")
    assert any(h.startswith("zfjl_console=") for h in answer.headers.getlist("Set-Cookie"))
    second = client.get_cookie("zfjl_console", path="/admin")
    assert first is not None and second is not None and second.value != first.value
    form = {"action": "command", "kind": "locate", "device": "rec-a", "csrf_token": csrf}
    assert client.post("/admin/devices/bulk", data=form).status_code == 303
