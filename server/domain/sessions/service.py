"""Enforcement sessions (JL-12, JL-15, JL-16): signed events in, written explanations, timeline and verdict.

JL-16 asks for recording without a break from arrival until the end; after an interruption the officer
explains the reason by voice when recording resumes, and when it cannot resume two or more officers sign
a written explanation afterwards. The recorder reports each transition as a signed event; this module
stores those events append-only, checks them against :class:`protocol.session.EnforcementSession`, and
compares them with what the media itself shows (the stored recordings' signed manifest times) to say
whether a session is continuous, has explained gaps, or has gaps nobody explained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC as _UTC
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from protocol.session import (
    EnforcementSession,
    EventAck,
    EventAckState,
    SessionError,
    SessionEvent,
    SessionEventKind,
    SignedSessionEvent,
)
from server.domain.accounts.models import User
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound, ServiceError
from server.domain.evidence.models import IngestRejection, Recording
from server.domain.evidence.scrub import evidence_status
from server.domain.fleet.models import DeviceStatus
from server.domain.people.models import Officer
from server.domain.people.service import Caller
from server.domain.scope import require_session, session_in_scope
from server.domain.sessions.models import (
    EnforcementSessionRecord,
    ExplanationSignature,
    InterruptionMarker,
    SessionEventRecord,
    WrittenExplanation,
)
from server.errors import ErrorKind

__all__ = [
    "GAP_TOLERANCE",
    "MAX_EXPLANATION_CHARS",
    "MAX_PAGE",
    "REQUIRED_SIGNATURES",
    "SESSION_REJECTION_CODES",
    "SIGNING_ROLES",
    "VERDICTS",
    "CertificateExpired",
    "EventOutcome",
    "MarkerEvidence",
    "MarkerStatus",
    "NotAnOfficer",
    "OfficerNotActive",
    "OfficerOtherAgency",
    "SameOfficer",
    "Verdict",
    "file_explanation",
    "get_session",
    "list_sessions",
    "marker_status",
    "receive_event",
    "session_detail",
    "session_summary",
    "session_verdict",
    "sign_explanation",
    "timeline",
]


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
# Segments closer than this are one continuous span (segment boundaries, encoder restarts).
GAP_TOLERANCE = timedelta(seconds=1.5)
# JL-16: a written explanation is signed by "two or more" officers.
REQUIRED_SIGNATURES = 2
SIGNING_ROLES: tuple[str, ...] = ("officer", "agency_head")
MAX_PAGE = 200
MAX_EXPLANATION_CHARS = 5000
SESSION_REJECTION_CODES: tuple[str, ...] = (
    "bad_session_event",
    "unknown_device",
    "device_inactive",
    "event_mismatch",
    "bad_signature",
    "event_conflict",
    "seq_conflict",
    "marker_conflict",
    "impossible_transition",
    "transition_violation",
)


class NotAnOfficer(ServiceError):
    """Only officers sign JL-16 written explanations."""

    code = "not_an_officer"
    kind = ErrorKind.FORBIDDEN


class OfficerNotActive(ServiceError):
    """JL-16: a suspended or revoked officer does not sign as an enforcement officer."""

    code = "officer_not_active"
    kind = ErrorKind.FORBIDDEN


class CertificateExpired(ServiceError):
    """JL-16: the signer's enforcement certificate is not valid today."""

    code = "certificate_expired"
    kind = ErrorKind.FORBIDDEN


class OfficerOtherAgency(ServiceError):
    """JL-16: the signer belongs to another agency than the session's officer."""

    code = "officer_other_agency"
    kind = ErrorKind.FORBIDDEN


class SameOfficer(ServiceError):
    """JL-16: two signatures by one officer (through two accounts) count once."""

    code = "same_officer"
    kind = ErrorKind.CONFLICT


class AlreadySigned(ServiceError):
    """The same person cannot count twice towards the two signatures JL-16 asks for."""

    code = "already_signed"
    kind = ErrorKind.CONFLICT


# ------------------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class Violation:
    """A stored or offered event the session machine does not allow (JL-16)."""

    event_id: str
    seq: int
    message: str


@dataclass(frozen=True)
class EventOutcome:
    """The ack to send and the security-log rows to write for one received session event."""

    ack: EventAck
    # (code, message, event_id, event_text): written to ingest_rejections by the caller.
    rejections: list[tuple[str, str, str, str | None]] = field(default_factory=list)


@dataclass
class _Replay:
    """What replaying a session's events by ``seq`` showed."""

    state: str = "unknown"
    violations: list[Violation] = field(default_factory=list)
    missing_seqs: list[int] = field(default_factory=list)


def _replay(session_id: str, events: Iterable[SessionEvent]) -> _Replay:
    """Drive the protocol's machine over the contiguous run from ``started``; skip and report violations."""
    ordered = sorted(events, key=lambda e: e.seq)
    result = _Replay()
    starts = [e for e in ordered if e.kind is SessionEventKind.STARTED]
    if not starts:
        return result  # the start has not arrived yet: nothing can be checked
    first = starts[0]
    machine = EnforcementSession(session_id)
    previous = first.seq - 1
    contiguous = True
    for event in ordered:
        if event.seq < first.seq:
            result.violations.append(Violation(event.event_id, event.seq, "event before the session started"))
            continue
        if event.seq != previous + 1:
            result.missing_seqs.extend(range(previous + 1, event.seq))
            contiguous = False  # events are missing: what follows cannot be checked yet
        previous = event.seq
        if not contiguous:
            continue
        try:
            machine.apply(event)
        except SessionError as exc:
            result.violations.append(Violation(event.event_id, event.seq, str(exc)))
    result.state = machine.state.value if contiguous else "incomplete"
    return result


def _parse_stored(row: SessionEventRecord) -> SessionEvent:
    """The signed event back from its stored text (the text, not the columns, is the evidence)."""
    return SessionEvent.from_json_dict(json.loads(row.event_text))


def receive_event(
    session: Session,
    *,
    device_id: str,
    event_id: str,
    signed: SignedSessionEvent,
    device_key: bytes | None,
    device_status: str | None,
) -> EventOutcome:
    """Verify, check and store one signed session event (flushed; the caller commits, then acks).

    ``signed`` was decoded at the ingest edge; a payload that does not decode never gets here.
    """

    def refuse(code: str, message: str, text: str | None = None) -> EventOutcome:
        ack = EventAck(
            device_id=device_id,
            event_id=event_id,
            state=EventAckState.REJECTED,
            code=code,
            message=message[:500],
        )
        return EventOutcome(ack, [(code, message, event_id, text)])

    event, text = signed.event, signed.event_text
    if device_key is None:
        return refuse("unknown_device", f"device {device_id} is not registered", text)
    if event.device_id != device_id or event.event_id != event_id:
        return refuse(
            "event_mismatch", "the topic and the signed event name different devices or events", text
        )
    if not signed.verify(device_key):
        return refuse("bad_signature", f"session event {event_id} is not signed by device {device_id}", text)
    if device_status not in DeviceStatus.ACCEPTING:
        return refuse("device_inactive", f"device {device_id} is {device_status}", text)
    existing = session.scalar(
        select(SessionEventRecord).where(
            SessionEventRecord.device_id == device_id, SessionEventRecord.event_id == event_id
        )
    )
    if existing is not None:
        if existing.event_text == text:
            return EventOutcome(
                EventAck(device_id=device_id, event_id=event_id, state=EventAckState.DUPLICATE)
            )
        return refuse("event_conflict", f"event {event_id} was already stored with different content", text)
    clash = session.scalar(
        select(SessionEventRecord.event_id).where(
            SessionEventRecord.device_id == device_id, SessionEventRecord.seq == event.seq
        )
    )
    if clash is not None:
        return refuse("seq_conflict", f"seq {event.seq} is already event {clash}", text)
    record = session.scalar(
        select(EnforcementSessionRecord).where(
            EnforcementSessionRecord.device_id == device_id,
            EnforcementSessionRecord.session_id == event.session_id,
        )
    )
    stored_rows: list[SessionEventRecord] = []
    if record is not None:
        stored_rows = list(
            session.scalars(
                select(SessionEventRecord).where(SessionEventRecord.enforcement_session_id == record.id)
            )
        )
    stored = [_parse_stored(row) for row in stored_rows]
    before = {v.event_id for v in _replay(event.session_id, stored).violations}
    after = _replay(event.session_id, [*stored, event]).violations
    for violation in after:
        if violation.event_id == event_id:
            # JL-16: the machine's table is the rule; an impossible transition is refused, not stored.
            return refuse("impossible_transition", violation.message, text)
    if event.kind is SessionEventKind.INTERRUPTED and record is not None:
        known = session.scalar(
            select(InterruptionMarker.id).where(
                InterruptionMarker.enforcement_session_id == record.id,
                InterruptionMarker.marker_id == event.marker_id,
            )
        )
        if known is not None:
            return refuse("marker_conflict", f"marker {event.marker_id} was already opened", text)
    if record is None:
        record = EnforcementSessionRecord(
            device_id=device_id, session_id=event.session_id, first_seen_at=utcnow()
        )
        session.add(record)
        session.flush()
    row = SessionEventRecord(
        enforcement_session_id=record.id,
        device_id=device_id,
        event_id=event_id,
        seq=event.seq,
        kind=event.kind.value,
        at=event.at,
        officer_id=event.officer_id,
        case_id=event.case_id,
        marker_id=event.marker_id,
        cause=event.cause,
        automatic=event.automatic,
        bookmark_type=event.bookmark_type,
        note=event.note,
        event_text=text,
        signature=signed.signature,
        received_at=utcnow(),
    )
    session.add(row)
    session.flush()
    if event.kind is SessionEventKind.INTERRUPTED:
        session.add(
            InterruptionMarker(
                enforcement_session_id=record.id,
                marker_id=event.marker_id,
                opened_event_id=row.id,
                opened_at=event.at,
                cause=event.cause,
                automatic=event.automatic,
            )
        )
        session.flush()
    # An earlier event arriving late can show that an already stored later one broke the table: keep the
    # evidence, and log the violation so the timeline and the security log show it (JL-16).
    rejections: list[tuple[str, str, str, str | None]] = []
    texts = {r.event_id: r.event_text for r in stored_rows}
    for violation in after:
        if violation.event_id not in before:
            rejections.append(
                ("transition_violation", violation.message, violation.event_id, texts.get(violation.event_id))
            )
    return EventOutcome(
        EventAck(device_id=device_id, event_id=event_id, state=EventAckState.STORED), rejections
    )


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


def _load(session: Session, record: EnforcementSessionRecord) -> _Loaded:
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
        _officer_names(session, signed_as),
    )


def _officer_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """Register names of the officers who signed (JL-16: the timeline shows who signed)."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {o.id: o.name for o in session.scalars(select(Officer).where(Officer.id.in_(wanted)))}


# ------------------------------------------------------------------------------ timeline


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _marker_id_of(rec: Recording) -> str:
    """The marker an explanation clip names in its signed manifest (JL-16)."""
    try:
        value = json.loads(rec.manifest_text).get("marker_id", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _signer_key(sig: ExplanationSignature) -> tuple[str, int]:
    """Who a signature counts as: the register officer, or the account for rows from before 0008."""
    return ("officer", sig.officer_id) if sig.officer_id is not None else ("user", sig.user_id)


def _valid_signers(sigs: list[ExplanationSignature], explanation: WrittenExplanation) -> set[tuple[str, int]]:
    """Distinct officers (JL-16: not merely accounts) who signed exactly this text."""
    return {_signer_key(s) for s in sigs if s.text_sha256 == explanation.text_sha256}


@dataclass
class _Computed:
    """The derived view of one session."""

    loaded: _Loaded
    started_at: datetime | None
    ended_at: datetime | None
    state: str
    spans: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    markers: list[dict[str, Any]]
    verdict: str
    replay: _Replay


def _event(loaded: _Loaded, kind: SessionEventKind, marker_id: str = "") -> SessionEvent | None:
    for event in loaded.events:
        if event.kind is kind and (not marker_id or event.marker_id == marker_id):
            return event
    return None


def _compute(loaded: _Loaded, media_url: Callable[[int], str]) -> _Computed:
    tol = GAP_TOLERANCE
    started = _event(loaded, SessionEventKind.STARTED)
    ended = _event(loaded, SessionEventKind.ENDED)
    # Spans come from the recordings' own signed manifest times: what the media shows, not a claim.
    merged: list[dict[str, Any]] = []
    for rec in loaded.recordings:
        if merged and rec.started_at <= merged[-1]["end"] + tol:
            merged[-1]["end"] = max(merged[-1]["end"], rec.ended_at)
            merged[-1]["recording_ids"].append(rec.id)
        else:
            merged.append({"start": rec.started_at, "end": rec.ended_at, "recording_ids": [rec.id]})
    times = [e.at for e in loaded.events] + [s["end"] for s in merged]
    start = started.at if started else min([e.at for e in loaded.events] + [s["start"] for s in merged])
    end = ended.at if ended else max(times)
    spans = [
        {**s, "start": max(s["start"], start), "end": min(s["end"], end)}
        for s in merged
        if s["end"] > start and s["start"] < end
    ]
    raw_gaps: list[tuple[datetime, datetime]] = []
    cursor = start
    for span in spans:
        if span["start"] - cursor > tol:
            raw_gaps.append((cursor, span["start"]))
        cursor = max(cursor, span["end"])
    if end - cursor > tol:
        raw_gaps.append((cursor, end))

    clips: dict[str, list[Recording]] = {}
    for rec in loaded.recordings:
        if rec.kind == "explanation":
            clips.setdefault(_marker_id_of(rec), []).append(rec)
    written_ok = {
        e.id
        for e in loaded.explanations
        if len(_valid_signers(loaded.signatures[e.id], e)) >= REQUIRED_SIGNATURES
    }
    marker_views: list[dict[str, Any]] = []
    intervals: list[tuple[datetime, datetime, bool, str]] = []
    for marker in loaded.markers:
        resumed = _event(loaded, SessionEventKind.RESUMED, marker.marker_id)
        missing = _event(loaded, SessionEventKind.EXPLANATION_MISSING, marker.marker_id)
        closed_at = resumed.at if resumed else (ended.at if ended and ended.at >= marker.opened_at else None)
        marker_clips = clips.get(marker.marker_id, [])
        written = [e.id for e in loaded.explanations if e.marker_ref == marker.id and e.id in written_ok]
        status = marker_status(
            MarkerEvidence(
                closed=closed_at is not None,
                spoken_clips=len(marker_clips),
                explanation_missing=missing is not None,
                signed_written_explanations=len(written),
            )
        ).value
        marker_views.append(
            {
                "marker_id": marker.marker_id,
                "opened_at": _iso(marker.opened_at),
                "closed_at": _iso(closed_at),
                "resumed": resumed is not None,
                "cause": marker.cause,
                "automatic": marker.automatic,
                "explanation_missing": missing is not None,
                "explanation_clips": [
                    {"recording_id": r.id, "media_url": media_url(r.id), "started_at": _iso(r.started_at)}
                    for r in marker_clips
                ],
                "written_explanation_ids": written,
                "status": status,
            }
        )
        explained = MarkerStatus(status).explained
        intervals.append((marker.opened_at - tol, (closed_at or end) + tol, explained, marker.marker_id))

    session_written = [e for e in loaded.explanations if e.marker_ref is None and e.id in written_ok]
    gaps: list[dict[str, Any]] = []
    for gap_start, gap_end in raw_gaps:
        overlapping = [i for i in intervals if i[0] < gap_end and i[1] > gap_start]
        covered = _covered(gap_start, gap_end, [(i[0], i[1]) for i in overlapping])
        by_markers = bool(overlapping) and covered and all(i[2] for i in overlapping)
        by_writing = [
            e.id
            for e in session_written
            if any(
                datetime.fromisoformat(g["start"]) - tol <= gap_start
                and gap_end <= datetime.fromisoformat(g["end"]) + tol
                for g in e.gaps
            )
        ]
        gaps.append(
            {
                "start": _iso(gap_start),
                "end": _iso(gap_end),
                "duration_s": round((gap_end - gap_start).total_seconds(), 3),
                "marker_ids": [i[3] for i in overlapping],
                "no_marker": not overlapping,
                "covered_by_markers": bool(overlapping) and covered,
                "written_explanation_ids": by_writing,
                "explained": by_markers or bool(by_writing),
            }
        )
    verdict = session_verdict([g["explained"] for g in gaps]).value
    replay = _replay(loaded.record.session_id, loaded.events)
    span_views = [
        {"start": _iso(s["start"]), "end": _iso(s["end"]), "recording_ids": s["recording_ids"]} for s in spans
    ]
    return _Computed(
        loaded,
        start,
        ended.at if ended else None,
        replay.state,
        span_views,
        gaps,
        marker_views,
        verdict,
        replay,
    )


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


def session_verdict(gaps_explained: Sequence[bool]) -> Verdict:
    """The session's verdict from whether each gap in its media is explained (JL-16)."""
    if not gaps_explained:
        return Verdict.CONTINUOUS
    return Verdict.GAPS_EXPLAINED if all(gaps_explained) else Verdict.GAPS_UNEXPLAINED


def _covered(start: datetime, end: datetime, intervals: list[tuple[datetime, datetime]]) -> bool:
    """Whether the intervals leave no piece of [start, end] longer than the tolerance uncovered."""
    cursor = start
    for lo, hi in sorted(intervals):
        if lo - cursor > GAP_TOLERANCE:
            return False
        cursor = max(cursor, hi)
    return end - cursor <= GAP_TOLERANCE


def _no_url(_recording_id: int) -> str:
    return ""


def session_summary(session: Session, record: EnforcementSessionRecord) -> dict[str, Any]:
    """List-view fields of a session, with its verdict."""
    return _summary(_compute(_load(session, record), _no_url))


def _summary(computed: _Computed) -> dict[str, Any]:
    loaded = computed.loaded
    started = _event(loaded, SessionEventKind.STARTED)
    return {
        "id": loaded.record.id,
        "device_id": loaded.record.device_id,
        "session_id": loaded.record.session_id,
        "officer_id": started.officer_id if started else "",
        "case_id": started.case_id if started else "",
        "started_at": _iso(started.at if started else None),
        "ended_at": _iso(computed.ended_at),
        "state": computed.state,
        "verdict": computed.verdict,
        "gap_count": len(computed.gaps),
        "unexplained_gap_count": sum(1 for g in computed.gaps if not g["explained"]),
        "marker_count": len(computed.markers),
    }


def session_detail(session: Session, record: EnforcementSessionRecord) -> dict[str, Any]:
    """A session with its signed events, missing sequence numbers and transition violations."""
    computed = _compute(_load(session, record), _no_url)
    out = _summary(computed)
    out["events"] = [
        {
            "event_id": row.event_id,
            "seq": row.seq,
            "kind": row.kind,
            "at": _iso(row.at),
            "officer_id": row.officer_id,
            "marker_id": row.marker_id,
            "cause": row.cause,
            "automatic": row.automatic,
            "bookmark_type": row.bookmark_type,
            "note": row.note,
            "received_at": _iso(row.received_at),
            "event": row.event_text,
        }
        for row in computed.loaded.rows
    ]
    out["missing_seqs"] = computed.replay.missing_seqs
    out["violations"] = [vars(v) for v in computed.replay.violations]
    return out


def _explanation_view(
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
        "filed_at": _iso(explanation.filed_at),
        "signatures": [
            {
                "user_id": s.user_id,
                "username": s.username,
                "role": s.role,
                "officer_id": s.officer_id,
                "officer_name": names.get(s.officer_id) if s.officer_id is not None else None,
                "certificate_number": s.certificate_number,
                "signed_at": _iso(s.signed_at),
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
                {"event_id": row.file_id, "code": row.code, "message": row.message, "at": _iso(row.at)}
            )
    return out


def timeline(
    session: Session, record: EnforcementSessionRecord, media_url: Callable[[int], str]
) -> dict[str, Any]:
    """Recorded spans, gaps, markers with their clips, written explanations, bookmarks and the verdict."""
    computed = _compute(_load(session, record), media_url)
    loaded = computed.loaded
    marker_ids = {m.id: m.marker_id for m in loaded.markers}
    out = _summary(computed)
    out.update(
        {
            "spans": computed.spans,
            "gaps": computed.gaps,
            "unexplained_gaps": [g for g in computed.gaps if not g["explained"]],
            "markers": computed.markers,
            "written_explanations": [
                _explanation_view(
                    e, loaded.signatures[e.id], marker_ids.get(e.marker_ref or 0), loaded.officer_names
                )
                for e in loaded.explanations
            ],
            # JL-15: what the recording must show, tagged by the officer.
            "bookmarks": [
                {
                    "event_id": row.event_id,
                    "at": _iso(row.at),
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
    return out


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


def _session_agencies(session: Session, record: EnforcementSessionRecord) -> set[int]:
    """Agencies of the officers the session's events name, matched on certificate number (JL-16).

    Devices carry no agency and events name their officer by a free string, so an ``officer_id`` that
    equals a register certificate number is the only link; empty when none matches (agency unknown).
    """
    names = select(SessionEventRecord.officer_id).where(
        SessionEventRecord.enforcement_session_id == record.id, SessionEventRecord.officer_id != ""
    )
    return set(
        session.scalars(select(Officer.agency_id).where(Officer.certificate_number.in_(names)).distinct())
    )


def _signer(session: Session, record: EnforcementSessionRecord, user_id: int) -> tuple[User, Officer]:
    """JL-16: the account and the active, certified officer in good standing it signs as."""
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise NotFound(f"用户 {user_id} 不存在", f"user {user_id} not found")
    officer = session.scalar(select(Officer).where(Officer.user_id == user.id))
    # Auxiliary staff are not enforcement officers and cannot sign as such (JL-16).
    if user.role not in SIGNING_ROLES or officer is None or officer.kind != "officer":
        raise NotAnOfficer(
            "只有登记在册的执法人员可以签署书面说明（JL-16）",
            "only an officer in the officer register may sign a written explanation (JL-16)",
        )
    if officer.status != "active":
        raise OfficerNotActive(
            f"执法人员状态为 {officer.status}，不能签名（JL-16）",
            f"officer is {officer.status} and cannot sign (JL-16)",
        )
    today = datetime.now(_UTC).date()
    if (
        not officer.certificate_number
        or officer.valid_to is None
        or officer.valid_to < today
        or (officer.valid_from is not None and officer.valid_from > today)
    ):
        raise CertificateExpired(
            "执法证件今日无效，不能签名（JL-16）",
            "the officer's certificate is not valid today (JL-16)",
        )
    agencies = _session_agencies(session, record)
    if agencies and officer.agency_id not in agencies:
        raise OfficerOtherAgency(
            "签名人与本次执法人员不属于同一机关（JL-16）",
            "the signer is not of the session officer's agency (JL-16)",
        )
    return user, officer


def file_explanation(
    session: Session,
    record: EnforcementSessionRecord,
    *,
    user_id: int,
    text: str,
    marker_id: str | None = None,
    client_ip: str | None = None,
) -> dict[str, Any]:
    """JL-16: an officer files and signs a written explanation for a marker or the unexplained gaps."""
    text = text.strip() if isinstance(text, str) else ""
    if not text or len(text) > MAX_EXPLANATION_CHARS:
        raise Invalid(
            f"说明内容须为 1–{MAX_EXPLANATION_CHARS} 个字符",
            f"text must be 1–{MAX_EXPLANATION_CHARS} characters",
        )
    user, officer = _signer(session, record, user_id)
    marker_ref: int | None = None
    gaps: list[dict[str, Any]] = []
    if marker_id:
        marker = session.scalar(
            select(InterruptionMarker).where(
                InterruptionMarker.enforcement_session_id == record.id,
                InterruptionMarker.marker_id == marker_id,
            )
        )
        if marker is None:
            raise NotFound(f"中断标记 {marker_id} 不存在", f"marker {marker_id} not found in this session")
        marker_ref = marker.id
    else:
        computed = _compute(_load(session, record), _no_url)
        # What the officers sign for is fixed now: a gap found later needs its own explanation.
        gaps = [{"start": g["start"], "end": g["end"]} for g in computed.gaps if not g["explained"]]
        if not gaps:
            raise Conflict("该执法过程没有未说明的中断", "this session has no unexplained gaps")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    now = utcnow()
    explanation = WrittenExplanation(
        enforcement_session_id=record.id,
        marker_ref=marker_ref,
        text=text,
        text_sha256=digest,
        gaps=gaps,
        filed_by=user.id,
        filed_at=now,
    )
    session.add(explanation)
    session.flush()
    signature = ExplanationSignature(
        explanation_id=explanation.id,
        user_id=user.id,
        username=user.username,
        role=user.role,
        text_sha256=digest,
        signed_at=now,
        officer_id=officer.id,
        certificate_number=officer.certificate_number,
    )
    session.add(signature)
    session.flush()
    write_audit(
        session,
        actor=str(user.id),
        action="session.explanation_file",
        target_type="session",
        target_id=record.id,
        detail={
            "explanation_id": explanation.id,
            "marker_id": marker_id,
            "gaps": len(gaps),
            "officer_id": officer.id,
        },
        client_ip=client_ip,
    )
    return _explanation_view(explanation, [signature], marker_id, {officer.id: officer.name})


def sign_explanation(
    session: Session,
    record: EnforcementSessionRecord,
    explanation_id: int,
    *,
    user_id: int,
    client_ip: str | None = None,
) -> dict[str, Any]:
    """Another officer co-signs; the same person twice is refused (JL-16: two or more officers)."""
    explanation = session.get(WrittenExplanation, explanation_id)
    if explanation is None or explanation.enforcement_session_id != record.id:
        raise NotFound(f"书面说明 {explanation_id} 不存在", f"explanation {explanation_id} not found")
    user, officer = _signer(session, record, user_id)
    sigs = list(
        session.scalars(
            select(ExplanationSignature)
            .where(ExplanationSignature.explanation_id == explanation.id)
            .order_by(ExplanationSignature.id)
        )
    )
    if any(s.user_id == user.id for s in sigs):
        raise AlreadySigned(
            "同一人不能重复签名：书面说明须由两名以上执法人员签名",
            "the same person cannot sign twice: two or more different officers must sign",
        )
    if any(s.officer_id == officer.id for s in sigs):
        raise SameOfficer(
            "该执法人员已通过其他账号签名：须两名以上不同执法人员签名（JL-16）",
            "this officer already signed through another account: two different officers must sign",
        )
    signature = ExplanationSignature(
        explanation_id=explanation.id,
        user_id=user.id,
        username=user.username,
        role=user.role,
        text_sha256=explanation.text_sha256,
        signed_at=utcnow(),
        officer_id=officer.id,
        certificate_number=officer.certificate_number,
    )
    session.add(signature)
    session.flush()
    write_audit(
        session,
        actor=str(user.id),
        action="session.explanation_sign",
        target_type="session",
        target_id=record.id,
        detail={"explanation_id": explanation.id, "officer_id": officer.id},
        client_ip=client_ip,
    )
    marker_id = None
    if explanation.marker_ref is not None:
        marker = session.get(InterruptionMarker, explanation.marker_ref)
        marker_id = marker.marker_id if marker else None
    signed_as = [s.officer_id for s in [*sigs, signature] if s.officer_id is not None]
    return _explanation_view(explanation, [*sigs, signature], marker_id, _officer_names(session, signed_as))
