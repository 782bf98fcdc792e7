"""JL-12, JL-15, JL-16: signed session events through ingest, timelines, verdicts, written explanations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from protocol.session import EventAckState, SessionEventKind
from server.domain.evidence.models import IngestRejection
from server.domain.sessions import service as session_service
from server.domain.sessions.models import EnforcementSessionRecord, SessionEventRecord
from server.infra.db import session_scope
from server.ingest.service import IngestService
from tests.server.domain.sessions.conftest import PASSWORD, T0, Recorder, make_officer, send

K = SessionEventKind


def s(seconds: float) -> Any:
    """T0 plus seconds."""
    return T0 + timedelta(seconds=seconds)


def session_pk(app: Flask, device_id: str, session_id: str = "sess-a") -> int:
    """The stored session's id."""
    with session_scope(app) as session:
        pk = session.scalar(
            select(EnforcementSessionRecord.id).where(
                EnforcementSessionRecord.device_id == device_id,
                EnforcementSessionRecord.session_id == session_id,
            )
        )
    assert pk is not None
    return pk


def timeline(app: Flask, pk: int) -> dict[str, Any]:
    """The service's timeline of one session."""
    with app.test_request_context(), session_scope(app) as session:
        record = session_service.get_session(session, pk)
        return session_service.timeline(
            session, record, lambda rid: f"/api/v1/recordings/{rid}/media", viewer=None
        )


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Bearer headers of a user."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def rejection_codes(app: Flask) -> list[str]:
    """Codes in the security log."""
    with session_scope(app) as session:
        return list(session.scalars(select(IngestRejection.code).order_by(IngestRejection.id)))


def event_count(app: Flask) -> int:
    """Stored session events."""
    with session_scope(app) as session:
        return session.scalar(select(func.count()).select_from(SessionEventRecord)) or 0


def test_jl16_signed_events_are_stored_acked_and_duplicates_recognised(
    recorder: Recorder, ingest: IngestService
) -> None:
    started = recorder.event(K.STARTED, s(0), case_id="case-1")
    assert send(ingest, started).state is EventAckState.STORED
    bookmark = recorder.event(K.BOOKMARK, s(10), bookmark_type="document_served", note="送达决定书")
    assert send(ingest, bookmark).state is EventAckState.STORED
    assert send(ingest, recorder.event(K.ENDED, s(20))).state is EventAckState.STORED
    # The device resends until acked: the same event again is a duplicate, nothing new is stored.
    assert send(ingest, started).state is EventAckState.DUPLICATE
    assert event_count(recorder.app) == 3
    with session_scope(recorder.app) as session:
        row = session.scalars(select(SessionEventRecord).where(SessionEventRecord.seq == 0)).one()
        assert row.event_text and len(row.signature) == 64 and row.case_id == "case-1"
    tl = timeline(recorder.app, session_pk(recorder.app, recorder.device_id))
    # JL-15: the tagged moment is on the timeline.
    assert tl["bookmarks"] == [
        {
            "event_id": "ev-2",
            "at": s(10).isoformat(),
            "bookmark_type": "document_served",
            "note": "送达决定书",
            "officer_id": "officer-7",
        }
    ]
    assert tl["state"] == "ended"


def test_jl16_continuous_session(recorder: Recorder, ingest: IngestService) -> None:
    send(ingest, recorder.event(K.STARTED, s(0)))
    recorder.clip(s(0), 60)
    recorder.clip(s(60.5), 59.5)  # a segment boundary well inside the tolerance
    send(ingest, recorder.event(K.ENDED, s(120)))
    tl = timeline(recorder.app, session_pk(recorder.app, recorder.device_id))
    assert tl["verdict"] == "continuous"
    assert tl["gaps"] == [] and len(tl["spans"]) == 1
    assert tl["spans"][0]["start"] == s(0).isoformat() and tl["spans"][0]["end"] == s(120).isoformat()


def _interrupted_session(recorder: Recorder, ingest: IngestService, *, clip: bool) -> dict[str, Any]:
    send(ingest, recorder.event(K.STARTED, s(0)))
    recorder.clip(s(0), 60)
    send(ingest, recorder.event(K.INTERRUPTED, s(60), marker_id="m1", cause="bad_weather"))
    send(ingest, recorder.event(K.RESUMED, s(65), marker_id="m1"))
    if clip:
        recorder.clip(s(65), 10, kind="explanation", marker_id="m1")
        recorder.clip(s(75), 45)
    else:
        recorder.clip(s(65), 55)
    send(ingest, recorder.event(K.ENDED, s(120)))
    return timeline(recorder.app, session_pk(recorder.app, recorder.device_id))


def test_jl16_five_second_gap_with_spoken_explanation_is_explained(
    recorder: Recorder, ingest: IngestService
) -> None:
    tl = _interrupted_session(recorder, ingest, clip=True)
    assert tl["verdict"] == "gaps_explained"
    (gap,) = tl["gaps"]
    assert gap["duration_s"] == 5.0 and gap["marker_ids"] == ["m1"] and gap["explained"]
    (marker,) = tl["markers"]
    assert marker["status"] == "explained_spoken" and marker["cause"] == "bad_weather"
    assert marker["closed_at"] == s(65).isoformat() and marker["resumed"]
    (clip,) = marker["explanation_clips"]
    assert clip["media_url"] == f"/api/v1/recordings/{clip['recording_id']}/media"


def test_jl16_marker_without_explanation_clip_is_unexplained(
    recorder: Recorder, ingest: IngestService
) -> None:
    tl = _interrupted_session(recorder, ingest, clip=False)
    assert tl["verdict"] == "gaps_unexplained"
    assert tl["markers"][0]["status"] == "unexplained"
    (gap,) = tl["unexplained_gaps"]
    assert gap["marker_ids"] == ["m1"] and not gap["no_marker"]


def test_jl16_gap_without_marker_is_flagged(recorder: Recorder, ingest: IngestService) -> None:
    send(ingest, recorder.event(K.STARTED, s(0)))
    recorder.clip(s(0), 30)
    recorder.clip(s(50), 70)  # 20 s missing and nobody said why
    send(ingest, recorder.event(K.ENDED, s(120)))
    tl = timeline(recorder.app, session_pk(recorder.app, recorder.device_id))
    assert tl["verdict"] == "gaps_unexplained"
    (gap,) = tl["unexplained_gaps"]
    assert gap["no_marker"] and gap["start"] == s(30).isoformat() and gap["end"] == s(50).isoformat()


def test_jl16_written_explanation_needs_two_distinct_officers(
    recorder: Recorder, ingest: IngestService
) -> None:
    app = recorder.app
    # Recording could not resume: the session ended while interrupted (JL-16, second clause).
    send(ingest, recorder.event(K.STARTED, s(0)))
    recorder.clip(s(0), 60)
    send(ingest, recorder.event(K.INTERRUPTED, s(60), marker_id="m1", cause="device_fault"))
    send(ingest, recorder.event(K.ENDED, s(90)))
    pk = session_pk(app, recorder.device_id)
    a, b = make_officer(app, "officer-a"), make_officer(app, "officer-b")
    make_officer(app, "aux-c", role="auxiliary")
    client = app.test_client()
    ha, hb = login(client, "officer-a"), login(client, "officer-b")
    admin = login(client, "admin", "correct-horse-battery")

    refused = client.post(
        f"/api/v1/sessions/{pk}/explanations", json={"text": "x", "marker_id": "m1"}, headers=admin
    )
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "not_an_officer"
    unknown = client.post(
        f"/api/v1/sessions/{pk}/explanations", json={"text": "x", "marker_id": "zz"}, headers=ha
    )
    assert unknown.status_code == 404

    filed = client.post(
        f"/api/v1/sessions/{pk}/explanations",
        json={"text": "执法记录仪故障，无法恢复录制。", "marker_id": "m1"},
        headers=ha,
    )
    assert filed.status_code == 201, filed.get_json()
    explanation = filed.get_json()
    assert explanation["signature_count"] == 1 and not explanation["complete"]
    assert [sig["user_id"] for sig in explanation["signatures"]] == [a]
    # One signature is not enough.
    assert timeline(app, pk)["verdict"] == "gaps_unexplained"

    again = client.post(f"/api/v1/sessions/{pk}/explanations/{explanation['id']}/signatures", headers=ha)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_signed"
    assert timeline(app, pk)["verdict"] == "gaps_unexplained"

    cosigned = client.post(f"/api/v1/sessions/{pk}/explanations/{explanation['id']}/signatures", headers=hb)
    assert cosigned.status_code == 201
    body = cosigned.get_json()
    assert body["complete"] and body["signature_count"] == 2
    assert [sig["user_id"] for sig in body["signatures"]] == [a, b]

    tl = client.get(f"/api/v1/sessions/{pk}/timeline", headers=admin).get_json()
    assert tl["verdict"] == "gaps_explained"
    assert tl["markers"][0]["status"] == "explained_written" and not tl["markers"][0]["resumed"]
    assert tl["written_explanations"][0]["complete"]


def test_jl16_written_explanation_for_gaps_without_marker(recorder: Recorder, ingest: IngestService) -> None:
    app = recorder.app
    send(ingest, recorder.event(K.STARTED, s(0)))
    recorder.clip(s(0), 30)
    recorder.clip(s(50), 70)
    send(ingest, recorder.event(K.ENDED, s(120)))
    pk = session_pk(app, recorder.device_id)
    make_officer(app, "officer-a")
    make_officer(app, "officer-b", role="agency_head")
    client = app.test_client()
    ha, hb = login(client, "officer-a"), login(client, "officer-b")
    filed = client.post(
        f"/api/v1/sessions/{pk}/explanations", json={"text": "电池耗尽，更换电池。"}, headers=ha
    )
    assert filed.status_code == 201
    eid = filed.get_json()["id"]
    assert filed.get_json()["gaps"] == [{"start": s(30).isoformat(), "end": s(50).isoformat()}]
    client.post(f"/api/v1/sessions/{pk}/explanations/{eid}/signatures", headers=hb)
    tl = timeline(app, pk)
    assert tl["verdict"] == "gaps_explained" and tl["gaps"][0]["written_explanation_ids"] == [eid]
    # Nothing left to explain.
    again = client.post(f"/api/v1/sessions/{pk}/explanations", json={"text": "再次说明"}, headers=ha)
    assert again.status_code == 409


def test_jl16_out_of_order_events_are_stored_and_checked_by_seq(
    recorder: Recorder, ingest: IngestService
) -> None:
    messages = [
        recorder.event(K.STARTED, s(0)),
        recorder.event(K.INTERRUPTED, s(60), marker_id="m1", cause="obstruction"),
        recorder.event(K.RESUMED, s(65), marker_id="m1"),
        recorder.event(K.ENDED, s(120)),
    ]
    for index in (3, 0, 2, 1):
        assert send(ingest, messages[index]).state is EventAckState.STORED
    assert send(ingest, messages[2]).state is EventAckState.DUPLICATE
    with session_scope(recorder.app) as session:
        record = session.get(EnforcementSessionRecord, session_pk(recorder.app, recorder.device_id))
        assert record is not None
        detail = session_service.session_detail(session, record)
    assert detail["state"] == "ended" and detail["missing_seqs"] == [] and detail["violations"] == []
    assert [e["seq"] for e in detail["events"]] == [0, 1, 2, 3]


def test_jl16_missing_event_is_reported_until_it_arrives(recorder: Recorder, ingest: IngestService) -> None:
    started = recorder.event(K.STARTED, s(0))
    bookmark = recorder.event(K.BOOKMARK, s(5), bookmark_type="scene")
    ended = recorder.event(K.ENDED, s(10))
    send(ingest, started)
    send(ingest, ended)
    pk = session_pk(recorder.app, recorder.device_id)
    tl = timeline(recorder.app, pk)
    assert tl["missing_seqs"] == [1] and tl["state"] == "incomplete"
    send(ingest, bookmark)
    tl = timeline(recorder.app, pk)
    assert tl["missing_seqs"] == [] and tl["state"] == "ended"


def test_jl16_late_event_exposing_a_violation_is_logged_and_reported(
    recorder: Recorder, ingest: IngestService
) -> None:
    send(ingest, recorder.event(K.STARTED, s(0)))
    bookmark = recorder.event(K.BOOKMARK, s(5), bookmark_type="persons")
    # Stored while its predecessor is missing; once seq 1 arrives it resumes what was never interrupted.
    assert send(ingest, recorder.event(K.RESUMED, s(10), marker_id="m9")).state is EventAckState.STORED
    assert send(ingest, bookmark).state is EventAckState.STORED
    assert "transition_violation" in rejection_codes(recorder.app)
    tl = timeline(recorder.app, session_pk(recorder.app, recorder.device_id))
    assert [v["seq"] for v in tl["violations"]] == [2]
    assert [r["code"] for r in tl["rejected_events"]] == ["transition_violation"]


def test_jl16_bad_signature_unknown_device_and_impossible_transition_are_rejected(
    recorder: Recorder, ingest: IngestService
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    app = recorder.app
    send(ingest, recorder.event(K.STARTED, s(0)))
    # Impossible: resuming while recording.
    ack = send(ingest, recorder.event(K.RESUMED, s(5), marker_id="m1"))
    assert ack.state is EventAckState.REJECTED and ack.code == "impossible_transition"
    recorder.seq -= 1  # the device would not have advanced: nothing was stored
    recorder.key = Ed25519PrivateKey.generate()
    ack = send(ingest, recorder.event(K.BOOKMARK, s(6), bookmark_type="scene"))
    assert ack.state is EventAckState.REJECTED and ack.code == "bad_signature"
    recorder.segments.device_id = "dev-unknown"
    ack = send(ingest, recorder.event(K.ENDED, s(7)))
    assert ack.state is EventAckState.REJECTED and ack.code == "unknown_device"
    assert event_count(app) == 1
    assert rejection_codes(app) == ["impossible_transition", "bad_signature", "unknown_device"]
    tl = timeline(app, session_pk(app, "dev-001"))
    assert [r["code"] for r in tl["rejected_events"]] == ["impossible_transition", "bad_signature"]


def test_jl16_event_reusing_an_event_id_with_other_content_is_a_conflict(
    recorder: Recorder, ingest: IngestService
) -> None:
    send(ingest, recorder.event(K.STARTED, s(0), event_id="e-1"))
    ack = send(ingest, recorder.event(K.ENDED, s(9), event_id="e-1"))
    assert ack.state is EventAckState.REJECTED and ack.code == "event_conflict"


def test_jl16_verdict_filter_finds_sessions_needing_attention(
    recorder: Recorder, ingest: IngestService
) -> None:
    app = recorder.app
    send(ingest, recorder.event(K.STARTED, s(0)))
    recorder.clip(s(0), 60)
    send(ingest, recorder.event(K.ENDED, s(60)))
    recorder.session_id = "sess-b"
    send(ingest, recorder.event(K.STARTED, s(100), officer_id="officer-9"))
    recorder.clip(s(100), 10)
    send(ingest, recorder.event(K.ENDED, s(200)))
    good, bad = session_pk(app, recorder.device_id, "sess-a"), session_pk(app, recorder.device_id, "sess-b")
    client = app.test_client()
    admin = login(client, "admin", "correct-horse-battery")

    def ids(query: str) -> list[int]:
        response = client.get(f"/api/v1/sessions?{query}", headers=admin)
        assert response.status_code == 200, response.get_json()
        return [item["id"] for item in response.get_json()["items"]]

    assert ids("") == [bad, good]
    assert ids("verdict=gaps_unexplained") == [bad]
    assert ids("verdict=continuous") == [good]
    assert ids("verdict=gaps_explained") == []
    assert ids("officer_id=officer-9") == [bad]
    assert ids("device_id=dev-001&verdict=continuous") == [good]
    assert ids("date_from=2026-03-04&date_to=2026-03-04") == [bad, good]
    assert ids("date_from=2026-03-05") == []
    page = client.get("/api/v1/sessions?limit=1", headers=admin).get_json()
    assert [i["id"] for i in page["items"]] == [bad] and page["next"] == bad
    assert ids(f"limit=1&before={page['next']}") == [good]
    assert client.get("/api/v1/sessions?verdict=fine", headers=admin).status_code == 400
    detail = client.get(f"/api/v1/sessions/{bad}", headers=admin).get_json()
    assert detail["verdict"] == "gaps_unexplained" and len(detail["events"]) == 2
    assert client.get("/api/v1/sessions/999999/timeline", headers=admin).status_code == 404


def test_jl16_every_access_is_audited(recorder: Recorder, ingest: IngestService) -> None:
    from server.domain.audit import AuditLog

    send(ingest, recorder.event(K.STARTED, s(0)))
    pk = session_pk(recorder.app, recorder.device_id)
    client = recorder.app.test_client()
    admin = login(client, "admin", "correct-horse-battery")
    client.get("/api/v1/sessions", headers=admin)
    client.get(f"/api/v1/sessions/{pk}", headers=admin)
    client.get(f"/api/v1/sessions/{pk}/timeline", headers=admin)
    with session_scope(recorder.app) as session:
        actions = set(session.scalars(select(AuditLog.action).where(AuditLog.action.like("session.%"))))
    assert actions == {"session.list", "session.view", "session.timeline"}


@pytest.mark.parametrize("statement", ["UPDATE session_events SET note = 'x'", "DELETE FROM session_events"])
def test_jl16_session_records_are_append_only(
    recorder: Recorder, ingest: IngestService, statement: str
) -> None:
    send(ingest, recorder.event(K.STARTED, s(0)))
    with pytest.raises(DBAPIError), session_scope(recorder.app) as session:
        session.execute(text(statement))
    assert event_count(recorder.app) == 1
