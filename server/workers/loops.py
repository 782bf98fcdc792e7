"""Background work bound to the Flask app: each job opens its own session, commits, then acts.

The services below take a session and know nothing of Flask; this module is the glue that gives them
one per round from the app's engine (``server.infra.db.session_scope``) and runs them on named threads, so
the services stay usable from the CLI, the ingest worker and tests alike (docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy.orm import Session

from server.domain.base import utcnow
from server.domain.evidence.scrub import Throttle, scrub
from server.domain.fleet.alerts import ALERTS_JOB, evaluate_alerts
from server.domain.fleet.dispatch import dispatch_once
from server.domain.governance import archive_job, archives, ledger, lock_job
from server.domain.governance.archive_listing import archive_deadlines
from server.domain.governance.retention import lock_store
from server.domain.leases import LeaseLost
from server.domain.publicity import annual
from server.domain.publicity.alerts import ArchiveDue, evaluate_deadline_alerts
from server.domain.publicity.schedules import today_in_china
from server.domain.publicity.service import expire_due
from server.infra.agency_keys import AgencyKeyring
from server.infra.db import session_scope
from server.infra.storage import ARCHIVE_STORE_KEY, STORE_KEY, ObjectStore
from server.workers.leases import SingletonLease, run_rounds

__all__ = [
    "JOBS",
    "AlertsWorker",
    "ArchiveRound",
    "ArchiveWorker",
    "Fence",
    "FleetDispatcher",
    "LedgerWorker",
    "PublicityWorker",
    "RetentionLockWorker",
    "Scrubber",
    "archive_dues",
    "raise_alerts",
    "run_fleet_housekeeping",
    "run_publicity_housekeeping",
]

_LOG = logging.getLogger(__name__)

# A round's writes pass through its fence before they commit (``SingletonLease.fence``, docs/scaling.md).
Fence = Callable[[Session], None]


def _no_fence(_session: Session) -> None:
    """Without a lease (one process, the CLI, tests) nothing is fenced."""


def _fence_of(lease: SingletonLease | None) -> Fence:
    return _no_fence if lease is None else lease.fence


def run_fleet_housekeeping(app: Flask, fence: Fence = _no_fence) -> dict[str, int]:
    """Evaluate alerts for the app's database (hourly by :class:`AlertsWorker`, and on demand)."""
    settings = app.extensions["zfjl.settings"]
    with session_scope(app) as session:
        done = evaluate_alerts(session, offline_after=timedelta(minutes=settings.fleet_offline_alert_minutes))
        fence(session)
        return done


def run_publicity_housekeeping(app: Flask, fence: Fence = _no_fence) -> dict[str, int]:
    """Hourly (:class:`AlertsWorker`): from 1 January last year's annual report of every agency is
    drafted (GS-17). Expiry (GS-13) and deadline alerts are the :class:`PublicityWorker`'s."""
    with session_scope(app) as session:
        drafted = annual.generate_due(session)
        fence(session)
    return {"annual_reports_drafted": len(drafted)}


def raise_alerts(app: Flask) -> None:
    """Re-evaluate fleet alerts now, so a new integrity finding is an alert at once (never raises)."""
    try:
        run_fleet_housekeeping(app)
    except Exception:
        _LOG.exception("alert evaluation after an integrity finding failed")


class FleetDispatcher:
    """Background thread: every ``interval_s`` runs :func:`dispatch_once` and publishes the result."""

    JOB = "fleet-dispatch"
    """The name of this job's lease."""

    def __init__(
        self,
        app: Flask,
        publish: Callable[[str, bytes, bool], None],
        *,
        interval_s: float = 2.0,
        lease: SingletonLease | None = None,
    ) -> None:
        """Use ``publish(topic, payload, retain)`` (QoS 1) for every message; with ``lease``, only while
        this process holds it (two dispatchers would both send a command not yet marked sent)."""
        self.app, self.publish, self.interval_s, self.lease = app, publish, interval_s, lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> int:
        """One dispatch round; returns how many messages were published."""
        with session_scope(self.app) as session:
            publications = dispatch_once(session)
            _fence_of(self.lease)(session)
        # Published after the commit: a crash in between re-sends on presence, never loses a command.
        for topic, payload, retain in publications:
            self.publish(topic, payload, retain)
        return len(publications)

    def _loop(self) -> None:
        run_rounds(self._stop, self.step, interval_s=self.interval_s, name="fleet dispatch", lease=self.lease)

    def start(self) -> None:
        """Start the named worker thread."""
        self._thread = threading.Thread(target=self._loop, name="zfjl-fleet-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class Scrubber:
    """The background scrubber (JL-6): one named thread, passes over all evidence at a bounded byte rate."""

    JOB = "scrub"
    """The name of this job's lease."""

    def __init__(
        self,
        app: Flask,
        store: ObjectStore,
        *,
        bytes_per_s: int,
        pause_s: float,
        lease: SingletonLease | None = None,
    ) -> None:
        """Scrub ``store`` at ``bytes_per_s`` (0: off), a pass every ``pause_s``; with ``lease``, only
        while this process holds it (two scrubbers would read every byte twice)."""
        self.app = app
        self.lease = lease
        self.store = store
        self.bytes_per_s = bytes_per_s
        self.pause_s = pause_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def start(self) -> None:
        """Start the thread (nothing when the rate is 0: background scrubbing is off)."""
        if self.bytes_per_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="zfjl-scrubber", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        run_rounds(
            self._stop,
            self.step,
            interval_s=self.pause_s,
            name="scrub pass",
            lease=self.lease,
            rest_after=True,
        )

    def step(self) -> None:
        """One pass over all stored evidence; each checkpoint commits only while the lease is ours."""
        fence = _fence_of(self.lease)
        with session_scope(self.app) as session:

            def checkpoint() -> None:
                fence(session)
                session.commit()

            report = scrub(
                session,
                self.store,
                throttle=Throttle(self.bytes_per_s, self._stop),
                source="scrub",
                checkpoint=checkpoint,
            )
            fence(session)
        self.passes += 1
        _LOG.info(
            "scrub pass: %d recordings, %d bytes, %d new findings",
            report.recordings,
            report.bytes_read,
            report.new_findings,
        )
        if report.new_findings:
            raise_alerts(self.app)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Set the stop event and join the thread; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


class LedgerWorker:
    """The evidence ledger's round (JL-6, JL-23): sequence new evidence and audit rows, sign the head.

    One named thread, a round every ``interval_s`` (a minute: a checkpoint "at least every few
    minutes", docs/ledger.md). With a lease only its holder runs rounds; without one, two server
    processes racing one round collide on the ledger's unique keys, the loser's round rolls back and the
    next one catches up.
    """

    JOB = "ledger"
    """The name of this job's lease."""

    def __init__(self, app: Flask, *, interval_s: float = 60.0, lease: SingletonLease | None = None) -> None:
        """Sign with the ledger key derived from the app's ingest key."""
        self.app, self.interval_s, self.lease = app, interval_s, lease
        self.signer = ledger.LedgerSigner.from_ingest_key(app.extensions["zfjl.settings"].ingest_key)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> int:
        """One round; returns how many leaves it appended."""
        with session_scope(self.app) as session:
            appended = ledger.sequence(session)
            ledger.checkpoint(session, self.signer)
            _fence_of(self.lease)(session)
        return appended

    def _loop(self) -> None:
        run_rounds(self._stop, self.step, interval_s=self.interval_s, name="ledger round", lease=self.lease)

    def start(self) -> None:
        """Start the named worker thread."""
        self._thread = threading.Thread(target=self._loop, name="zfjl-ledger", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Set the stop event and join the thread; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


def archive_dues(session: Session) -> list[ArchiveDue]:
    """JL-18: governance knows the archive deadlines, publicity keeps the alerts; publicity must not
    import governance (governance already imports publicity), so the worker carries them across."""
    return [
        ArchiveDue(
            case_id=due.case_id,
            agency_id=due.agency_id,
            number=due.number,
            ended_at=due.ended_at,
            due_at=due.due_at,
        )
        for due in archive_deadlines(session)
    ]


class PublicityWorker:
    """The publicity sweep (GS-13, GS-22, GS-23): expire what passed its disclosure period, then alert.

    The alerts cover publication deadlines, ordered withdrawals (GS-12) and the archive deadlines of
    ended cases (JL-18), which this worker reads from governance and hands to the publicity alerts.

    One named thread, a pass every ``interval_s`` (``ZFJL_PUBLICITY_SWEEP_INTERVAL_S``). Expiry first, so
    an item that left the portal is never still counted; then the deadline alerts of every agency are
    opened, refreshed or cleared. Both are idempotent; with a lease only one server process sweeps, so
    two passes never race to open the same alert.
    """

    JOB = "publicity-sweep"
    """The name of this job's lease."""

    def __init__(
        self, app: Flask, *, interval_s: float | None = None, lease: SingletonLease | None = None
    ) -> None:
        """Run every ``interval_s`` seconds (default: the app's setting)."""
        self.app = app
        self.lease = lease
        self.interval_s = (
            float(app.extensions["zfjl.settings"].publicity_sweep_interval_s)
            if interval_s is None
            else interval_s
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def step(self, now: datetime | None = None) -> dict[str, int]:
        """One pass as of ``now`` (default: the clock); returns what it expired and the alert counts."""
        day = today_in_china(now)
        with session_scope(self.app) as session:
            expired = expire_due(session, day)
            counts = evaluate_deadline_alerts(session, today=day, now=now, archives=archive_dues(session))
            _fence_of(self.lease)(session)
        self.passes += 1
        return {"expired": len(expired), **counts}

    def _round(self) -> None:
        done = self.step()
        _LOG.info("publicity sweep: %s", done)

    def _loop(self) -> None:
        run_rounds(
            self._stop, self._round, interval_s=self.interval_s, name="publicity sweep", lease=self.lease
        )

    def start(self) -> None:
        """Start the named worker thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="zfjl-publicity", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Set the stop event and join the thread; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


@dataclass
class ArchiveRound:
    """What one round of the archiving job did: packages sealed, and cases that failed with why."""

    archived: dict[int, int] = field(default_factory=dict)  # case id -> package id
    failed: dict[int, str] = field(default_factory=dict)  # case id -> error


class ArchiveWorker:
    """Archiving by a job (JL-18): every ``ZFJL_ARCHIVE_INTERVAL_S`` seals the ended cases' packages.

    One named thread owned by the runner. Each case is archived in its own transaction and delivered to
    the archive store before its row is committed; a failure rolls that case back (no package row),
    records an ``archive_failures`` row and moves on, so one bad case never blocks the others.
    """

    JOB = "archive"
    """The name of this job's lease."""

    def __init__(self, app: Flask, *, lease: SingletonLease | None = None) -> None:
        """Use the app's settings, object store and archive store; with ``lease``, archive only while
        this process holds it (two jobs would seal and deliver the same case twice)."""
        settings = app.extensions["zfjl.settings"]
        self.app = app
        self.lease = lease
        self.interval_s: float = settings.archive_interval_s
        self.delay = timedelta(hours=settings.archive_delay_hours)
        self.prefix: str = settings.archive_prefix
        self.signer = ledger.LedgerSigner.from_ingest_key(settings.ingest_key)
        self.keyring = AgencyKeyring.from_settings(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self, now: datetime | None = None) -> ArchiveRound:
        """One round over every pending case; never raises for one case's failure."""
        now = now or utcnow()
        done = ArchiveRound()
        fence = _fence_of(self.lease)
        store: ObjectStore = self.app.extensions[STORE_KEY]
        archive_store: ObjectStore = self.app.extensions[ARCHIVE_STORE_KEY]
        with session_scope(self.app) as session:
            pending = archive_job.pending_cases(session, now=now, delay=self.delay)
        for case_id in pending:
            if self._stop.is_set() or (self.lease is not None and not self.lease.held):
                break
            try:
                with (
                    tempfile.TemporaryDirectory(prefix="zfjl-archive-") as work,
                    session_scope(self.app) as session,
                ):
                    built = archives.build_archive(
                        session, archive_job.ARCHIVER, case_id, store=store, signer=self.signer,
                        keyring=self.keyring, work_dir=Path(work), archive_store=archive_store,
                        archive_prefix=self.prefix, now=now, before_store=fence,
                    )  # fmt: skip
                    package_id = built.row.id
                    # Fenced before the first object was written (``before_store``), and again here: a
                    # holder paused past its expiry writes neither an object nor a row; one that passed
                    # the first fence holds the lease row until this commit (docs/scaling.md).
                    fence(session)
                done.archived[case_id] = package_id
            except LeaseLost:
                raise
            except Exception as exc:
                _LOG.exception("archiving case %d failed", case_id)
                error = f"{type(exc).__name__}: {exc}"
                done.failed[case_id] = error
                try:
                    with session_scope(self.app) as session:
                        archive_job.record_failure(session, case_id, error, now)
                        fence(session)
                except Exception:
                    _LOG.exception("recording the archiving failure of case %d failed", case_id)
        return done

    def _round(self) -> None:
        done = self.step()
        _LOG.info("archiving round: %d archived, %d failed", len(done.archived), len(done.failed))

    def _loop(self) -> None:
        run_rounds(
            self._stop, self._round, interval_s=self.interval_s, name="archiving round", lease=self.lease,
            wait_first=True,
        )  # fmt: skip

    def start(self) -> None:
        """Start the named thread (nothing when the interval is 0: the job is off)."""
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="zfjl-archiver", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Set the stop event (a round finishes its current case) and join; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


class AlertsWorker:
    """Hourly: fleet alerts (devices offline, low battery, refused uploads) and annual-report drafts
    (GS-17). One named thread; with a lease, only in the process that holds it."""

    JOB = ALERTS_JOB
    """The name of this job's lease (every evaluation, on demand too, takes a lock of this name)."""

    def __init__(
        self, app: Flask, *, interval_s: float = 3600.0, lease: SingletonLease | None = None
    ) -> None:
        """Evaluate every ``interval_s`` seconds."""
        self.app, self.interval_s, self.lease = app, interval_s, lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> dict[str, int]:
        """One round: fleet alerts, then annual reports; each commits under the fence."""
        fence = _fence_of(self.lease)
        done = run_fleet_housekeeping(self.app, fence)
        done.update(run_publicity_housekeeping(self.app, fence))
        _LOG.info("hourly alerts: %s", done)
        return done

    def _loop(self) -> None:
        run_rounds(self._stop, self.step, interval_s=self.interval_s, name="hourly alerts", lease=self.lease,
                   wait_first=True)  # fmt: skip

    def start(self) -> None:
        """Start the named worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="zfjl-hourly-alerts", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Set the stop event and join the thread; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


class RetentionLockWorker:
    """Extends store locks after an agency lengthened a retention period (JL-19, ``lock_job.py``).

    One named thread owned by the runner. Each round leases the oldest unfinished job and runs it batch
    by batch, each batch its own transaction that records the job's progress, until the job is done or
    the worker is asked to stop; a stop finishes the batch in flight and gives the job back, so another
    process goes on at once. A process that dies holds its lease until it runs out (``lock_job.LEASE``);
    then any worker, or this one restarted, resumes the job from its recorded cursor.
    """

    def __init__(
        self,
        app: Flask,
        *,
        interval_s: float = 5.0,
        batch_size: int = lock_job.BATCH_SIZE,
        owner: str | None = None,
    ) -> None:
        """Look for jobs every ``interval_s``; ``owner`` names this worker in the job's lease."""
        self.app = app
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self, now: datetime | None = None) -> int:
        """Run jobs until none is free or the worker stops; returns how many batches it committed."""
        store = lock_store(self.app.extensions[STORE_KEY])
        batches = 0
        while not self._stop.is_set():
            with session_scope(self.app) as session:
                job_id = lock_job.claim(session, self.owner, now=now)
            if job_id is None:
                return batches
            while not self._stop.is_set():
                try:
                    with session_scope(self.app) as session:
                        done = lock_job.run_batch(
                            session, store, job_id, self.owner, now=now, batch_size=self.batch_size
                        )
                except Exception as exc:
                    # The batch rolled back (its cursor did not move): keep the error for the page and
                    # let the next round retry from the same place.
                    _LOG.exception("retention lock job %d: batch failed", job_id)
                    with session_scope(self.app) as session:
                        lock_job.record_error(session, job_id, self.owner, f"{type(exc).__name__}: {exc}")
                    return batches
                if done is None:  # another worker took the job over (our lease ran out)
                    break
                batches += 1
                if done.done:
                    _LOG.info("retention lock job %d done", job_id)
                    break
        return batches

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                _LOG.exception("retention lock round failed")
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        """Start the named thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="zfjl-retention-locks", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Set the stop event, join (the batch in flight commits), then give back the job; safe twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            with session_scope(self.app) as session:
                lock_job.release(session, self.owner)
        except Exception:
            _LOG.exception("giving back the retention lock jobs of %s failed", self.owner)


# The singleton jobs, each under its own lease (``server.domain.leases``), by lease name. The staging
# janitor and the flood summaries are not among them: each process cleans and summarises its own.
JOBS = tuple(
    worker.JOB
    for worker in (FleetDispatcher, Scrubber, LedgerWorker, ArchiveWorker, PublicityWorker, AlertsWorker)
)
