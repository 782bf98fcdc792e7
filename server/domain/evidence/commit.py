"""Committing signed evidence segments: the one path that makes a recording durable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from protocol.manifest import SignedManifest
from server.domain.base import utcnow
from server.domain.errors import ServiceError
from server.domain.evidence.models import IngestRejection, Recording, SegmentReceipt
from server.domain.fleet.models import Device, DeviceStatus
from server.errors import ErrorKind
from server.infra.storage import ObjectConflict, ObjectStore, recording_key
from zfjl_common.fsutil import size_and_sha256_file

__all__ = [
    "BadSignature",
    "CommitResult",
    "DeviceInactive",
    "DeviceMismatch",
    "EvidenceRejected",
    "HashMismatch",
    "SegmentConflict",
    "SegmentTooLarge",
    "SizeMismatch",
    "UnknownDevice",
    "commit_segment",
    "record_rejection",
]

class EvidenceRejected(ServiceError):
    """A segment was refused; ``code`` is stable and logged to ingest_rejections."""

    code: ClassVar[str] = "evidence_rejected"
    kind = ErrorKind.REJECTED


class UnknownDevice(EvidenceRejected):
    """The manifest names a device that is not registered."""

    code = "unknown_device"


class DeviceInactive(EvidenceRejected):
    """The device is lost or retired."""

    code = "device_inactive"


class DeviceMismatch(EvidenceRejected):
    """The manifest names another device than the one that uploaded it."""

    code = "device_mismatch"


class BadSignature(EvidenceRejected):
    """The manifest signature does not verify with the device's registered key."""

    code = "bad_signature"


class HashMismatch(EvidenceRejected):
    """The staged bytes do not hash to the manifest's sha256."""

    code = "hash_mismatch"


class SizeMismatch(HashMismatch):
    """The staged file's size differs from the manifest's."""

    code = "size_mismatch"


class SegmentTooLarge(EvidenceRejected):
    """The segment exceeds the configured maximum size."""

    code = "too_large"


class SegmentConflict(EvidenceRejected):
    """Another manifest is already stored for this device and sequence number."""

    code = "segment_conflict"
    kind = ErrorKind.CONFLICT


@dataclass(frozen=True)
class CommitResult:
    """The stored recording; ``duplicate`` when it had already been committed."""

    recording: Recording
    duplicate: bool = False


def record_rejection(
    session: Session,
    *,
    code: str,
    message: str,
    device_id: str | None = None,
    file_id: str | None = None,
    manifest_text: str | None = None,
    occurrences: int = 1,
) -> IngestRejection:
    """Log a refused upload to the security log (flushed; committed by the caller).

    ``occurrences`` > 1 makes it a flood summary; it is set at insert because the table is append-only.
    """
    row = IngestRejection(
        device_id=device_id,
        file_id=file_id,
        code=code,
        message=message,
        manifest_text=manifest_text,
        occurrences=occurrences,
        at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def commit_segment(
    session: Session,
    store: ObjectStore,
    signed: SignedManifest,
    staged_path: Path,
    *,
    expected_device_id: str | None = None,
    max_segment_bytes: int | None = None,
    staged_sha256: str | None = None,
) -> CommitResult:
    """Verify a signed segment against its device key and bytes, store it write-once, record it, commit.

    ``staged_sha256`` is the SHA-256 of exactly the bytes of ``staged_path`` when the caller already
    took it (ingest hashes chunks as they are staged, docs/performance.md); it is checked against the
    signed manifest like a hash of the file, and the file is not read again. None: the file is hashed.

    The one domain function that commits (docs/architecture.md, rule 3): the device is acked only
    after its segment is durable (ack-after-commit), and a race on (device, sequence) shows as the
    commit's IntegrityError. Rejections are logged to ingest_rejections (committed) and then raised
    as EvidenceRejected.
    """
    try:
        return _commit(
            session, store, signed, Path(staged_path), expected_device_id, max_segment_bytes, staged_sha256
        )
    except EvidenceRejected as exc:
        session.rollback()
        record_rejection(
            session,
            code=exc.code,
            message=exc.message_en,
            device_id=signed.manifest.device_id,
            file_id=signed.file_id,
            manifest_text=signed.manifest_text,
        )
        session.commit()
        raise


def _commit(
    session: Session,
    store: ObjectStore,
    signed: SignedManifest,
    staged_path: Path,
    expected_device_id: str | None,
    max_segment_bytes: int | None,
    staged_sha256: str | None = None,
) -> CommitResult:
    manifest = signed.manifest
    device_id = manifest.device_id
    if expected_device_id is not None and expected_device_id != device_id:
        raise DeviceMismatch(
            f"清单中的设备 {device_id} 与上传设备 {expected_device_id} 不符",
            f"manifest names device {device_id} but {expected_device_id} uploaded it",
        )
    device = session.get(Device, device_id)
    if device is None:
        raise UnknownDevice(f"未注册的设备 {device_id}", f"unknown device {device_id}")
    if device.status not in DeviceStatus.ACCEPTING:
        raise DeviceInactive(
            f"设备 {device_id} 状态为 {device.status}", f"device {device_id} is {device.status}"
        )
    if not signed.verify(device.public_key):
        raise BadSignature(
            f"设备 {device_id} 第 {manifest.sequence} 段的签名无效",
            f"bad signature on segment {manifest.sequence} of device {device_id}",
        )
    if max_segment_bytes is not None and manifest.size > max_segment_bytes:
        raise SegmentTooLarge(
            f"片段大小 {manifest.size} 超过上限 {max_segment_bytes}",
            f"segment size {manifest.size} exceeds the limit {max_segment_bytes}",
        )
    if staged_sha256 is None:
        size, sha256 = size_and_sha256_file(staged_path)
    else:
        size, sha256 = staged_path.stat().st_size, staged_sha256
    if size != manifest.size:
        raise SizeMismatch(
            f"文件大小 {size} 与清单 {manifest.size} 不符",
            f"file size {size} differs from manifest size {manifest.size}",
        )
    if sha256 != manifest.sha256:
        raise HashMismatch(
            "文件的 SHA-256 与清单不符",
            f"file sha256 {sha256} differs from manifest sha256 {manifest.sha256}",
        )

    existing = _existing(session, signed)
    if existing is not None:
        return CommitResult(existing, duplicate=True)

    key = recording_key(device_id, manifest.sequence, manifest.sha256)
    try:
        # Just hashed above, and staging never writes a finalized file again: no third hash, no copy.
        stored = store.put_file(key, staged_path, manifest.sha256, verified=True)
    except ObjectConflict:
        raise SegmentConflict(
            f"对象 {key} 已存在且内容不同", f"object {key} already exists with different content"
        ) from None
    recording = Recording(
        device_id=device_id,
        sequence=manifest.sequence,
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
        storage_backend=stored.backend,
        verified=True,
        stored_at=utcnow(),
    )
    session.add(recording)
    # Append-only receipt in the same transaction: a recording row deleted later is a missing segment.
    session.add(
        SegmentReceipt(
            device_id=device_id,
            sequence=manifest.sequence,
            manifest_hash=signed.manifest_hash,
            at=recording.stored_at,
        )
    )
    if device.status == DeviceStatus.PROVISIONED:
        device.status = DeviceStatus.ACTIVE
    try:
        session.commit()
    except IntegrityError:
        # Another worker committed this device/sequence between our check and insert.
        session.rollback()
        existing = _existing(session, signed)
        if existing is not None:
            return CommitResult(existing, duplicate=True)
        raise
    return CommitResult(recording, duplicate=False)


def _existing(session: Session, signed: SignedManifest) -> Recording | None:
    """The stored recording for this manifest, None if new; SegmentConflict if the sequence is taken."""
    manifest = signed.manifest
    same = session.scalar(select(Recording).where(Recording.manifest_hash == signed.manifest_hash))
    if same is not None:
        return same
    other = session.scalar(
        select(Recording).where(
            Recording.device_id == manifest.device_id, Recording.sequence == manifest.sequence
        )
    )
    if other is not None:
        raise SegmentConflict(
            f"设备 {manifest.device_id} 第 {manifest.sequence} 段已存在不同的清单",
            f"segment {manifest.sequence} of device {manifest.device_id} "
            "is already stored with another manifest",
        )
    return None
