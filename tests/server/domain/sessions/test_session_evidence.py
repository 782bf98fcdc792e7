"""JL-6 with JL-16: a session's timeline says whether its recordings still match what the recorder signed."""

from __future__ import annotations

from sqlalchemy import text

from protocol.session import SessionEventKind as K
from server.domain.evidence.models import Recording
from server.infra.db import session_scope
from server.ingest.service import IngestService
from tests.server.domain.sessions.conftest import Recorder, send
from tests.server.domain.sessions.test_sessions import s, session_pk, timeline
from tests.server.insider import disable_append_only_triggers


def test_jl6_edited_start_time_that_hides_a_gap_is_flagged_on_the_timeline(
    recorder: Recorder, ingest: IngestService
) -> None:
    send(ingest, recorder.event(K.STARTED, s(0)))
    recorder.clip(s(0), 60)
    late = recorder.clip(s(90), 30)  # 30 s of nothing recorded, no marker
    send(ingest, recorder.event(K.ENDED, s(120)))
    pk = session_pk(recorder.app, recorder.device_id)
    before = timeline(recorder.app, pk)
    assert before["verdict"] == "gaps_unexplained" and before["evidence"] == {
        "verified": True,
        "findings": [],
    }
    with session_scope(recorder.app) as session:
        # An insider moves the late clip's start back so the gap disappears.
        disable_append_only_triggers(session)
        moved = s(60) if session.get_bind().dialect.name != "sqlite" else s(60).replace(tzinfo=None)
        session.execute(
            text("UPDATE recordings SET started_at = :at WHERE id = :id"), {"at": moved, "id": late.id}
        )
    after = timeline(recorder.app, pk)
    evidence = after["evidence"]
    assert evidence["verified"] is False
    (finding,) = evidence["findings"]
    assert finding["code"] == "column_mismatch" and "started_at" in finding["message"]
    assert finding["recording_id"] == late.id
    with session_scope(recorder.app) as session:
        stored = session.get(Recording, late.id)
        assert stored is not None and stored.started_at == s(60)
