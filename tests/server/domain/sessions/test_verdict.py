"""JL-16: a marker's status and the session's verdict come from the evidence, not from a file's presence.

Finding 9 of the zero-trust review: the recorder signed ``explanation_missing`` for a skipped or silent
clip, yet the server called the marker ``explained_spoken`` because a clip existed, and the session
``gaps_explained``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from protocol.session import SessionEventKind
from server.domain.sessions import service as session_service
from server.domain.sessions.models import EnforcementSessionRecord
from server.domain.sessions.service import (
    VERDICTS,
    MarkerEvidence,
    MarkerStatus,
    Verdict,
    marker_status,
    session_verdict,
)
from server.infra.db import session_scope
from server.ingest.service import IngestService
from tests.server.domain.sessions.conftest import T0, Recorder, send

K = SessionEventKind

# closed, spoken clips, explanation_missing, written explanations with two signatures -> status
_MARKERS: list[tuple[str, MarkerEvidence, MarkerStatus]] = [
    (
        "spoken clip",
        MarkerEvidence(closed=True, spoken_clips=1, explanation_missing=False, signed_written_explanations=0),
        MarkerStatus.EXPLAINED_SPOKEN,
    ),
    (
        "two clips",
        MarkerEvidence(closed=True, spoken_clips=2, explanation_missing=False, signed_written_explanations=0),
        MarkerStatus.EXPLAINED_SPOKEN,
    ),
    (
        "clip but explanation_missing",
        MarkerEvidence(closed=True, spoken_clips=1, explanation_missing=True, signed_written_explanations=0),
        MarkerStatus.UNEXPLAINED,
    ),
    (
        "explanation_missing, no clip",
        MarkerEvidence(closed=True, spoken_clips=0, explanation_missing=True, signed_written_explanations=0),
        MarkerStatus.UNEXPLAINED,
    ),
    (
        "no clip, nothing said",
        MarkerEvidence(closed=True, spoken_clips=0, explanation_missing=False, signed_written_explanations=0),
        MarkerStatus.UNEXPLAINED,
    ),
    (
        "explanation_missing, then written",
        MarkerEvidence(closed=True, spoken_clips=1, explanation_missing=True, signed_written_explanations=1),
        MarkerStatus.EXPLAINED_WRITTEN,
    ),
    (
        "could not resume, written",
        MarkerEvidence(closed=True, spoken_clips=0, explanation_missing=False, signed_written_explanations=1),
        MarkerStatus.EXPLAINED_WRITTEN,
    ),
    (
        "still open",
        MarkerEvidence(
            closed=False, spoken_clips=0, explanation_missing=False, signed_written_explanations=0
        ),
        MarkerStatus.OPEN,
    ),
    (
        "open with a stray missing",
        MarkerEvidence(closed=False, spoken_clips=1, explanation_missing=True, signed_written_explanations=0),
        MarkerStatus.OPEN,
    ),
]


@pytest.mark.parametrize(("evidence", "status"), [pytest.param(e, s, id=n) for n, e, s in _MARKERS])
def test_jl16_marker_status_from_evidence(evidence: MarkerEvidence, status: MarkerStatus) -> None:
    assert marker_status(evidence) is status


@pytest.mark.parametrize(
    ("gaps", "verdict"),
    [
        ([], Verdict.CONTINUOUS),
        ([True], Verdict.GAPS_EXPLAINED),
        ([True, True], Verdict.GAPS_EXPLAINED),
        ([False], Verdict.GAPS_UNEXPLAINED),
        ([True, False], Verdict.GAPS_UNEXPLAINED),
    ],
)
def test_jl16_session_verdict_from_its_gaps(gaps: list[bool], verdict: Verdict) -> None:
    assert session_verdict(gaps) is verdict


def test_jl16_verdict_vocabulary_is_the_enum() -> None:
    assert VERDICTS == ("continuous", "gaps_explained", "gaps_unexplained")
    assert {s.value for s in MarkerStatus if s.explained} == {"explained_spoken", "explained_written"}


def _s(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def test_jl16_clip_with_explanation_missing_is_unexplained_on_the_timeline(
    recorder: Recorder, ingest: IngestService
) -> None:
    """The server half alone: an old recorder still uploads the silent clip as kind=explanation."""
    send(ingest, recorder.event(K.STARTED, _s(0)))
    recorder.clip(_s(0), 60)
    send(ingest, recorder.event(K.INTERRUPTED, _s(60), marker_id="m1", cause="bad_weather"))
    send(ingest, recorder.event(K.RESUMED, _s(65), marker_id="m1"))
    recorder.clip(_s(65), 10, kind="explanation", marker_id="m1")
    send(ingest, recorder.event(K.EXPLANATION_MISSING, _s(75), marker_id="m1"))
    recorder.clip(_s(75), 45)
    send(ingest, recorder.event(K.ENDED, _s(120)))
    with session_scope(recorder.app) as session:
        record = session.scalars(select(EnforcementSessionRecord)).one()
        tl = session_service.timeline(
            session, record, lambda rid: f"/api/v1/recordings/{rid}/media", viewer=None
        )
    assert tl["verdict"] == "gaps_unexplained"
    (marker,) = tl["markers"]
    assert marker["status"] == "unexplained" and marker["explanation_missing"]
    assert len(marker["explanation_clips"]) == 1  # the clip is still shown: nothing recorded is hidden
    (gap,) = tl["unexplained_gaps"]
    assert gap["marker_ids"] == ["m1"]
