"""Signed update bundles and staged rollouts to device groups, built on ``apply_update`` commands.

A bundle is accepted only if its signature verifies with a trusted update key (PEM files in
``<data_dir>/update-keys/``; the signing key itself stays offline) and every file hash matches. A
rollout splits a group's devices into batches; batch *n+1* gets its commands only when at least
``success_threshold_pct`` of batch *n* succeeded, and the rollout halts as soon as a batch's failures
make that threshold unreachable. :func:`advance_all` runs in every fleet dispatch round.

Devices download with a per-target random token in the command's URL: it names one device and one
bundle and works only while that device's command is open and the device is in service. The bundle is
signed, so the token guards against strangers pulling files, not against tampering.
"""

from __future__ import annotations

import hmac
import math
import secrets
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from firmware_tools.bundle import BundleError, load_public_keys, verify_bundle
from protocol.fleet import CommandKind, CommandState
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound, ServiceError
from server.domain.fleet import commands as command_service
from server.domain.fleet.models import Device, DeviceCommand, DeviceProfile, DeviceStatus
from server.domain.fleet.rollout_models import Rollout, RolloutTarget, UpdateBundle
from server.errors import ErrorKind
from server.infra.config import Settings
from server.infra.storage import ObjectStore
from zfjl_common.fsutil import sha256_file

__all__ = [
    "MAX_BUNDLE_BYTES",
    "UPDATE_KEYS_DIR",
    "BundleRefused",
    "DownloadForbidden",
    "advance",
    "advance_all",
    "bundle_for_download",
    "bundle_to_dict",
    "create_rollout",
    "get_bundle",
    "get_rollout",
    "list_bundles",
    "register_bundle",
    "rollout_to_dict",
    "trusted_update_keys",
]

UPDATE_KEYS_DIR = "update-keys"
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
DEFAULT_COMMAND_TTL = timedelta(days=7)  # a device may wait days for a long session to end
_FAILED = frozenset({"failed", "rejected", "expired", "skipped"})
_OPEN = frozenset({CommandState.QUEUED.value, CommandState.IN_PROGRESS.value})


class BundleRefused(ServiceError):
    """The uploaded bundle is unsigned, signed by an untrusted key, or its files do not match."""

    code = "bundle_refused"
    kind = ErrorKind.REJECTED


class DownloadForbidden(ServiceError):
    """The download token is unknown, or its command or device is no longer eligible."""

    code = "forbidden"
    kind = ErrorKind.FORBIDDEN


def trusted_update_keys(settings: Settings) -> list[Ed25519PublicKey]:
    """Public keys of every ``*.pem`` in ``<data_dir>/update-keys`` (several allow a key rollover)."""
    keys: list[Ed25519PublicKey] = []
    for path in sorted((settings.data_dir / UPDATE_KEYS_DIR).glob("*.pem")):
        keys.extend(load_public_keys(path.read_bytes()))
    return keys


# -- bundles ----------------------------------------------------------------------------------------


def register_bundle(
    session: Session, store: ObjectStore, path: Path, *, keys: list[Ed25519PublicKey], actor: str
) -> UpdateBundle:
    """Verify an uploaded bundle file and store it; the same bytes uploaded twice give the same row."""
    if not keys:
        raise BundleRefused(
            "服务器未配置升级公钥", f"no trusted update key in <data_dir>/{UPDATE_KEYS_DIR}/*.pem"
        )
    try:
        metadata, signer = verify_bundle(path, keys)
    except BundleError as exc:
        raise BundleRefused(f"升级包未通过校验：{exc}", f"bundle refused: {exc}") from None
    sha256 = sha256_file(path)
    existing = session.scalars(select(UpdateBundle).where(UpdateBundle.sha256 == sha256)).first()
    if existing is not None:
        return existing
    key = f"updates/{sha256}.bundle"
    store.put_file(key, path, sha256, verified=True)
    row = UpdateBundle(
        id=uuid.uuid4().hex,
        name=metadata.name,
        version=metadata.version,
        sha256=sha256,
        size=path.stat().st_size,
        key_id=signer,
        bundle_metadata=metadata.to_dict(),
        object_key=key,
        uploaded_by=actor,
        uploaded_at=utcnow(),
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="update.bundle_registered",
        target_type="update_bundle",
        target_id=row.id,
        detail={"version": row.version, "sha256": sha256, "key_id": signer},
    )
    return row


def get_bundle(session: Session, bundle_id: str) -> UpdateBundle:
    """One bundle, or NotFound."""
    row = session.get(UpdateBundle, bundle_id)
    if row is None:
        raise NotFound(f"升级包 {bundle_id} 不存在", f"update bundle {bundle_id} not found")
    return row


def list_bundles(session: Session) -> list[UpdateBundle]:
    """Every registered bundle, newest first."""
    return list(session.scalars(select(UpdateBundle).order_by(UpdateBundle.uploaded_at.desc())))


def bundle_to_dict(row: UpdateBundle) -> dict[str, Any]:
    """JSON view of a bundle."""
    return {
        "bundle_id": row.id,
        "name": row.name,
        "version": row.version,
        "sha256": row.sha256,
        "size": row.size,
        "key_id": row.key_id,
        "metadata": row.bundle_metadata,
        "uploaded_by": row.uploaded_by,
        "uploaded_at": row.uploaded_at.isoformat(),
    }


def bundle_for_download(session: Session, bundle_id: str, token: str) -> UpdateBundle:
    """The bundle a device may fetch with ``token``; DownloadForbidden otherwise."""
    forbidden = DownloadForbidden("下载凭证无效或已失效", "download token invalid or no longer valid")
    if not token or len(token) > 64:
        raise forbidden
    target = session.scalars(select(RolloutTarget).where(RolloutTarget.download_token == token)).first()
    # compare_digest: the lookup already matched, but keep the final comparison constant-time.
    if target is None or not hmac.compare_digest(target.download_token or "", token):
        raise forbidden
    rollout = session.get(Rollout, target.rollout_id)
    command = session.get(DeviceCommand, target.command_id) if target.command_id else None
    device = session.get(Device, target.device_id)
    if (
        rollout is None
        or rollout.bundle_id != bundle_id
        or command is None
        or command.state not in _OPEN
        or command.expires_at <= utcnow()
        or device is None
        or device.status not in DeviceStatus.ACCEPTING
    ):
        raise forbidden
    return get_bundle(session, bundle_id)


# -- rollouts ---------------------------------------------------------------------------------------


def create_rollout(
    session: Session,
    *,
    bundle_id: str,
    group: str,
    base_url: str,
    actor: str,
    batch_size: int | None = None,
    batch_percent: int | None = None,
    success_threshold_pct: int = 100,
    command_ttl: timedelta = DEFAULT_COMMAND_TTL,
) -> Rollout:
    """Plan batches over the group's in-service devices (sorted by id) and start the first batch."""
    bundle = get_bundle(session, bundle_id)
    if not group:
        raise Invalid("必须指定设备分组", "group is required")
    if not 0 <= success_threshold_pct <= 100:
        raise Invalid("成功率阈值须在 0 到 100 之间", "success_threshold_pct must be 0..100")
    if (batch_size is None) == (batch_percent is None):
        raise Invalid("batch_size 与 batch_percent 须二选一", "give exactly one of batch_size, batch_percent")
    running = session.scalars(
        select(Rollout).where(Rollout.group_name == group, Rollout.state == "running")
    ).first()
    if running is not None:
        raise Conflict(
            f"分组 {group} 已有进行中的升级", f"group {group} already has rollout {running.id} running"
        )
    devices = list(
        session.scalars(
            select(Device.id)
            .join(DeviceProfile, DeviceProfile.device_id == Device.id)
            .where(DeviceProfile.group_name == group, Device.status.in_(DeviceStatus.ACCEPTING))
            .order_by(Device.id)
        )
    )
    if not devices:
        raise Invalid(f"分组 {group} 没有在用设备", f"group {group} has no device in service")
    if batch_percent is not None:
        if not 1 <= batch_percent <= 100:
            raise Invalid("batch_percent 须在 1 到 100 之间", "batch_percent must be 1..100")
        size = max(1, math.ceil(len(devices) * batch_percent / 100))
    else:
        assert batch_size is not None
        if batch_size < 1:
            raise Invalid("batch_size 至少为 1", "batch_size must be at least 1")
        size = batch_size
    now = utcnow()
    rollout = Rollout(
        bundle_id=bundle.id,
        group_name=group,
        batch_size=size,
        success_threshold_pct=success_threshold_pct,
        state="running",
        current_batch=0,
        command_ttl_s=int(command_ttl.total_seconds()),
        base_url=base_url.rstrip("/"),
        halted_reason="",
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(rollout)
    session.flush()
    for index, device_id in enumerate(devices):
        session.add(
            RolloutTarget(
                rollout_id=rollout.id,
                device_id=device_id,
                batch=index // size,
                state="pending",
                result={},
                updated_at=now,
            )
        )
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="update.rollout_created",
        target_type="rollout",
        target_id=rollout.id,
        detail={"bundle_id": bundle.id, "version": bundle.version, "group": group, "devices": len(devices)},
    )
    _start_batch(session, rollout, bundle, 0)
    return rollout


def _targets(session: Session, rollout: Rollout, batch: int | None = None) -> list[RolloutTarget]:
    query = select(RolloutTarget).where(RolloutTarget.rollout_id == rollout.id)
    if batch is not None:
        query = query.where(RolloutTarget.batch == batch)
    return list(session.scalars(query.order_by(RolloutTarget.batch, RolloutTarget.device_id)))


def _start_batch(session: Session, rollout: Rollout, bundle: UpdateBundle, batch: int) -> None:
    """Queue an apply_update command, with its own download URL, for every device of the batch."""
    for target in _targets(session, rollout, batch):
        token = secrets.token_urlsafe(32)
        params = {
            "url": f"{rollout.base_url}/updates/v1/bundles/{bundle.id}?token={token}",
            "sha256": bundle.sha256,
            "size": bundle.size,
            "version": bundle.version,
            "bundle_id": bundle.id,
            "rollout_id": rollout.id,
        }
        try:
            command = command_service.create_command(
                session,
                target.device_id,
                CommandKind.APPLY_UPDATE.value,
                params=params,
                ttl=timedelta(seconds=rollout.command_ttl_s),
                actor=f"rollout:{rollout.id}",
            )
        except Conflict as exc:
            # Lost or retired since the rollout was planned: counted as a failure of its batch.
            target.state, target.result = "skipped", {"reason": exc.message_en}
        else:
            target.command_id, target.download_token = command.id, token
            target.state = command.state
        target.updated_at = utcnow()
    session.flush()


def advance(session: Session, rollout: Rollout) -> None:
    """Copy command states into the targets, then halt, start the next batch, or complete."""
    if rollout.state != "running":
        return
    now = utcnow()
    for target in _targets(session, rollout):
        command = session.get(DeviceCommand, target.command_id) if target.command_id else None
        if command is not None and (command.state != target.state or command.result != target.result):
            target.state, target.result, target.updated_at = command.state, dict(command.result), now
    batch = _targets(session, rollout, rollout.current_batch)
    failed = sum(t.state in _FAILED for t in batch)
    needed = math.ceil(len(batch) * rollout.success_threshold_pct / 100)
    if len(batch) - failed < needed:
        rollout.state, rollout.updated_at = "halted", now
        rollout.halted_reason = (
            f"batch {rollout.current_batch + 1}: {failed} of {len(batch)} devices failed; "
            f"{rollout.success_threshold_pct}% must succeed"
        )
        write_audit(
            session,
            actor=f"rollout:{rollout.id}",
            action="update.rollout_halted",
            target_type="rollout",
            target_id=rollout.id,
            detail={"reason": rollout.halted_reason},
        )
    elif all(t.state == CommandState.SUCCEEDED.value or t.state in _FAILED for t in batch):
        later = [t.batch for t in _targets(session, rollout) if t.batch > rollout.current_batch]
        if later:
            rollout.current_batch = min(later)
            _start_batch(session, rollout, get_bundle(session, rollout.bundle_id), rollout.current_batch)
        else:
            rollout.state = "completed"
        rollout.updated_at = now
    session.flush()


def advance_all(session: Session) -> int:
    """Advance every running rollout (called each fleet dispatch round); returns how many ran."""
    running = list(session.scalars(select(Rollout).where(Rollout.state == "running")))
    for rollout in running:
        advance(session, rollout)
    return len(running)


def get_rollout(session: Session, rollout_id: int) -> Rollout:
    """One rollout, or NotFound."""
    row = session.get(Rollout, rollout_id)
    if row is None:
        raise NotFound(f"升级任务 {rollout_id} 不存在", f"rollout {rollout_id} not found")
    return row


def rollout_to_dict(session: Session, rollout: Rollout) -> dict[str, Any]:
    """JSON view of a rollout with per-device results (download tokens left out)."""
    targets = _targets(session, rollout)
    counts: dict[str, int] = {}
    for target in targets:
        counts[target.state] = counts.get(target.state, 0) + 1
    bundle = get_bundle(session, rollout.bundle_id)
    return {
        "rollout_id": rollout.id,
        "bundle_id": bundle.id,
        "version": bundle.version,
        "group": rollout.group_name,
        "batch_size": rollout.batch_size,
        "batches": (max(t.batch for t in targets) + 1) if targets else 0,
        "current_batch": rollout.current_batch,
        "success_threshold_pct": rollout.success_threshold_pct,
        "state": rollout.state,
        "halted_reason": rollout.halted_reason,
        "counts": counts,
        "created_by": rollout.created_by,
        "created_at": rollout.created_at.isoformat(),
        "updated_at": rollout.updated_at.isoformat(),
        "devices": [
            {
                "device_id": t.device_id,
                "batch": t.batch,
                "state": t.state,
                "command_id": t.command_id,
                "result": t.result,
            }
            for t in targets
        ],
    }
