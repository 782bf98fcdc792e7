"""Evidence integrity (JL-6): every tampering by someone with write access to the data folder or the
database is detected against the SIGNED manifest and the append-only key history, on SQLite and
PostgreSQL, with the local object store and S3 (SeaweedFS)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from protocol.manifest import GENESIS_HASH, SegmentManifest, SignedManifest
from server.domain.evidence.commit import commit_segment
from server.domain.evidence.models import IngestRejection, Recording, ScrubFinding, SegmentReceipt
from server.domain.evidence.queries import chain_report
from server.domain.evidence.scrub import Throttle, check_object, scrub
from server.domain.fleet import devices
from server.domain.fleet import service as fleet
from server.domain.fleet.models import Device, DeviceKey
from server.infra.storage import LocalObjectStore, ObjectStore, S3ObjectStore, recording_key
from tests.conftest import SegmentFactory, raw_public_key
from tests.server.insider import disable_append_only_triggers

SEGMENTS = 3


@dataclass
class Evidence:
    """A device with a clean, committed chain of SEGMENTS segments."""

    session: Session
    store: ObjectStore
    segments: SegmentFactory

    def row(self, sequence: int) -> Recording:
        """The stored row of one segment."""
        return self.session.query(Recording).filter_by(sequence=sequence).one()

    def sql(self, statement: str, **params: Any) -> None:
        """Run SQL as an insider who first switches the append-only triggers off."""
        disable_append_only_triggers(self.session)
        self.session.execute(text(statement), params)
        self.session.commit()
        self.session.expire_all()


def _setup(session: Session, store: ObjectStore, segments: SegmentFactory) -> Evidence:
    devices.register_device(session, segments.device_id, segments.public_key)
    session.commit()
    for _ in range(SEGMENTS):
        signed, path = segments.make()
        commit_segment(session, store, signed, path)
    env = Evidence(session, store, segments)
    report = chain_report(session, segments.device_id)
    assert report["verified"] is True and report["integrity"] == [], report
    return env


# -- object tampering (someone with write access to the data folder or the bucket) -----------------


def _read(store: ObjectStore, key: str) -> bytes:
    return b"".join(store.open_range(key, 0, store.size(key) - 1))


def _overwrite(store: ObjectStore, key: str, data: bytes | None) -> None:
    """Replace (or with None delete) an object behind the server's back."""
    if isinstance(store, LocalObjectStore):
        path = store.root / key
        path.chmod(0o600)
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    assert isinstance(store, S3ObjectStore)
    if data is None:
        store.client.delete_object(Bucket=store.bucket, Key=key)  # a delete marker hides the version
    else:
        store.client.put_object(Bucket=store.bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256")


def flip_bytes(env: Evidence) -> None:
    key = env.row(1).object_key
    data = bytearray(_read(env.store, key))
    data[10] ^= 0xFF
    _overwrite(env.store, key, bytes(data))


def truncate_object(env: Evidence) -> None:
    key = env.row(1).object_key
    _overwrite(env.store, key, _read(env.store, key)[:-7])


def delete_object(env: Evidence) -> None:
    _overwrite(env.store, env.row(1).object_key, None)


def swap_object(env: Evidence) -> None:
    # Same size: segment 2's bytes under segment 1's key.
    _overwrite(env.store, env.row(1).object_key, _read(env.store, env.row(2).object_key))


def replace_object_and_columns(env: Evidence) -> None:
    rec = env.row(1)
    forged = b"forged footage " * 40
    sha = hashlib.sha256(forged).hexdigest()
    key = recording_key(rec.device_id, rec.sequence, sha)
    staged = env.segments.directory / "forged.mp4"
    staged.write_bytes(forged)
    env.store.put_file(key, staged, sha)
    env.sql(
        "UPDATE recordings SET sha256 = :sha, size = :size, object_key = :key WHERE id = :id",
        sha=sha,
        size=len(forged),
        key=key,
        id=rec.id,
    )


# -- database tampering -----------------------------------------------------------------------------


def edit_officer(env: Evidence) -> None:
    env.sql("UPDATE recordings SET officer_id = 'officer-99' WHERE sequence = 1")


def edit_started_at(env: Evidence) -> None:
    rec = env.row(1)
    # Moved so the timeline looks continuous with the previous segment.
    env.sql(
        "UPDATE recordings SET started_at = :at WHERE id = :id",
        at=_db_time(env.session, rec.started_at - timedelta(seconds=30)),
        id=rec.id,
    )


def _db_time(session: Session, moment: Any) -> Any:
    return moment.replace(tzinfo=None) if session.get_bind().dialect.name == "sqlite" else moment


def delete_newest_row(env: Evidence) -> None:
    env.sql("DELETE FROM recordings WHERE sequence = :seq", seq=SEGMENTS - 1)


def delete_first_row(env: Evidence) -> None:
    env.sql("DELETE FROM recordings WHERE sequence = 0")


def edit_manifest_text(env: Evidence) -> None:
    rec = env.row(1)
    env.sql(
        "UPDATE recordings SET manifest_text = :t WHERE id = :id",
        t=rec.manifest_text.replace("officer-7", "officer-8"),
        id=rec.id,
    )


def resign_with_new_key(env: Evidence) -> None:
    """Re-sign the whole chain (with officer edits) with a new key written into devices.public_key."""
    key = Ed25519PrivateKey.generate()
    prev = GENESIS_HASH
    rows = env.session.query(Recording).order_by(Recording.sequence).all()
    updates = []
    for rec in rows:
        signed_text = rec.manifest_text
        data = SegmentManifest.from_json_dict(__import__("json").loads(signed_text)).to_json_dict()
        data["officer_id"], data["prev_manifest_hash"] = "officer-99", prev
        manifest = SegmentManifest.from_json_dict(data)
        signed = SignedManifest.sign(manifest, key)
        updates.append((rec.id, signed))
        prev = signed.manifest_hash
    for rec_id, signed in updates:
        env.sql(
            "UPDATE recordings SET manifest_text = :t, signature = :s, manifest_hash = :h, "
            "prev_manifest_hash = :p, officer_id = 'officer-99', file_id = :f WHERE id = :id",
            t=signed.manifest_text,
            s=signed.signature,
            h=signed.manifest_hash,
            p=signed.manifest.prev_manifest_hash,
            f=signed.file_id,
            id=rec_id,
        )
    public = raw_public_key(key)
    env.sql(
        "UPDATE devices SET public_key = :k, key_fingerprint = :f WHERE id = :id",
        k=public,
        f=hashlib.sha256(public).hexdigest(),
        id=env.segments.device_id,
    )


OBJECT_TAMPERINGS: list[tuple[Callable[[Evidence], None], str]] = [
    (flip_bytes, "object_hash_mismatch"),
    (truncate_object, "object_size_mismatch"),
    (delete_object, "object_missing"),
    (swap_object, "object_hash_mismatch"),
    (replace_object_and_columns, "column_mismatch"),
]
DATABASE_TAMPERINGS: list[tuple[Callable[[Evidence], None], str]] = [
    (edit_officer, "column_mismatch"),
    (edit_started_at, "column_mismatch"),
    (delete_newest_row, "segment_missing"),
    (resign_with_new_key, "key_replaced"),
    (edit_manifest_text, "manifest_hash_mismatch"),
    (delete_first_row, "segment_missing"),
]


def _assert_detected(env: Evidence, code: str) -> dict[str, Any]:
    result = scrub(env.session, env.store, checkpoint=env.session.commit)
    report = chain_report(env.session, env.segments.device_id)
    assert report["verified"] is False, report
    codes = {f["code"] for f in report["integrity"]}
    assert code in codes, report["integrity"]
    assert result.new_findings >= 1
    # Recorded append-only, so the finding survives the next report and raises the alert.
    assert env.session.query(ScrubFinding).filter(ScrubFinding.code == code).count() >= 1
    return report


@pytest.mark.parametrize(
    ("tamper", "code"),
    OBJECT_TAMPERINGS + DATABASE_TAMPERINGS,
    ids=[t.__name__ for t, _ in OBJECT_TAMPERINGS + DATABASE_TAMPERINGS],
)
def test_jl6_every_tampering_is_detected(
    db_session: Session,
    tmp_path: Path,
    segments: SegmentFactory,
    tamper: Callable[[Evidence], None],
    code: str,
) -> None:
    env = _setup(db_session, LocalObjectStore(tmp_path / "objects"), segments)
    tamper(env)
    report = _assert_detected(env, code)
    if tamper is edit_officer or tamper is edit_started_at:
        (finding,) = [f for f in report["integrity"] if f["code"] == "column_mismatch"]
        assert ("officer_id" if tamper is edit_officer else "started_at") in finding["message"]
    if tamper is resign_with_new_key:
        assert report["unverified"] == list(range(SEGMENTS))  # no key in the history signed them
    if tamper is delete_newest_row:
        assert report["segments"] == SEGMENTS - 1 and report["gaps"] == []  # the chain alone looks fine


@pytest.mark.parametrize(
    ("tamper", "code"), OBJECT_TAMPERINGS, ids=[t.__name__ for t, _ in OBJECT_TAMPERINGS]
)
def test_jl6_object_tampering_in_s3_is_detected(
    tmp_path: Path,
    sqlite_url: str,
    s3_store: S3ObjectStore,
    segments: SegmentFactory,
    tamper: Callable[[Evidence], None],
    code: str,
) -> None:
    from server.infra.db import make_engine, run_migrations

    run_migrations(sqlite_url)
    engine = make_engine(sqlite_url)
    session = Session(engine, expire_on_commit=False)
    try:
        env = _setup(session, s3_store, segments)
        tamper(env)
        _assert_detected(env, code)
    finally:
        session.close()
        engine.dispose()


def test_jl6_restored_object_clears_the_finding(
    db_session: Session, tmp_path: Path, segments: SegmentFactory
) -> None:
    env = _setup(db_session, LocalObjectStore(tmp_path / "objects"), segments)
    key = env.row(1).object_key
    original = _read(env.store, key)
    flip_bytes(env)
    _assert_detected(env, "object_hash_mismatch")
    _overwrite(env.store, key, original)  # restored from backup
    scrub(env.session, env.store, checkpoint=env.session.commit)
    assert chain_report(env.session, segments.device_id)["verified"] is True


# -- append-only tables --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE recordings SET officer_id = 'x'",
        "DELETE FROM recordings",
        "UPDATE ingest_rejections SET code = 'x'",
        "DELETE FROM ingest_rejections",
        "UPDATE device_keys SET public_key = public_key",
        "DELETE FROM device_keys",
        "DELETE FROM segment_receipts",
        "UPDATE scrub_findings SET code = 'ok'",
        "DELETE FROM scrub_findings",
    ],
)
def test_jl6_evidence_tables_are_append_only(
    db_session: Session, tmp_path: Path, segments: SegmentFactory, statement: str
) -> None:
    env = _setup(db_session, LocalObjectStore(tmp_path / "objects"), segments)
    flip_bytes(env)
    scrub(env.session, env.store, checkpoint=env.session.commit)  # a scrub finding row exists
    db_session.add(IngestRejection(device_id=segments.device_id, code="bad_signature", message="m"))
    db_session.commit()
    with pytest.raises(DBAPIError, match="append-only"):
        db_session.execute(text(statement))
        db_session.commit()
    db_session.rollback()


# -- device key history --------------------------------------------------------------------------------


def test_key_history_is_written_at_provisioning_and_revocation(
    db_session: Session, tmp_path: Path, segments: SegmentFactory
) -> None:
    env = _setup(db_session, LocalObjectStore(tmp_path / "objects"), segments)
    fleet.revoke_device(db_session, segments.device_id, status="lost", actor="admin")
    fleet.set_status(db_session, segments.device_id, "active", actor="admin")
    db_session.commit()
    events = [
        (k.event, k.valid_until is not None, k.recorded_by)
        for k in db_session.query(DeviceKey).filter_by(device_id=segments.device_id).order_by(DeviceKey.id)
    ]
    assert events == [
        ("provisioned", False, "system"),
        ("revoked", True, "admin"),
        ("reinstated", False, "admin"),
    ]
    # Evidence stored while the key was valid still verifies after a revocation and reinstatement (JL-19).
    scrub(env.session, env.store, checkpoint=env.session.commit)
    assert chain_report(db_session, segments.device_id)["verified"] is True


def test_segment_stored_outside_the_keys_validity_is_unverified(
    db_session: Session, tmp_path: Path, segments: SegmentFactory
) -> None:
    env = _setup(db_session, LocalObjectStore(tmp_path / "objects"), segments)
    first = db_session.query(DeviceKey).filter_by(device_id=segments.device_id).one()
    # An insider back-dates a row to before the device was ever provisioned.
    env.sql(
        "UPDATE recordings SET stored_at = :at WHERE sequence = 0",
        at=_db_time(db_session, first.valid_from - timedelta(days=30)),
    )
    assert chain_report(db_session, segments.device_id)["unverified"] == [0]


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_backfills_key_history_and_receipts(
    request: pytest.FixtureRequest, tmp_path: Path, segments: SegmentFactory, dialect: str
) -> None:
    """Devices and recordings that exist before the upgrade get their key history and receipts."""
    from server.domain.base import utcnow
    from server.infra.db import make_engine, run_migrations

    url = f"sqlite:///{tmp_path / 'old.db'}" if dialect == "sqlite" else request.getfixturevalue("pg_url")
    run_migrations(url, "0008")
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            now = utcnow()
            session.add(
                Device(
                    id=segments.device_id,
                    public_key=segments.public_key,
                    key_fingerprint=hashlib.sha256(segments.public_key).hexdigest(),
                    status="active",
                    registered_at=now,
                    registered_by="admin",
                )
            )
            # The unit of work orders inserts of unrelated mappers by module and class name, not by
            # foreign key: the device row goes first in a flush of its own.
            session.flush()
            signed, path = segments.make()
            manifest = signed.manifest
            store = LocalObjectStore(tmp_path / "objects")
            stored = store.put_file(
                recording_key(manifest.device_id, 0, manifest.sha256), path, manifest.sha256
            )
            session.add(
                Recording(
                    device_id=manifest.device_id,
                    sequence=0,
                    file_id=signed.file_id,
                    kind=manifest.kind,
                    media_type=manifest.media_type,
                    size=manifest.size,
                    sha256=manifest.sha256,
                    started_at=manifest.started_at,
                    ended_at=manifest.ended_at,
                    officer_id=manifest.officer_id,
                    session_id=manifest.session_id,
                    manifest_text=signed.manifest_text,
                    signature=signed.signature,
                    manifest_hash=signed.manifest_hash,
                    prev_manifest_hash=manifest.prev_manifest_hash,
                    object_key=stored.key,
                    storage_backend="local",
                    verified=True,
                    stored_at=now + timedelta(seconds=1),
                )
            )
            session.commit()
        run_migrations(url)
        with Session(engine) as session:
            assert [k.event for k in session.query(DeviceKey)] == ["backfill"]
            assert [r.sequence for r in session.query(SegmentReceipt)] == [0]
            scrub(session, store, checkpoint=session.commit)
            assert chain_report(session, segments.device_id)["verified"] is True
    finally:
        engine.dispose()


def test_scrub_throttle_bounds_the_rate() -> None:
    now = [0.0]
    waited: list[float] = []

    class Clock:
        def wait(self, delay: float) -> bool:
            waited.append(delay)
            now[0] += delay
            return False

        def is_set(self) -> bool:
            return False

    throttle = Throttle(1000, Clock(), clock=lambda: now[0])  # type: ignore[arg-type]
    for _ in range(5):
        throttle.spend(500)
    assert now[0] == pytest.approx(2.5)  # 2500 bytes at 1000 B/s
    assert sum(waited) == pytest.approx(2.5)


def test_check_object_reads_the_key_the_signed_manifest_names(
    db_session: Session, tmp_path: Path, segments: SegmentFactory
) -> None:
    env = _setup(db_session, LocalObjectStore(tmp_path / "objects"), segments)
    # Pointing the row at segment 2's (intact) object does not make segment 1's bytes look fine.
    env.sql("UPDATE recordings SET object_key = :k WHERE sequence = 1", k=env.row(2).object_key)
    delete_object_at = recording_key(segments.device_id, 1, env.row(1).sha256)
    _overwrite(env.store, delete_object_at, None)
    finding = check_object(env.store, env.row(1))
    assert finding is not None and finding.code == "object_missing"


def test_device_row_key_replaced_alone_is_detected(
    db_session: Session, tmp_path: Path, segments: SegmentFactory
) -> None:
    env = _setup(db_session, LocalObjectStore(tmp_path / "objects"), segments)
    other = raw_public_key(Ed25519PrivateKey.generate())
    env.sql("UPDATE devices SET public_key = :k WHERE id = :id", k=other, id=segments.device_id)
    report = chain_report(db_session, segments.device_id)
    assert not report["verified"] and "key_replaced" in {f["code"] for f in report["integrity"]}
    assert db_session.get(Device, segments.device_id) is not None
