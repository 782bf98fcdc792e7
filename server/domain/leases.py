"""Job leases: each singleton background job is run by one server process at a time, with failover.

Several server processes may run the ``workers`` role (docs/scaling.md). A job that must not run twice
at once (the archiving job, JL-18; the publicity sweep; the ledger round; the scrubber; the fleet pushes
and the hourly alerts) is guarded by one row of ``job_leases``: who holds it, until when, and a fencing
token that grows by one on every takeover.

* :func:`acquire` takes a lease that is free or expired, by one conditional ``UPDATE`` (after an
  ``INSERT … ON CONFLICT DO NOTHING`` makes sure the row exists). On PostgreSQL the ``UPDATE`` locks the
  row and a concurrent one re-checks its ``WHERE`` against the committed row (READ COMMITTED), so of two
  processes racing for an expired lease exactly one matches; on SQLite writers are serialised by the
  database lock. The new holder gets the old token plus one.
* :func:`renew` extends a lease only for its holder with its token. The token, not the clock, decides:
  a lease that ran out is free for any process to take, but as long as nobody has taken it (the token
  is unchanged) no other process has acted, and its holder may still renew it and commit.
* :func:`fence` is the same check, made inside the transaction that writes the job's results, just
  before it commits: a holder that was paused (a long GC, a stopped VM) past its expiry while another
  process took over finds its token stale and its writes are rolled back (:class:`LeaseLost`). On
  PostgreSQL the fencing ``UPDATE`` also locks the lease row until the commit, so a takeover cannot slip
  in between the check and the commit (it waits, then sees the renewed expiry); on SQLite the database's
  write lock does the same. That is also why the check cannot ask for an unexpired lease: on SQLite a
  long round holding the write lock keeps the keeper from renewing, and nobody else can take over either.
* :func:`exclusive` serialises work that also runs outside the job's holder, on demand (an API request
  re-evaluating the fleet alerts while the hourly job may be evaluating them): it waits for, then holds
  until the end of the caller's transaction, a lock named after the job (PostgreSQL: a transaction
  advisory lock, so the lease row and its renewals are left alone; SQLite: the database's write lock).
  It does not take the lease: the request must not wait for the job's next takeover, it only must not
  run at the same time as another evaluation.
* :func:`claim_round` records, under the same fence, that a round of the job starts now, and only if the
  last round (of any holder) started at least ``interval_s`` ago: the schedule belongs to the
  deployment, not to a process, so a takeover does not run a round twice in one period.

Time is the database's clock (``clock_timestamp()`` on PostgreSQL, ``julianday('now')`` on SQLite) in
seconds since the epoch, so servers on hosts whose clocks disagree still agree on expiry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CursorResult,
    Float,
    Integer,
    String,
    and_,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from server.domain.base import Base
from server.domain.errors import Conflict

__all__ = [
    "JobLease",
    "LeaseGrant",
    "LeaseLost",
    "LeaseState",
    "acquire",
    "claim_round",
    "db_now",
    "exclusive",
    "fence",
    "finish_round",
    "lease_states",
    "release",
    "renew",
]


class JobLease(Base):
    """The lease of one singleton job (migration 0034): holder, expiry, fencing token, last round."""

    __tablename__ = "job_leases"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    # ``host:pid:random`` of the holding process; None when released or never held.
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Grows by one on every takeover; a write carrying an older token is refused (fencing).
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    # Seconds since the epoch on the database's clock.
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    acquired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    renewed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When the last round of the job started (any holder), and how many rounds have run in all.
    last_run_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)


class LeaseLost(Conflict):
    """The lease is no longer this holder's (expired, or taken over with a newer token)."""

    code = "lease_lost"


@dataclass(frozen=True)
class LeaseGrant:
    """What a holder keeps after :func:`acquire`: the job, who it is, its token and the lease duration."""

    job: str
    holder: str
    token: int
    ttl_s: float


@dataclass(frozen=True)
class LeaseState:
    """A lease row as operators see it (``/metrics``, logs)."""

    job: str
    holder: str | None
    token: int
    expires_in_s: float
    runs: int
    last_run_age_s: float | None


def _changed(session: Session, statement: Any) -> int:
    """Rows an UPDATE matched (its cursor's rowcount)."""
    return int(cast(CursorResult[Any], session.execute(statement)).rowcount)


def db_now(session: Session) -> ColumnElement[float]:
    """The database's wall clock in seconds since the epoch, as an SQL expression."""
    if session.get_bind().dialect.name == "postgresql":
        # clock_timestamp(), not now(): now() is frozen at the start of a (possibly long) transaction.
        return func.extract("epoch", func.clock_timestamp()).cast(Float)
    # julianday('now') has millisecond precision; 2440587.5 is the Julian day of 1970-01-01T00:00Z.
    return ((func.julianday("now") - literal(2440587.5)) * literal(86400.0)).cast(Float)


def _ensure_row(session: Session, job: str) -> None:
    """Insert the job's row if it does not exist; a concurrent insert of the same row is no error."""
    values = {"job": job, "holder": None, "token": 0, "expires_at": 0.0, "runs": 0}
    # The settings accept SQLite and PostgreSQL URLs only (server.infra.config); both say ON CONFLICT.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(JobLease).values(values).on_conflict_do_nothing(index_elements=["job"]))


def _held(grant: LeaseGrant) -> ColumnElement[bool]:
    """The row is still ``grant``'s: same holder, same token (nobody took it over since)."""
    return and_(JobLease.job == grant.job, JobLease.holder == grant.holder, JobLease.token == grant.token)


def acquire(session: Session, job: str, holder: str, ttl_s: float) -> LeaseGrant | None:
    """Take ``job``'s lease for ``ttl_s`` seconds if it is free or expired; None if another holds it.

    The caller commits at once (the lease counts only once committed). Every successful call is a
    takeover with a new token, also when ``holder`` held the lease before (its old grant is then stale).
    """
    _ensure_row(session, job)
    now = db_now(session)
    taken = _changed(
        session,
        update(JobLease)
        .where(JobLease.job == job, or_(JobLease.holder.is_(None), JobLease.expires_at <= now))
        .values(
            holder=holder,
            token=JobLease.token + 1,
            expires_at=now + ttl_s,
            acquired_at=now,
            renewed_at=now,
        )
        .execution_options(synchronize_session=False),
    )
    if taken != 1:
        return None
    # The row is locked by our UPDATE (PostgreSQL) or the write lock (SQLite): this is our token.
    token = session.scalar(select(JobLease.token).where(JobLease.job == job))
    assert token is not None
    return LeaseGrant(job=job, holder=holder, token=int(token), ttl_s=ttl_s)


def exclusive(session: Session, job: str) -> None:
    """Wait until no other transaction works under ``job``'s row, then hold it until the caller's
    transaction ends (call it first in the transaction, before reading what the work decides on).

    The lock is not the lease: a holder still fences its writes, and the lease row's renewals never
    wait for it on PostgreSQL.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"zfjl-job:{job}".encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))
        return
    # SQLite: a write that changes nothing takes the database's write lock until the commit.
    _ensure_row(session, job)
    session.execute(
        update(JobLease)
        .where(JobLease.job == job)
        .values(token=JobLease.token)
        .execution_options(synchronize_session=False)
    )


def renew(session: Session, grant: LeaseGrant) -> bool:
    """Extend ``grant``'s lease by its duration from now; False if it was lost (taken over or released)."""
    now = db_now(session)
    extended = _changed(
        session,
        update(JobLease)
        .where(_held(grant))
        .values(expires_at=now + grant.ttl_s, renewed_at=now)
        .execution_options(synchronize_session=False),
    )
    return extended == 1


def fence(session: Session, grant: LeaseGrant) -> None:
    """Refuse the caller's writes unless ``grant`` still holds the lease (call just before committing).

    Renews the lease as a side effect and, on PostgreSQL, keeps the lease row locked until the caller's
    transaction ends, so no takeover commits between this check and the caller's commit.
    """
    if not renew(session, grant):
        raise LeaseLost(
            f"任务 {grant.job} 的租约已失效（令牌 {grant.token}），本次写入被拒绝",
            f"the lease of job {grant.job} was lost (token {grant.token}); its writes are refused",
        )


def claim_round(session: Session, grant: LeaseGrant, interval_s: float) -> bool:
    """Start a round of the job now if the last one started ``interval_s`` or more ago (fenced).

    True: the caller runs the round (the claim is committed by the caller before it runs). False: not
    due yet, or the lease was lost.
    """
    now = db_now(session)
    due = or_(JobLease.last_run_at.is_(None), JobLease.last_run_at <= now - interval_s)
    claimed = _changed(
        session,
        update(JobLease)
        .where(_held(grant), due)
        .values(last_run_at=now, runs=JobLease.runs + 1, expires_at=now + grant.ttl_s, renewed_at=now)
        .execution_options(synchronize_session=False),
    )
    return claimed == 1


def finish_round(session: Session, grant: LeaseGrant) -> bool:
    """Count the job's interval from now, the end of its round (a job that rests between long rounds,
    like the scrubber); False if the lease was lost."""
    now = db_now(session)
    return (
        _changed(
            session,
            update(JobLease)
            .where(_held(grant))
            .values(last_run_at=now, expires_at=now + grant.ttl_s, renewed_at=now)
            .execution_options(synchronize_session=False),
        )
        == 1
    )


def release(session: Session, grant: LeaseGrant) -> bool:
    """Give the lease up (a clean stop), so another process takes it over at once; False if lost."""
    released = _changed(
        session,
        update(JobLease)
        .where(JobLease.job == grant.job, JobLease.holder == grant.holder, JobLease.token == grant.token)
        .values(holder=None, expires_at=0.0)
        .execution_options(synchronize_session=False),
    )
    return released == 1


def lease_states(session: Session) -> list[LeaseState]:
    """Every job's lease, by job name: holder (None when free or expired), token, runs."""
    now = db_now(session)
    rows = session.execute(
        select(
            JobLease.job,
            JobLease.holder,
            JobLease.token,
            JobLease.expires_at - now,
            JobLease.runs,
            now - JobLease.last_run_at,
        ).order_by(JobLease.job)
    ).all()
    states = []
    for job, holder, token, expires_in, runs, last_age in rows:
        remaining = max(0.0, float(expires_in))
        states.append(
            LeaseState(
                job=job,
                holder=holder if remaining > 0 else None,
                token=int(token),
                expires_in_s=remaining,
                runs=int(runs),
                last_run_age_s=None if last_age is None else float(last_age),
            )
        )
    return states
