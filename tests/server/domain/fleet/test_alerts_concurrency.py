"""Fleet alerts evaluated at the same moment by the hourly job and on demand (an admin's "evaluate now",
an integrity finding on an API read), as several server processes do against one PostgreSQL: one set of
alerts, never the same alert opened twice (docs/scaling.md, "Several workers processes")."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from server.domain.base import utcnow
from server.domain.evidence.models import IngestRejection
from server.domain.fleet import alerts
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import DeviceAlert
from server.domain.fleet.telemetry_models import DevicePresence
from server.infra.db import get_engine, make_engine, run_migrations, session_scope
from server.workers.leases import JobLeases
from server.workers.loops import AlertsWorker, raise_alerts
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, migrated_app, raw_public_key
from tests.fixtures.postgres import waiting_for_a_lock

DEVICE = "rec-alerts-race"

pytestmark = pytest.mark.postgres


@pytest.fixture
def app(tmp_path: Path, pg_url: str) -> Iterator[Flask]:
    """The app over a fresh migrated PostgreSQL database, with the admin user."""
    from server.domain.accounts.service import create_user

    app = migrated_app(tmp_path / "var", pg_url)
    with session_scope(app) as session:
        create_user(session, ADMIN_USER, ADMIN_PASSWORD, "system_admin")
        register_device(session, DEVICE, raw_public_key(Ed25519PrivateKey.generate()))
    with session_scope(app) as session:
        # Two conditions hold: offline for 5 h (the default threshold is far less) and a bad signature.
        now = utcnow()
        session.add(
            DevicePresence(
                device_id=DEVICE,
                state="offline",
                at=now,
                agent_version="",
                received_at=now - timedelta(hours=5),
            )
        )
        session.add(IngestRejection(device_id=DEVICE, code="bad_signature", message="x", at=now))
    yield app
    get_engine(app).dispose()


def test_the_hourly_job_and_two_on_demand_evaluations_at_once_open_each_alert_once(
    app: Flask, client: FlaskClient, auth: dict[str, str], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three evaluations start together: the hourly job (holding its lease), an admin's POST
    /fleet/alerts/evaluate and the re-evaluation after an integrity finding. The first to reach the
    device's conditions is held there until the other two are either inside too or waiting for it."""
    conditions = alerts._conditions
    entered: list[str] = []
    release = threading.Event()
    entries_lock = threading.Lock()

    def held_conditions(*args: Any, **kwargs: Any) -> list[alerts.AlertCondition]:
        with entries_lock:
            entered.append(threading.current_thread().name)
            first = len(entered) == 1
        if first:
            release.wait(60)
        return conditions(*args, **kwargs)

    monkeypatch.setattr(alerts, "_conditions", held_conditions)
    leases = JobLeases(app, ttl_s=60)
    worker = AlertsWorker(app, lease=leases.lease(AlertsWorker.JOB))
    assert worker.lease is not None and worker.lease.ensure()
    statuses: list[int] = []

    def evaluate_now() -> None:
        response = client.post("/api/v1/fleet/alerts/evaluate", headers=auth)
        statuses.append(response.status_code)

    runs: dict[str, Callable[[], object]] = {
        "hourly-job": worker.step,
        "admin-evaluate-now": evaluate_now,
        "integrity-finding": lambda: raise_alerts(app),
    }
    threads = [threading.Thread(target=run, name=name) for name, run in runs.items()]
    for thread in threads:
        thread.start()
    try:
        deadline_hit = not _until(lambda: len(entered) - 1 + waiting_for_a_lock(pg_url) >= 2, 30)
        assert not deadline_hit, f"the evaluations did not meet: entered {entered}"
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    leases.stop()
    assert statuses == [200]
    with session_scope(app) as session:
        rows = session.execute(
            select(DeviceAlert.kind).where(DeviceAlert.device_id == DEVICE, DeviceAlert.cleared_at.is_(None))
        ).all()
    assert sorted(kind for (kind,) in rows) == ["integrity", "offline"]
    assert len(entered) == 3  # each evaluation ran, one after the other


def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_database_refuses_a_second_open_alert_of_a_kind(app: Flask) -> None:
    """The second wall (migration 0035): whatever path inserts it, a device has one open alert per kind;
    a cleared one does not count."""
    now = utcnow()

    def alert(at: Any, cleared: Any = None) -> DeviceAlert:
        return DeviceAlert(
            device_id=DEVICE, kind="offline", severity="warning", message="m", message_en="m",
            detail={}, raised_at=at, last_seen_at=at, cleared_at=cleared,
        )  # fmt: skip

    with session_scope(app) as session:
        session.add(alert(now - timedelta(hours=2), cleared=now - timedelta(hours=1)))
        session.add(alert(now))
    with pytest.raises(IntegrityError), session_scope(app) as session:
        session.add(alert(now + timedelta(seconds=1)))


def test_migration_0035_keeps_the_earliest_of_open_duplicates_open_and_clears_the_others(pg_url: str) -> None:
    """Duplicates left by concurrent evaluations before 0035 are closed, not deleted (their history
    stays), so the unique index can be built."""
    run_migrations(pg_url, "0032")
    engine = make_engine(pg_url)
    insert = text(
        "INSERT INTO device_alerts (device_id, kind, severity, message, message_en, detail, raised_at,"
        " last_seen_at, cleared_at) VALUES (:d, :k, 'warning', 'm', 'm', '{}', :at, :seen, NULL)"
    )
    t0 = utcnow()
    try:
        with engine.begin() as conn:
            for device, kind, minutes in (("a", "offline", 0), ("a", "offline", 1), ("a", "integrity", 2),
                                          ("b", "offline", 3), ("a", "offline", 4)):  # fmt: skip
                at = t0 + timedelta(minutes=minutes)
                conn.execute(insert, {"d": device, "k": kind, "at": at, "seen": at + timedelta(seconds=30)})
        run_migrations(pg_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT device_id, kind, raised_at, cleared_at FROM device_alerts ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    open_ones = [(d, k, at) for d, k, at, cleared in rows if cleared is None]
    assert open_ones == [("a", "offline", t0), ("a", "integrity", t0 + timedelta(minutes=2)),
                         ("b", "offline", t0 + timedelta(minutes=3))]  # fmt: skip
    assert [cleared - at for _, _, at, cleared in rows if cleared is not None] == [timedelta(seconds=30)] * 2
