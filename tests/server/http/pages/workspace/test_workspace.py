"""The evidence workspace without a browser: session cookie, CSRF, roles, scope, audit, Range, the 24-hour
rule, filters, language, and the case file's server time at 200 events and 50 recordings."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.domain.accounts.models import User
from server.domain.audit import AuditLog
from server.domain.base import utcnow
from server.domain.cases import attachments as case_attachments
from server.domain.cases import service as case_service
from server.domain.cases.inputs import StatusChange
from server.domain.fleet.devices import register_device
from server.domain.fleet.telemetry_models import DeviceHealthSample
from server.domain.people.service import Caller
from server.domain.sessions.models import ExplanationSignature
from server.infra.db import session_scope
from tests.conftest import SegmentFactory
from tests.server.domain.sessions.conftest import Recorder, hand_over
from tests.server.http.pages.workspace.conftest import Scene, commit_media, login

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _audits(app: Flask, action: str) -> list[dict[str, object]]:
    with session_scope(app) as session:
        rows = session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))
        return [{"actor": r.actor, "target": r.target_id, **json.loads(r.detail or "{}")} for r in rows]


def test_session_cookie_is_scoped_to_the_workspace_and_never_authorises_the_api(
    client: FlaskClient, scene: Scene
) -> None:
    """HttpOnly, SameSite=Strict, Secure, Path=/workspace; the same JWT as a cookie on /api/ is refused."""
    form = client.get("/workspace/login").get_data(as_text=True)
    token = re.search(r'name="login_csrf" value="([^"]+)"', form)
    assert token is not None
    answer = client.post(
        "/workspace/login",
        data={"username": "reviewer", "password": "officer-password-1", "login_csrf": token.group(1)},
    )
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/workspace/cases")
    cookie = next(h for h in answer.headers.getlist("Set-Cookie") if h.startswith("zfjl_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    assert "Path=/workspace" in cookie
    jwt = cookie.split(";")[0].split("=", 1)[1]
    assert client.get("/workspace/cases").status_code == 200
    assert client.get("/api/v1/cases", headers={"Cookie": f"zfjl_console={jwt}"}).status_code == 401
    # Nor does it open the admin console (another area, another path).
    assert client.get("/admin/devices").status_code == 303


def test_login_refuses_wrong_passwords_and_forged_forms(client: FlaskClient, scene: Scene) -> None:
    form = client.get("/workspace/login").get_data(as_text=True)
    token = re.search(r'name="login_csrf" value="([^"]+)"', form)
    assert token is not None
    sent = {"username": "reviewer", "password": "wrong-password", "login_csrf": token.group(1)}
    assert client.post("/workspace/login", data=sent).status_code == 401
    forged = sent | {"password": "officer-password-1", "login_csrf": "forged"}
    assert client.post("/workspace/login", data=forged).status_code == 400
    answer = client.get("/workspace/sessions?verdict=gaps_unexplained")
    assert answer.status_code == 303 and "/workspace/login" in answer.headers["Location"]
    assert "next=" in answer.headers["Location"]


def test_pages_carry_a_strict_csp_without_inline_script(client: FlaskClient, scene: Scene) -> None:
    login(client, "reviewer")
    page = client.get(f"/workspace/sessions/{scene.session_pk}")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "media-src 'self'" in csp
    html = page.get_data(as_text=True)
    assert "<script>" not in html and " on" + "click=" not in html and "style=" not in html
    # Both review queues (issues 10 and 11) are registered, so both are linked.
    assert 'data-nav="publication_review"' in html and 'data-nav="approvals"' in html
    assert 'data-nav="cases"' in html and 'data-nav="devices"' in html
    assert page.headers["Cache-Control"] == "no-store"


def test_posts_without_the_csrf_value_change_nothing(app: Flask, client: FlaskClient, scene: Scene) -> None:
    csrf = login(client, "officer-wang")
    url = f"/workspace/sessions/{scene.session_pk}/explanations"
    form = {"text": "设备故障", "marker_id": "m2"}
    assert client.post(url, data=form).status_code == 400
    assert client.post(url, data=form | {"csrf_token": "x" + csrf}).status_code == 400
    assert client.post(url, data=form | {"csrf_token": csrf}).status_code == 303
    with session_scope(app) as session:
        assert session.scalar(select(func.count(ExplanationSignature.id))) == 1


def test_jl16_explanations_follow_the_api_rules_and_codes(
    app: Flask, client: FlaskClient, scene: Scene
) -> None:
    """A reviewer may read but not sign; the filer cannot co-sign; an empty text is refused precisely."""
    csrf = login(client, "reviewer")
    refused = client.post(
        f"/workspace/sessions/{scene.session_pk}/explanations",
        data={"text": "x", "marker_id": "m2", "csrf_token": csrf},
    )
    assert refused.status_code == 403
    client.post("/workspace/logout", data={"csrf_token": csrf})

    csrf = login(client, "officer-wang")
    base = f"/workspace/sessions/{scene.session_pk}"
    empty = client.post(f"{base}/explanations", data={"text": "  ", "marker_id": "m2", "csrf_token": csrf})
    assert empty.status_code == 303
    page = client.get(empty.headers["Location"]).get_data(as_text=True)
    assert "说明内容须为" in page
    filed = client.post(
        f"{base}/explanations", data={"text": "设备故障", "marker_id": "m2", "csrf_token": csrf}
    )
    page = client.get(filed.headers["Location"]).get_data(as_text=True)
    eid = re.search(r'data-explanation="(\d+)"', page)
    assert eid is not None
    again = client.post(f"{base}/explanations/{eid.group(1)}/sign", data={"csrf_token": csrf})
    assert "already_signed" in client.get(again.headers["Location"]).get_data(as_text=True)
    unknown = client.post(f"{base}/explanations", data={"text": "x", "marker_id": "m9", "csrf_token": csrf})
    assert "中断标记 m9 不存在 (not_found)" in client.get(unknown.headers["Location"]).get_data(as_text=True)


def test_media_answers_range_and_audits_every_request(app: Flask, client: FlaskClient, scene: Scene) -> None:
    login(client, "reviewer")
    url = f"/workspace/recordings/{scene.recording_ids[0]}/media"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.data[4:8] == b"ftyp"
    part = client.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.data) == 100
    assert part.headers["Content-Range"] == f"bytes 0-99/{len(whole.data)}"
    assert part.data == whole.data[:100]
    assert client.get(url, headers={"Range": f"bytes={len(whole.data)}-"}).status_code == 416
    saved = client.get(url + "?download=1")
    assert saved.headers["Content-Disposition"].startswith("attachment;")
    rows = [r for r in _audits(app, "recording.media") if r.get("via") == "workspace"]
    assert [r["range"] for r in rows] == [None, "bytes=0-99", f"bytes={len(whole.data)}-", None]
    assert {r["actor"] for r in rows} == {str(scene.users["reviewer"])}


def test_jl20_another_agency_reads_like_missing_and_each_refusal_is_audited(
    app: Flask, client: FlaskClient, scene: Scene
) -> None:
    login(client, "officer-other")
    assert "皖合市监罚" not in client.get("/workspace/cases").get_data(as_text=True)
    assert "ws-sess-1" not in client.get("/workspace/sessions").get_data(as_text=True)
    assert "rec-ws-1" not in client.get("/workspace/cases").get_data(as_text=True)
    for path in (
        f"/workspace/cases/{scene.case_id}",
        f"/workspace/sessions/{scene.session_pk}",
        f"/workspace/recordings/{scene.recording_ids[0]}/media",
    ):
        theirs, missing = client.get(path), client.get(re.sub(r"/\d+(/media)?$", r"/999999\1", path))
        assert theirs.status_code == missing.status_code == 404
        # The same page, apart from the language link back to the URL asked for.
        assert theirs.data.replace(path.encode(), b"") == missing.data.replace(
            re.sub(r"/\d+(/media)?$", r"/999999\1", path).encode(), b""
        )
    refused = [r for r in _audits(app, "session.timeline") if r.get("refused")]
    assert [(r["target"], r["refused"]) for r in refused] == [
        (str(scene.session_pk), "out_of_scope"),
        ("999999", "not_found"),
    ]


def test_supervisor_reads_across_agencies(client: FlaskClient, scene: Scene) -> None:
    login(client, "supervisor")
    assert client.get(f"/workspace/sessions/{scene.session_pk}").status_code == 200
    assert "皖合市监罚" in client.get("/workspace/cases").get_data(as_text=True)


def test_case_list_filters_by_completeness_kind_status_officer_and_date(
    client: FlaskClient, scene: Scene
) -> None:
    login(client, "reviewer")

    def shown(query: str) -> list[str]:
        return re.findall(
            r'<tr data-case="(\d+)"', client.get(f"/workspace/cases?{query}").get_data(as_text=True)
        )

    mine = [str(scene.case_id)]
    assert shown("") == mine
    assert shown("completeness=incomplete") == mine and shown("completeness=complete") == []
    assert shown("act_kind=penalty") == mine and shown("act_kind=inspection") == []
    assert shown("status=open") == mine and shown("status=closed") == []
    assert shown(f"officer_id={scene.officers['wang']}") == mine
    assert shown(f"officer_id={scene.officers['li']}") == []
    today = utcnow().date()
    assert shown(f"date_from={today - timedelta(days=1)}") == mine
    assert shown(f"date_from={today + timedelta(days=2)}") == []
    assert client.get("/workspace/cases?date_from=yesterday").status_code == 400


def test_case_file_shows_completeness_linked_recordings_and_status_changes(
    app: Flask, client: FlaskClient, scene: Scene
) -> None:
    with session_scope(app) as session:
        head = session.get(User, scene.users["head"])
        assert head is not None
        case_service.change_status(
            session,
            Caller(str(head.id), "agency_head", head.agency_id),
            scene.case_id,
            StatusChange.from_json({"status": "under_review", "reason": "调查终结，移送审核"}),
        )
    login(client, "reviewer")
    html = client.get(f"/workspace/cases/{scene.case_id}").get_data(as_text=True)
    assert 'data-requirement="decision.decided"' in html
    assert "open → under_review" in html and "调查终结，移送审核" in html
    assert f'data-recording="{scene.recording_ids[0]}"' in html
    assert f"/workspace/sessions/{scene.session_pk}" in html
    # …and the session page links back to the case its recorder named.
    session_page = client.get(f"/workspace/sessions/{scene.session_pk}").get_data(as_text=True)
    assert f'id="case-link" href="/workspace/cases/{scene.case_id}"' in session_page
    english = client.get(f"/workspace/cases/{scene.case_id}?lang=en").get_data(as_text=True)
    assert ("no decision yet" in english and "Whole-process" not in english) or "Linked recordings" in english


def test_jl17_devices_page_shows_chain_backlog_and_late_uploads(
    app: Flask, client: FlaskClient, scene: Scene, tmp_path: Path
) -> None:
    """The scene's segments were stored months after T0 (late); a fresh device uploaded in time."""
    fresh = SegmentFactory(tmp_path / "fresh", device_id="rec-ws-2")
    (tmp_path / "fresh").mkdir()
    with session_scope(app) as session:
        register_device(session, "rec-ws-2", fresh.public_key)
    hand_over(app, "rec-ws-2", scene.users["li"], at=utcnow() - timedelta(days=1))
    recorder = Recorder(app, fresh, session_id="fresh")
    commit_media(recorder, utcnow() - timedelta(minutes=5), 60, b"\x00" * 64, officer_id="AH-1002")
    with session_scope(app) as session:
        now = utcnow()
        for device_id, age in (("rec-ws-1", 25 * 3600), ("rec-ws-2", 21 * 3600)):
            session.add(
                DeviceHealthSample(
                    device_id=device_id,
                    at=now,
                    received_at=now,
                    backlog_bytes=1,
                    backlog_segments=3,
                    oldest_pending_age_s=age,
                    free_bytes=1,
                    battery_pct=50,
                    recording=False,
                    extra={},
                )
            )
    login(client, "reviewer")
    html = client.get("/workspace/devices").get_data(as_text=True)
    rows = dict(re.findall(r'<tr data-device="([^"]+)">(.*?)</tr>', html, re.S))
    assert 'data-state="violation"' in rows["rec-ws-1"] and 'data-state="warning"' in rows["rec-ws-2"]
    late = {d: re.findall(r'<td class="num(?: bad)?">(\d+)</td>\s*$', row.strip()) for d, row in rows.items()}
    assert late == {"rec-ws-1": ["4"], "rec-ws-2": ["0"]}
    assert 'data-verified="1"' in rows["rec-ws-1"]
    assert [r["target"] for r in _audits(app, "device.chain_report")] == ["rec-ws-1", "rec-ws-2"]


def test_logout_revokes_the_session_token(client: FlaskClient, scene: Scene) -> None:
    csrf = login(client, "reviewer")
    cookie = client.get_cookie("zfjl_console", path="/workspace")
    assert cookie is not None
    assert client.post("/workspace/logout", data={"csrf_token": csrf}).status_code == 303
    client.set_cookie("zfjl_console", cookie.value, path="/workspace")
    assert client.get("/workspace/cases").status_code == 303


def test_session_list_filters_by_verdict_and_speaks_english(client: FlaskClient, scene: Scene) -> None:
    login(client, "reviewer")

    def shown(query: str) -> list[str]:
        html = client.get(f"/workspace/sessions?{query}").get_data(as_text=True)
        return re.findall(r'<tr data-session="(\d+)"', html)

    assert shown("verdict=gaps_unexplained") == [str(scene.session_pk)]
    assert shown("verdict=continuous") == []
    assert client.get("/workspace/sessions?verdict=perfect").status_code == 400
    english = client.get(f"/workspace/sessions/{scene.session_pk}?lang=en").get_data(as_text=True)
    assert "unexplained gaps" in english and "device fault" in english and "obstruction" in english
    # The choice is remembered for the next page.
    assert "Evidence workspace" in client.get("/workspace/cases").get_data(as_text=True)


def test_case_file_attachment_downloads_with_the_api_headers_and_is_audited(
    app: Flask, client: FlaskClient, scene: Scene
) -> None:
    from server.domain.cases.models import CaseEvent
    from server.infra.storage import STORE_KEY
    from tests.fixtures.people import PNG

    with session_scope(app) as session:
        wang = session.get(User, scene.users["wang"])
        assert wang is not None
        event_id = session.scalar(select(CaseEvent.id).where(CaseEvent.case_id == scene.case_id))
        assert event_id is not None
        case_attachments.add_attachment(
            session,
            app.extensions[STORE_KEY],
            Caller(str(wang.id), "officer", wang.agency_id),
            scene.case_id,
            event_id,
            PNG,
            name="现场照片.png",
            content_type="image/png",
            kind="photo",
            signed_by_party=False,
        )
    login(client, "reviewer")
    html = client.get(f"/workspace/cases/{scene.case_id}").get_data(as_text=True)
    link = re.search(r'href="(/workspace/cases/\d+/attachments/\d+)">现场照片.png</a>', html)
    assert link is not None
    answer = client.get(link.group(1))
    assert answer.status_code == 200 and answer.data == PNG
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in answer.headers["Content-Security-Policy"]
    views = [r for r in _audits(app, "case.attachment") if r.get("via") == "workspace"]
    assert [(r["actor"], r["attachment_id"]) for r in views] == [
        (str(scene.users["reviewer"]), int(link.group(1).rsplit("/", 1)[1]))
    ]


def test_review_queues_are_linked_only_once_their_pages_exist(
    app: Flask, client: FlaskClient, scene: Scene
) -> None:
    """A review queue is linked from the navigation as soon as its page is registered, never before:
    the publication review (issue 10) and the approval queue (issue 11) both exist now, and each link
    opens its page."""
    assert {"workspace.publication_review", "workspace.approvals"} <= set(app.view_functions)
    login(client, "reviewer")
    html = client.get("/workspace/cases").get_data(as_text=True)
    assert 'href="/workspace/publication-review" data-nav="publication_review"' in html
    assert 'data-nav="approvals"' in html
    for link in re.findall(r'href="(/workspace/[^"]+)" data-nav="(?:publication_review|approvals)"', html):
        assert client.get(link).status_code == 200, link
