"""commit_segment: the durable-evidence path, on SQLite and PostgreSQL, local store and SeaweedFS S3."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.errors import Invalid, NotFound
from server.domain.evidence.commit import (
    BadSignature,
    DeviceInactive,
    DeviceMismatch,
    EvidenceRejected,
    HashMismatch,
    SegmentConflict,
    SegmentTooLarge,
    SizeMismatch,
    UnknownDevice,
    commit_segment,
)
from server.domain.evidence.models import IngestRejection, Recording
from server.domain.fleet import devices
from server.domain.fleet.models import Device
from server.infra.storage import LocalObjectStore, ObjectStore, S3ObjectStore, recording_key
from tests.conftest import SegmentFactory


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    """A local object store under tmp_path."""
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def registered(db_session: Session, segments: SegmentFactory) -> SegmentFactory:
    """The segment factory's device, registered."""
    devices.register_device(db_session, segments.device_id, segments.public_key, serial="SN1", model="M1")
    db_session.commit()
    return segments


def _rejections(session: Session) -> list[IngestRejection]:
    return list(session.scalars(select(IngestRejection).order_by(IngestRejection.id)))


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Recording)) or 0


def _happy_path(session: Session, store: ObjectStore, seg: SegmentFactory) -> Recording:
    signed, path = seg.make()
    result = commit_segment(session, store, signed, path)
    assert not result.duplicate
    rec = result.recording
    assert rec.id is not None and rec.verified and rec.sequence == 0
    assert rec.manifest_hash == signed.manifest_hash and rec.file_id == signed.file_id
    assert rec.object_key == recording_key(seg.device_id, 0, signed.manifest.sha256)
    assert rec.started_at == signed.manifest.started_at and rec.started_at.tzinfo is not None
    assert store.exists(rec.object_key) and store.size(rec.object_key) == signed.manifest.size
    data = path.read_bytes()
    assert b"".join(store.open_range(rec.object_key, 0, len(data) - 1)) == data
    assert session.get(Device, seg.device_id).status == "active"  # type: ignore[union-attr]
    return rec


def test_commit_happy_path_local(
    db_session: Session, store: LocalObjectStore, registered: SegmentFactory
) -> None:
    rec = _happy_path(db_session, store, registered)
    assert rec.storage_backend == "local"
    stored = store.root / rec.object_key
    assert stored.stat().st_mode & 0o777 == 0o400
    # Reload from the database: UTC round-trips on every backend.
    db_session.expire_all()
    again = db_session.get(Recording, rec.id)
    assert again is not None and again.started_at == rec.started_at


def test_duplicate_is_idempotent(
    db_session: Session, store: LocalObjectStore, registered: SegmentFactory
) -> None:
    signed, path = registered.make()
    first = commit_segment(db_session, store, signed, path)
    second = commit_segment(db_session, store, signed, path)
    assert second.duplicate and second.recording.id == first.recording.id
    assert _count(db_session) == 1 and not _rejections(db_session)


def test_conflicting_manifest_for_same_sequence(
    db_session: Session, store: LocalObjectStore, registered: SegmentFactory
) -> None:
    signed, path = registered.make()
    commit_segment(db_session, store, signed, path)
    other, other_path = registered.make(b"different bytes", sequence=0, advance=False)
    with pytest.raises(SegmentConflict) as info:
        commit_segment(db_session, store, other, other_path)
    assert info.value.code == "segment_conflict"
    assert _count(db_session) == 1
    assert [r.code for r in _rejections(db_session)] == ["segment_conflict"]


@pytest.mark.parametrize("case", ["bad_signature", "unknown_device", "hash_mismatch", "size_mismatch"])
def test_rejections_store_nothing_and_are_logged(
    db_session: Session, store: LocalObjectStore, registered: SegmentFactory, case: str
) -> None:
    expected: type[EvidenceRejected]
    if case == "bad_signature":
        signed, path = registered.make(key=Ed25519PrivateKey.generate())
        expected = BadSignature
    elif case == "unknown_device":
        stranger = SegmentFactory(registered.directory, device_id="dev-unknown")
        signed, path = stranger.make()
        expected = UnknownDevice
    elif case == "hash_mismatch":
        signed, path = registered.make(b"A" * 100)
        path.write_bytes(b"B" * 100)
        expected = HashMismatch
    else:
        signed, path = registered.make(b"A" * 100)
        path.write_bytes(b"A" * 99)
        expected = SizeMismatch
    with pytest.raises(expected) as info:
        commit_segment(db_session, store, signed, path)
    assert info.value.code == case and info.value.message and info.value.message_en
    assert _count(db_session) == 0
    assert not store.root.exists() or not any(p.is_file() for p in store.root.rglob("*"))
    (row,) = _rejections(db_session)
    assert row.code == case and row.device_id == signed.manifest.device_id
    assert row.file_id == signed.file_id and row.manifest_text == signed.manifest_text


def test_inactive_mismatched_and_oversized(
    db_session: Session, store: LocalObjectStore, registered: SegmentFactory
) -> None:
    signed, path = registered.make(b"x" * 10)
    with pytest.raises(DeviceMismatch):
        commit_segment(db_session, store, signed, path, expected_device_id="dev-other")
    with pytest.raises(SegmentTooLarge):
        commit_segment(db_session, store, signed, path, max_segment_bytes=5)
    device = db_session.get(Device, registered.device_id)
    assert device is not None
    device.status = "lost"
    db_session.commit()
    with pytest.raises(DeviceInactive):
        commit_segment(db_session, store, signed, path)
    assert [r.code for r in _rejections(db_session)] == ["device_mismatch", "too_large", "device_inactive"]


def test_device_registration_idempotent_and_conflict(db_session: Session, segments: SegmentFactory) -> None:
    first = devices.register_device(db_session, "dev-9", segments.public_key, actor="tester")
    again = devices.register_device(db_session, "dev-9", segments.public_key)
    assert first is again and first.status == "provisioned"
    assert first.key_fingerprint == hashlib.sha256(segments.public_key).hexdigest()
    other = SegmentFactory(segments.directory).public_key
    with pytest.raises(devices.DeviceKeyConflict):
        devices.register_device(db_session, "dev-9", other)
    with pytest.raises(Invalid):
        devices.register_device(db_session, "dev/../x", segments.public_key)
    with pytest.raises(Invalid):
        devices.register_device(db_session, "dev-10", b"short")
    assert [d.id for d in devices.list_devices(db_session)] == ["dev-9"]
    with pytest.raises(NotFound):
        devices.get_device(db_session, "nope")


@pytest.mark.s3
def test_commit_happy_path_s3_with_object_lock(
    db_session: Session, s3_store: S3ObjectStore, registered: SegmentFactory
) -> None:
    assert s3_store.object_lock_enabled()
    rec = _happy_path(db_session, s3_store, registered)
    assert rec.storage_backend == "s3"
    client: Any = s3_store.client
    head = client.head_object(Bucket=s3_store.bucket, Key=rec.object_key)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["Metadata"]["sha256"] == rec.sha256
    with pytest.raises(Exception) as info:
        client.delete_object(Bucket=s3_store.bucket, Key=rec.object_key, VersionId=head["VersionId"])
    assert "AccessDenied" in str(info.value)
    assert client.head_object(Bucket=s3_store.bucket, Key=rec.object_key)["ContentLength"] == rec.size
    # Idempotent duplicate against S3 too.
    signed, path = registered.make(sequence=0, prev_hash="0" * 64, advance=False)
    assert commit_segment(db_session, s3_store, signed, path).duplicate


@pytest.mark.s3
def test_s3_store_put_idempotent_conflict_and_multipart(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    from server.infra.storage import ObjectConflict, ObjectNotFound

    data = uuid.uuid4().bytes * (9 * 1024 * 1024 // 16 + 7)  # > 8 MiB: multipart
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    first = s3_store.put_file("t/big", path, sha)
    assert first.created and first.size == len(data)
    assert not s3_store.put_file("t/big", path, sha).created
    other = tmp_path / "other.bin"
    other.write_bytes(b"other")
    with pytest.raises(ObjectConflict):
        s3_store.put_file("t/big", other, hashlib.sha256(b"other").hexdigest())
    start = 8 * 1024 * 1024 - 5
    assert b"".join(s3_store.open_range("t/big", start, start + 9)) == data[start : start + 10]
    assert s3_store.ping() and not s3_store.exists("t/missing")
    with pytest.raises(ObjectNotFound):
        s3_store.size("t/missing")


@pytest.mark.s3
def test_jl6_s3_put_checks_each_part_with_crc32_and_keeps_the_sha256_in_metadata(
    s3_store: S3ObjectStore, tmp_path: Path
) -> None:
    """The put's transport checksum is CRC-32, not a second SHA-256 pass; the file's SHA-256 stays findable.

    The store refuses a part whose CRC-32 does not match what arrived, so a damaged part is still caught
    in transit; the evidence hash (idempotency check, scrub) is the verified SHA-256 in the metadata.
    """
    import base64
    import zlib

    data = uuid.uuid4().bytes * (9 * 1024 * 1024 // 16 + 3)  # > 8 MiB: two parts
    path = tmp_path / "seg.bin"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    assert s3_store.put_file("t/crc", path, sha, verified=True).created
    client: Any = s3_store.client
    head = client.head_object(Bucket=s3_store.bucket, Key="t/crc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"].endswith("-2") and "ChecksumSHA256" not in head  # composite of 2 parts
    assert head["Metadata"]["sha256"] == sha
    assert hashlib.sha256(b"".join(s3_store.open_range("t/crc", 0, len(data) - 1))).hexdigest() == sha
    assert not s3_store.put_file("t/crc", path, sha).created  # idempotent on the metadata's hash
    # A part whose bytes do not match its CRC-32 (damage in transit) is refused by the store.
    wrong = base64.b64encode((zlib.crc32(b"part") ^ 1).to_bytes(4, "big")).decode("ascii")
    upload = client.create_multipart_upload(Bucket=s3_store.bucket, Key="t/bad", ChecksumAlgorithm="CRC32")
    with pytest.raises(Exception, match="BadDigest"):
        client.upload_part(
            Bucket=s3_store.bucket,
            Key="t/bad",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"part",
            ChecksumCRC32=wrong,
        )
    client.abort_multipart_upload(Bucket=s3_store.bucket, Key="t/bad", UploadId=upload["UploadId"])


def test_local_store_conflict_integrity_and_keys(tmp_path: Path) -> None:
    from server.infra.storage import ObjectConflict, ObjectIntegrityError

    store = LocalObjectStore(tmp_path / "objects")
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"aaaa")
    b.write_bytes(b"bbbb")
    sha_a, sha_b = hashlib.sha256(b"aaaa").hexdigest(), hashlib.sha256(b"bbbb").hexdigest()
    assert store.put_file("k/one", a, sha_a).created
    assert not store.put_file("k/one", a, sha_a).created
    with pytest.raises(ObjectConflict):
        store.put_file("k/one", b, sha_b)
    with pytest.raises(ObjectIntegrityError):
        store.put_file("k/two", a, sha_b)
    assert not store.exists("k/two") and not list((tmp_path / "objects" / "k").glob(".*tmp"))
    with pytest.raises(ValueError):
        store.put_file("../escape", a, sha_a)
    assert b"".join(store.open_range("k/one", 1, 2)) == b"aa"
