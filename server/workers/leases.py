"""This process's side of the job leases (``server.domain.leases``): hold, renew, fence, fail over.

A server process with the ``workers`` role makes one :class:`JobLeases` with a holder id of its own
(``host:pid:random``). Each singleton loop gets a :class:`SingletonLease` for its job and runs through
:func:`run_rounds`: every poll it takes the lease if it is free or expired, and as holder it claims and
runs a round when one is due on the deployment's shared schedule. A keeper thread renews every lease
this process holds every third of the lease duration, also while a long round (an archive build, a
scrub pass) runs; a round writes its results through :meth:`SingletonLease.fence`, so a holder paused
past its expiry cannot commit after another process took over. On a clean stop the leases are released
and a standby takes over at its next poll; after a crash it takes over once the lease expired
(``ZFJL_LEASE_TTL_S``). Each acquisition, loss and release is one log line naming job, holder and token.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable

from flask import Flask
from sqlalchemy.orm import Session

from server.domain import leases
from server.domain.leases import LeaseGrant, LeaseLost
from server.infra.db import session_scope

__all__ = ["JobLeases", "SingletonLease", "new_holder_id", "run_rounds"]

_LOG = logging.getLogger(__name__)

# A round's schedule tolerates this share of its interval of jitter (waits measured on this host,
# due-ness on the database's clock), so a round due "now" is not skipped for a few milliseconds.
_SCHEDULE_SLACK = 0.05


def new_holder_id() -> str:
    """``host:pid:random``: unique per process start, readable in logs and ``/metrics``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SingletonLease:
    """One job's lease as this process holds it (or not)."""

    def __init__(self, app: Flask, job: str, holder: str, ttl_s: float) -> None:
        """Hold ``job`` as ``holder`` for ``ttl_s`` seconds at a time."""
        self.app, self.job, self.holder, self.ttl_s = app, job, holder, ttl_s
        self._grant: LeaseGrant | None = None
        self._lock = threading.Lock()

    @property
    def poll_s(self) -> float:
        """How often a standby looks for a free lease, and the holder renews (a third of the duration)."""
        return self.ttl_s / 3.0

    @property
    def grant(self) -> LeaseGrant | None:
        """The grant this process holds now, or None."""
        with self._lock:
            return self._grant

    @property
    def held(self) -> bool:
        """Whether this process believes it holds the lease (the fence is the authority)."""
        return self.grant is not None

    def ensure(self) -> bool:
        """Hold the lease: True if held already or taken now (a free or expired lease)."""
        if self.held:
            return True
        with session_scope(self.app) as session:
            grant = leases.acquire(session, self.job, self.holder, self.ttl_s)
        if grant is None:
            return False
        with self._lock:
            self._grant = grant
        _LOG.info("lease acquired: job=%s holder=%s token=%d", self.job, self.holder, grant.token)
        return True

    def renew(self) -> bool:
        """Extend the held lease (the keeper's call); False, and the lease dropped, if it was lost."""
        grant = self.grant
        if grant is None:
            return False
        with session_scope(self.app) as session:
            kept = leases.renew(session, grant)
        if not kept:
            self.drop(grant, "expired or taken over")
        return kept

    def fence(self, session: Session) -> None:
        """Refuse the caller's writes (``LeaseLost``) unless the lease is still ours; call before commit."""
        grant = self.grant
        if grant is None:
            raise LeaseLost(f"任务 {self.job} 未持有租约", f"job {self.job} holds no lease")
        try:
            leases.fence(session, grant)
        except LeaseLost:
            self.drop(grant, "fenced out")
            raise

    def claim_round(self, interval_s: float) -> bool:
        """Start a round if one is due on the shared schedule (committed before the round runs)."""
        grant = self.grant
        if grant is None:
            return False
        with session_scope(self.app) as session:
            return leases.claim_round(session, grant, interval_s * (1.0 - _SCHEDULE_SLACK))

    def finish_round(self) -> None:
        """Count the job's interval from the end of the round that just finished."""
        grant = self.grant
        if grant is not None:
            with session_scope(self.app) as session:
                leases.finish_round(session, grant)

    def release(self) -> None:
        """Give the lease up (a clean stop) so a standby takes it at its next poll."""
        grant = self.grant
        if grant is None:
            return
        with self._lock:
            self._grant = None
        try:
            with session_scope(self.app) as session:
                leases.release(session, grant)
            _LOG.info("lease released: job=%s holder=%s token=%d", self.job, self.holder, grant.token)
        except Exception:
            _LOG.exception("releasing the lease of job %s failed (it expires by itself)", self.job)

    def drop(self, grant: LeaseGrant, why: str) -> None:
        """Forget ``grant`` (if still the current one) after it was found lost."""
        with self._lock:
            if self._grant != grant:
                return
            self._grant = None
        _LOG.warning("lease lost: job=%s holder=%s token=%d (%s)", self.job, self.holder, grant.token, why)


class JobLeases:
    """Every singleton lease of this process and the keeper thread that renews the held ones."""

    def __init__(self, app: Flask, *, ttl_s: float, holder: str | None = None) -> None:
        """Leases of ``ttl_s`` seconds for ``holder`` (default: a new id for this process)."""
        self.app, self.ttl_s = app, ttl_s
        self.holder = holder or new_holder_id()
        self._leases: dict[str, SingletonLease] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lease(self, job: str) -> SingletonLease:
        """The lease of ``job`` (one object per job and process)."""
        if job not in self._leases:
            self._leases[job] = SingletonLease(self.app, job, self.holder, self.ttl_s)
        return self._leases[job]

    def renew_all(self) -> None:
        """Renew every held lease; a failure to reach the database leaves it to expire (and be retried)."""
        for lease in list(self._leases.values()):
            try:
                lease.renew()
            except Exception:
                _LOG.exception("renewing the lease of job %s failed", lease.job)

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_s / 3.0):
            self.renew_all()

    def start(self) -> None:
        """Start the keeper thread."""
        if self._thread is None:
            _LOG.info("job leases: holder=%s duration=%ss", self.holder, self.ttl_s)
            self._thread = threading.Thread(target=self._keep, name="zfjl-lease-keeper", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop renewing and release every held lease (call after the loops stopped); safe twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        for lease in self._leases.values():
            lease.release()


def run_rounds(
    stop: threading.Event,
    round_: Callable[[], object],
    *,
    interval_s: float,
    name: str,
    lease: SingletonLease | None = None,
    wait_first: bool = False,
    rest_after: bool = False,
) -> None:
    """A worker thread's loop: run ``round_`` every ``interval_s`` until ``stop`` is set.

    Without a lease (one process, tests) every round runs here, after a first wait if ``wait_first``.
    With one, a round runs only while this process holds the lease and one is due on the deployment's
    schedule (:meth:`SingletonLease.claim_round`); a standby looks for a free lease every
    ``lease.poll_s``. With ``rest_after`` the interval counts from the end of a round, not its start
    (the scrubber rests between passes that may take longer than the rest). A round that loses its lease
    mid-way (``LeaseLost`` from its fence) is logged and its uncommitted writes are gone; an error in a
    round never ends the loop.
    """
    if lease is None:
        if wait_first and stop.wait(interval_s):
            return
        while not stop.is_set():
            try:
                round_()
            except Exception:
                _LOG.exception("%s failed", name)
            stop.wait(interval_s)
        return
    while not stop.is_set():
        try:
            if lease.ensure() and lease.claim_round(interval_s):
                try:
                    round_()
                finally:
                    if rest_after:
                        lease.finish_round()
        except LeaseLost:
            _LOG.warning("%s stopped: job %s lost its lease to another process", name, lease.job)
        except Exception:
            _LOG.exception("%s failed", name)
        stop.wait(min(interval_s, lease.poll_s))
