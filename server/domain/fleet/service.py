"""Fleet rules: per-device MQTT credentials, provisioning (allow-list or admin approval), profiles
(JL-13 capabilities), status changes, revocation, and check-out/check-in of devices to officers."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.accounts.models import User
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound, ServiceError
from server.domain.fleet.broker_accounts import hash_broker_password
from server.domain.fleet.devices import (
    check_device_id_not_reserved,
    get_device,
    record_key_event,
    register_device,
)
from server.domain.fleet.models import (
    DEVICE_STATUSES,
    Device,
    DeviceAlert,
    DeviceAssignment,
    DeviceCredential,
    DeviceProfile,
    DeviceStatus,
    ProvisioningRequest,
    SerialAllowlistEntry,
)
from server.domain.fleet.telemetry_models import DeviceHealthSample, DevicePresence
from server.errors import ErrorKind

__all__ = [
    "CAPABILITIES",
    "BatteryTooLow",
    "ClaimRefused",
    "IssuedCredential",
    "add_allowed_serials",
    "approve_request",
    "assignment_history",
    "check_in",
    "check_out",
    "collect_credentials",
    "current_assignment",
    "device_overview",
    "issue_credential",
    "latest_health",
    "list_overview",
    "pending_requests",
    "provision_with_token",
    "reject_request",
    "remove_allowed_serial",
    "request_provisioning",
    "revoke_device",
    "set_profile",
    "set_status",
]

# JL-13: special devices — positioning, night vision, explosion-proof — are recorded per device.
CAPABILITIES: tuple[str, ...] = ("gps", "night_vision", "explosion_proof", "audio", "lte", "wifi")


class ClaimRefused(ServiceError):
    """The provisioning claim is unknown, rejected or already collected."""

    code = "claim_refused"
    kind = ErrorKind.FORBIDDEN


class BatteryTooLow(Conflict):
    """The device's latest battery reading is below the check-out minimum."""

    code = "battery_too_low"


@dataclass(frozen=True, kw_only=True)
class IssuedCredential:
    """A device's new MQTT login; the password exists only here and is never stored in clear."""

    device_id: str
    username: str
    password: str


def _validate_key(device_id: str, public_key: bytes) -> None:
    """Refuse a bad id or key before a request is stored (register_device checks again on approval)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from protocol.topics import valid_device_id

    if not valid_device_id(device_id):
        raise Invalid(f"设备编号无效：{device_id!r}", f"invalid device id {device_id!r}")
    check_device_id_not_reserved(device_id)
    try:
        Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise Invalid("公钥不是有效的 Ed25519 公钥", "not a valid Ed25519 public key") from None


def _hash_claim(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# -- credentials -----------------------------------------------------------------------------------


def issue_credential(
    session: Session, device_id: str, *, actor: str, reason: str = "issued"
) -> IssuedCredential:
    """Make a new random MQTT password for a device, revoking any earlier one (rotation)."""
    check_device_id_not_reserved(device_id)  # a legacy row with a system name gets no broker login
    device = get_device(session, device_id)
    now = utcnow()
    for old in session.scalars(
        select(DeviceCredential).where(
            DeviceCredential.device_id == device.id, DeviceCredential.revoked_at.is_(None)
        )
    ):
        old.revoked_at, old.revoked_reason = now, "rotated"
    password = secrets.token_urlsafe(24)
    row = DeviceCredential(
        device_id=device.id,
        username=device.id,
        password_hash=hash_broker_password(password),
        created_at=now,
        created_by=actor,
        revoked_reason="",
    )
    session.add(row)
    session.flush()
    write_audit(
        session, actor=actor, action=f"device.credential_{reason}", target_type="device", target_id=device.id
    )
    return IssuedCredential(device_id=device.id, username=row.username, password=password)


def revoke_device(
    session: Session, device_id: str, *, status: str = "lost", reason: str = "", actor: str
) -> Device:
    """Cut a device off at once: status lost/retired and every MQTT credential revoked.

    The device's public key stays in the registry, so evidence it stored before keeps verifying (JL-19).
    """
    if status not in DeviceStatus.OUT_OF_SERVICE:
        raise Invalid("吊销后的状态只能是 lost 或 retired", "status after revocation must be lost or retired")
    device = get_device(session, device_id)
    if device.status not in DeviceStatus.OUT_OF_SERVICE:
        record_key_event(session, device, "revoked", actor=actor)  # the key's validity ends now
    device.status = status
    now = utcnow()
    for cred in session.scalars(
        select(DeviceCredential).where(
            DeviceCredential.device_id == device.id, DeviceCredential.revoked_at.is_(None)
        )
    ):
        cred.revoked_at, cred.revoked_reason = now, reason[:255] or status
    write_audit(
        session,
        actor=actor,
        action="device.revoke",
        target_type="device",
        target_id=device.id,
        detail={"status": status, "reason": reason},
    )
    return device


def set_status(session: Session, device_id: str, status: str, *, actor: str) -> Device:
    """Change a device's status; lost/retired also revoke its credentials."""
    if status not in DEVICE_STATUSES:
        raise Invalid(f"未知状态 {status}", f"unknown status {status}")
    if status in DeviceStatus.OUT_OF_SERVICE:
        return revoke_device(session, device_id, status=status, actor=actor)
    device = get_device(session, device_id)
    previous, device.status = device.status, status
    if previous in DeviceStatus.OUT_OF_SERVICE:
        record_key_event(session, device, "reinstated", actor=actor)  # a new validity period
    write_audit(
        session,
        actor=actor,
        action="device.status",
        target_type="device",
        target_id=device.id,
        detail={"from": previous, "to": status},
    )
    return device


# -- provisioning ----------------------------------------------------------------------------------


def provision_with_token(
    session: Session,
    device_id: str,
    public_key: bytes,
    *,
    serial: str | None,
    model: str | None,
    actor: str,
) -> IssuedCredential:
    """Admin-token path: register the key (idempotent) and issue fresh MQTT credentials."""
    check_device_id_not_reserved(device_id)
    register_device(session, device_id, public_key, serial, model, actor=actor)
    return issue_credential(session, device_id, actor=actor, reason="issued")


def add_allowed_serials(session: Session, serials: list[str], *, model: str = "", actor: str) -> int:
    """Add serial numbers to the allow-list (existing ones are kept); return how many were new."""
    added = 0
    for raw in serials:
        serial = raw.strip() if isinstance(raw, str) else ""
        if not serial or len(serial) > 128:
            raise Invalid(f"序列号无效：{raw!r}", f"invalid serial {raw!r}")
        if session.get(SerialAllowlistEntry, serial) is None:
            session.add(SerialAllowlistEntry(serial=serial, model=model, added_by=actor, added_at=utcnow()))
            added += 1
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="device.allowlist_add",
        target_type="serial",
        target_id=None,
        detail={"serials": serials, "added": added},
    )
    return added


def remove_allowed_serial(session: Session, serial: str, *, actor: str) -> SerialAllowlistEntry:
    """Take an unused serial off the allow-list; one a device already joined with stays (its provenance)."""
    entry = session.get(SerialAllowlistEntry, (serial or "").strip())
    if entry is None:
        raise NotFound(f"白名单中没有序列号 {serial}", f"serial {serial} is not on the allow-list")
    if entry.used_by_device is not None:
        # The entry records how that device joined; revoke the device instead (revoke_device).
        raise Conflict(
            f"序列号 {entry.serial} 已被设备 {entry.used_by_device} 使用，保留为注册记录",
            f"serial {entry.serial} was used by device {entry.used_by_device} and stays as its record",
        )
    session.delete(entry)
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="device.allowlist_remove",
        target_type="serial",
        target_id=entry.serial,
        detail={"model": entry.model, "added_by": entry.added_by},
    )
    return entry


def request_provisioning(
    session: Session, device_id: str, public_key: bytes, *, serial: str, model: str = ""
) -> tuple[ProvisioningRequest, str, IssuedCredential | None]:
    """A device asks to join; an unused allow-listed serial is approved at once, others wait for an admin.

    Returns the request, the one-time claim secret the device polls with, and its credentials when
    already approved.
    """
    check_device_id_not_reserved(device_id)  # before anything, even before the allow-list is consulted
    serial = (serial or "").strip()
    if not serial or len(serial) > 128:
        raise Invalid("必须提供设备序列号", "a serial number is required")
    _validate_key(device_id, public_key)
    if session.get(Device, device_id) is not None:
        raise Conflict(f"设备 {device_id} 已注册", f"device {device_id} is already registered")
    secret = secrets.token_urlsafe(32)
    request = ProvisioningRequest(
        device_id=device_id,
        serial=serial,
        model=model,
        public_key=public_key,
        claim_hash=_hash_claim(secret),
        state="pending",
        created_at=utcnow(),
    )
    allowed = session.get(SerialAllowlistEntry, serial)
    if allowed is not None and allowed.used_by_device is None:
        register_device(
            session, device_id, public_key, serial, model or allowed.model or None, actor="allowlist"
        )
        allowed.used_by_device = device_id
        request.state, request.decided_by, request.decided_at = "collected", "allowlist", utcnow()
        session.add(request)
        session.flush()
        return request, secret, issue_credential(session, device_id, actor="allowlist")
    session.add(request)
    session.flush()
    write_audit(
        session,
        actor="device",
        action="device.provision_request",
        target_type="device",
        target_id=device_id,
        detail={"serial": serial, "request_id": request.id},
    )
    return request, secret, None


def _request(session: Session, request_id: int) -> ProvisioningRequest:
    request = session.get(ProvisioningRequest, request_id)
    if request is None:
        raise NotFound(f"注册申请 {request_id} 不存在", f"provisioning request {request_id} not found")
    return request


def pending_requests(session: Session) -> list[ProvisioningRequest]:
    """Requests waiting for an admin, oldest first."""
    return list(
        session.scalars(
            select(ProvisioningRequest)
            .where(ProvisioningRequest.state == "pending")
            .order_by(ProvisioningRequest.id)
        )
    )


def approve_request(session: Session, request_id: int, *, actor: str) -> ProvisioningRequest:
    """Approve a pending request: the device is registered; it collects its credentials on its next poll."""
    request = _request(session, request_id)
    if request.state != "pending":
        raise Conflict(f"申请已处理（{request.state}）", f"request already {request.state}")
    register_device(
        session,
        request.device_id,
        bytes(request.public_key),
        request.serial,
        request.model or None,
        actor=actor,
    )
    request.state, request.decided_by, request.decided_at = "approved", actor, utcnow()
    return request


def reject_request(session: Session, request_id: int, *, actor: str) -> ProvisioningRequest:
    """Reject a pending request."""
    request = _request(session, request_id)
    if request.state != "pending":
        raise Conflict(f"申请已处理（{request.state}）", f"request already {request.state}")
    request.state, request.decided_by, request.decided_at = "rejected", actor, utcnow()
    write_audit(
        session,
        actor=actor,
        action="device.provision_reject",
        target_type="device",
        target_id=request.device_id,
    )
    return request


def collect_credentials(
    session: Session, claim_secret: str
) -> tuple[ProvisioningRequest, IssuedCredential | None]:
    """The device polls with its claim secret: credentials once approved (exactly once), else None."""
    request = session.scalar(
        select(ProvisioningRequest).where(ProvisioningRequest.claim_hash == _hash_claim(claim_secret or ""))
    )
    if request is None or request.state in ("rejected", "collected"):
        raise ClaimRefused(
            "注册申请无效或已领取", "provisioning claim unknown, rejected or already collected"
        )
    if request.state == "pending":
        return request, None
    request.state = "collected"
    return request, issue_credential(session, request.device_id, actor=request.decided_by or "system")


# -- profile, health, assignment -------------------------------------------------------------------


def set_profile(
    session: Session,
    device_id: str,
    *,
    capabilities: dict[str, bool] | None = None,
    agent_version: str | None = None,
    group_name: str | None = None,
    actor: str,
) -> DeviceProfile:
    """Record a device's capabilities (JL-13), agent version or group."""
    get_device(session, device_id)
    profile = session.get(DeviceProfile, device_id) or DeviceProfile(
        device_id=device_id, agent_version="", capabilities={}, group_name=""
    )
    if capabilities is not None:
        unknown = set(capabilities) - set(CAPABILITIES)
        if unknown or not all(isinstance(v, bool) for v in capabilities.values()):
            raise Invalid(
                f"未知的设备能力：{sorted(unknown)}", f"unknown or non-boolean capabilities {sorted(unknown)}"
            )
        profile.capabilities = dict(capabilities)
    if agent_version is not None:
        profile.agent_version = agent_version[:64]
    if group_name is not None:
        profile.group_name = group_name[:64]
    profile.updated_at = utcnow()
    session.add(profile)
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="device.profile",
        target_type="device",
        target_id=device_id,
        detail={"capabilities": capabilities, "agent_version": agent_version, "group": group_name},
    )
    return profile


def latest_health(session: Session, device_id: str) -> DeviceHealthSample | None:
    """The device's most recent health report."""
    return session.scalar(
        select(DeviceHealthSample)
        .where(DeviceHealthSample.device_id == device_id)
        .order_by(DeviceHealthSample.at.desc(), DeviceHealthSample.id.desc())
        .limit(1)
    )


def current_assignment(session: Session, device_id: str) -> DeviceAssignment | None:
    """The open check-out of a device, if any."""
    return session.scalar(
        select(DeviceAssignment).where(
            DeviceAssignment.device_id == device_id, DeviceAssignment.checked_in_at.is_(None)
        )
    )


def check_out(
    session: Session, device_id: str, user_id: int, *, min_battery_pct: int, actor: str
) -> DeviceAssignment:
    """Hand a device to an officer: it must be usable, free, and charged to at least ``min_battery_pct``."""
    device = get_device(session, device_id)
    if device.status not in DeviceStatus.ACCEPTING:
        raise Conflict(f"设备状态为 {device.status}，不能领用", f"device is {device.status}")
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise NotFound(f"用户 {user_id} 不存在或已停用", f"user {user_id} not found or inactive")
    if current_assignment(session, device_id) is not None:
        raise Conflict(f"设备 {device_id} 已被领用", f"device {device_id} is already checked out")
    health = latest_health(session, device_id)
    battery = health.battery_pct if health is not None else None
    if battery is None or battery < min_battery_pct:
        shown = "?" if battery is None else str(battery)
        raise BatteryTooLow(
            f"电量 {shown}% 低于领用下限 {min_battery_pct}%",
            f"battery {shown}% is below the {min_battery_pct}% minimum",
        )
    row = DeviceAssignment(
        device_id=device_id,
        user_id=user_id,
        checked_out_at=utcnow(),
        checked_out_by=actor,
        battery_at_checkout=battery,
        agency_id=user.agency_id,
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="device.check_out",
        target_type="device",
        target_id=device_id,
        detail={"user_id": user_id, "battery_pct": battery},
    )
    return row


def check_in(session: Session, device_id: str, *, actor: str) -> DeviceAssignment:
    """Take a device back from its officer."""
    row = current_assignment(session, device_id)
    if row is None:
        raise Conflict(f"设备 {device_id} 未被领用", f"device {device_id} is not checked out")
    row.checked_in_at, row.checked_in_by = utcnow(), actor
    write_audit(
        session,
        actor=actor,
        action="device.check_in",
        target_type="device",
        target_id=device_id,
        detail={"user_id": row.user_id},
    )
    return row


def assignment_history(session: Session, device_id: str) -> list[DeviceAssignment]:
    """Every check-out of a device, newest first."""
    return list(
        session.scalars(
            select(DeviceAssignment)
            .where(DeviceAssignment.device_id == device_id)
            .order_by(DeviceAssignment.checked_out_at.desc(), DeviceAssignment.id.desc())
        )
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def assignment_to_dict(row: DeviceAssignment) -> dict[str, Any]:
    """JSON view of a check-out."""
    return {
        "id": row.id,
        "device_id": row.device_id,
        "user_id": row.user_id,
        "checked_out_at": _iso(row.checked_out_at),
        "checked_out_by": row.checked_out_by,
        "battery_at_checkout": row.battery_at_checkout,
        "checked_in_at": _iso(row.checked_in_at),
        "checked_in_by": row.checked_in_by,
    }


def _overview(
    device: Device,
    profile: DeviceProfile | None,
    presence: DevicePresence | None,
    health: DeviceHealthSample | None,
    assignment: DeviceAssignment | None,
    alerts: list[str],
) -> dict[str, Any]:
    """The overview dict of one device from its already-loaded rows."""
    return {
        "device_id": device.id,
        "status": device.status,
        "serial": device.serial,
        "model": device.model,
        "agent_version": (profile.agent_version if profile and profile.agent_version else None)
        or (presence.agent_version if presence else None),
        "capabilities": profile.capabilities if profile else {},
        "group": profile.group_name if profile else "",
        "presence": presence.state if presence else None,
        "presence_at": _iso(presence.at) if presence else None,
        "battery_pct": health.battery_pct if health else None,
        "free_bytes": health.free_bytes if health else None,
        "backlog_segments": health.backlog_segments if health else None,
        "oldest_pending_age_s": health.oldest_pending_age_s if health else None,
        "health_at": _iso(health.at) if health else None,
        "assigned_to": assignment.user_id if assignment else None,
        "alerts": sorted(alerts),
    }


def device_overview(session: Session, device: Device, *, now: datetime | None = None) -> dict[str, Any]:
    """One device for the fleet list: status, profile, presence, latest health, assignment, open alerts."""
    alerts = session.scalars(
        select(DeviceAlert.kind).where(DeviceAlert.device_id == device.id, DeviceAlert.cleared_at.is_(None))
    ).all()
    return _overview(
        device,
        session.get(DeviceProfile, device.id),
        session.get(DevicePresence, device.id),
        latest_health(session, device.id),
        current_assignment(session, device.id),
        list(alerts),
    )


def list_overview(
    session: Session,
    *,
    status: str | None = None,
    min_backlog_age_h: float | None = None,
    max_battery_pct: int | None = None,
    group: str | None = None,
    presence: str | None = None,
    limit: int | None = None,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """Devices with their overview, filtered by status, backlog age (hours), battery ceiling, group and
    presence (``online``, or ``offline`` = anything not online); ``limit`` devices with ids after
    ``after`` (keyset paging, so a page costs the same at any fleet size).

    Two queries whatever the fleet size: devices joined to their profile, presence, open assignment and
    latest health sample (a correlated subquery on ``ix_device_health_device_at``), then open alerts.
    """
    latest = (
        select(DeviceHealthSample.id)
        .where(DeviceHealthSample.device_id == Device.id)
        .order_by(DeviceHealthSample.at.desc(), DeviceHealthSample.id.desc())
        .limit(1)
        .correlate(Device)
        .scalar_subquery()
    )
    query = (
        select(Device, DeviceProfile, DevicePresence, DeviceHealthSample, DeviceAssignment)
        .outerjoin(DeviceProfile, DeviceProfile.device_id == Device.id)
        .outerjoin(DevicePresence, DevicePresence.device_id == Device.id)
        .outerjoin(DeviceHealthSample, DeviceHealthSample.id == latest)
        .outerjoin(
            DeviceAssignment,
            (DeviceAssignment.device_id == Device.id) & DeviceAssignment.checked_in_at.is_(None),
        )
        .order_by(Device.id)
    )
    if status:
        query = query.where(Device.status == status)
    if group:
        query = query.where(DeviceProfile.group_name == group)
    if presence == "online":
        query = query.where(DevicePresence.state == "online")
    elif presence == "offline":
        query = query.where((DevicePresence.state.is_(None)) | (DevicePresence.state != "online"))
    # Filters on the latest health sample run in SQL so that paging counts only matching devices.
    if min_backlog_age_h is not None:
        query = query.where(
            DeviceHealthSample.id.is_not(None),
            func.coalesce(DeviceHealthSample.oldest_pending_age_s, 0) >= min_backlog_age_h * 3600,
        )
    if max_battery_pct is not None:
        query = query.where(DeviceHealthSample.battery_pct <= max_battery_pct)
    if after:
        query = query.where(Device.id > after)
    if limit is not None:
        query = query.limit(limit)
    alerts: dict[str, list[str]] = {}
    for device_id, kind in session.execute(
        select(DeviceAlert.device_id, DeviceAlert.kind).where(DeviceAlert.cleared_at.is_(None))
    ):
        alerts.setdefault(device_id, []).append(kind)
    out = []
    for device, profile, presence_row, health, assignment in session.execute(query):
        out.append(_overview(device, profile, presence_row, health, assignment, alerts.get(device.id, [])))
    return out
