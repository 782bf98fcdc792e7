"""Finding 1: devices sign their chain head in health; a stored segment that vanishes raises an alert.

An insider with database access deletes the newest ``recordings`` row (dropping whatever trigger stands
in the way, as such an insider can). The chain report alone cannot see it — the chain just ends one
segment earlier — but the device still signs that segment as its head: the alert rules compare the two.
Runs on SQLite and PostgreSQL (migration 0009).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import select, text

from protocol.manifest import format_time
from protocol.messages import AckState, ChainHead, DeviceHealth, decode, encode
from server.app import create_app
from server.domain.evidence.models import IngestRejection, Recording
from server.domain.fleet.alerts import evaluate_alerts
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import DeviceAlert
from server.domain.fleet.telemetry_models import DeviceChainHead
from server.infra.db import get_engine, session_scope
from server.ingest.service import IngestService
from tests.conftest import TEST_JWT_SECRET, SegmentFactory
from tests.server.ingest.test_ingest import upload


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    """The app on a migrated SQLite or PostgreSQL database."""
    app = create_app(
        {
            "data_dir": str(tmp_path / "var"),
            "database_url": db_url,
            "jwt_secret": TEST_JWT_SECRET,
            "TESTING": True,
        }
    )
    yield app
    get_engine(app).dispose()


@pytest.fixture
def stored_three(app: Flask, segments: SegmentFactory) -> tuple[IngestService, list[str]]:
    """Device dev-001 with segments 0, 1, 2 stored; returns the service and their manifest hashes."""
    with session_scope(app) as session:
        register_device(session, segments.device_id, segments.public_key)
    service = IngestService.from_app(app)
    hashes = []
    for _ in range(3):
        signed, path = segments.make()
        assert upload(service, signed, path.read_bytes()).state is AckState.COMPLETE
        hashes.append(signed.manifest_hash)
    return service, hashes


def health(
    segments: SegmentFactory,
    sequence: int,
    manifest_hash: str,
    *,
    pending: int,
    key: Ed25519PrivateKey | None = None,
) -> tuple[str, bytes]:
    """A health report carrying a chain head signed with the device key (or another key)."""
    head = ChainHead.sign(segments.device_id, sequence, manifest_hash, key or segments.key)
    return encode(
        DeviceHealth(
            device_id=segments.device_id,
            at=format_time(datetime.now(UTC)),
            backlog_bytes=pending * 1000,
            backlog_segments=pending,
            oldest_pending_age_s=None,
            chain_head=head,
        )
    )


def alerts(app: Flask, *, later: timedelta = timedelta(0)) -> dict[str, dict[str, object]]:
    """Evaluate the alert rules (``later`` after now) and return the open ones by kind."""
    with session_scope(app) as session:
        evaluate_alerts(session, offline_after=timedelta(hours=2), now=datetime.now(UTC) + later)
        rows = session.scalars(select(DeviceAlert).where(DeviceAlert.cleared_at.is_(None))).all()
        return {row.kind: dict(row.detail) for row in rows}


def delete_newest_recording_as_an_insider(app: Flask, device_id: str) -> None:
    """What someone with write access to the database can do: drop the guards, delete the newest row."""
    engine = get_engine(app)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = conn.execute(
                text(
                    "SELECT trigger_name FROM information_schema.triggers "
                    "WHERE event_object_table = 'recordings'"
                )
            ).scalars()
            for name in set(names):
                conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}" ON recordings'))
        else:
            names = conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'recordings'")
            ).scalars()
            for name in list(names):
                conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}"'))
        newest = conn.execute(
            text("SELECT max(sequence) FROM recordings WHERE device_id = :d"), {"d": device_id}
        ).scalar_one()
        conn.execute(
            text("DELETE FROM recordings WHERE device_id = :d AND sequence = :s"),
            {"d": device_id, "s": newest},
        )


def test_deleting_the_newest_recording_is_caught_by_the_devices_signed_head(
    app: Flask, segments: SegmentFactory, stored_three: tuple[IngestService, list[str]]
) -> None:
    """JL-19: head 2 signed, row 2 deleted → chain_head_missing, at once when nothing is pending."""
    service, hashes = stored_three
    assert service.handle(*health(segments, 2, hashes[2], pending=0)) == []
    assert "chain_head_missing" not in alerts(app) and "chain_head_unknown" not in alerts(app)
    delete_newest_recording_as_an_insider(app, segments.device_id)
    with session_scope(app) as session:
        assert session.scalar(select(Recording).where(Recording.sequence == 2)) is None
    service.handle(*health(segments, 2, hashes[2], pending=0))
    open_now = alerts(app)
    assert open_now["chain_head_missing"]["device_head"] == 2
    assert open_now["chain_head_missing"]["stored_head"] == 1


def test_a_head_still_uploading_alerts_only_after_the_grace_period(
    app: Flask, segments: SegmentFactory, stored_three: tuple[IngestService, list[str]]
) -> None:
    """A device ahead of the server with segments pending is normal for a while (JL-17: 24 h), not forever."""
    service, _ = stored_three
    signed, _ = segments.make()  # segment 3: journalled on the device, not uploaded
    service.handle(*health(segments, 3, signed.manifest_hash, pending=1))
    assert "chain_head_missing" not in alerts(app)
    assert "chain_head_missing" not in alerts(app, later=timedelta(hours=23))
    assert alerts(app, later=timedelta(hours=25))["chain_head_missing"]["device_head"] == 3


def test_a_head_naming_a_hash_the_server_never_stored_alerts_at_once(
    app: Flask, segments: SegmentFactory, stored_three: tuple[IngestService, list[str]]
) -> None:
    """The device signed another segment 1 than the one stored (a swapped row): chain_head_unknown."""
    service, hashes = stored_three
    service.handle(*health(segments, 1, "e" * 64, pending=0))
    detail = alerts(app)["chain_head_unknown"]
    assert (detail["sequence"], detail["stored"]) == (1, hashes[1])


def test_a_forged_head_is_refused_and_logged_not_believed(
    app: Flask, segments: SegmentFactory, stored_three: tuple[IngestService, list[str]]
) -> None:
    """Someone else's key cannot plant a head (and so cannot raise or hide alerts)."""
    service, _ = stored_three
    service.handle(*health(segments, 9, "f" * 64, pending=0, key=Ed25519PrivateKey.generate()))
    with session_scope(app) as session:
        assert session.scalars(select(DeviceChainHead)).all() == []
        codes = session.scalars(select(IngestRejection.code)).all()
    assert "bad_chain_head" in codes
    assert not {"chain_head_missing", "chain_head_unknown"} & alerts(app).keys()


def test_chain_head_exact_bytes_and_round_trip() -> None:
    """The signed text has its own domain; the health payload carries it as base64."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    head = ChainHead.sign("rec-0001", 7, "ab" * 32, key)
    assert ChainHead.signing_input("rec-0001", 7, "ab" * 32) == (
        b'zfjl/v1 chain head\n{"device_id":"rec-0001","manifest_hash":"' + b"ab" * 32 + b'","sequence":7}'
    )
    report = DeviceHealth(
        device_id="rec-0001",
        at="",
        backlog_bytes=0,
        backlog_segments=0,
        oldest_pending_age_s=None,
        chain_head=head,
    )
    decoded = decode(*encode(report))
    assert isinstance(decoded, DeviceHealth) and decoded.chain_head == head
    assert decoded.chain_head.verify(key.public_key().public_bytes_raw())
    assert not ChainHead.sign("rec-0001", 8, "ab" * 32, key).verify(
        Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    )
