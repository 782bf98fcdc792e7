"""Check-out and check-in of recorders: who wore which device when (the JL-20 agency scope reads it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.accounts.models import User
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, NotFound
from server.domain.fleet.devices import get_device
from server.domain.fleet.models import DeviceAssignment, DeviceStatus
from server.domain.fleet.telemetry import latest_health

__all__ = [
    "BatteryTooLow",
    "assignment_history",
    "assignment_to_dict",
    "check_in",
    "check_out",
    "current_assignment",
    "iso_or_none",
]


class BatteryTooLow(Conflict):
    """The device's latest battery reading is below the check-out minimum."""

    code = "battery_too_low"


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


def iso_or_none(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def assignment_to_dict(row: DeviceAssignment) -> dict[str, Any]:
    """JSON view of a check-out."""
    return {
        "id": row.id,
        "device_id": row.device_id,
        "user_id": row.user_id,
        "checked_out_at": iso_or_none(row.checked_out_at),
        "checked_out_by": row.checked_out_by,
        "battery_at_checkout": row.battery_at_checkout,
        "checked_in_at": iso_or_none(row.checked_in_at),
        "checked_in_by": row.checked_in_by,
    }
