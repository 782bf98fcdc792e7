"""Archive packages that exist and cases still waiting for one (JL-18: within 30 days of the case's end)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from server.domain.base import utcnow
from server.domain.cases.models import Case
from server.domain.cases.service import FINAL_STATUSES, get_case
from server.domain.errors import NotFound
from server.domain.governance.archive_job import last_failures
from server.domain.governance.archives import ARCHIVE_DEADLINE, ended_at_clause
from server.domain.governance.archives_models import ArchivePackage
from server.domain.people.service import Caller

__all__ = [
    "ArchiveDeadline",
    "archive_deadlines",
    "archive_to_dict",
    "list_archives",
    "open_archive",
    "overdue_archives",
]


def archive_to_dict(row: ArchivePackage) -> dict[str, Any]:
    """An archive package as JSON."""
    return {
        "id": row.id,
        "case_id": row.case_id,
        "agency_id": row.agency_id,
        "bag_name": row.bag_name,
        "zip_sha256": row.zip_sha256,
        "zip_size": row.zip_size,
        "tagmanifest_sha256": row.tagmanifest_sha256,
        "payload_oxum": row.payload_oxum,
        "recording_count": row.recording_count,
        "leaf_count": row.leaf_count,
        "checkpoint_size": row.checkpoint_size,
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "on_time": row.on_time,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "download_url": f"/api/v1/archives/{row.id}/package.zip",
        "delivered_key": row.delivered_key,
    }


def list_archives(session: Session, caller: Caller, case_id: int) -> list[ArchivePackage]:
    """The packages of one case the caller may read, oldest first."""
    case = get_case(session, caller, case_id)
    return list(
        session.scalars(
            select(ArchivePackage).where(ArchivePackage.case_id == case.id).order_by(ArchivePackage.id)
        )
    )


def open_archive(session: Session, caller: Caller, archive_id: int) -> ArchivePackage:
    """One package, if the caller may read its case (another agency's looks missing, JL-20)."""
    row = session.get(ArchivePackage, archive_id)
    if row is None or not caller.may_read(row.agency_id):
        raise NotFound("档案包不存在", "archive package not found")
    return row


def _scoped_cases(caller: Caller | None) -> Select[Any]:
    """Cases with when they ended; ``None`` is the system itself (every agency)."""
    query = select(Case, ended_at_clause().label("ended_at"))
    if caller is not None and not caller.reads_all:
        query = query.where(Case.agency_id == caller.agency_id)
    return query


def _unarchived(caller: Caller | None) -> Select[Any]:
    """Ended cases with no archive package, the earliest ended first."""
    archived = exists().where(ArchivePackage.case_id == Case.id)
    return (
        _scoped_cases(caller)
        .where(Case.status.in_(FINAL_STATUSES), ~archived)
        .order_by(ended_at_clause(), Case.id)
    )


@dataclass(frozen=True, kw_only=True)
class ArchiveDeadline:
    """An ended case still waiting for its package, and when its 30 days end (JL-18)."""

    case_id: int
    agency_id: int
    number: str
    ended_at: datetime
    due_at: datetime


def archive_deadlines(session: Session) -> list[ArchiveDeadline]:
    """JL-18: every agency's ended cases without a package and their deadlines, for the alert worker."""
    out = []
    for case, ended_at in session.execute(_unarchived(None)):
        if ended_at is None:
            continue  # a final status without its status event cannot happen through the service
        out.append(
            ArchiveDeadline(
                case_id=case.id,
                agency_id=case.agency_id,
                number=case.number or "",
                ended_at=ended_at,
                due_at=ended_at + ARCHIVE_DEADLINE,
            )
        )
    return out


def overdue_archives(
    session: Session,
    caller: Caller,
    *,
    now: datetime | None = None,
    agency_id: int | None = None,
    include_due: bool = False,
) -> list[dict[str, Any]]:
    """Ended cases with no archive package whose 30 days are over (JL-18), the most overdue first.

    ``include_due``: also those still within their 30 days (``state: due``), to archive before the date.
    """
    now = now or utcnow()
    query = _unarchived(caller)
    if not include_due:
        query = query.where(ended_at_clause() < now - ARCHIVE_DEADLINE)
    if agency_id is not None:
        query = query.where(Case.agency_id == agency_id)
    out = []
    found = list(session.execute(query))
    failures = last_failures(session, [case.id for case, _ended in found])
    for case, ended_at in found:
        if ended_at is None:
            continue  # a final status without its status event cannot happen through the service
        due = ended_at + ARCHIVE_DEADLINE
        late = due < now
        out.append(
            {
                "case_id": case.id,
                "agency_id": case.agency_id,
                "number": case.number,
                "status": case.status,
                "ended_at": ended_at.isoformat(),
                "due_at": due.isoformat(),
                "state": "overdue" if late else "due",
                "days_overdue": (now - due).days if late else 0,
                "days_left": 0 if late else (due - now).days,
                # The archiving job's last failed attempt, if any (it tries again next round).
                "last_error": failures[case.id].error if case.id in failures else None,
            }
        )
    return out
