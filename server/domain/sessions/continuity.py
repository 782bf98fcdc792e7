"""JL-16 continuity: whether a session's media runs without a break, and whether each break is explained.

JL-16 asks for recording without a break from arrival until the end. After an interruption the officer
explains the reason by voice when recording resumes; when recording cannot resume, two or more officers
sign a written explanation afterwards. This module is the verdict alone: pure functions over frozen,
typed values (datetimes, not ISO strings), no database, no web framework. The session service converts
its stored rows into :class:`SessionEvidence` once, calls :func:`session_verdict` and renders the
:class:`Continuity` it returns.

The spans come from the recordings' own times (what the media shows, not what the recorder claims);
the markers and explanations only say whether a gap between spans is explained.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from protocol.session import SessionEventKind

__all__ = [
    "GAP_TOLERANCE",
    "REQUIRED_SIGNATURES",
    "VERDICTS",
    "Continuity",
    "Event",
    "Explanation",
    "Gap",
    "Interval",
    "Marker",
    "MarkerEvidence",
    "MarkerFinding",
    "MarkerStatus",
    "Piece",
    "SessionEvidence",
    "Signature",
    "Span",
    "Verdict",
    "distinct_signers",
    "marker_status",
    "session_verdict",
    "verdict_of_gaps",
]

# Pieces closer than this are one continuous span (segment boundaries, encoder restarts); a marker's
# reach is widened by as much on each side, and a written explanation's listed gap matches within it.
GAP_TOLERANCE = timedelta(seconds=1.5)
# JL-16: a written explanation is signed by "two or more" officers.
REQUIRED_SIGNATURES = 2


class MarkerStatus(Enum):
    """Where an interruption marker stands (JL-16)."""

    EXPLAINED_SPOKEN = "explained_spoken"
    EXPLAINED_WRITTEN = "explained_written"
    OPEN = "open"
    UNEXPLAINED = "unexplained"

    @property
    def explained(self) -> bool:
        """Whether the gap this marker covers counts as explained."""
        return self in (MarkerStatus.EXPLAINED_SPOKEN, MarkerStatus.EXPLAINED_WRITTEN)


class Verdict(Enum):
    """A session's JL-16 verdict."""

    CONTINUOUS = "continuous"
    GAPS_EXPLAINED = "gaps_explained"
    GAPS_UNEXPLAINED = "gaps_unexplained"


VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)


# ------------------------------------------------------------------------------------- input


@dataclass(frozen=True, kw_only=True)
class Interval:
    """A stretch of time from ``start`` to ``end``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        """An interval never runs backwards."""
        if self.end < self.start:
            raise ValueError(f"interval ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True, kw_only=True)
class Event:
    """One signed session event, as far as continuity cares: what, when, and which marker."""

    seq: int
    kind: SessionEventKind
    at: datetime
    marker_id: str = ""


@dataclass(frozen=True, kw_only=True)
class Piece:
    """One stored recording, by its signed manifest times (JL-6: the media's own account)."""

    recording_id: int
    start: datetime
    end: datetime
    # For a spoken explanation clip (kind "explanation"): the marker its signed manifest names ("" when
    # it names none). None for any other recording.
    explains: str | None = None


@dataclass(frozen=True, kw_only=True)
class Marker:
    """An interruption marker the recorder opened (a signed ``interrupted`` event)."""

    ref: int  # the stored marker's key: what a written explanation for this marker points to
    marker_id: str
    opened_at: datetime


@dataclass(frozen=True, kw_only=True)
class Signature:
    """One signature under a written explanation."""

    user_id: int
    officer_id: int | None  # the register officer; None on signatures from before the officer register
    text_sha256: str  # the text the signer saw

    @property
    def signer(self) -> tuple[str, int]:
        """Who the signature counts as: the register officer, or the account when no officer is known."""
        return ("officer", self.officer_id) if self.officer_id is not None else ("user", self.user_id)


@dataclass(frozen=True, kw_only=True)
class Explanation:
    """A written explanation (JL-16 second clause) for one marker, or for the gaps listed when filed."""

    explanation_id: int
    marker_ref: int | None  # None: it explains ``gaps``
    text_sha256: str
    gaps: tuple[Interval, ...] = ()
    signatures: tuple[Signature, ...] = ()

    @property
    def signed(self) -> bool:
        """Whether two or more distinct officers signed exactly this text (JL-16)."""
        return len(distinct_signers(self.text_sha256, self.signatures)) >= REQUIRED_SIGNATURES


@dataclass(frozen=True, kw_only=True)
class SessionEvidence:
    """Everything stored about one session that its continuity is judged from."""

    events: tuple[Event, ...]
    pieces: tuple[Piece, ...] = ()
    markers: tuple[Marker, ...] = ()
    explanations: tuple[Explanation, ...] = ()

    def __post_init__(self) -> None:
        """A session is known from its first event or its first recording; with neither it has no time."""
        if not self.events and not self.pieces:
            raise ValueError("a session needs at least one event or one recording")


# ------------------------------------------------------------------------------------ output


@dataclass(frozen=True, kw_only=True)
class Span:
    """Recorded time without a break longer than the tolerance, within the session."""

    start: datetime
    end: datetime
    recording_ids: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class MarkerFinding:
    """What the evidence says about one marker."""

    marker: Marker
    closed_at: datetime | None  # resumed, or the session ended after it opened
    resumed: bool
    explanation_missing: bool
    clips: tuple[Piece, ...]  # spoken explanation clips naming this marker
    written_explanation_ids: tuple[int, ...]  # written explanations for it with two signatures
    status: MarkerStatus


@dataclass(frozen=True, kw_only=True)
class Gap:
    """A hole in the media longer than the tolerance, and what explains it."""

    start: datetime
    end: datetime
    marker_ids: tuple[str, ...]  # markers whose reach overlaps the gap
    covered_by_markers: bool  # those markers' reaches leave no piece of it uncovered
    written_explanation_ids: tuple[int, ...]  # signed session-level explanations listing it
    explained: bool

    @property
    def duration(self) -> timedelta:
        """How long the media is missing."""
        return self.end - self.start

    @property
    def no_marker(self) -> bool:
        """No marker reaches into the gap: the recorder never said it stopped."""
        return not self.marker_ids


@dataclass(frozen=True, kw_only=True)
class Continuity:
    """The JL-16 verdict on one session with everything it rests on."""

    start: datetime  # the ``started`` event, else the earliest event or recording
    ended_at: datetime | None  # the ``ended`` event, None while the session is open
    end: datetime  # the ``ended`` event, else the latest event or recording end
    spans: tuple[Span, ...]
    gaps: tuple[Gap, ...]
    markers: tuple[MarkerFinding, ...]
    verdict: Verdict

    @property
    def unexplained_gaps(self) -> tuple[Gap, ...]:
        """The gaps nobody explained."""
        return tuple(g for g in self.gaps if not g.explained)


# ------------------------------------------------------------------------------ pure rules


@dataclass(frozen=True, kw_only=True)
class MarkerEvidence:
    """What the stored evidence says about one marker."""

    closed: bool  # resumed, or the session ended after it opened
    spoken_clips: int  # stored clips whose signed manifest names the marker (kind "explanation")
    explanation_missing: bool  # the recorder signed EXPLANATION_MISSING: skipped or silent
    signed_written_explanations: int  # written explanations with the two signatures JL-16 asks for


def marker_status(evidence: MarkerEvidence) -> MarkerStatus:
    """A marker's status from its evidence, not from the presence of a file (JL-16).

    The recorder's signed ``explanation_missing`` says the officer skipped or said nothing: whatever
    clip exists then shows no spoken reason, and only a written explanation signed by two officers
    explains the gap.
    """
    if evidence.spoken_clips and not evidence.explanation_missing:
        return MarkerStatus.EXPLAINED_SPOKEN
    if evidence.signed_written_explanations:
        return MarkerStatus.EXPLAINED_WRITTEN
    if not evidence.closed:
        return MarkerStatus.OPEN
    return MarkerStatus.UNEXPLAINED


def verdict_of_gaps(gaps_explained: Sequence[bool]) -> Verdict:
    """The session's verdict from whether each gap in its media is explained (JL-16)."""
    if not gaps_explained:
        return Verdict.CONTINUOUS
    return Verdict.GAPS_EXPLAINED if all(gaps_explained) else Verdict.GAPS_UNEXPLAINED


def distinct_signers(text_sha256: str, signatures: Iterable[Signature]) -> frozenset[tuple[str, int]]:
    """Distinct officers (JL-16: not merely accounts) who signed exactly the text with this digest."""
    return frozenset(s.signer for s in signatures if s.text_sha256 == text_sha256)


def session_verdict(evidence: SessionEvidence) -> Continuity:
    """JL-16: the session's spans, gaps and markers, and whether its media runs without an unexplained gap."""
    events = sorted(evidence.events, key=lambda e: e.seq)
    ended = _first(events, SessionEventKind.ENDED)
    merged = _merge(evidence.pieces)
    start, end = _bounds(events, merged)
    spans = _within(merged, start, end)
    signed = [e for e in sorted(evidence.explanations, key=lambda e: e.explanation_id) if e.signed]
    pieces = sorted(evidence.pieces, key=lambda p: (p.start, p.recording_id))
    markers = tuple(
        _marker_finding(m, events, pieces, signed)
        for m in sorted(evidence.markers, key=lambda m: (m.opened_at, m.ref))
    )
    reaches = [_reach(f, end) for f in markers]
    session_written = [e for e in signed if e.marker_ref is None]
    gaps = tuple(_judge(hole, reaches, session_written) for hole in _holes(spans, start, end))
    return Continuity(
        start=start,
        ended_at=ended.at if ended else None,
        end=end,
        spans=spans,
        gaps=gaps,
        markers=markers,
        verdict=verdict_of_gaps([g.explained for g in gaps]),
    )


def _bounds(events: Sequence[Event], merged: Sequence[Span]) -> tuple[datetime, datetime]:
    """From the ``started`` to the ``ended`` event; without one, the earliest or latest event or footage."""
    started = _first(events, SessionEventKind.STARTED)
    ended = _first(events, SessionEventKind.ENDED)
    start = started.at if started else min([e.at for e in events] + [s.start for s in merged])
    end = ended.at if ended else max([e.at for e in events] + [s.end for s in merged])
    return start, end


def _first(events: Sequence[Event], kind: SessionEventKind, marker_id: str = "") -> Event | None:
    """The first event of ``kind`` by sequence number (for ``marker_id`` when one is given)."""
    for event in events:
        if event.kind is kind and (not marker_id or event.marker_id == marker_id):
            return event
    return None


def _merge(pieces: Iterable[Piece]) -> list[Span]:
    """Recordings joined where they touch, overlap or lie within the tolerance of each other."""
    merged: list[Span] = []
    for piece in sorted(pieces, key=lambda p: (p.start, p.recording_id)):
        last = merged[-1] if merged else None
        if last is not None and piece.start <= last.end + GAP_TOLERANCE:
            merged[-1] = Span(
                start=last.start,
                end=max(last.end, piece.end),
                recording_ids=(*last.recording_ids, piece.recording_id),
            )
        else:
            merged.append(Span(start=piece.start, end=piece.end, recording_ids=(piece.recording_id,)))
    return merged


def _within(merged: Sequence[Span], start: datetime, end: datetime) -> tuple[Span, ...]:
    """The spans cut to the session: footage before the start or after the end is not a break."""
    return tuple(
        Span(start=max(s.start, start), end=min(s.end, end), recording_ids=s.recording_ids)
        for s in merged
        if s.end > start and s.start < end
    )


def _holes(spans: Sequence[Span], start: datetime, end: datetime) -> list[Interval]:
    """The stretches of the session no span covers, each longer than the tolerance."""
    holes: list[Interval] = []
    cursor = start
    for span in spans:
        if span.start - cursor > GAP_TOLERANCE:
            holes.append(Interval(start=cursor, end=span.start))
        cursor = max(cursor, span.end)
    if end - cursor > GAP_TOLERANCE:
        holes.append(Interval(start=cursor, end=end))
    return holes


def _marker_finding(
    marker: Marker, events: Sequence[Event], pieces: Sequence[Piece], signed: Sequence[Explanation]
) -> MarkerFinding:
    """One marker's closing, clips, written explanations and status (JL-16)."""
    resumed = _first(events, SessionEventKind.RESUMED, marker.marker_id)
    missing = _first(events, SessionEventKind.EXPLANATION_MISSING, marker.marker_id)
    closed_at = _closed_at(marker, resumed, _first(events, SessionEventKind.ENDED))
    clips = tuple(p for p in pieces if p.explains == marker.marker_id)
    written = tuple(e.explanation_id for e in signed if e.marker_ref == marker.ref)
    status = marker_status(
        MarkerEvidence(
            closed=closed_at is not None,
            spoken_clips=len(clips),
            explanation_missing=missing is not None,
            signed_written_explanations=len(written),
        )
    )
    return MarkerFinding(
        marker=marker,
        closed_at=closed_at,
        resumed=resumed is not None,
        explanation_missing=missing is not None,
        clips=clips,
        written_explanation_ids=written,
        status=status,
    )


def _closed_at(marker: Marker, resumed: Event | None, ended: Event | None) -> datetime | None:
    """When recording resumed after the marker, else when the session ended after it, else None."""
    if resumed is not None:
        return resumed.at
    if ended is not None and ended.at >= marker.opened_at:
        return ended.at
    return None


@dataclass(frozen=True, kw_only=True)
class _Reach:
    """The time a marker speaks for: from its opening to its closing (or the session's end), widened."""

    start: datetime
    end: datetime
    marker_id: str
    explained: bool


def _reach(finding: MarkerFinding, end: datetime) -> _Reach:
    """A marker's reach, widened by the tolerance on both sides (segment boundaries are not exact)."""
    return _Reach(
        start=finding.marker.opened_at - GAP_TOLERANCE,
        end=(finding.closed_at or end) + GAP_TOLERANCE,
        marker_id=finding.marker.marker_id,
        explained=finding.status.explained,
    )


def _judge(hole: Interval, reaches: Sequence[_Reach], session_written: Sequence[Explanation]) -> Gap:
    """A gap is explained by explained markers covering all of it, or by a signed explanation listing it."""
    overlapping = _overlapping(reaches, hole)
    covered = bool(overlapping) and _covered(hole, overlapping)
    by_markers = covered and all(r.explained for r in overlapping)
    by_writing = tuple(e.explanation_id for e in session_written if _lists(e, hole))
    return Gap(
        start=hole.start,
        end=hole.end,
        marker_ids=tuple(r.marker_id for r in overlapping),
        covered_by_markers=covered,
        written_explanation_ids=by_writing,
        explained=by_markers or bool(by_writing),
    )


def _overlapping(reaches: Sequence[_Reach], hole: Interval) -> list[_Reach]:
    """The marker reaches that overlap the hole."""
    return [r for r in reaches if r.start < hole.end and r.end > hole.start]


def _lists(explanation: Explanation, hole: Interval) -> bool:
    """Whether a written explanation lists this gap (within the tolerance) among those it was filed for."""
    return any(
        g.start - GAP_TOLERANCE <= hole.start and hole.end <= g.end + GAP_TOLERANCE for g in explanation.gaps
    )


def _covered(hole: Interval, reaches: Sequence[_Reach]) -> bool:
    """Whether the reaches leave no piece of the hole longer than the tolerance uncovered."""
    cursor = hole.start
    for reach in sorted(reaches, key=lambda r: (r.start, r.end)):
        if reach.start - cursor > GAP_TOLERANCE:
            return False
        cursor = max(cursor, reach.end)
    return hole.end - cursor <= GAP_TOLERANCE
