"""Archiving by a job (JL-18), on SQLite and PostgreSQL: every act that ended is sealed once, delivered to
the archive store, and a failure leaves the case pending with its error, never a half package."""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from server.app import create_app
from server.domain.base import utcnow
from server.domain.cases import service as case_service
from server.domain.cases.inputs import StatusChange
from server.domain.governance import archive_listing
from server.domain.governance.approvals import RequestInput, create_request, decide
from server.domain.governance.archives_models import ArchiveFailure, ArchivePackage
from server.infra.agency_keys import AgencyKeyring
from server.infra.config import load_settings
from server.infra.db import get_engine, session_scope
from server.infra.storage import ARCHIVE_STORE_KEY, STORE_KEY, make_archive_store
from server.workers.loops import ArchiveWorker
from tests.conftest import TEST_JWT_SECRET, migrated_app
from tests.fixtures.s3 import S3Endpoint
from tests.server.domain.governance.test_archive import build_case, signer
from zfjl_verify.cli import main as verify_main


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database."""
    app = migrated_app(tmp_path / "var", db_url)
    yield app
    get_engine(app).dispose()


def _verify(app: Flask, tmp: Path, package: Path, agency_id: int) -> int:
    (tmp / "ledger.pub").write_text(signer(app).verifier.encode() + "\n")
    agency = AgencyKeyring.from_settings(app.extensions["zfjl.settings"]).verifier(agency_id)
    (tmp / "agency.pub").write_text(agency.encode() + "\n")
    return verify_main(
        ["package", "--key", str(tmp / "ledger.pub"), "--agency-key", str(tmp / "agency.pub"), str(package)]
    )


def test_jl18_the_archiving_job_seals_each_ended_act_once_and_a_failure_stays_pending(
    app: Flask, tmp_path: Path
) -> None:
    settings = app.extensions["zfjl.settings"]
    scene = build_case(app, tmp_path)
    reviewer = scene.callers["reviewer"]
    worker = ArchiveWorker(app)
    now = utcnow()
    # Within the delay (late uploads may still arrive) nothing is sealed.
    quiet = worker.step(now)
    assert quiet.archived == {} and quiet.failed == {}
    later = now + timedelta(hours=settings.archive_delay_hours, minutes=1)

    # The archive directory cannot be made (a file is in the way): the case stays pending, with why.
    settings.archive_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.archive_dir.write_text("not a directory")
    failed = worker.step(later)
    assert list(failed.failed) == [scene.case_id] and not failed.archived
    with session_scope(app) as session:
        assert session.scalar(select(ArchivePackage.id)) is None  # never a half package marked done
        assert session.scalars(select(ArchiveFailure.case_id)).all() == [scene.case_id]
        due = archive_listing.overdue_archives(session, reviewer, now=later, include_due=True)
        assert [c["case_id"] for c in due] == [scene.case_id] and due[0]["last_error"]

    settings.archive_dir.unlink()
    done = worker.step(later)
    assert list(done.archived) == [scene.case_id] and not done.failed
    with session_scope(app) as session:
        row = session.scalars(select(ArchivePackage)).one()
        assert row.created_by == "archive-job" and row.on_time and row.delivered_key
        assert archive_listing.overdue_archives(session, reviewer, now=later, include_due=True) == []
        key, agency_id = row.delivered_key, row.agency_id
    delivered = settings.archive_dir / key
    assert delivered.is_file()
    assert _verify(app, tmp_path, delivered, agency_id) == 0
    # Idempotent: the next round finds nothing to do.
    again = worker.step(later + timedelta(hours=1))
    assert again.archived == {} and again.failed == {}


def test_jl18_the_archiving_worker_starts_and_stops_cleanly(tmp_path: Path) -> None:
    # The first round comes after an interval (an hour): no database is touched, none is needed.
    app = create_app({"data_dir": str(tmp_path / "var"), "jwt_secret": TEST_JWT_SECRET, "TESTING": True})
    worker = ArchiveWorker(app)
    worker.start()
    assert worker._thread is not None and worker._thread.name == "zfjl-archiver"
    worker.stop(timeout_s=5)
    assert worker._thread is None
    worker.stop()  # twice is harmless
    off = ArchiveWorker(app)
    off.interval_s = 0
    off.start()
    assert off._thread is None  # ZFJL_ARCHIVE_INTERVAL_S=0: the job is off


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_jl18_packages_are_delivered_to_a_separate_s3_archive_bucket(
    app: Flask, tmp_path: Path, seaweedfs: S3Endpoint, s3_client: Any
) -> None:
    bucket = f"zfjl-archive-{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        {
            "data_dir": str(tmp_path / "s3var"),
            "object_store": "s3",
            "s3_endpoint": seaweedfs.url,
            "s3_access_key": seaweedfs.access_key,
            "s3_secret_key": seaweedfs.secret_key,
            "s3_region": seaweedfs.region,
            "archive_bucket": bucket,
            "archive_prefix": "jl18/",
            "retention_days": 1,
        }
    )
    store = make_archive_store(settings)
    store.ensure_bucket()  # type: ignore[attr-defined]
    app.extensions[ARCHIVE_STORE_KEY] = store
    scene = build_case(app, tmp_path)
    worker = ArchiveWorker(app)
    worker.prefix = settings.archive_prefix
    done = worker.step(utcnow() + timedelta(days=3))
    assert list(done.archived) == [scene.case_id]
    with session_scope(app) as session:
        row = session.scalars(select(ArchivePackage)).one()
        assert row.delivered_key and row.delivered_key.startswith("jl18/")
        key, size, digest = row.delivered_key, row.zip_size, row.zip_sha256
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == size
    assert store.exists(key) and digest in key


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_jl18_a_case_with_a_disposed_recording_archives_once_with_its_tombstone_and_verifies(
    app: Flask, tmp_path: Path
) -> None:
    settings = app.extensions["zfjl.settings"]
    scene = build_case(app, tmp_path, close=False)
    # A withdrawn case used none of its recordings as evidence: its linked minute keeps the routine six
    # months (JL-19), long past, and may be disposed of; the ended case must still be archived (JL-18).
    disposed = scene.recording_ids[0]
    with session_scope(app) as session:
        case_service.change_status(
            session,
            scene.callers["reviewer"],
            scene.case_id,
            StatusChange.from_json({"status": "withdrawn", "reason": "撤回"}),
        )
        request = create_request(
            session,
            scene.callers["reviewer"],
            RequestInput(kind="disposal", purpose="保存期满", recording_ids=(disposed,)),
        )
        decide(session, app.extensions[STORE_KEY], scene.callers["head"], request.id, "approve", "同意")
    worker = ArchiveWorker(app)
    later = utcnow() + timedelta(hours=settings.archive_delay_hours, minutes=1)
    done = worker.step(later)
    assert list(done.archived) == [scene.case_id] and not done.failed
    again = worker.step(later + timedelta(hours=1))
    assert again.archived == {} and again.failed == {}
    with session_scope(app) as session:
        assert session.scalar(select(ArchiveFailure.id)) is None
        row = session.scalars(select(ArchivePackage)).one()
        key, agency_id = row.delivered_key, row.agency_id
    assert key is not None
    delivered = settings.archive_dir / key
    with zipfile.ZipFile(delivered) as bag:
        root = bag.namelist()[0].split("/")[0]
        index = json.loads(bag.read(f"{root}/data/package.json"))
        entry = next(e for e in index["recordings"] if e["id"] == disposed)
        stone = json.loads(bag.read(f"{root}/data/{entry['tombstone']}"))
        note = json.loads(bag.read(f"{root}/data/recordings/{disposed}/provenance.json"))
        media = f"{root}/data/recordings/{disposed}/segment"
        assert not any(name.startswith(media) for name in bag.namelist())
    assert "media" not in entry and stone["reason"] == "保存期满" and stone["recording_id"] == disposed
    assert note["disposed"]["tombstone_id"] == entry["tombstone_id"] == stone["id"]
    assert _verify(app, tmp_path, delivered, agency_id) == 0
