"""Signed session events from recorders: verified, checked against the session's replay, stored (JL-16)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
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
from server.domain.base import utcnow
from server.domain.fleet.models import DeviceStatus
from server.domain.sessions.models import EnforcementSessionRecord, InterruptionMarker, SessionEventRecord

__all__ = ["SESSION_REJECTION_CODES", "EventOutcome", "Violation", "receive_event"]


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
