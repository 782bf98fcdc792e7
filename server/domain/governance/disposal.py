"""Disposal of evidence after its retention (JL-19): refused while anything holds it; a tombstone first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.errors import NotFound
from server.domain.evidence.models import Recording
from server.domain.governance.approvals_models import GovernanceRequest
from server.domain.governance.retention import DisposalRefused, Retention, RetentionStore, retention_of
from server.domain.governance.retention_models import DisposalTombstone
from server.domain.people.service import Caller

__all__ = ["dispose", "list_tombstones", "require_disposable", "tombstone_to_dict"]


def require_disposable(session: Session, rec: Recording, now: datetime) -> Retention:
    """The recording's retention if it may be destroyed at ``now``; DisposalRefused with the reason if not."""
    state = retention_of(session, rec)
    if state.disposed:
        raise DisposalRefused(rec.id, "already_disposed", "已经销毁", "already disposed of")
    if state.holds:
        raise DisposalRefused(rec.id, "legal_hold", "处于诉讼保全中", "under legal hold")
    if state.open_cases:
        raise DisposalRefused(
            rec.id,
            "open_case",
            f"关联的案件 {state.open_cases} 尚未办结",
            f"linked to open case(s) {state.open_cases}",
        )
    if state.permanent:
        raise DisposalRefused(rec.id, "permanent", "属于永久保存类别", "its category is kept permanently")
    if state.until is None or now < state.until:
        until = state.until.isoformat() if state.until else "—"
        raise DisposalRefused(
            rec.id, "retention_running", f"保存期至 {until} 尚未届满", f"retained until {until}"
        )
    return state


def dispose(
    session: Session,
    store: RetentionStore,
    request: GovernanceRequest,
    approver: Caller,
    now: datetime,
) -> list[DisposalTombstone]:
    """Destroy the approved request's recordings: re-check each, write its tombstone, then delete its object.

    The tombstones are flushed before any object is deleted, so a refusal or a database error deletes
    nothing; the objects go last, inside the caller's transaction (a store refusal rolls it back).
    """
    recordings = list(
        session.scalars(
            select(Recording).where(Recording.id.in_(request.recording_ids)).order_by(Recording.id)
        )
    )
    if len(recordings) != len(set(request.recording_ids)):
        raise NotFound("申请中的录像不存在", "a recording of the request does not exist")
    tombstones: list[DisposalTombstone] = []
    for rec in recordings:
        state = require_disposable(session, rec, now)
        assert state.until is not None  # require_disposable refuses a retention without an end
        stone = DisposalTombstone(
            recording_id=rec.id,
            request_id=request.id,
            agency_id=request.agency_id,
            sha256=rec.sha256,
            size=rec.size,
            device_id=rec.device_id,
            sequence=rec.sequence,
            object_key=rec.object_key,
            started_at=rec.started_at,
            officer_id=rec.officer_id,
            categories=list(state.categories),
            retained_until=state.until,
            reason=request.purpose,
            requested_by=request.requested_by,
            approved_by=approver.user_id,
            disposed_at=now,
        )
        session.add(stone)
        tombstones.append(stone)
    session.flush()
    for rec in recordings:
        store.delete(rec.object_key)
        write_audit(
            session,
            actor=approver.user_id,
            action="recording.dispose",
            target_type="recording",
            target_id=rec.id,
            detail={"request_id": request.id, "sha256": rec.sha256},
        )
    return tombstones


def tombstone_to_dict(stone: DisposalTombstone) -> dict[str, Any]:
    """A tombstone as JSON."""
    return {
        "id": stone.id,
        "recording_id": stone.recording_id,
        "request_id": stone.request_id,
        "sha256": stone.sha256,
        "size": stone.size,
        "device_id": stone.device_id,
        "sequence": stone.sequence,
        "started_at": stone.started_at.isoformat(),
        "officer_id": stone.officer_id,
        "categories": list(stone.categories),
        "retained_until": stone.retained_until.isoformat(),
        "reason": stone.reason,
        "requested_by": stone.requested_by,
        "approved_by": stone.approved_by,
        "disposed_at": stone.disposed_at.isoformat(),
    }


def list_tombstones(session: Session, caller: Caller) -> list[DisposalTombstone]:
    """Tombstones of the caller's agency (all of them for cross-agency readers), newest first."""
    query = select(DisposalTombstone).order_by(DisposalTombstone.id.desc()).limit(500)
    if not caller.reads_all:
        query = query.where(DisposalTombstone.agency_id == (caller.agency_id or -1))
    return list(session.scalars(query))
