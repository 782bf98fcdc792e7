"""Singleton background jobs under leases (docs/scaling.md), on SQLite and PostgreSQL: of two server
processes with the ``workers`` role exactly one runs the publicity sweep, the other takes over after the
holder dies; an archiver paused past its lease writes no package (JL-18: each act is archived once)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from server.domain.base import utcnow
from server.domain.governance import archives
from server.domain.governance.archives_models import ArchiveFailure, ArchivePackage
from server.domain.leases import LeaseLost, lease_states
from server.infra.db import get_engine, session_scope
from server.infra.storage import ARCHIVE_STORE_KEY, STORE_KEY
from server.workers.leases import JobLeases
from server.workers.loops import JOBS, ArchiveRound, ArchiveWorker, PublicityWorker, Scrubber
from tests.conftest import migrated_app
from tests.fixtures.postgres import waiting_for_a_lock
from tests.server.domain.governance.test_archive import build_case

TTL_S = 3.0  # renewed every second: only a thread starved for two seconds would lose its lease


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database."""
    app = migrated_app(tmp_path / "var", db_url)
    yield app
    get_engine(app).dispose()


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _crash(leases: JobLeases) -> None:
    """What a killed process leaves: its leases are neither renewed nor released."""
    leases._stop.set()
    if leases._thread is not None:
        leases._thread.join(5)


def _holder(app: Flask, job: str) -> tuple[str | None, int]:
    with session_scope(app) as session:
        state = next(s for s in lease_states(session) if s.job == job)
    return state.holder, state.token


def test_of_two_processes_one_sweeps_and_the_other_takes_over_when_it_dies(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.workers.leases")
    first, second = JobLeases(app, ttl_s=TTL_S), JobLeases(app, ttl_s=TTL_S)
    sweeps = [
        PublicityWorker(app, interval_s=0.2, lease=leases.lease("publicity-sweep"))
        for leases in (first, second)
    ]
    try:
        for leases in (first, second):
            leases.start()
        for worker in sweeps:
            worker.start()
        _wait_until(lambda: sum(w.passes for w in sweeps) >= 5, 30, "five sweeps")
        running = [w for w in sweeps if w.passes]
        assert len(running) == 1, [w.passes for w in sweeps]  # never both
        holder_worker = running[0]
        standby_worker = sweeps[1 - sweeps.index(holder_worker)]
        holder_leases, standby_leases = (first, second) if holder_worker is sweeps[0] else (second, first)
        holder, token = _holder(app, "publicity-sweep")
        assert holder == holder_leases.holder and token == 1
        assert f"lease acquired: job=publicity-sweep holder={holder} token=1" in caplog.text

        # The holder dies: its thread stops, nobody renews or releases its lease.
        holder_worker.stop()
        _crash(holder_leases)
        died = time.monotonic()
        _wait_until(lambda: standby_worker.passes > 0, 30, "the standby to take over")
        # Not before the dead holder's lease ran out (renewed at most a third of it before the death).
        assert time.monotonic() - died >= TTL_S * 2 / 3 - 0.2
        assert _holder(app, "publicity-sweep") == (standby_leases.holder, 2)
        assert f"lease acquired: job=publicity-sweep holder={standby_leases.holder} token=2" in caplog.text
    finally:
        for worker in sweeps:
            worker.stop()
        for leases in (first, second):
            leases.stop()


def test_of_two_processes_only_one_scrubs(app: Flask) -> None:
    """JL-6: the scrubber reads every stored byte; two processes must not both do it."""
    first, second = JobLeases(app, ttl_s=TTL_S), JobLeases(app, ttl_s=TTL_S)
    scrubbers = [
        Scrubber(
            app, app.extensions[STORE_KEY], bytes_per_s=1 << 20, pause_s=0.2, lease=leases.lease("scrub")
        )
        for leases in (first, second)
    ]
    try:
        for leases in (first, second):
            leases.start()
        for scrubber in scrubbers:
            scrubber.start()
        _wait_until(lambda: sum(s.passes for s in scrubbers) >= 4, 30, "four scrub passes")
        assert sorted(bool(s.passes) for s in scrubbers) == [False, True], [s.passes for s in scrubbers]
    finally:
        for scrubber in scrubbers:
            scrubber.stop()
        for leases in (first, second):
            leases.stop()


def test_a_clean_stop_releases_the_lease_for_the_standby_at_once(app: Flask) -> None:
    first, second = JobLeases(app, ttl_s=60), JobLeases(app, ttl_s=60)
    assert first.lease("ledger").ensure()
    assert not second.lease("ledger").ensure()
    first.stop()
    assert second.lease("ledger").ensure()  # no 60 s wait after a clean stop
    assert _holder(app, "ledger") == (second.holder, 2)
    second.stop()
    assert _holder(app, "ledger") == (None, 2)


def test_jl18_an_archiver_paused_past_its_lease_writes_no_package_and_the_new_holder_archives_once(
    app: Flask, tmp_path: Path
) -> None:
    scene = build_case(app, tmp_path)
    later = utcnow() + timedelta(hours=app.extensions["zfjl.settings"].archive_delay_hours, minutes=1)
    paused_leases, standby_leases = JobLeases(app, ttl_s=0.5), JobLeases(app, ttl_s=30)
    paused = ArchiveWorker(app, lease=paused_leases.lease("archive"))
    standby = ArchiveWorker(app, lease=standby_leases.lease("archive"))
    assert paused.lease is not None and standby.lease is not None
    assert paused.lease.ensure()
    # The holder is paused (no renewal) until its lease ran out and the standby took it over.
    _wait_until(standby.lease.ensure, 15, "the standby to take over the archive lease")
    assert paused.lease.held  # it does not know yet: only the fence can tell it

    with pytest.raises(LeaseLost):
        paused.step(later)
    assert not paused.lease.held
    with session_scope(app) as session:
        assert session.scalar(select(func.count()).select_from(ArchivePackage)) == 0
        assert session.scalar(select(func.count()).select_from(ArchiveFailure)) == 0

    done = standby.step(later)
    assert list(done.archived) == [scene.case_id] and not done.failed
    assert standby.step(later).archived == {}
    with session_scope(app) as session:
        assert session.scalars(select(ArchivePackage.case_id)).all() == [scene.case_id]
    standby_leases.stop()


def _zips(root: Path) -> list[str]:
    """Every archive zip a local store holds, as keys relative to its root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.zip"))


@pytest.mark.postgres
def test_jl18_an_archiver_paused_mid_build_past_its_lease_leaves_no_object_and_one_package(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder seals a case's zip and is paused (SIGSTOP, a GC pause) before it stores it; its lease
    runs out, the standby takes over and archives the case; then the first one resumes. It must write
    no object to the evidence or the archive store (the archive store may be WORM: nothing written
    there can be taken back) and no row: one package, its zip the only one in each store (JL-18, JL-19).

    PostgreSQL: the paused transaction has written its audit row, which on SQLite would hold the
    database's write lock and stop the standby, exactly as a real pause would."""
    app = migrated_app(tmp_path / "var", pg_url)
    try:
        scene = build_case(app, tmp_path)
        later = utcnow() + timedelta(hours=app.extensions["zfjl.settings"].archive_delay_hours, minutes=1)
        paused_leases, standby_leases = JobLeases(app, ttl_s=0.5), JobLeases(app, ttl_s=30)
        paused = ArchiveWorker(app, lease=paused_leases.lease("archive"))
        standby = ArchiveWorker(app, lease=standby_leases.lease("archive"))
        assert paused.lease is not None and standby.lease is not None
        sealed_zip = archives._seal_and_zip
        at_pause, resume = threading.Event(), threading.Event()
        paused_thread: list[threading.Thread] = []

        def seal_then_pause(*args: object, **kwargs: object) -> object:
            sealed = sealed_zip(*args, **kwargs)  # type: ignore[arg-type]
            if threading.current_thread() in paused_thread:
                at_pause.set()
                resume.wait(60)
            return sealed

        monkeypatch.setattr(archives, "_seal_and_zip", seal_then_pause)
        assert paused.lease.ensure()
        outcome: list[BaseException | None] = []

        def run_paused() -> None:
            try:
                paused.step(later)
                outcome.append(None)
            except BaseException as exc:  # the outcome is the test's to judge
                outcome.append(exc)

        paused_thread.append(threading.Thread(target=run_paused, name="paused-archiver"))
        paused_thread[0].start()
        standby_done: list[ArchiveRound] = []
        standby_thread = threading.Thread(target=lambda: standby_done.append(standby.step(later)))
        try:
            assert at_pause.wait(60), "the paused archiver never sealed its zip"
            # Paused (no renewal) until its lease ran out and the standby took it over.
            _wait_until(standby.lease.ensure, 15, "the standby to take over the archive lease")
            # The standby archives the case. Its ledger leaf waits for the paused transaction's (the
            # ledger sequences one writer at a time), as it would for a stopped process's open one.
            standby_thread.start()
            _wait_until(
                lambda: not standby_thread.is_alive() or waiting_for_a_lock(pg_url) > 0,
                30,
                "the standby to archive or wait for the paused transaction",
            )
        finally:
            resume.set()  # the paused archiver resumes
            paused_thread[0].join(60)
            if standby_thread.ident is not None:
                standby_thread.join(60)
        assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost), outcome
        assert len(standby_done) == 1 and list(standby_done[0].archived) == [scene.case_id], standby_done
        assert not standby_done[0].failed
        with session_scope(app) as session:
            rows = session.execute(select(ArchivePackage.object_key, ArchivePackage.delivered_key)).all()
            assert session.scalar(select(func.count()).select_from(ArchiveFailure)) == 0
        assert len(rows) == 1
        (object_key, delivered_key), = rows
        assert _zips(app.extensions[STORE_KEY].root) == [object_key]
        assert _zips(app.extensions[ARCHIVE_STORE_KEY].root) == [delivered_key]
        standby_leases.stop()
    finally:
        get_engine(app).dispose()


def test_the_scaling_doc_names_every_singleton_job_and_why() -> None:
    """docs/scaling.md's table of loops stays true to the code: each lease name is in it."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "scaling.md").read_text(encoding="utf-8")
    table = doc.split("Which loops are singletons, and why:", 1)[1].split("\n\n", 2)[1]
    named = {cell.strip("` ") for line in table.splitlines()[2:] for cell in [line.split("|")[2]]}
    assert set(JOBS) <= named, set(JOBS) - named
