"""Archiving by a job (JL-18): every act that ended gets its package well within the 30 days.

The background worker (``server/workers/loops.py``, ``ArchiveWorker``) asks :func:`pending_cases` for
the ended cases without a package whose end is at least ``ZFJL_ARCHIVE_DELAY_HOURS`` old (late uploads,
allowed up to 24 hours, still arrive), then archives each in its own transaction with
``archives.build_archive`` and delivers it to the archive store. A case with a package is done, so a
round is idempotent; a failed case leaves no package row (the transaction rolls back) and gets an
:class:`ArchiveFailure` row with the error, shown in ``GET /api/v1/archives/overdue?include=due``
(``last_error``), and is tried again next round.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.cases.models import Case
from server.domain.cases.service import FINAL_STATUSES
from server.domain.governance.archives import ended_at_clause
from server.domain.governance.archives_models import ArchiveFailure, ArchivePackage
from server.domain.people.service import Caller

__all__ = ["ARCHIVER", "last_failures", "pending_cases", "record_failure"]

# The job acts for the deployment across agencies; its rows name it, never a person.
ARCHIVER = Caller("archive-job", "system_admin", None)
_MAX_ERROR = 2000


def pending_cases(session: Session, *, now: datetime, delay: timedelta, limit: int = 100) -> list[int]:
    """Ended cases without a package whose end is at least ``delay`` ago, the longest waiting first."""
    ended = ended_at_clause()
    archived = exists().where(ArchivePackage.case_id == Case.id)
    query = (
        select(Case.id)
        .where(Case.status.in_(FINAL_STATUSES), ~archived, ended <= now - delay)
        .order_by(ended, Case.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def record_failure(session: Session, case_id: int, error: str, now: datetime) -> ArchiveFailure | None:
    """Keep why archiving a case failed (flushed, audited); None if the case is gone."""
    case = session.get(Case, case_id)
    if case is None:
        return None
    row = ArchiveFailure(
        case_id=case.id, agency_id=case.agency_id, error=error[:_MAX_ERROR], attempted_at=now
    )
    session.add(row)
    session.flush()
    write_audit(
        session, actor=ARCHIVER.user_id, action="archive.failed", target_type="case", target_id=case.id,
        detail={"error": row.error},
    )  # fmt: skip
    return row


def last_failures(session: Session, case_ids: list[int]) -> dict[int, ArchiveFailure]:
    """The latest failed attempt of each of these cases that has one."""
    if not case_ids:
        return {}
    rows = session.scalars(
        select(ArchiveFailure).where(ArchiveFailure.case_id.in_(case_ids)).order_by(ArchiveFailure.id)
    )
    return {row.case_id: row for row in rows}
