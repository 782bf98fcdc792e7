"""Agency scope of evidence (JL-20): which recordings, sessions and device chains a caller may read.

The one rule, used by every evidence read:

- Roles in ``CROSS_AGENCY_READERS`` (the roles table in ``services/people.py``: supervisor, auditor,
  system_admin) read every agency's evidence.
- Every other role reads only evidence of its own agency. A segment belongs to the agency of the
  device's check-out (``DeviceAssignment``) that was open when the segment *started* recording; the
  check-out keeps the assignee's agency as it was at check-out time, so a later transfer of the
  officer does not move old evidence. A session belongs to the check-out open at its first event.
  A device's chain report (all its segments) is readable by an agency that ever had it checked out.
- Evidence recorded while the device was checked out to nobody has no agency: only the cross-agency
  roles see it.
- Out of scope looks exactly like missing (404, same code and message) so ids are no oracle; lists
  just omit it. Views audit refused look-ups as well (``server/http/scope.py``).

Services take the caller as ``scope``; ``None`` means an internal, unscoped use (ingest, CLI).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select, true
from sqlalchemy.orm import Session

from server.domain.errors import NotFound
from server.domain.evidence.models import Recording
from server.domain.fleet.models import Device, DeviceAssignment
from server.domain.people.service import CROSS_AGENCY_READERS, Caller
from server.domain.sessions.models import EnforcementSessionRecord, SessionEventRecord

__all__ = [
    "CROSS_AGENCY_READERS",
    "OutOfScope",
    "device_in_scope",
    "recording_in_scope",
    "recording_of_agency",
    "require_device",
    "require_recording",
    "require_session",
    "session_in_scope",
]


class OutOfScope(NotFound):
    """The object exists but belongs to another agency; answered exactly like NotFound (no oracle)."""


def _checked_out_in(agency_id: int, device_id: Any, at: Any | None) -> ColumnElement[bool]:
    """EXISTS a check-out of ``device_id`` to ``agency_id``, open at ``at`` (any time when None)."""
    conditions: list[ColumnElement[bool]] = [
        DeviceAssignment.device_id == device_id,
        DeviceAssignment.agency_id == agency_id,
    ]
    if at is not None:
        conditions.append(DeviceAssignment.checked_out_at <= at)
        conditions.append(or_(DeviceAssignment.checked_in_at.is_(None), DeviceAssignment.checked_in_at > at))
    return exists(select(DeviceAssignment.id).where(and_(*conditions)))


def _scoped(scope: Caller, device_id: Any, at: Any | None) -> ColumnElement[bool]:
    """The rule itself: everything for cross-agency readers, the caller's agency's check-outs otherwise."""
    if scope.role in CROSS_AGENCY_READERS:
        return true()
    if scope.agency_id is None:
        return false()
    return _checked_out_in(scope.agency_id, device_id, at)


def _session_start() -> ColumnElement[Any]:
    """When a session began: its earliest signed event, else when the server first saw it."""
    first_event = (
        select(func.min(SessionEventRecord.at))
        .where(SessionEventRecord.enforcement_session_id == EnforcementSessionRecord.id)
        .scalar_subquery()
    )
    return func.coalesce(first_event, EnforcementSessionRecord.first_seen_at)


def recording_in_scope(scope: Caller) -> ColumnElement[bool]:
    """WHERE clause over ``Recording``: the segments ``scope`` may read."""
    return _scoped(scope, Recording.device_id, Recording.started_at)


def recording_of_agency(agency_id: int) -> ColumnElement[bool]:
    """WHERE clause over ``Recording``: the segments of ``agency_id`` (what its cases may link)."""
    return _checked_out_in(agency_id, Recording.device_id, Recording.started_at)


def session_in_scope(scope: Caller) -> ColumnElement[bool]:
    """WHERE clause over ``EnforcementSessionRecord``: the sessions ``scope`` may read."""
    return _scoped(scope, EnforcementSessionRecord.device_id, _session_start())


def device_in_scope(scope: Caller, device_id: str) -> ColumnElement[bool]:
    """Boolean clause: whether ``scope`` may read the chain of ``device_id``."""
    return _scoped(scope, device_id, None)


def require_recording(session: Session, scope: Caller, recording: Recording, missing: NotFound) -> None:
    """Raise ``OutOfScope`` (worded as ``missing``) unless ``scope`` may read ``recording``."""
    _require(session, _scoped(scope, recording.device_id, recording.started_at), missing)


def require_session(
    session: Session, scope: Caller, record: EnforcementSessionRecord, missing: NotFound
) -> None:
    """Raise ``OutOfScope`` (worded as ``missing``) unless ``scope`` may read the session."""
    clause = session_in_scope(scope)
    visible = session.scalar(
        select(EnforcementSessionRecord.id).where(EnforcementSessionRecord.id == record.id, clause)
    )
    if visible is None:
        raise OutOfScope(missing.message, missing.message_en)


def require_device(session: Session, scope: Caller, device_id: str) -> None:
    """NotFound unless the device exists and ``scope`` may read its chain (``OutOfScope`` alike)."""
    missing = NotFound(f"设备 {device_id} 不存在", f"device {device_id} not found")
    if session.get(Device, device_id) is None:
        raise missing
    _require(session, device_in_scope(scope, device_id), missing)


def _require(session: Session, clause: ColumnElement[bool], missing: NotFound) -> None:
    if not session.scalar(select(clause)):
        raise OutOfScope(missing.message, missing.message_en)
