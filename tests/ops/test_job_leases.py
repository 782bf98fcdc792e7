"""Two real ``zfjl-server run --roles workers`` processes against one PostgreSQL (docs/scaling.md,
"Several workers processes"): each singleton job runs in exactly one of them, one archiving round per
period; when the holder is killed with SIGKILL the other takes its leases over after they expire and
archives what ends next, each act exactly once (JL-18).

Waits are on conditions (rows, lease holders, log lines), never fixed sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from bench.scale_rig import ServerProcess, wait_until
from server.domain.governance.archives_models import ArchivePackage
from server.domain.leases import LeaseState, lease_states
from server.infra.db import get_engine, session_scope
from server.workers.loops import JOBS, Scrubber
from tests.conftest import migrated_app
from tests.fixtures.mqtt import MosquittoBroker
from tests.server.domain.governance.test_archive import build_case

ARCHIVE_INTERVAL_S = 2
LEASE_TTL_S = 5  # renewed every 1.7 s: long enough that a loaded machine does not lose it spuriously
ARCHIVE_ROUND = re.compile(r"archiving round: \d+ archived")
SWEEP_ROUND = re.compile(r"publicity sweep: \{")


def _leases(app: Flask) -> dict[str, LeaseState]:
    with session_scope(app) as session:
        return {state.job: state for state in lease_states(session)}


def _packages(app: Flask) -> list[int]:
    with session_scope(app) as session:
        return list(session.scalars(select(ArchivePackage.case_id).order_by(ArchivePackage.case_id)))


def _runs(app: Flask, job: str = "archive") -> int:
    state = _leases(app).get(job)
    return 0 if state is None else state.runs


def _holder_pid(state: LeaseState | None) -> int | None:
    """The process id in a holder id ``host:pid:random``."""
    return None if state is None or state.holder is None else int(state.holder.split(":")[-2])


@pytest.mark.postgres
@pytest.mark.mosquitto
def test_jl18_two_workers_processes_run_each_singleton_job_once_and_fail_over_on_sigkill(
    tmp_path: Path, pg_url: str, mosquitto_broker: MosquittoBroker
) -> None:
    data_dir = tmp_path / "server"  # one object folder and one ingest key for both processes
    app = migrated_app(data_dir, pg_url)
    first_case = build_case(app, tmp_path, device_id="rec-lease-1").case_id
    env = {
        "ZFJL_DATA_DIR": str(data_dir),
        "ZFJL_DATABASE_URL": pg_url,
        "ZFJL_MQTT_URL": mosquitto_broker.url,
        "ZFJL_SCRUB_BYTES_PER_S": "0",
        "ZFJL_ARCHIVE_INTERVAL_S": str(ARCHIVE_INTERVAL_S),
        "ZFJL_ARCHIVE_DELAY_HOURS": "0",
        "ZFJL_PUBLICITY_SWEEP_INTERVAL_S": "10",
        "ZFJL_LEASE_TTL_S": str(LEASE_TTL_S),
    }
    servers = [ServerProcess(tmp_path, env, roles="workers") for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        ready_at = time.monotonic()
        by_pid = {server.proc.pid: server for server in servers}

        wait_until(lambda: _packages(app) == [first_case], 60, "the first case archived")
        wait_until(lambda: _runs(app) >= 4, 60, "four archiving rounds")
        states = _leases(app)
        holder = by_pid[_holder_pid(states["archive"]) or -1]
        standby = next(server for server in servers if server is not holder)
        # Every singleton job is held by one of the two processes (jobs may be split between them).
        for job in (j for j in JOBS if j != Scrubber.JOB):  # ZFJL_SCRUB_BYTES_PER_S=0: no scrubber
            assert _holder_pid(states[job]) in by_pid, (job, states[job])
        # Only the holder ran rounds; one per period over all processes.
        holder_rounds = len(ARCHIVE_ROUND.findall(holder.log_text()))
        assert len(ARCHIVE_ROUND.findall(standby.log_text())) == 0, standby.log_tail()
        runs = _runs(app)
        assert holder_rounds <= runs <= holder_rounds + 1  # a claimed round may still be running
        # One round per period for the deployment (two uncoordinated processes would run two).
        assert runs <= (time.monotonic() - ready_at) / (ARCHIVE_INTERVAL_S * 0.95) + 1
        sweep_holder = by_pid[_holder_pid(states["publicity-sweep"]) or -1]
        sweep_other = next(server for server in servers if server is not sweep_holder)
        assert SWEEP_ROUND.search(sweep_holder.log_text()), sweep_holder.log_tail()
        assert not SWEEP_ROUND.search(sweep_other.log_text()), sweep_other.log_tail()
        assert _packages(app) == [first_case]  # never sealed twice

        # SIGKILL the archive holder: no release, so the standby waits for the lease to expire.
        killed_at = time.monotonic()
        os.killpg(holder.proc.pid, signal.SIGKILL)
        holder.proc.wait(30)
        token = states["archive"].token
        wait_until(lambda: _holder_pid(_leases(app).get("archive")) == standby.proc.pid, 60, "the takeover")
        takeover_s = time.monotonic() - killed_at
        assert takeover_s >= LEASE_TTL_S * 2 / 3 - 0.5
        print(
            f"archive lease taken over {takeover_s:.1f} s after SIGKILL (lease {LEASE_TTL_S} s)"
        )  # -s shows it
        assert _leases(app)["archive"].token == token + 1
        assert f"lease acquired: job=archive holder={_leases(app)['archive'].holder}" in standby.log_text()

        second_case = build_case(app, tmp_path, device_id="rec-lease-2").case_id
        wait_until(
            lambda: _packages(app) == sorted([first_case, second_case]), 60, "the second case archived"
        )
        before = _runs(app)
        wait_until(lambda: _runs(app) >= before + 2, 60, "two more rounds")
        assert _packages(app) == sorted([first_case, second_case])  # each act archived exactly once
        rounds_after = len(ARCHIVE_ROUND.findall(standby.log_text()))
        assert rounds_after >= 2

        assert standby.stop() == 0, standby.log_tail()
        # A clean stop releases every lease at once.
        assert all(state.holder is None for state in _leases(app).values()), _leases(app)
        with session_scope(app) as session:
            assert session.scalar(select(func.count()).select_from(ArchivePackage)) == 2
    finally:
        for server in servers:
            server.stop()
        get_engine(app).dispose()
