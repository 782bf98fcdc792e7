"""Device registry: which recorder holds which Ed25519 key."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.errors import LocalProtocolError
from protocol.key_rotation import KeyRotation
from protocol.topics import valid_device_id
from server.domain.audit import AuditLog, write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound, ServiceError
from server.domain.fleet.models import Device, DeviceKey, DeviceStatus
from server.errors import ErrorKind
from server.infra.mqtt_acl import RESERVED_PREFIXES, is_reserved_name

__all__ = [
    "DeviceIdReserved",
    "DeviceKeyConflict",
    "RotationUnsigned",
    "check_device_id_not_reserved",
    "device_key_and_status",
    "device_to_dict",
    "get_device",
    "list_devices",
    "record_key_event",
    "register_device",
    "rotate_key",
]


class DeviceKeyConflict(Conflict):
    """The device id is already registered with another key."""

    code = "device_key_conflict"


class RotationUnsigned(ServiceError):
    """A key rotation not signed by the device's current key: refused, and the attempt stays audited."""

    code = "rotation_unsigned"
    kind = ErrorKind.FORBIDDEN
    keeps_writes = True


class DeviceIdReserved(Invalid):
    """The device id is a name the system uses itself (the ingest or service accounts, broker files)."""

    code = "device_id_reserved"


def check_device_id_not_reserved(device_id: str) -> None:
    """Refuse a device id that belongs to the system: a device named ``zfjl-ingest`` would become the
    ingest account in the broker files (issue finding 8)."""
    if isinstance(device_id, str) and is_reserved_name(device_id):
        prefixes = " / ".join(RESERVED_PREFIXES)
        raise DeviceIdReserved(
            f"设备编号 {device_id!r} 为系统保留名称（不得以 {prefixes} 开头）",
            f"device id {device_id!r} is reserved for the system (may not start with {prefixes})",
        )


def key_fingerprint(public_key_raw: bytes) -> str:
    """SHA-256 hex of the raw public key."""
    return hashlib.sha256(public_key_raw).hexdigest()


def register_device(
    session: Session,
    device_id: str,
    public_key_raw: bytes,
    serial: str | None = None,
    model: str | None = None,
    *,
    actor: str = "system",
    client_ip: str | None = None,
) -> Device:
    """Register a device; idempotent for the same key, DeviceKeyConflict for another key."""
    if not isinstance(device_id, str) or not valid_device_id(device_id):
        raise Invalid(f"设备编号无效：{device_id!r}", f"invalid device id {device_id!r}")
    check_device_id_not_reserved(device_id)
    if not isinstance(public_key_raw, bytes) or len(public_key_raw) != 32:
        raise Invalid("公钥必须是 32 字节的 Ed25519 原始公钥", "public key must be a raw 32-byte Ed25519 key")
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw)
    except ValueError:
        raise Invalid("公钥不是有效的 Ed25519 公钥", "not a valid Ed25519 public key") from None
    existing = session.get(Device, device_id)
    if existing is not None:
        if existing.public_key != public_key_raw:
            write_audit(
                session,
                actor=actor,
                action="device.register_conflict",
                target_type="device",
                target_id=device_id,
                detail={"key_fingerprint": key_fingerprint(public_key_raw)},
                client_ip=client_ip,
            )
            raise DeviceKeyConflict(
                f"设备 {device_id} 已使用其他公钥注册", f"device {device_id} is registered with another key"
            )
        return existing
    device = Device(
        id=device_id,
        public_key=public_key_raw,
        key_fingerprint=key_fingerprint(public_key_raw),
        # Provisioned until its first accepted segment makes it active (see evidence.commit_segment).
        status=DeviceStatus.PROVISIONED,
        serial=serial,
        model=model,
        registered_at=utcnow(),
        registered_by=actor,
    )
    session.add(device)
    session.flush()
    # The audit row first: the key-history entry names it as what authorises it (JL-6, evidence/keys.py).
    registered = write_audit(
        session,
        actor=actor,
        action="device.register",
        target_type="device",
        target_id=device_id,
        detail={"key_fingerprint": device.key_fingerprint, "serial": serial, "model": model},
        client_ip=client_ip,
    )
    record_key_event(session, device, "provisioned", actor=actor, audit=registered)
    return device


def record_key_event(
    session: Session,
    device: Device,
    event: str,
    *,
    actor: str,
    audit: AuditLog,
    rotation_signature: bytes | None = None,
) -> DeviceKey:
    """Append to the device's key history (JL-6): provisioned/reinstated/rotated open a validity period,
    revoked closes it. The history is append-only, so a key later written over ``devices.public_key`` is
    caught; each entry names ``audit``, the row of the act that wrote it, and a rotation carries the old
    key's signature of the change, so an entry written straight into the database is told apart
    (``evidence.keys.authorize``).
    """
    now = utcnow()
    entry = DeviceKey(
        device_id=device.id,
        public_key=bytes(device.public_key),
        key_fingerprint=key_fingerprint(bytes(device.public_key)),
        valid_from=device.registered_at if event == "provisioned" else now,
        valid_until=now if event == "revoked" else None,
        event=event,
        recorded_by=actor[:64],
        recorded_at=now,
        audit_id=audit.id,
        rotation_signature=rotation_signature,
    )
    session.add(entry)
    session.flush()
    return entry


def rotate_key(
    session: Session,
    device_id: str,
    new_public_key: bytes,
    signature: bytes,
    *,
    actor: str,
    client_ip: str | None = None,
) -> Device:
    """Replace a recorder's signing key with one its current key signed over (JL-6, protocol.key_rotation).

    The old key's validity ends now and the new key's starts now, both entries naming one audit row; the
    new key's entry keeps the signature, so anyone can check later that the recorder consented. Refused
    without a valid signature by the current key (``rotation_unsigned``), for an invalid key, and for a
    recorder out of service (a lost recorder does not rotate itself back into use).
    """
    device = get_device(session, device_id)
    if not isinstance(new_public_key, bytes) or len(new_public_key) != 32:
        raise Invalid("公钥必须是 32 字节的 Ed25519 原始公钥", "public key must be a raw 32-byte Ed25519 key")
    try:
        Ed25519PublicKey.from_public_bytes(new_public_key)
        rotation = KeyRotation(
            device_id=device.id, old_public_key=bytes(device.public_key), new_public_key=new_public_key
        )
    except (ValueError, LocalProtocolError) as exc:
        raise Invalid(f"新公钥无效：{exc}", f"invalid new key: {exc}") from None
    if device.status in DeviceStatus.OUT_OF_SERVICE:
        raise Conflict(
            f"设备 {device_id} 已停用（{device.status}），不能更换密钥",
            f"device {device_id} is out of service ({device.status}) and cannot rotate its key",
        )
    if not rotation.verify(signature):
        write_audit(
            session,
            actor=actor,
            action="device.key_rotate_refused",
            target_type="device",
            target_id=device.id,
            detail={"key_fingerprint": key_fingerprint(new_public_key)},
            client_ip=client_ip,
        )
        raise RotationUnsigned(
            "更换密钥须由设备当前密钥签名", "a key rotation must be signed by the device's current key"
        )
    rotated = write_audit(
        session,
        actor=actor,
        action="device.key_rotate",
        target_type="device",
        target_id=device.id,
        detail={
            "old_key_fingerprint": device.key_fingerprint,
            "key_fingerprint": key_fingerprint(new_public_key),
        },
        client_ip=client_ip,
    )
    record_key_event(session, device, "revoked", actor=actor, audit=rotated)
    device.public_key = new_public_key
    device.key_fingerprint = key_fingerprint(new_public_key)
    record_key_event(session, device, "rotated", actor=actor, audit=rotated, rotation_signature=signature)
    return device


def device_key_and_status(session: Session, device_id: str) -> tuple[bytes, str] | None:
    """A registered device's public key and status (what ingest checks every message against), or None."""
    row = session.get(Device, device_id)
    return None if row is None else (bytes(row.public_key), row.status)


def get_device(session: Session, device_id: str) -> Device:
    """The device, or NotFound."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"设备 {device_id} 不存在", f"device {device_id} not found")
    return device


def list_devices(session: Session) -> list[Device]:
    """All devices by id."""
    return list(session.scalars(select(Device).order_by(Device.id)))


def device_to_dict(device: Device) -> dict[str, object]:
    """JSON view of a device (the public key as base64)."""
    import base64

    return {
        "device_id": device.id,
        "public_key": base64.b64encode(device.public_key).decode("ascii"),
        "key_fingerprint": device.key_fingerprint,
        "status": device.status,
        "serial": device.serial,
        "model": device.model,
        "registered_at": device.registered_at.isoformat(),
        "registered_by": device.registered_by,
    }
