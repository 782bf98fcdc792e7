"""Fleet rules: per-device MQTT credentials, provisioning (allow-list or admin approval), profiles
(JL-13 capabilities), status changes, revocation, and check-out/check-in of devices to officers."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

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
    DeviceCredential,
    DeviceProfile,
    DeviceStatus,
    ProvisioningRequest,
    SerialAllowlistEntry,
)
from server.errors import ErrorKind

__all__ = [
    "CAPABILITIES",
    "ClaimRefused",
    "IssuedCredential",
    "add_allowed_serials",
    "approve_request",
    "collect_credentials",
    "issue_credential",
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
    ending = device.status not in DeviceStatus.OUT_OF_SERVICE
    device.status = status
    now = utcnow()
    for cred in session.scalars(
        select(DeviceCredential).where(
            DeviceCredential.device_id == device.id, DeviceCredential.revoked_at.is_(None)
        )
    ):
        cred.revoked_at, cred.revoked_reason = now, reason[:255] or status
    revoked = write_audit(
        session,
        actor=actor,
        action="device.revoke",
        target_type="device",
        target_id=device.id,
        detail={"status": status, "reason": reason, "key_fingerprint": device.key_fingerprint},
    )
    if ending:  # the key's validity ends now; the entry names this audit row (JL-6)
        record_key_event(session, device, "revoked", actor=actor, audit=revoked)
    return device


def set_status(session: Session, device_id: str, status: str, *, actor: str) -> Device:
    """Change a device's status; lost/retired also revoke its credentials."""
    if status not in DEVICE_STATUSES:
        raise Invalid(f"未知状态 {status}", f"unknown status {status}")
    if status in DeviceStatus.OUT_OF_SERVICE:
        return revoke_device(session, device_id, status=status, actor=actor)
    device = get_device(session, device_id)
    previous, device.status = device.status, status
    changed = write_audit(
        session,
        actor=actor,
        action="device.status",
        target_type="device",
        target_id=device.id,
        detail={"from": previous, "to": status, "key_fingerprint": device.key_fingerprint},
    )
    if previous in DeviceStatus.OUT_OF_SERVICE:  # a new validity period, naming this audit row (JL-6)
        record_key_event(session, device, "reinstated", actor=actor, audit=changed)
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
