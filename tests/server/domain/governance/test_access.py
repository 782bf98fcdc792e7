"""JL-20 access by duty and approval, on SQLite and PostgreSQL: access classes on top of roles, enforced where
evidence is served (API media and details, the workspace player and download), every refusal audited; the
approval queue page of the workspace."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from protocol.session import SessionEventKind
from server.domain.audit import AuditLog
from server.domain.base import utcnow
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.domain.governance import access
from server.domain.governance.access import ApprovalRequired
from server.domain.governance.approvals_models import GovernanceDecision
from server.domain.sessions.models import EnforcementSessionRecord
from server.infra.db import session_scope
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory
from tests.fixtures.evidence import assign
from tests.server.domain.governance.governance_fixtures import Gov, app, gov, login, workspace_client, world
from tests.server.domain.sessions.conftest import T0, Recorder, send

__all__ = ["app", "gov", "world"]


def _classify(
    client: FlaskClient, gov: Gov, recording_id: int, access_class: str, who: str = "agency_head-a"
) -> int:
    answer = client.post(
        f"/api/v1/governance/recordings/{recording_id}/access-class",
        headers=login(client, who),
        json={"access_class": access_class, "reason": "涉及个人隐私"},
    )
    return answer.status_code


def _media(client: FlaskClient, who: str, recording_id: int) -> int:
    return client.get(f"/api/v1/recordings/{recording_id}/media", headers=login(client, who)).status_code


def _refusals(gov: Gov) -> list[dict[str, object]]:
    with session_scope(gov.app) as session:
        rows = session.scalars(select(AuditLog).where(AuditLog.action == "recording.access_refused"))
        return [{"actor": r.actor, "target": r.target_id, **r.detail_dict()} for r in rows]


def test_jl20_a_normal_recording_is_viewed_by_duty(gov: Gov, client: FlaskClient) -> None:
    for who in ("officer-a", "legal_reviewer-a", "agency_head-a", "supervisor-a", "auditor-a"):
        assert _media(client, who, gov.rec_a[0]) == 200, who
    assert _refusals(gov) == []


def test_jl20_a_confidential_recording_needs_the_heads_approval_and_each_refusal_is_audited(
    gov: Gov, client: FlaskClient
) -> None:
    rid = gov.rec_a[0]
    assert _classify(client, gov, rid, "confidential") == 200
    for who in ("officer-a", "officer2-a", "legal_reviewer-a", "supervisor-a", "auditor-a"):
        answer = client.get(f"/api/v1/recordings/{rid}/media", headers=login(client, who))
        assert answer.status_code == 403 and answer.get_json()["error"]["code"] == "approval_required", who
        assert client.get(f"/api/v1/recordings/{rid}", headers=login(client, who)).status_code == 403
    assert _media(client, "agency_head-a", rid) == 200
    assert _media(client, "officer-a", gov.rec_a[1]) == 200  # only that recording is confidential
    # The list leaves it out for whoever may not view it, and keeps it for the head (JL-20).
    for who, listed in (("officer-a", False), ("supervisor-a", False), ("agency_head-a", True)):
        items = client.get("/api/v1/recordings", headers=login(client, who)).get_json()["items"]
        ids = {item["id"] for item in items}
        assert (rid in ids) == listed and gov.rec_a[1] in ids, who
    refused = _refusals(gov)
    assert len(refused) == 10
    assert {r["actor"] for r in refused} >= {str(gov.users["officer-a"]), str(gov.users["auditor-a"])}
    assert {(r["target"], r["access_class"], r["refused"]) for r in refused} == {
        (str(rid), "confidential", "approval_required")
    }


def test_jl20_only_the_head_of_the_recordings_agency_sets_its_class(gov: Gov, client: FlaskClient) -> None:
    assert _classify(client, gov, gov.rec_a[0], "restricted", who="legal_reviewer-a") == 403
    assert _classify(client, gov, gov.rec_a[0], "restricted", who="head-b") == 404
    assert _classify(client, gov, gov.rec_a[0], "secret") == 400
    with session_scope(gov.app) as session:
        assert access.access_class_of(session, gov.rec_a[0]) == "normal"


def test_jl20_a_restricted_recording_is_viewed_by_its_officer_and_reviewers_not_by_other_officers(
    gov: Gov, client: FlaskClient
) -> None:
    rid = gov.rec_a[0]
    _classify(client, gov, rid, "restricted")
    assert _media(client, "officer2-a", rid) == 200  # the officer who recorded it
    assert _media(client, "legal_reviewer-a", rid) == 200
    assert _media(client, "officer-a", rid) == 403  # a colleague without a case of it
    assert _media(client, "supervisor-a", rid) == 403  # a body retrieves it through a request
    gov.open_case([rid])  # officer-a is an officer of the case the recording is linked to
    assert _media(client, "officer-a", rid) == 200


def test_jl20_an_approved_grant_opens_the_recording_to_its_requester_and_expires_by_itself(
    gov: Gov, client: FlaskClient
) -> None:
    rid = gov.rec_a[0]
    _classify(client, gov, rid, "confidential")
    filed = client.post(
        "/api/v1/governance/requests",
        headers=login(client, "officer-a"),
        json={"kind": "access", "purpose": "复核执法过程", "recording_ids": [rid], "duration_days": 2},
    )
    request_id = filed.get_json()["id"]
    assert _media(client, "officer-a", rid) == 403  # pending is not approved
    client.post(
        f"/api/v1/governance/requests/{request_id}/decision",
        headers=login(client, "agency_head-a"),
        json={"outcome": "approve"},
    )
    assert _media(client, "officer-a", rid) == 200
    assert _media(client, "officer2-a", rid) == 403  # the grant is the requester's alone
    listed = client.get("/api/v1/recordings", headers=login(client, "officer-a")).get_json()["items"]
    assert rid in {item["id"] for item in listed}  # a grant to view lists it too
    with session_scope(gov.app) as session:
        media_rows = session.scalars(select(AuditLog).where(AuditLog.action == "recording.media"))
        granted = [r.detail_dict() for r in media_rows if r.actor == str(gov.users["officer-a"])]
        assert granted[-1]["grant_id"] == request_id and granted[-1]["basis"] == "grant"
        decided_at = session.scalars(select(GovernanceDecision.decided_at)).one()
        rec = session.get(Recording, rid)
        assert rec is not None
        officer = gov.caller("officer-a")
        assert (
            access.authorize(session, officer, rec, "view", now=decided_at + timedelta(days=1)).basis
            == "grant"
        )
        with pytest.raises(ApprovalRequired):
            access.authorize(session, officer, rec, "view", now=decided_at + timedelta(days=2))
        with pytest.raises(ApprovalRequired):  # a view grant is not a copy grant
            access.authorize(session, officer, rec, "copy", now=decided_at + timedelta(hours=1))
    assert utcnow() < decided_at + timedelta(days=2)


def test_jl20_a_workspace_download_is_a_copy_and_needs_duty_or_approval(gov: Gov) -> None:
    rid = gov.rec_a[0]
    url = f"/workspace/recordings/{rid}/media"
    officer, _csrf = workspace_client(gov.app, "officer-a")
    assert officer.get(url).status_code == 200  # playing is viewing
    assert officer.get(url + "?download=1").status_code == 403  # taking a file away is copying
    recorder_officer, _csrf = workspace_client(gov.app, "officer2-a")
    assert recorder_officer.get(url + "?download=1").status_code == 200  # their own recording
    reviewer, _csrf = workspace_client(gov.app, "legal_reviewer-a")
    assert reviewer.get(url + "?download=1").status_code == 200
    assert [(r["action"], r["actor"]) for r in _refusals(gov)] == [("copy", str(gov.users["officer-a"]))]


def test_jl20_the_approval_queue_page_files_and_decides_with_csrf_and_never_lets_one_approve_oneself(
    gov: Gov,
) -> None:
    head, csrf = workspace_client(gov.app, "agency_head-a")
    page = head.get("/workspace/approvals")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert 'data-nav="approvals"' in page.get_data(as_text=True)
    form = {"kind": "disposal", "recording_ids": str(gov.rec_a[0]), "purpose": "保存期满", "csrf_token": csrf}
    assert (
        head.post("/workspace/approvals/requests", data={**form, "csrf_token": "forged"}).status_code == 400
    )
    filed = head.post("/workspace/approvals/requests", data=form)
    assert filed.status_code == 303
    html = head.get(filed.headers["Location"]).get_data(as_text=True)
    assert "申请已提交" in html
    request_id = int(re.findall(r'data-request="(\d+)" data-kind="disposal"', html)[0])
    assert 'class="muted own"' in html and f"workspace/approvals/{request_id}/decision" not in html
    own = head.post(
        f"/workspace/approvals/{request_id}/decision", data={"outcome": "approve", "csrf_token": csrf}
    )
    assert "self_approval" in head.get(own.headers["Location"]).get_data(as_text=True)

    second, csrf2 = workspace_client(gov.app, "head2-a")
    english = second.get("/workspace/approvals?lang=en").get_data(as_text=True)
    assert "Awaiting decision" in english and f"/workspace/approvals/{request_id}/decision" in english
    done = second.post(
        f"/workspace/approvals/{request_id}/decision",
        data={"outcome": "approve", "reason": "同意", "csrf_token": csrf2},
    )
    after = second.get(done.headers["Location"]).get_data(as_text=True)
    assert f'data-request="{request_id}" data-status="done"' in after
    assert second.get(f"/workspace/recordings/{gov.rec_a[0]}/media").status_code == 409  # disposed

    officer, _csrf = workspace_client(gov.app, "officer-a")
    mine = officer.get("/workspace/approvals").get_data(as_text=True)
    assert "/decision" not in mine and f'data-request="{request_id}"' not in mine  # not theirs to see
    assert (
        officer.post(f"/workspace/approvals/{request_id}/decision", data={"csrf_token": _csrf}).status_code
        == 403
    )


def _row(page: str, recording_id: int) -> str:
    """The case file's table row of one recording."""
    found = re.search(rf'<tr data-recording="{recording_id}"[^>]*>.*?</tr>', page, re.S)
    assert found is not None, recording_id
    return found.group(0)


def _segment(page: str, sequence: int) -> str:
    """The session page's list item of one segment, by its sequence number."""
    item = rf"<li[^>]*>\s*<button[^>]*>[^<]*</button>\s*#{sequence} [^<]*?(?:<a [^>]*>[^<]*</a>)?\s*</li>"
    found = re.search(item, page)
    assert found is not None, sequence
    return found.group(0)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_jl20_workspace_session_and_case_pages_show_a_hidden_segment_as_a_placeholder_not_a_gap(
    gov: Gov, client: FlaskClient
) -> None:
    hidden, other = gov.rec_a
    assert _classify(client, gov, hidden, "confidential") == 200
    case_id = gov.open_case([hidden, other])  # officer-a is on the case: enough for restricted, not here
    with session_scope(gov.app) as session:
        sequences = {rid: seq for rid, seq in session.execute(select(Recording.id, Recording.sequence))}
    seq_hidden, seq_other = sequences[hidden], sequences[other]
    session_url, case_url = f"/workspace/sessions/{gov.session_a}", f"/workspace/cases/{case_id}"

    officer, _csrf = workspace_client(gov.app, "officer-a")
    page = officer.get(session_url).get_data(as_text=True)
    placeholder = _segment(page, seq_hidden)
    assert 'class="hidden-recording"' in placeholder and "受限录像" in placeholder
    assert f"/workspace/recordings/{hidden}/media" not in page and f'data-id="{hidden}"' not in page
    assert f"/workspace/recordings/{other}/media" in _segment(page, seq_other)  # only that one is withheld
    assert 'class="gap' not in page  # still recorded: the continuity is not misstated
    row = _row(officer.get(case_url).get_data(as_text=True), hidden)
    assert "受限录像" in row and "dev-a" not in row and "officer-7" not in row and "session-link" not in row
    assert "Restricted recording" in _row(officer.get(case_url + "?lang=en").get_data(as_text=True), hidden)

    head, _csrf = workspace_client(gov.app, "agency_head-a")
    assert f"/workspace/recordings/{hidden}/media" in head.get(session_url).get_data(as_text=True)
    row = _row(head.get(case_url).get_data(as_text=True), hidden)
    assert "dev-a" in row and "officer-7" in row and "session-link" in row

    filed = client.post(
        "/api/v1/governance/requests",
        headers=login(client, "officer-a"),
        json={"kind": "access", "purpose": "复核执法过程", "recording_ids": [hidden], "duration_days": 2},
    )
    client.post(
        f"/api/v1/governance/requests/{filed.get_json()['id']}/decision",
        headers=login(client, "agency_head-a"),
        json={"outcome": "approve"},
    )
    assert f"/workspace/recordings/{hidden}/media" in officer.get(session_url).get_data(as_text=True)
    assert "dev-a" in _row(officer.get(case_url).get_data(as_text=True), hidden)


def _interrupted_session_with_a_spoken_explanation(gov: Gov, tmp_path: Path) -> tuple[int, list[int]]:
    """A second recorder of A: a clip, an interruption explained by voice, a clip; (session pk, ids)."""
    (tmp_path / "dev-c").mkdir()
    segments = SegmentFactory(tmp_path / "dev-c", device_id="dev-c")
    with session_scope(gov.app) as session:
        register_device(session, "dev-c", segments.public_key)
    assign(gov.app, "dev-c", gov.users["officer-a"], gov.world.agency_a)
    recorder = Recorder(gov.app, segments, session_id="sess-c")
    ingest = IngestService.from_app(gov.app)
    at = lambda seconds: T0 + timedelta(seconds=seconds)  # noqa: E731 - a local shorthand
    send(ingest, recorder.event(SessionEventKind.STARTED, at(0)))
    first = recorder.clip(at(0), 60)
    send(ingest, recorder.event(SessionEventKind.INTERRUPTED, at(60), marker_id="m1", cause="bad_weather"))
    send(ingest, recorder.event(SessionEventKind.RESUMED, at(65), marker_id="m1"))
    spoken = recorder.clip(at(65), 10, kind="explanation", marker_id="m1")
    last = recorder.clip(at(75), 45)
    send(ingest, recorder.event(SessionEventKind.ENDED, at(120)))
    with session_scope(gov.app) as session:
        pk = session.scalar(
            select(EnforcementSessionRecord.id).where(EnforcementSessionRecord.session_id == "sess-c")
        )
    assert pk is not None
    return pk, [first.id, spoken.id, last.id]


def _named_ids(timeline: dict[str, Any]) -> set[int]:
    """Every recording id the API's timeline names: in spans, clips and integrity findings."""
    named = {rid for span in timeline["spans"] for rid in span["recording_ids"]}
    named |= {c["recording_id"] for m in timeline["markers"] for c in m["explanation_clips"]}
    return named | {f["recording_id"] for f in timeline["evidence"]["findings"] if f["recording_id"]}


def test_jl20_the_api_timeline_withholds_segments_the_caller_may_not_view_and_keeps_the_verdict(
    gov: Gov, client: FlaskClient, tmp_path: Path
) -> None:
    session_pk, (first, spoken, last) = _interrupted_session_with_a_spoken_explanation(gov, tmp_path)
    assert _classify(client, gov, first, "confidential") == 200
    assert _classify(client, gov, spoken, "confidential") == 200
    url = f"/api/v1/sessions/{session_pk}/timeline"

    # The adversary: an officer of the agency, in scope for the session, not entitled to these two.
    answer = client.get(url, headers=login(client, "officer-a"))
    assert answer.status_code == 200
    withheld = answer.get_json()
    text = answer.get_data(as_text=True)
    assert _named_ids(withheld) == {last}
    assert f"/recordings/{first}/media" not in text and f"/recordings/{spoken}/media" not in text
    # JL-16: what is withheld is still recorded, not a gap; it is counted, never named.
    assert withheld["verdict"] == "gaps_explained" and len(withheld["gaps"]) == 1
    assert [s["withheld_count"] for s in withheld["spans"]] == [1, 1]
    (marker,) = withheld["markers"]
    assert marker["status"] == "explained_spoken"
    assert marker["explanation_clips"] == [] and marker["hidden_clips"] == 1

    # The allowed viewer: the head of the agency sees every segment and its clip, as before.
    full = client.get(url, headers=login(client, "agency_head-a")).get_json()
    assert _named_ids(full) == {first, spoken, last}
    assert [s["withheld_count"] for s in full["spans"]] == [0, 0]
    assert full["markers"][0]["explanation_clips"][0]["media_url"] == f"/api/v1/recordings/{spoken}/media"
    assert {k: full[k] for k in ("verdict", "gaps")} == {k: withheld[k] for k in ("verdict", "gaps")}

    # A grant opens exactly what it names to its requester.
    filed = client.post(
        "/api/v1/governance/requests",
        headers=login(client, "officer-a"),
        json={"kind": "access", "purpose": "复核执法过程", "recording_ids": [spoken], "duration_days": 2},
    )
    client.post(
        f"/api/v1/governance/requests/{filed.get_json()['id']}/decision",
        headers=login(client, "agency_head-a"),
        json={"outcome": "approve"},
    )
    granted = client.get(url, headers=login(client, "officer-a")).get_json()
    assert _named_ids(granted) == {spoken, last}
