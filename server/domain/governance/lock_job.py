"""The job that extends store locks after an agency lengthened a retention period (JL-19).

Lengthening a period reaches every recording of the agency already stored (``retention.set_period``). An
agency with a million recordings cannot have a million ``PutObjectRetention`` calls inside one HTTP
request, so the request only queues a job (in the same transaction as the period) and the workers'
:class:`~server.workers.loops.RetentionLockWorker` runs it in batches.

Why nothing is unlocked early, at any moment of the job (JL-19):

* The period row and the job row commit together. From that commit :func:`retention.retention_of`, which
  every disposal checks again at approval, gives every affected recording the longer period, so the
  database refuses to destroy any of them whether or not its lock was extended yet. Disposal is the only
  path to ``delete`` on the store.
* The store lock is the second wall and only grows: ``extend_retention`` sets a later date or a legal
  hold, never an earlier date (S3 refuses to shorten COMPLIANCE retention anyway).
* A crash loses at most the batch in flight: its locks may be extended while ``cursor`` was not moved
  past them, so the next owner extends them again, to the same date, which changes nothing. A batch
  never moves ``cursor`` past a recording whose lock it did not extend; a store error rolls the batch back.
* One owner at a time: a worker leases the job (``owner``, ``lease_until``) with a conditional UPDATE
  and renews the lease with each batch; a process that died stops renewing, and after the lease another
  worker (or the same one restarted) takes the job over from ``cursor``.

Recordings are walked by id with no upper bound, so one stored while the job runs is reached too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.evidence.models import Recording
from server.domain.governance.lock_job_models import LockJobState, RetentionLockJob
from server.domain.governance.retention import RetentionStore, affected_recordings, retention_of

__all__ = [
    "BATCH_SIZE",
    "JOB_ACTOR",
    "LEASE",
    "BatchResult",
    "claim",
    "job_view",
    "jobs_of",
    "record_error",
    "release",
    "run_batch",
]

# Recordings per batch: one transaction, one lease renewal, one progress update.
BATCH_SIZE = 200
# How long a worker owns a job without renewing it; a batch takes far less.
LEASE = timedelta(minutes=2)
# The audit actor of what the job does on its own.
JOB_ACTOR = "retention-lock-job"


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """What one batch did: how many recordings it checked and extended, and whether the job is done."""

    job_id: int
    checked: int
    extended: int
    done: bool


def claim(
    session: Session, owner: str, *, now: datetime | None = None, lease: timedelta = LEASE
) -> int | None:
    """Lease the oldest unfinished job to ``owner``; None when there is none free.

    A job is free when nobody holds it, ``owner`` holds it already, or its lease ran out (its worker
    died). The UPDATE is conditional, so two workers racing for one job cannot both win it.
    """
    when = now or utcnow()
    candidates = session.scalars(
        select(RetentionLockJob.id)
        .where(RetentionLockJob.state != LockJobState.DONE.value)
        .order_by(RetentionLockJob.id)
    ).all()
    for job_id in candidates:
        taken = session.execute(
            update(RetentionLockJob)
            .where(
                RetentionLockJob.id == job_id,
                RetentionLockJob.state != LockJobState.DONE.value,
                or_(
                    RetentionLockJob.owner.is_(None),
                    RetentionLockJob.owner == owner,
                    RetentionLockJob.lease_until < when,
                ),
            )
            .values(
                owner=owner,
                lease_until=when + lease,
                state=LockJobState.RUNNING.value,
                attempts=RetentionLockJob.attempts + 1,
                updated_at=when,
            )
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], taken).rowcount == 1:
            return job_id
    return None


def run_batch(
    session: Session,
    store: RetentionStore | None,
    job_id: int,
    owner: str,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    lease: timedelta = LEASE,
) -> BatchResult | None:
    """Extend the locks of the next ``batch_size`` recordings after ``cursor``; None: ``owner`` lost the job.

    The caller commits; until then nothing of the batch counts, so a failure (a store error, a crash)
    leaves ``cursor`` where it was and the batch is done again. ``store`` None (a store without its own
    lock) walks the recordings without extending anything, so the job still finishes and says so.
    """
    when = now or utcnow()
    renewed = session.execute(
        update(RetentionLockJob)
        .where(
            RetentionLockJob.id == job_id,
            RetentionLockJob.owner == owner,
            RetentionLockJob.state == LockJobState.RUNNING.value,
        )
        .values(lease_until=when + lease, updated_at=when)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], renewed).rowcount != 1:
        return None
    job = session.get(RetentionLockJob, job_id, populate_existing=True)
    if job is None:  # pragma: no cover - the row was just renewed in this transaction
        return None
    recordings = list(
        session.scalars(
            affected_recordings(job.agency_id, job.category)
            .where(Recording.id > job.cursor)
            .limit(batch_size)
        )
    )
    extended = 0
    for rec in recordings:
        if store is not None and store.extend_retention(
            rec.object_key, retention_of(session, rec).protected_until
        ):
            extended += 1
    if recordings:
        job.cursor = recordings[-1].id
    job.checked += len(recordings)
    job.extended += extended
    job.last_error = None
    done = len(recordings) < batch_size
    if done:
        job.state = LockJobState.DONE.value
        job.finished_at = when
        job.owner, job.lease_until = None, None
        write_audit(
            session,
            actor=JOB_ACTOR,
            action="retention.locks_extended",
            target_type="agency",
            target_id=job.agency_id,
            detail={
                "job": job.id,
                "period": job.period_id,
                "category": job.category,
                "checked": job.checked,
                "extended": job.extended,
            },
        )
    session.flush()
    return BatchResult(job_id=job.id, checked=len(recordings), extended=extended, done=done)


def record_error(session: Session, job_id: int, owner: str, error: str) -> None:
    """Keep the last failure on the job for the page to show; the job stays leased and is retried."""
    session.execute(
        update(RetentionLockJob)
        .where(RetentionLockJob.id == job_id, RetentionLockJob.owner == owner)
        .values(last_error=error[:2000], updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def release(session: Session, owner: str) -> int:
    """Give back the unfinished jobs ``owner`` holds (a clean shutdown): another worker goes on at once."""
    released = session.execute(
        update(RetentionLockJob)
        .where(RetentionLockJob.owner == owner, RetentionLockJob.state != LockJobState.DONE.value)
        .values(owner=None, lease_until=None, state=LockJobState.PENDING.value)
        .execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], released).rowcount or 0)


def job_view(job: RetentionLockJob) -> dict[str, Any]:
    """JSON view of a job: its state and progress (``checked`` of about ``total``)."""
    return {
        "id": job.id,
        "period_id": job.period_id,
        "agency_id": job.agency_id,
        "category": job.category,
        "state": job.state,
        # Recordings stored while the job runs are reached too, so ``checked`` may pass the first count.
        "total": max(job.total, job.checked),
        "checked": job.checked,
        "extended": job.extended,
        "attempts": job.attempts,
        "last_error": job.last_error,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "finished_at": None if job.finished_at is None else job.finished_at.isoformat(),
    }


def jobs_of(session: Session, agency_id: int, *, limit: int = 20) -> list[dict[str, Any]]:
    """The agency's latest lock jobs, newest first."""
    rows = session.scalars(
        select(RetentionLockJob)
        .where(RetentionLockJob.agency_id == agency_id)
        .order_by(RetentionLockJob.id.desc())
        .limit(limit)
    )
    return [job_view(row) for row in rows]
