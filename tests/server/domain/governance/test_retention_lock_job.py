"""JL-19 store locks extended by a background job after an agency lengthened a period, on SQLite and
PostgreSQL: the request answers at once with the job's state, the workers' job extends every lock, nothing is
disposable while it runs, and a crash mid-job resumes from the progress recorded in the database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.audit import AuditLog
from server.domain.base import utcnow
from server.domain.evidence.models import Recording
from server.domain.governance import lock_job
from server.domain.governance.lock_job_models import RetentionLockJob
from server.infra.db import session_scope
from server.infra.storage import STORE_KEY
from server.workers.loops import RetentionLockWorker
from tests.server.domain.governance.governance_fixtures import Gov, app, gov, login, world

__all__ = ["app", "gov", "world"]


class LockLog:
    """A store with its own lock that records every extension; ``fail_at`` makes one call fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.extended: list[tuple[str, datetime | None]] = []
        self.calls = 0
        self.fail_at = fail_at

    def extend_retention(self, key: str, until: datetime | None) -> bool:
        """Record the extension (or fail, as S3 may, on the ``fail_at``-th call)."""
        self.calls += 1
        if self.calls == self.fail_at:
            raise ConnectionError("S3 endpoint unreachable")
        self.extended.append((key, until))
        return True

    def delete(self, key: str) -> None:
        """Never called by the job."""
        raise AssertionError(key)


@pytest.fixture
def locks(gov: Gov) -> Iterator[LockLog]:
    """The app's object store replaced by a lock log for the job (the request never touches it)."""
    real = gov.app.extensions[STORE_KEY]
    log = LockLog()
    gov.app.extensions[STORE_KEY] = log
    yield log
    gov.app.extensions[STORE_KEY] = real


def _lengthen(client: FlaskClient, days: int = 400) -> Any:
    answer = client.post(
        "/api/v1/governance/retention-periods",
        headers=login(client, "agency_head-a"),
        json={"category": "routine", "days": days, "reason": "本机关档案管理规定"},
    )
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def _jobs(client: FlaskClient) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/governance/retention-periods", headers=login(client, "agency_head-a"))
    jobs: list[dict[str, Any]] = answer.get_json()["lock_jobs"]
    return jobs


def _keys(gov: Gov, ids: list[int]) -> list[str]:
    with session_scope(gov.app) as session:
        return [session.get(Recording, rid).object_key for rid in ids]  # type: ignore[union-attr]


def test_jl19_lengthening_a_period_answers_before_any_lock_and_nothing_is_disposable_until_the_job_ends(
    gov: Gov, client: FlaskClient, locks: LockLog
) -> None:
    # Routine retention (184 days from March) ended: a head files the disposal of the first recording.
    rid = gov.rec_a[0]
    filed = client.post(
        "/api/v1/governance/requests",
        headers=login(client, "agency_head-a"),
        json={"kind": "disposal", "purpose": "保存期满", "recording_ids": [rid]},
    )
    assert filed.status_code == 201, filed.get_json()

    answer = _lengthen(client)
    job = answer["lock_job"]
    # The request returned with the job queued: not one lock extended yet.
    assert (job["state"], job["total"], job["checked"], job["extended"]) == ("pending", 2, 0, 0)
    assert locks.extended == []
    assert _jobs(client)[0]["id"] == job["id"]

    # While the job has not run, the longer period already governs disposal: the approval re-checks it.
    refused = client.post(
        f"/api/v1/governance/requests/{filed.get_json()['id']}/decision",
        headers=login(client, "head2-a"),
        json={"outcome": "approve"},
    )
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "disposal_refused"
    assert "retained until" in refused.get_json()["error"]["message_en"]
    assert locks.extended == []  # nothing was deleted or touched in the store

    # The workers' job extends every affected lock, to the new retention, and says so.
    assert RetentionLockWorker(gov.app).step() == 1
    assert [key for key, _until in locks.extended] == _keys(gov, gov.rec_a)
    with session_scope(gov.app) as session:
        started = session.get(Recording, rid).started_at  # type: ignore[union-attr]
    assert locks.extended[0][1] is not None and locks.extended[0][1] >= started + timedelta(days=400)
    done = _jobs(client)[0]
    assert (done["state"], done["checked"], done["extended"]) == ("done", 2, 2)
    assert done["finished_at"] is not None
    with session_scope(gov.app) as session:
        (audit,) = session.scalars(select(AuditLog).where(AuditLog.action == "retention.locks_extended"))
        assert audit.detail_dict()["extended"] == 2
    # Another agency's head sees nothing of it; a shortening queues no job.
    other = client.get("/api/v1/governance/retention-periods", headers=login(client, "head-b")).get_json()
    assert other["lock_jobs"] == []
    assert _lengthen(client, days=300)["lock_job"] is None


def test_jl19_a_lock_job_resumes_after_a_crash_from_the_progress_recorded_in_the_database(
    gov: Gov, client: FlaskClient
) -> None:
    job_id = _lengthen(client)["lock_job"]["id"]
    first, second = _keys(gov, gov.rec_a)
    now = utcnow()

    # Worker one commits a batch of one recording, then its process dies (it never gives the job back).
    crashed = LockLog()
    with session_scope(gov.app) as session:
        assert lock_job.claim(session, "worker-1", now=now) == job_id
    with session_scope(gov.app) as session:
        batch = lock_job.run_batch(session, crashed, job_id, "worker-1", now=now, batch_size=1)
    assert batch is not None and not batch.done and [k for k, _ in crashed.extended] == [first]

    # While its lease runs, nobody else owns the job: no second owner extends locks at the same time.
    resumed = LockLog()
    with session_scope(gov.app) as session:
        assert lock_job.claim(session, "worker-2", now=now + timedelta(seconds=30)) is None
    # Once the lease has run out, worker two takes it over and goes on from the recorded cursor.
    later = now + lock_job.LEASE + timedelta(seconds=1)
    with session_scope(gov.app) as session:
        assert lock_job.claim(session, "worker-2", now=later) == job_id
    with session_scope(gov.app) as session:
        batch = lock_job.run_batch(session, resumed, job_id, "worker-2", now=later, batch_size=1)
    assert batch is not None and [k for k, _ in resumed.extended] == [second]  # not the first again
    # The dead worker, were it to wake up, no longer owns the job and changes nothing.
    with session_scope(gov.app) as session:
        assert lock_job.run_batch(session, crashed, job_id, "worker-1", now=later, batch_size=1) is None
    with session_scope(gov.app) as session:
        batch = lock_job.run_batch(session, resumed, job_id, "worker-2", now=later, batch_size=1)
    assert batch is not None and batch.done
    with session_scope(gov.app) as session:
        job = session.get(RetentionLockJob, job_id)
        assert job is not None
        assert (job.state, job.checked, job.extended, job.attempts) == ("done", 2, 2, 2)


def test_jl19_a_store_failure_mid_batch_moves_no_progress_and_the_next_round_finishes(
    gov: Gov, client: FlaskClient, locks: LockLog
) -> None:
    job_id = _lengthen(client)["lock_job"]["id"]
    locks.fail_at = 2  # the second extension of the batch fails
    worker = RetentionLockWorker(gov.app, owner="worker-1")
    assert worker.step() == 0
    job = _jobs(client)[0]
    # The batch rolled back: the progress still says nothing was done, and the error is shown.
    assert (job["state"], job["checked"], job["extended"]) == ("running", 0, 0)
    assert "S3 endpoint unreachable" in job["last_error"]
    # The next round redoes the batch (extending the first lock again, to the same date) and finishes.
    assert worker.step() == 1
    job = _jobs(client)[0]
    assert (job["id"], job["state"], job["checked"], job["extended"], job["last_error"]) == (
        job_id,
        "done",
        2,
        2,
        None,
    )
    assert sorted({key for key, _ in locks.extended}) == sorted(_keys(gov, gov.rec_a))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_jl19_the_lock_worker_runs_jobs_on_its_thread_and_a_clean_stop_gives_its_job_back(
    gov: Gov, client: FlaskClient, locks: LockLog
) -> None:
    # A clean stop between batches gives the job back at once, with its progress.
    _lengthen(client)
    stopping = RetentionLockWorker(gov.app, owner="worker-1", batch_size=1)
    with session_scope(gov.app) as session:
        job_id = lock_job.claim(session, "worker-1")
        assert job_id is not None
        assert lock_job.run_batch(session, locks, job_id, "worker-1", batch_size=1) is not None
    stopping.stop()
    job = _jobs(client)[0]
    assert (job["state"], job["checked"]) == ("pending", 1)
    with session_scope(gov.app) as session:
        row = session.get(RetentionLockJob, job_id)
        assert row is not None and row.owner is None

    # The thread picks it up and finishes it; stop joins it.
    worker = RetentionLockWorker(gov.app, interval_s=0.05, owner="worker-2")
    worker.start()
    try:
        deadline, tick = datetime.now() + timedelta(seconds=30), threading.Event()
        while _jobs(client)[0]["state"] != "done":
            assert datetime.now() < deadline, _jobs(client)
            tick.wait(0.05)
    finally:
        worker.stop()
    assert not any(t.name == "zfjl-retention-locks" for t in threading.enumerate())
    assert _jobs(client)[0]["checked"] == 2
