"""JL-19 retention periods per agency, on SQLite and PostgreSQL: never below the legal minimum, permanent
stays permanent, a longer period extends the store's lock of the agency's recordings and a shorter one never
shortens anything already stored; and, on the real SeaweedFS S3 store, linking a recording to a case sets
the object's legal hold."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.audit import AuditLog
from server.domain.evidence.models import Recording
from server.domain.governance import lock_job, retention
from server.domain.governance.lock_job_models import RetentionLockJob
from server.domain.governance.retention import GovernanceForbidden, PeriodBelowMinimum
from server.infra.db import session_scope
from server.infra.storage import STORE_KEY, LocalObjectStore, S3ObjectStore
from server.workers.loops import RetentionLockWorker
from tests.server.domain.governance.governance_fixtures import Gov, app, gov, login, world

__all__ = ["app", "gov", "world"]


class LockLog:
    """A store that records which locks retention asks it to extend."""

    def __init__(self) -> None:
        self.extended: list[tuple[str, datetime | None]] = []

    def extend_retention(self, key: str, until: datetime | None) -> bool:
        """Record the request; a store with a lock says it extended it."""
        self.extended.append((key, until))
        return True

    def delete(self, key: str) -> None:
        """Never called here."""
        raise AssertionError(key)


def _set(
    gov: Gov, who: str, days: int, store: LockLog, *, at: datetime | None = None, category: str = "routine"
) -> int:
    """Set a period, then run the lock job it queued (if any) to the end; how many locks it extended."""
    with session_scope(gov.app) as session:
        _row, job = retention.set_period(
            session, gov.caller(who), category, days, "本机关档案管理规定", now=at
        )
        if job is None:
            return 0
        job_id = job.id
    return _run_job(gov, store, job_id)


def _run_job(gov: Gov, store: LockLog, job_id: int, owner: str = "test-worker", batch_size: int = 200) -> int:
    """Run one job batch by batch as the workers do, each batch its own transaction."""
    with session_scope(gov.app) as session:
        assert lock_job.claim(session, owner) == job_id
    while True:
        with session_scope(gov.app) as session:
            done = lock_job.run_batch(session, store, job_id, owner, batch_size=batch_size)
        assert done is not None
        if done.done:
            break
    with session_scope(gov.app) as session:
        job = session.get(RetentionLockJob, job_id)
        assert job is not None and job.state == "done"
        return job.extended


def _until(gov: Gov, recording_id: int) -> tuple[datetime, datetime | None]:
    with session_scope(gov.app) as session:
        rec = session.get(Recording, recording_id)
        assert rec is not None
        return rec.started_at, retention.retention_of(session, rec).until


def test_jl19_agency_periods_never_go_below_the_minimum_lengthen_stored_locks_and_never_shorten_them(
    gov: Gov, client: FlaskClient
) -> None:
    store = LockLog()
    # The legal floor and permanence, refused with a precise error through the API.
    below = client.post(
        "/api/v1/governance/retention-periods",
        headers=login(client, "agency_head-a"),
        json={"category": "routine", "days": 90, "reason": "节省空间"},
    )
    assert below.status_code == 400 and below.get_json()["error"]["code"] == "period_below_minimum"
    assert "at least 184 days" in below.get_json()["error"]["message_en"]
    with pytest.raises(PeriodBelowMinimum, match="permanent by law"):
        _set(gov, "agency_head-a", 400, store, category="evidence")
    with pytest.raises(GovernanceForbidden):
        _set(gov, "legal_reviewer-a", 400, store)
    assert (
        client.post(
            "/api/v1/governance/retention-periods",
            headers=login(client, "officer-a"),
            json={"category": "routine", "days": 400, "reason": "x"},
        ).status_code
        == 403
    )

    started, default_until = _until(gov, gov.rec_a[0])
    assert default_until == started + timedelta(days=184)
    # Settings made before the recordings started: the one in force at the start counts (200 days).
    _set(gov, "agency_head-a", 400, store, at=started - timedelta(days=60))
    _set(gov, "agency_head-a", 200, store, at=started - timedelta(days=30))
    assert _until(gov, gov.rec_a[0])[1] == started + timedelta(days=200)
    store.extended.clear()
    # Lengthened now: every stored recording of A gets it, and its lock is extended; B's are untouched.
    assert _set(gov, "agency_head-a", 300, store) == len(gov.rec_a)
    with session_scope(gov.app) as session:
        keys_a = {session.get(Recording, r).object_key for r in gov.rec_a}  # type: ignore[union-attr]
    assert {key for key, _until_at in store.extended} == keys_a
    assert all(
        until_at is not None and until_at > started + timedelta(days=299) for _k, until_at in store.extended
    )
    assert _until(gov, gov.rec_a[0])[1] == started + timedelta(days=300)
    started_b, until_b = _until(gov, gov.rec_b[0])
    assert until_b == started_b + timedelta(days=184)
    # Shortened now: recordings already stored keep the longest period in force since they started,
    # and no lock is touched.
    store.extended.clear()
    assert _set(gov, "agency_head-a", 250, store) == 0
    assert store.extended == []
    assert _until(gov, gov.rec_a[0])[1] == started + timedelta(days=300)

    shown = client.get(
        "/api/v1/governance/retention-periods", headers=login(client, "agency_head-a")
    ).get_json()
    routine = next(p for p in shown["items"] if p["category"] == "routine")
    assert (routine["days"], routine["minimum_days"], routine["default_days"]) == (250, 184, 184)
    assert next(p for p in shown["items"] if p["category"] == "evidence")["days"] is None
    other = client.get("/api/v1/governance/retention-periods", headers=login(client, "head-b")).get_json()
    assert next(p for p in other["items"] if p["category"] == "routine")["days"] == 184
    with session_scope(gov.app) as session:
        audits = [
            a.detail_dict()
            for a in session.scalars(select(AuditLog).where(AuditLog.action == "retention.period"))
        ]
        assert [(a["days"], a["before"]) for a in audits] == [(400, 184), (200, 400), (300, 200), (250, 300)]


@pytest.mark.s3
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_jl19_linking_a_recording_to_a_case_sets_the_s3_legal_hold(
    gov: Gov, client: FlaskClient, s3_store: S3ObjectStore
) -> None:
    local = gov.app.extensions[STORE_KEY]
    assert isinstance(local, LocalObjectStore)
    with session_scope(gov.app) as session:
        recs = [session.get(Recording, r) for r in gov.rec_a]
        for rec in recs:
            assert rec is not None
            s3_store.put_file(rec.object_key, Path(local.root) / rec.object_key, rec.sha256)
        linked_key, other_key = recs[0].object_key, recs[1].object_key  # type: ignore[union-attr]
    gov.app.extensions[STORE_KEY] = s3_store
    s3: Any = s3_store.client

    def hold(key: str) -> str:
        try:
            answer = s3.get_object_legal_hold(Bucket=s3_store.bucket, Key=key)
        except Exception as exc:  # no legal hold was ever set on the object
            assert "NoSuchObjectLockConfiguration" in str(exc) or "LegalHold" in str(exc), exc
            return "OFF"
        return str(answer["LegalHold"]["Status"])

    assert hold(linked_key) == "OFF"
    case = client.post(
        "/api/v1/cases",
        headers=login(client, "agency_head-a"),
        json={"number": "皖合市监检〔2026〕9号", "act_kind": "inspection", "origin": "ex_officio"},
    )
    assert case.status_code == 201, case.get_json()
    event = client.post(
        f"/api/v1/cases/{case.get_json()['id']}/events",
        headers=login(client, "agency_head-a"),
        json={
            "event_type": "investigation.on_site_inspection",
            "text": "现场检查",
            "recording_ids": [gov.rec_a[0]],
        },
    )
    assert event.status_code == 201, event.get_json()
    assert hold(linked_key) == "ON"
    assert hold(other_key) == "OFF"  # only what the case links
    # A longer agency period extends the COMPLIANCE retention of the unlinked one too (the same path).
    before = s3.get_object_retention(Bucket=s3_store.bucket, Key=other_key)["Retention"]["RetainUntilDate"]
    answer = client.post(
        "/api/v1/governance/retention-periods",
        headers=login(client, "agency_head-a"),
        json={"category": "routine", "days": 3650, "reason": "本机关档案管理规定"},
    )
    assert answer.status_code == 200 and answer.get_json()["lock_job"]["state"] == "pending", (
        answer.get_json()
    )
    # The workers' job extends them, not the request.
    assert RetentionLockWorker(gov.app).step() == 1
    job = client.get(
        "/api/v1/governance/retention-periods", headers=login(client, "agency_head-a")
    ).get_json()["lock_jobs"][0]
    assert (job["state"], job["checked"], job["extended"]) == ("done", 2, 2)
    after = s3.get_object_retention(Bucket=s3_store.bucket, Key=other_key)["Retention"]["RetainUntilDate"]
    assert after > before and after.astimezone(UTC).year >= 2035



def _six_months_on(day: date) -> date:
    """The same day six calendar months on, or that month's last day (31 August → 28/29 February)."""
    index = day.month - 1 + 6
    year, month = day.year + index // 12, index % 12 + 1
    last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month, min(day.day, last))


def test_jl19_the_minimum_period_covers_six_calendar_months_from_any_day() -> None:
    """至少保存六个月: the floor in days reaches six calendar months on from every day of four years
    (1 July to 1 January is 184 days; 183 fell one day short for recordings made in July)."""
    from server.domain.governance.retention import CATEGORIES, MINIMUM_DAYS

    day, longest = date(2024, 1, 1), 0
    while day < date(2028, 1, 1):
        longest = max(longest, (_six_months_on(day) - day).days)
        day += timedelta(days=1)
    assert longest == 184
    assert longest <= MINIMUM_DAYS and CATEGORIES["routine"].days == MINIMUM_DAYS
