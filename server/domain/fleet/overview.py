"""The fleet list: each device with status, profile, presence, latest health, assignment and open alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.fleet.assignments import current_assignment, iso_or_none
from server.domain.fleet.models import Device, DeviceAlert, DeviceAssignment, DeviceProfile
from server.domain.fleet.telemetry import latest_health
from server.domain.fleet.telemetry_models import DeviceHealthSample, DevicePresence

__all__ = ["device_overview", "list_overview"]


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
        "presence_at": iso_or_none(presence.at) if presence else None,
        "battery_pct": health.battery_pct if health else None,
        "free_bytes": health.free_bytes if health else None,
        "backlog_segments": health.backlog_segments if health else None,
        "oldest_pending_age_s": health.oldest_pending_age_s if health else None,
        "health_at": iso_or_none(health.at) if health else None,
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
