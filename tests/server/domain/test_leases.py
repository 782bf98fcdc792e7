"""Job leases (docs/scaling.md), on SQLite and PostgreSQL: of processes racing for one singleton job
exactly one holds it; a holder that stops renewing is taken over after expiry with a new fencing token;
a stale holder's writes are refused; the job's schedule survives a takeover."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from server.domain import leases
from server.domain.audit import AuditLog, write_audit
from server.domain.leases import JobLease, LeaseGrant, LeaseLost
from server.infra.db import make_engine

CONTENDERS = 6
T = TypeVar("T")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the migrated SQLite or PostgreSQL database."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _tx(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run ``work`` in one committed transaction (a process's ``session_scope``)."""
    with Session(engine) as session, session.begin():
        return work(session)


def _acquire(engine: Engine, holder: str, ttl_s: float, job: str = "archive") -> LeaseGrant | None:
    return _tx(engine, lambda s: leases.acquire(s, job, holder, ttl_s))


def _wait_for_grant(engine: Engine, holder: str, ttl_s: float, timeout_s: float) -> LeaseGrant:
    """Poll for the lease (a standby's loop) until it is granted; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        grant = _acquire(engine, holder, ttl_s)
        if grant is not None:
            return grant
        time.sleep(0.05)
    raise AssertionError(f"{holder} never got the lease")


def test_of_processes_racing_for_a_free_lease_exactly_one_wins(engine: Engine) -> None:
    start = threading.Barrier(CONTENDERS)
    grants: list[LeaseGrant] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def contend(index: int) -> None:
        own = make_engine(str(engine.url.render_as_string(hide_password=False)))  # a process's own pool
        try:
            start.wait(10)
            grant = _acquire(own, f"host:{index}:x", 30)
            if grant is not None:
                with lock:
                    grants.append(grant)
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(grants) == 1, grants
    assert grants[0].token == 1
    # The others keep being refused while the winner's lease runs.
    assert _acquire(engine, "late:1:x", 30) is None
    [state] = _tx(engine, leases.lease_states)
    assert (state.job, state.holder, state.token) == ("archive", grants[0].holder, 1)


def test_a_holder_that_stops_renewing_is_taken_over_after_expiry_with_a_new_token(engine: Engine) -> None:
    ttl = 1.0
    first = _acquire(engine, "a:1:x", ttl)
    assert first is not None
    acquired = time.monotonic()
    assert _acquire(engine, "b:2:y", ttl) is None
    second = _wait_for_grant(engine, "b:2:y", ttl, timeout_s=15)
    # Not before the first lease ran out (the database's clock; a little slack for clock granularity).
    assert time.monotonic() - acquired >= ttl - 0.1
    assert second.token == first.token + 1
    # The old holder can neither renew nor come back on its old token.
    assert _tx(engine, lambda s: leases.renew(s, first)) is False
    assert _tx(engine, lambda s: leases.renew(s, second)) is True
    assert _tx(engine, lambda s: leases.release(s, first)) is False


def test_a_holder_renewing_in_time_keeps_its_lease(engine: Engine) -> None:
    ttl = 1.0
    grant = _acquire(engine, "a:1:x", ttl)
    assert grant is not None
    deadline = time.monotonic() + 3 * ttl
    while time.monotonic() < deadline:
        assert _tx(engine, lambda s: leases.renew(s, grant))
        assert _acquire(engine, "b:2:y", ttl) is None
        time.sleep(ttl / 4)


def test_a_stale_holder_with_an_old_token_is_fenced_out_and_its_writes_are_rolled_back(
    engine: Engine,
) -> None:
    stale = _acquire(engine, "a:1:x", 0.5)
    assert stale is not None
    fresh = _wait_for_grant(engine, "b:2:y", 30, timeout_s=15)  # "a" was paused past its expiry

    def stale_round(session: Session) -> None:
        write_audit(session, actor="archive-job", action="archive.build", target_type="case", target_id=1)
        session.flush()
        leases.fence(session, stale)

    with pytest.raises(LeaseLost):
        _tx(engine, stale_round)
    assert _tx(engine, lambda s: s.scalar(select(func.count()).select_from(AuditLog))) == 0

    def fresh_round(session: Session) -> None:
        write_audit(session, actor="archive-job", action="archive.build", target_type="case", target_id=1)
        leases.fence(session, fresh)

    _tx(engine, fresh_round)
    assert _tx(engine, lambda s: s.scalar(select(func.count()).select_from(AuditLog))) == 1


def test_a_lapsed_lease_stays_its_holders_until_someone_takes_it_over(engine: Engine) -> None:
    """The token decides, not the clock: a holder whose round outlasted its lease (a long archive on
    SQLite keeps the keeper from renewing) may commit if nobody took over; once taken over, never."""
    grant = _acquire(engine, "a:1:x", 0.3)
    assert grant is not None
    _tx(engine, lambda s: s.execute(update(JobLease).values(expires_at=0.0)))  # long past its expiry
    _tx(engine, lambda s: leases.fence(s, grant))
    assert _tx(engine, lambda s: leases.renew(s, grant)) is True
    _tx(engine, lambda s: s.execute(update(JobLease).values(expires_at=0.0)))
    again = _acquire(engine, "a:1:x", 30)  # the same process, after it had given the grant up for lost
    assert again is not None and again.token == grant.token + 1
    with pytest.raises(LeaseLost):
        _tx(engine, lambda s: leases.fence(s, grant))
    assert _tx(engine, lambda s: leases.renew(s, grant)) is False


def test_released_lease_is_taken_over_at_once_and_the_schedule_is_shared(engine: Engine) -> None:
    first = _acquire(engine, "a:1:x", 30)
    assert first is not None
    assert _tx(engine, lambda s: leases.claim_round(s, first, 3600)) is True
    assert _tx(engine, lambda s: leases.claim_round(s, first, 3600)) is False  # one round per period
    assert _tx(engine, lambda s: leases.release(s, first)) is True
    second = _acquire(engine, "b:2:y", 30)
    assert second is not None and second.token == first.token + 1
    # The new holder does not run the round the old one already ran this period...
    assert _tx(engine, lambda s: leases.claim_round(s, second, 3600)) is False
    # ...the old holder cannot claim at all, and with a short period the new one runs the next round.
    assert _tx(engine, lambda s: leases.claim_round(s, first, 0)) is False
    assert _tx(engine, lambda s: leases.claim_round(s, second, 0)) is True
    [state] = _tx(engine, leases.lease_states)
    assert state.runs == 2 and state.holder == "b:2:y"


def test_jobs_have_independent_leases(engine: Engine) -> None:
    assert _acquire(engine, "a:1:x", 30, job="archive") is not None
    assert _acquire(engine, "b:2:y", 30, job="ledger") is not None
    assert _acquire(engine, "b:2:y", 30, job="archive") is None
    holders = {state.job: state.holder for state in _tx(engine, leases.lease_states)}
    assert holders == {"archive": "a:1:x", "ledger": "b:2:y"}


def test_a_job_that_rests_after_its_round_counts_the_interval_from_the_end(engine: Engine) -> None:
    grant = _acquire(engine, "a:1:x", 30, job="scrub")
    assert grant is not None
    assert _tx(engine, lambda s: leases.claim_round(s, grant, 3600))
    # The pass ran long; it ends now, and the rest is counted from here.
    _tx(engine, lambda s: s.execute(update(JobLease).values(last_run_at=JobLease.last_run_at - 7200)))
    assert _tx(engine, lambda s: leases.claim_round(s, grant, 3600)) is True  # due by its start...
    _tx(engine, lambda s: s.execute(update(JobLease).values(last_run_at=JobLease.last_run_at - 7200)))
    assert _tx(engine, lambda s: leases.finish_round(s, grant)) is True
    assert _tx(engine, lambda s: leases.claim_round(s, grant, 3600)) is False  # ...not by its end
    stale = LeaseGrant(job="scrub", holder="a:1:x", token=grant.token - 1, ttl_s=30)
    assert _tx(engine, lambda s: leases.finish_round(s, stale)) is False


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_takeover_racing_the_holders_fenced_commit_waits_and_then_finds_the_lease_renewed(
    engine: Engine,
) -> None:
    """PostgreSQL: between the fence and the commit the lease row is locked, so a standby that saw the
    lease expired waits for the commit, re-checks and finds it renewed (READ COMMITTED re-check)."""
    grant = _acquire(engine, "a:1:x", 30)
    assert grant is not None
    _tx(engine, lambda s: s.execute(update(JobLease).values(expires_at=0.0)))  # ran out, nobody took it
    outcome: list[LeaseGrant | None] = []
    with Session(engine) as holder_session, holder_session.begin():
        write_audit(
            holder_session, actor="archive-job", action="archive.build", target_type="case", target_id=1
        )
        leases.fence(holder_session, grant)  # the row is locked until this transaction ends
        standby = threading.Thread(target=lambda: outcome.append(_acquire(engine, "b:2:y", 30)))
        standby.start()

        def standby_waits_on_the_row_lock() -> bool:
            with engine.connect() as conn:
                waiting = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE :statement"
                    ),
                    {"statement": "%job_leases%"},
                ).scalar()
            return bool(waiting)

        deadline = time.monotonic() + 15
        while not standby_waits_on_the_row_lock():
            assert time.monotonic() < deadline, "the standby never reached the lease row"
            assert standby.is_alive(), outcome  # it must not get past the lock before the commit
            time.sleep(0.02)
    standby.join(15)
    assert outcome == [None]
    assert _tx(engine, lambda s: s.scalar(select(func.count()).select_from(AuditLog))) == 1
    [state] = _tx(engine, leases.lease_states)
    assert (state.holder, state.token) == ("a:1:x", grant.token)
