"""JL-16 continuity verdict, table-driven: one row per situation a reviewer of a session would meet.

Each row is the typed evidence of one session (events, recordings, markers, written explanations)
and what the verdict must say: the gaps in the media (seconds after T0, whether explained) and each
marker's status. The function is pure, so no database, broker or app is involved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from protocol.session import SessionEventKind
from server.domain.sessions.continuity import (
    Continuity,
    Event,
    Explanation,
    Interval,
    Marker,
    MarkerStatus,
    Piece,
    SessionEvidence,
    Signature,
    Verdict,
    session_verdict,
)

K = SessionEventKind
T0 = datetime(2026, 3, 4, 9, 0, 0, tzinfo=UTC)
TEXT = "a" * 64  # the digest of the explanation text every signer below saw


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def event(seq: int, kind: SessionEventKind, seconds: float, marker: str = "") -> Event:
    """A signed session event at T0 + ``seconds``."""
    return Event(seq=seq, kind=kind, at=at(seconds), marker_id=marker)


def piece(recording_id: int, start: float, end: float, explains: str | None = None) -> Piece:
    """A stored recording from T0 + ``start`` to T0 + ``end``."""
    return Piece(recording_id=recording_id, start=at(start), end=at(end), explains=explains)


def signed_by(*signers: tuple[int, int | None], text: str = TEXT) -> tuple[Signature, ...]:
    """Signatures by (user id, officer id) pairs over the text with digest ``text``."""
    return tuple(Signature(user_id=u, officer_id=o, text_sha256=text) for u, o in signers)


def for_marker(explanation_id: int, signatures: tuple[Signature, ...]) -> Explanation:
    """A written explanation for marker ``m1`` (stored key 1)."""
    return Explanation(explanation_id=explanation_id, marker_ref=1, text_sha256=TEXT, signatures=signatures)


def for_gaps(
    explanation_id: int, gaps: list[tuple[float, float]], signatures: tuple[Signature, ...]
) -> Explanation:
    """A written explanation for the gaps listed when it was filed (no marker)."""
    return Explanation(
        explanation_id=explanation_id,
        marker_ref=None,
        text_sha256=TEXT,
        gaps=tuple(Interval(start=at(s), end=at(e)) for s, e in gaps),
        signatures=signatures,
    )


M1 = Marker(ref=1, marker_id="m1", opened_at=at(30))
# A session from arrival (0 s) to the end (60 s) that was interrupted at 30 s and resumed at 40 s.
INTERRUPTED = (
    event(1, K.STARTED, 0),
    event(2, K.INTERRUPTED, 30, "m1"),
    event(3, K.RESUMED, 40, "m1"),
    event(4, K.ENDED, 60),
)
TWO_OFFICERS = signed_by((1, 11), (2, 12))


@dataclass(frozen=True)
class Row:
    """One situation and the verdict JL-16 gives it."""

    name: str
    evidence: SessionEvidence
    verdict: Verdict
    gaps: list[tuple[float, float, bool]] = field(default_factory=list)  # start s, end s, explained
    markers: dict[str, MarkerStatus] = field(default_factory=dict)


ROWS = [
    Row(
        "jl16-continuous-session-from-arrival-to-end",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)),
            pieces=(piece(1, 0, 30), piece(2, 30, 60)),
        ),
        Verdict.CONTINUOUS,
    ),
    Row(
        "jl16-gap-of-1.4s-under-the-tolerance-is-a-segment-boundary",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)),
            pieces=(piece(1, 0, 30), piece(2, 31.4, 60)),
        ),
        Verdict.CONTINUOUS,
    ),
    Row(
        "jl16-gap-of-1.6s-over-the-tolerance-without-a-marker-is-unexplained",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)),
            pieces=(piece(1, 0, 30), piece(2, 31.6, 60)),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 31.6, False)],
    ),
    Row(
        "jl16-no-footage-after-arrival-is-a-gap",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)), pieces=(piece(1, 5, 60),)
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(0, 5, False)],
    ),
    Row(
        "jl16-no-footage-before-the-end-is-a-gap",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)), pieces=(piece(1, 0, 50),)
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(50, 60, False)],
    ),
    Row(
        "jl16-footage-before-arrival-and-after-the-end-is-not-a-gap",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)), pieces=(piece(1, -10, 70),)
        ),
        Verdict.CONTINUOUS,
    ),
    Row(
        "jl16-gap-with-marker-and-spoken-reason-on-resume-is-explained",
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(1, 0, 30), piece(2, 40, 45, explains="m1"), piece(3, 45, 60)),
            markers=(M1,),
        ),
        Verdict.GAPS_EXPLAINED,
        gaps=[(30, 40, True)],
        markers={"m1": MarkerStatus.EXPLAINED_SPOKEN},
    ),
    Row(
        "jl16-marker-without-any-explanation-leaves-the-gap-unexplained",
        SessionEvidence(events=INTERRUPTED, pieces=(piece(1, 0, 30), piece(2, 40, 60)), markers=(M1,)),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, False)],
        markers={"m1": MarkerStatus.UNEXPLAINED},
    ),
    Row(
        "jl16-clip-signed-explanation-missing-is-no-spoken-reason",
        SessionEvidence(
            events=(*INTERRUPTED[:3], event(4, K.EXPLANATION_MISSING, 45, "m1"), event(5, K.ENDED, 60)),
            pieces=(piece(1, 0, 30), piece(2, 40, 45, explains="m1"), piece(3, 45, 60)),
            markers=(M1,),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, False)],
        markers={"m1": MarkerStatus.UNEXPLAINED},
    ),
    Row(
        "jl16-clip-naming-another-marker-explains-nothing-here",
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(1, 0, 30), piece(2, 40, 45, explains="m9"), piece(3, 45, 60)),
            markers=(M1,),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, False)],
        markers={"m1": MarkerStatus.UNEXPLAINED},
    ),
    Row(
        "jl16-written-explanation-cosigned-by-two-distinct-officers-explains-the-marker",
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(1, 0, 30), piece(2, 40, 60)),
            markers=(M1,),
            explanations=(for_marker(7, TWO_OFFICERS),),
        ),
        Verdict.GAPS_EXPLAINED,
        gaps=[(30, 40, True)],
        markers={"m1": MarkerStatus.EXPLAINED_WRITTEN},
    ),
    Row(
        "jl16-same-officer-signing-twice-through-two-accounts-counts-once",
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(1, 0, 30), piece(2, 40, 60)),
            markers=(M1,),
            explanations=(for_marker(7, signed_by((1, 11), (2, 11))),),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, False)],
        markers={"m1": MarkerStatus.UNEXPLAINED},
    ),
    Row(
        "jl16-one-signer-alone-does-not-explain",
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(1, 0, 30), piece(2, 40, 60)),
            markers=(M1,),
            explanations=(for_marker(7, signed_by((1, 11))),),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, False)],
        markers={"m1": MarkerStatus.UNEXPLAINED},
    ),
    Row(
        "jl16-a-signature-over-another-text-does-not-count",
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(1, 0, 30), piece(2, 40, 60)),
            markers=(M1,),
            explanations=(for_marker(7, (*signed_by((1, 11)), *signed_by((2, 12), text="b" * 64))),),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, False)],
        markers={"m1": MarkerStatus.UNEXPLAINED},
    ),
    Row(
        "jl16-signatures-from-before-the-officer-register-count-by-account",
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(1, 0, 30), piece(2, 40, 60)),
            markers=(M1,),
            explanations=(for_marker(7, signed_by((1, None), (2, None))),),
        ),
        Verdict.GAPS_EXPLAINED,
        gaps=[(30, 40, True)],
        markers={"m1": MarkerStatus.EXPLAINED_WRITTEN},
    ),
    Row(
        "jl16-written-explanation-listing-the-gap-explains-a-gap-without-marker",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)),
            pieces=(piece(1, 0, 30), piece(2, 40, 60)),
            explanations=(for_gaps(8, [(30, 40)], TWO_OFFICERS),),
        ),
        Verdict.GAPS_EXPLAINED,
        gaps=[(30, 40, True)],
    ),
    Row(
        "jl16-written-explanation-listing-another-gap-leaves-this-one-unexplained",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)),
            pieces=(piece(1, 0, 30), piece(2, 40, 50)),
            explanations=(for_gaps(8, [(30, 40)], TWO_OFFICERS),),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, True), (50, 60, False)],
    ),
    Row(
        "jl16-explained-marker-covering-only-part-of-a-gap-does-not-explain-it",
        SessionEvidence(
            events=(
                event(1, K.STARTED, 0),
                event(2, K.INTERRUPTED, 30, "m1"),
                event(3, K.RESUMED, 35, "m1"),
                event(4, K.ENDED, 60),
            ),
            pieces=(piece(1, 0, 30), piece(2, 50, 55, explains="m1"), piece(3, 55, 60)),
            markers=(M1,),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 50, False)],
        markers={"m1": MarkerStatus.EXPLAINED_SPOKEN},
    ),
    Row(
        "jl16-overlapping-recordings-are-one-span",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)),
            pieces=(piece(1, 0, 40), piece(2, 20, 35), piece(3, 38, 60)),
        ),
        Verdict.CONTINUOUS,
    ),
    Row(
        "jl16-out-of-order-segments-and-events-are-judged-in-time-and-seq-order",
        SessionEvidence(
            events=(event(2, K.ENDED, 60), event(1, K.STARTED, 0)),
            pieces=(piece(3, 40, 60), piece(1, 0, 20), piece(2, 20, 40)),
        ),
        Verdict.CONTINUOUS,
    ),
    Row(
        "jl16-arrival-is-the-first-start-by-seq-even-when-a-later-one-arrived-first",
        SessionEvidence(
            events=(event(5, K.STARTED, 20), event(6, K.ENDED, 60), event(1, K.STARTED, 0)),
            pieces=(piece(1, 5, 60),),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(0, 5, False)],
    ),
    Row(
        "jl16-session-still-open-runs-to-its-latest-footage",
        SessionEvidence(events=(event(1, K.STARTED, 0),), pieces=(piece(1, 0, 50),)),
        Verdict.CONTINUOUS,
    ),
    Row(
        "jl16-session-still-open-with-a-marker-still-open",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.INTERRUPTED, 30, "m1"), event(3, K.BOOKMARK, 40)),
            pieces=(piece(1, 0, 30),),
            markers=(M1,),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, False)],
        markers={"m1": MarkerStatus.OPEN},
    ),
    Row(
        "jl16-session-ended-while-interrupted-needs-a-written-explanation",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.INTERRUPTED, 30, "m1"), event(3, K.ENDED, 40)),
            pieces=(piece(1, 0, 30),),
            markers=(M1,),
        ),
        Verdict.GAPS_UNEXPLAINED,
        gaps=[(30, 40, False)],
        markers={"m1": MarkerStatus.UNEXPLAINED},
    ),
    Row(
        "jl16-session-ended-while-interrupted-with-two-officers-written-explanation",
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.INTERRUPTED, 30, "m1"), event(3, K.ENDED, 40)),
            pieces=(piece(1, 0, 30),),
            markers=(M1,),
            explanations=(for_marker(7, TWO_OFFICERS),),
        ),
        Verdict.GAPS_EXPLAINED,
        gaps=[(30, 40, True)],
        markers={"m1": MarkerStatus.EXPLAINED_WRITTEN},
    ),
]


def _gaps(result: Continuity) -> list[tuple[float, float, bool]]:
    return [((g.start - T0).total_seconds(), (g.end - T0).total_seconds(), g.explained) for g in result.gaps]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_jl16_session_verdict_from_the_evidence(row: Row) -> None:
    """The verdict, the gaps in the media and each marker's status follow from the evidence alone."""
    result = session_verdict(row.evidence)
    assert result.verdict is row.verdict
    assert _gaps(result) == row.gaps
    assert {f.marker.marker_id: f.status for f in result.markers} == row.markers


def test_jl16_spans_are_cut_to_the_session_and_name_their_recordings() -> None:
    """The spans a reviewer plays back run from arrival to the end, whatever the recorder kept around it."""
    result = session_verdict(
        SessionEvidence(
            events=(event(1, K.STARTED, 0), event(2, K.ENDED, 60)),
            pieces=(piece(2, 20, 45), piece(1, -5, 21), piece(3, 50, 70)),
        )
    )
    assert [(s.start, s.end, s.recording_ids) for s in result.spans] == [
        (at(0), at(45), (1, 2)),
        (at(50), at(60), (3,)),
    ]
    assert (result.start, result.end, result.ended_at) == (at(0), at(60), at(60))


def test_jl16_gap_says_which_markers_reach_it_and_which_writing_lists_it() -> None:
    """A gap names the markers around it and the signed written explanations that list it."""
    result = session_verdict(
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(1, 0, 30), piece(2, 40, 60)),
            markers=(M1,),
            explanations=(for_gaps(8, [(30, 40)], TWO_OFFICERS), for_gaps(9, [(30, 40)], signed_by((3, 13)))),
        )
    )
    (gap,) = result.gaps
    assert gap.marker_ids == ("m1",) and gap.covered_by_markers and not gap.no_marker
    assert gap.written_explanation_ids == (8,)  # 9 has one signature only
    assert gap.duration == timedelta(seconds=10) and gap.explained


def test_jl16_marker_finding_names_its_clips_and_closing() -> None:
    """A marker shows when recording resumed, its spoken clips in time order, and its signed writings."""
    result = session_verdict(
        SessionEvidence(
            events=INTERRUPTED,
            pieces=(piece(5, 47, 50, explains="m1"), piece(4, 40, 45, explains="m1"), piece(1, 0, 30)),
            markers=(M1,),
            explanations=(for_marker(7, TWO_OFFICERS), for_marker(6, signed_by((1, 11)))),
        )
    )
    (finding,) = result.markers
    assert finding.closed_at == at(40) and finding.resumed and not finding.explanation_missing
    assert [c.recording_id for c in finding.clips] == [4, 5]
    assert finding.written_explanation_ids == (7,)


def test_jl16_a_session_without_events_or_recordings_has_no_verdict() -> None:
    """Nothing stored says when such a session was: it is refused, not judged continuous."""
    with pytest.raises(ValueError, match="at least one event or one recording"):
        SessionEvidence(events=())


def test_jl16_an_interval_cannot_end_before_it_starts() -> None:
    """A listed gap that runs backwards is refused when built, not silently matched."""
    with pytest.raises(ValueError, match="before it starts"):
        Interval(start=at(10), end=at(5))
