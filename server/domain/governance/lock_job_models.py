"""The job that extends store locks after an agency lengthened a retention period (JL-19).

Unlike the governance facts, a job's row is its progress and changes as it runs: it is bookkeeping, not
evidence, so it is neither append-only nor a ledger leaf. The fact it serves, the period, is both
(``retention_periods``); its start and its end are audit rows.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["LockJobState", "RetentionLockJob"]


class LockJobState(StrEnum):
    """Where a lock job is: waiting for a worker, leased to one, or finished."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"


class RetentionLockJob(Base):
    """Extending the store lock of every recording a lengthened period reaches, resumable after a crash.

    ``cursor`` is the id of the last recording whose lock was extended in a committed batch; recordings are
    walked in id order, so a restart continues after it. ``owner`` and ``lease_until`` make one worker
    the owner at a time; a lease not renewed (a crashed process) lets another take the job over.
    """

    __tablename__ = "retention_lock_jobs"
    __table_args__ = (UniqueConstraint("period_id", name="uq_retention_lock_jobs_period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_id: Mapped[int] = mapped_column(Integer, ForeignKey("retention_periods.id"))
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    category: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=LockJobState.PENDING.value, index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    checked: Mapped[int] = mapped_column(Integer, default=0)
    extended: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
