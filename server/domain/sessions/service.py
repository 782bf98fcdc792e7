"""Enforcement sessions (JL-12, JL-15, JL-16): signed events in, written explanations, timeline and verdict.

JL-16 asks for recording without a break from arrival until the end; after an interruption the officer
explains the reason by voice when recording resumes, and when it cannot resume two or more officers sign
a written explanation afterwards. The recorder reports each transition as a signed event; this module
stores those events append-only, checks them against :class:`protocol.session.EnforcementSession`, and
compares them with what the media itself shows (the stored recordings' signed manifest times) to say
whether a session is continuous, has explained gaps, or has gaps nobody explained.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC as _UTC
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from protocol.session import (
    SessionEvent,
    SessionEventKind,
)
from server.domain.errors import Invalid, NotFound
from server.domain.evidence.models import IngestRejection, Recording
from server.domain.evidence.serving import evidence_status
from server.domain.governance.access import viewable_ids
from server.domain.people.models import Officer
from server.domain.people.service import Caller
from server.domain.scope import require_session, session_in_scope
from server.domain.sessions import continuity
from server.domain.sessions.continuity import (
    GAP_TOLERANCE,
    REQUIRED_SIGNATURES,
    VERDICTS,
    MarkerEvidence,
    MarkerStatus,
    Verdict,
    marker_status,
)
from server.domain.sessions.events import SESSION_REJECTION_CODES, _parse_stored, _Replay, _replay
from server.domain.sessions.models import (
    EnforcementSessionRecord,
    ExplanationSignature,
    InterruptionMarker,
    SessionEventRecord,
    WrittenExplanation,
)

__all__ = [
    "GAP_TOLERANCE",
    "MAX_PAGE",
    "REQUIRED_SIGNATURES",
    "VERDICTS",
    "MarkerEvidence",
    "MarkerStatus",
    "Verdict",
    "get_session",
    "list_sessions",
    "marker_status",
    "session_detail",
    "session_summary",
    "session_verdict",
    "timeline",
]


MAX_PAGE = 200


# ------------------------------------------------------------------------------------- ingest


# ------------------------------------------------------------------------------- loading


@dataclass
class _Loaded:
    """Everything about one session that the timeline is computed from."""

    record: EnforcementSessionRecord
    rows: list[SessionEventRecord]
    events: list[SessionEvent]
    markers: list[InterruptionMarker]
    recordings: list[Recording]
    explanations: list[WrittenExplanation]
    signatures: dict[int, list[ExplanationSignature]]
    officer_names: dict[int, str] = field(default_factory=dict)


def get_session(
    session: Session, session_pk: int, *, scope: Caller | None = None
) -> EnforcementSessionRecord:
    """The session, or NotFound; with ``scope``, another agency's session is NotFound too (JL-20)."""
    record = session.get(EnforcementSessionRecord, session_pk)
    missing = NotFound(f"执法过程 {session_pk} 不存在", f"session {session_pk} not found")
    if record is None:
        raise missing
    if scope is not None:
        require_session(session, scope, record, missing)
    return record


def load(session: Session, record: EnforcementSessionRecord) -> _Loaded:
    rows = list(
        session.scalars(
            select(SessionEventRecord)
            .where(SessionEventRecord.enforcement_session_id == record.id)
            .order_by(SessionEventRecord.seq)
        )
    )
    markers = list(
        session.scalars(
            select(InterruptionMarker)
            .where(InterruptionMarker.enforcement_session_id == record.id)
            .order_by(InterruptionMarker.opened_at, InterruptionMarker.id)
        )
    )
    recordings = list(
        session.scalars(
            select(Recording)
            .where(Recording.device_id == record.device_id, Recording.session_id == record.session_id)
            .order_by(Recording.started_at, Recording.id)
        )
    )
    explanations = list(
        session.scalars(
            select(WrittenExplanation)
            .where(WrittenExplanation.enforcement_session_id == record.id)
            .order_by(WrittenExplanation.id)
        )
    )
    signatures: dict[int, list[ExplanationSignature]] = {e.id: [] for e in explanations}
    if explanations:
        for sig in session.scalars(
            select(ExplanationSignature)
            .where(ExplanationSignature.explanation_id.in_(list(signatures)))
            .order_by(ExplanationSignature.id)
        ):
            signatures[sig.explanation_id].append(sig)
    signed_as = [s.officer_id for sigs in signatures.values() for s in sigs if s.officer_id is not None]
    return _Loaded(
        record,
        rows,
        [_parse_stored(r) for r in rows],
        markers,
        recordings,
        explanations,
        signatures,
        officer_names(session, signed_as),
    )


def officer_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """Register names of the officers who signed (JL-16: the timeline shows who signed)."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {o.id: o.name for o in session.scalars(select(Officer).where(Officer.id.in_(wanted)))}


# ------------------------------------------------------------------------------ timeline


def iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _marker_id_of(rec: Recording) -> str:
    """The marker an explanation clip names in its signed manifest (JL-16)."""
    try:
        value = json.loads(rec.manifest_text).get("marker_id", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _signature(sig: ExplanationSignature) -> continuity.Signature:
    return continuity.Signature(user_id=sig.user_id, officer_id=sig.officer_id, text_sha256=sig.text_sha256)


def _valid_signers(
    sigs: list[ExplanationSignature], explanation: WrittenExplanation
) -> frozenset[tuple[str, int]]:
    """Distinct officers (JL-16: not merely accounts) who signed exactly this text."""
    return continuity.distinct_signers(explanation.text_sha256, [_signature(s) for s in sigs])


def _evidence(loaded: _Loaded) -> continuity.SessionEvidence:
    """The stored rows as the typed evidence the JL-16 verdict is judged from, converted once."""
    return continuity.SessionEvidence(
        events=tuple(
            continuity.Event(seq=e.seq, kind=e.kind, at=e.at, marker_id=e.marker_id) for e in loaded.events
        ),
        pieces=tuple(
            continuity.Piece(
                recording_id=r.id,
                start=r.started_at,
                end=r.ended_at,
                explains=_marker_id_of(r) if r.kind == "explanation" else None,
            )
            for r in loaded.recordings
        ),
        markers=tuple(
            continuity.Marker(ref=m.id, marker_id=m.marker_id, opened_at=m.opened_at) for m in loaded.markers
        ),
        explanations=tuple(
            continuity.Explanation(
                explanation_id=e.id,
                marker_ref=e.marker_ref,
                text_sha256=e.text_sha256,
                # Listed by file_explanation as ISO strings: parsed here, once.
                gaps=tuple(
                    continuity.Interval(
                        start=datetime.fromisoformat(g["start"]), end=datetime.fromisoformat(g["end"])
                    )
                    for g in e.gaps or ()
                ),
                signatures=tuple(_signature(s) for s in loaded.signatures[e.id]),
            )
            for e in loaded.explanations
        ),
    )


@dataclass
class _Computed:
    """The derived view of one session."""

    loaded: _Loaded
    started: SessionEvent | None
    continuity: continuity.Continuity
    replay: _Replay


def compute(loaded: _Loaded) -> _Computed:
    """The JL-16 verdict (a pure function of the typed evidence) and the replay of the signed events."""
    started = next((e for e in loaded.events if e.kind is SessionEventKind.STARTED), None)
    return _Computed(
        loaded,
        started,
        continuity.session_verdict(_evidence(loaded)),
        _replay(loaded.record.session_id, loaded.events),
    )


def _span_view(span: continuity.Span) -> dict[str, Any]:
    return {
        "start": iso_or_none(span.start),
        "end": iso_or_none(span.end),
        "recording_ids": list(span.recording_ids),
    }


def _gap_view(gap: continuity.Gap) -> dict[str, Any]:
    return {
        "start": iso_or_none(gap.start),
        "end": iso_or_none(gap.end),
        "duration_s": round(gap.duration.total_seconds(), 3),
        "marker_ids": list(gap.marker_ids),
        "no_marker": gap.no_marker,
        "covered_by_markers": gap.covered_by_markers,
        "written_explanation_ids": list(gap.written_explanation_ids),
        "explained": gap.explained,
    }


def _marker_view(
    finding: continuity.MarkerFinding, stored: InterruptionMarker, media_url: Callable[[int], str]
) -> dict[str, Any]:
    return {
        "marker_id": finding.marker.marker_id,
        "opened_at": iso_or_none(finding.marker.opened_at),
        "closed_at": iso_or_none(finding.closed_at),
        "resumed": finding.resumed,
        "cause": stored.cause,
        "automatic": stored.automatic,
        "explanation_missing": finding.explanation_missing,
        "explanation_clips": [
            {
                "recording_id": clip.recording_id,
                "media_url": media_url(clip.recording_id),
                "started_at": iso_or_none(clip.start),
            }
            for clip in finding.clips
        ],
        "written_explanation_ids": list(finding.written_explanation_ids),
        "status": finding.status.value,
    }


def _continuity_view(
    verdict: continuity.Continuity, markers: list[InterruptionMarker], media_url: Callable[[int], str]
) -> dict[str, Any]:
    """The verdict's spans, gaps and markers as the timeline shows them (JL-16)."""
    stored = {m.id: m for m in markers}
    return {
        "spans": [_span_view(s) for s in verdict.spans],
        "gaps": [_gap_view(g) for g in verdict.gaps],
        "unexplained_gaps": [_gap_view(g) for g in verdict.unexplained_gaps],
        "markers": [_marker_view(f, stored[f.marker.ref], media_url) for f in verdict.markers],
    }


def session_verdict(gaps_explained: Sequence[bool]) -> Verdict:
    """The verdict from whether each gap is explained alone (JL-16); continuity.session_verdict judges all."""
    return continuity.verdict_of_gaps(gaps_explained)


def session_summary(session: Session, record: EnforcementSessionRecord) -> dict[str, Any]:
    """List-view fields of a session, with its verdict."""
    return _summary(compute(load(session, record)))


def _summary(computed: _Computed) -> dict[str, Any]:
    loaded, started, verdict = computed.loaded, computed.started, computed.continuity
    return {
        "id": loaded.record.id,
        "device_id": loaded.record.device_id,
        "session_id": loaded.record.session_id,
        "officer_id": started.officer_id if started else "",
        "case_id": started.case_id if started else "",
        "started_at": iso_or_none(started.at if started else None),
        "ended_at": iso_or_none(verdict.ended_at),
        "state": computed.replay.state,
        "verdict": verdict.verdict.value,
        "gap_count": len(verdict.gaps),
        "unexplained_gap_count": len(verdict.unexplained_gaps),
        "marker_count": len(verdict.markers),
    }


def session_detail(session: Session, record: EnforcementSessionRecord) -> dict[str, Any]:
    """A session with its signed events, missing sequence numbers and transition violations."""
    computed = compute(load(session, record))
    out = _summary(computed)
    out["events"] = [
        {
            "event_id": row.event_id,
            "seq": row.seq,
            "kind": row.kind,
            "at": iso_or_none(row.at),
            "officer_id": row.officer_id,
            "marker_id": row.marker_id,
            "cause": row.cause,
            "automatic": row.automatic,
            "bookmark_type": row.bookmark_type,
            "note": row.note,
            "received_at": iso_or_none(row.received_at),
            "event": row.event_text,
        }
        for row in computed.loaded.rows
    ]
    out["missing_seqs"] = computed.replay.missing_seqs
    out["violations"] = [vars(v) for v in computed.replay.violations]
    return out


def explanation_view(
    explanation: WrittenExplanation,
    sigs: list[ExplanationSignature],
    marker: str | None,
    names: dict[int, str],
) -> dict[str, Any]:
    """One written explanation with its signers' names and certificate numbers (JL-16)."""
    signers = _valid_signers(sigs, explanation)
    return {
        "id": explanation.id,
        "marker_id": marker,
        "text": explanation.text,
        "text_sha256": explanation.text_sha256,
        "gaps": explanation.gaps,
        "filed_by": explanation.filed_by,
        "filed_at": iso_or_none(explanation.filed_at),
        "signatures": [
            {
                "user_id": s.user_id,
                "username": s.username,
                "role": s.role,
                "officer_id": s.officer_id,
                "officer_name": names.get(s.officer_id) if s.officer_id is not None else None,
                "certificate_number": s.certificate_number,
                "signed_at": iso_or_none(s.signed_at),
            }
            for s in sigs
        ],
        "signature_count": len(signers),
        "complete": len(signers) >= REQUIRED_SIGNATURES,
    }


def _rejected_events(session: Session, record: EnforcementSessionRecord) -> list[dict[str, Any]]:
    """Refused or violating events of this session from the security log: reported, never dropped."""
    rows = session.scalars(
        select(IngestRejection)
        .where(
            IngestRejection.device_id == record.device_id,
            IngestRejection.code.in_(SESSION_REJECTION_CODES),
            IngestRejection.manifest_text.is_not(None),
        )
        .order_by(IngestRejection.id)
        .limit(1000)
    )
    out = []
    for row in rows:
        try:
            data = json.loads(row.manifest_text or "")
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("session_id") == record.session_id:
            out.append(
                {"event_id": row.file_id, "code": row.code, "message": row.message, "at": iso_or_none(row.at)}
            )
    return out


def timeline(
    session: Session,
    record: EnforcementSessionRecord,
    media_url: Callable[[int], str],
    *,
    viewer: Caller | None,
) -> dict[str, Any]:
    """Recorded spans, gaps, markers with their clips, written explanations, bookmarks and the verdict.

    ``viewer`` is whoever the timeline is for; None only for the server's own use (archives, tests of the
    verdict). A segment that viewer may not view (JL-20: restricted or confidential beyond their duty,
    without a grant) is withheld the way the workspace's session page withholds it: the verdict, spans and
    gaps are computed over every segment, so a withheld one never reads as a gap (JL-16), but its
    recording id, media link and clip are left out and only counted (``withheld_count``,
    ``hidden_clips``); an integrity finding on it keeps its code and sequence without the id.
    """
    computed = compute(load(session, record))
    loaded, verdict = computed.loaded, computed.continuity
    marker_ids = {m.id: m.marker_id for m in loaded.markers}
    out = _summary(computed)
    out.update(_continuity_view(verdict, loaded.markers, media_url))
    shown = (
        {r.id for r in loaded.recordings}
        if viewer is None
        else viewable_ids(session, viewer, loaded.recordings)
    )
    out.update(
        {
            "written_explanations": [
                explanation_view(
                    e, loaded.signatures[e.id], marker_ids.get(e.marker_ref or 0), loaded.officer_names
                )
                for e in loaded.explanations
            ],
            # JL-15: what the recording must show, tagged by the officer.
            "bookmarks": [
                {
                    "event_id": row.event_id,
                    "at": iso_or_none(row.at),
                    "bookmark_type": row.bookmark_type,
                    "note": row.note,
                    "officer_id": row.officer_id,
                }
                for row in loaded.rows
                if row.kind == SessionEventKind.BOOKMARK.value
            ],
            "missing_seqs": computed.replay.missing_seqs,
            "violations": [vars(v) for v in computed.replay.violations],
            "rejected_events": _rejected_events(session, record),
            # JL-6: the spans above come from the recordings' columns; say whether they match the signed
            # manifests, so an edited time or officer cannot pass as a continuous record.
            "evidence": evidence_status(session, loaded.recordings),
        }
    )
    return withhold(out, shown)


def withhold(timeline_view: dict[str, Any], shown: set[int]) -> dict[str, Any]:
    """The timeline without the ids, links and clips of recordings not in ``shown`` (JL-20).

    The one rule for the API's timeline and the workspace's session page: a withheld segment keeps its
    place (its span's times, its sequence in a finding) and is counted, never named.
    """
    for span in timeline_view["spans"]:
        ids = span["recording_ids"]
        span["recording_ids"] = [rid for rid in ids if rid in shown]
        span["withheld_count"] = len(ids) - len(span["recording_ids"])
    for marker in timeline_view["markers"]:
        clips = marker["explanation_clips"]
        marker["explanation_clips"] = [c for c in clips if c["recording_id"] in shown]
        marker["hidden_clips"] = len(clips) - len(marker["explanation_clips"])
    for finding in timeline_view["evidence"]["findings"]:
        if finding["recording_id"] is not None and finding["recording_id"] not in shown:
            finding["recording_id"] = None
    return timeline_view


# ------------------------------------------------------------------------------ listing


def _parse_date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{name} 必须是 YYYY-MM-DD 日期", f"{name} must be a YYYY-MM-DD date") from None


def list_sessions(
    session: Session,
    *,
    verdict: str | None = None,
    device_id: str | None = None,
    officer_id: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    limit: int = 50,
    before: int | None = None,
    scope: Caller | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first; filters by verdict (computed), device, officer and start date (UTC, inclusive).

    With ``scope``, only the caller's agency's sessions (services/scope.py, JL-20).
    """
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit 必须在 1 到 {MAX_PAGE} 之间", f"limit must be between 1 and {MAX_PAGE}")
    if verdict is not None and verdict not in VERDICTS:
        raise Invalid(
            f"verdict 必须是 {', '.join(VERDICTS)} 之一", f"verdict must be one of {', '.join(VERDICTS)}"
        )
    first, last = _parse_date(date_from, "date_from"), _parse_date(date_to, "date_to")
    query = select(EnforcementSessionRecord).order_by(EnforcementSessionRecord.id.desc())
    if device_id:
        query = query.where(EnforcementSessionRecord.device_id == device_id)
    if scope is not None:
        query = query.where(session_in_scope(scope))
    if officer_id or first or last:
        started = select(SessionEventRecord.id).where(
            SessionEventRecord.enforcement_session_id == EnforcementSessionRecord.id,
            SessionEventRecord.kind == SessionEventKind.STARTED.value,
        )
        if officer_id:
            started = started.where(SessionEventRecord.officer_id == officer_id)
        if first:
            started = started.where(SessionEventRecord.at >= datetime.combine(first, time.min, tzinfo=_UTC))
        if last:
            started = started.where(
                SessionEventRecord.at < datetime.combine(last + timedelta(days=1), time.min, tzinfo=_UTC)
            )
        query = query.where(exists(started))
    items: list[dict[str, Any]] = []
    cursor = before
    # The verdict depends on recordings and signatures that keep arriving, so it is computed, not stored.
    while len(items) <= limit:
        page = query if cursor is None else query.where(EnforcementSessionRecord.id < cursor)
        batch = list(session.scalars(page.limit(100)))
        if not batch:
            break
        for record in batch:
            summary = session_summary(session, record)
            if verdict is None or summary["verdict"] == verdict:
                items.append(summary)
                if len(items) > limit:
                    break
        cursor = batch[-1].id
    next_cursor = items[limit - 1]["id"] if len(items) > limit else None
    return items[:limit], next_cursor


# ------------------------------------------------------------------------ written explanations
