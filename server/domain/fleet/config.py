"""Desired configuration per device or group, versioned, and the device shadow (desired vs reported)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from protocol.errors import RemoteProtocolError
from protocol.fleet import DesiredConfig, ReportedConfig, validate_config
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Invalid
from server.domain.fleet.devices import get_device
from server.domain.fleet.models import (
    Device,
    DeviceConfigState,
    DeviceConfigVersion,
    DeviceProfile,
    DeviceStatus,
)

__all__ = [
    "desired_for",
    "group_overview",
    "latest_version_id",
    "pending_publications",
    "record_published",
    "record_reported",
    "set_desired",
    "shadow",
]


def set_desired(
    session: Session, *, scope: str, target: str, settings: dict[str, Any], actor: str
) -> DeviceConfigVersion:
    """Store a new desired configuration for a device or a group; its id is the new version."""
    if scope not in ("device", "group"):
        raise Invalid("scope 只能是 device 或 group", "scope must be device or group")
    if scope == "device":
        get_device(session, target)
    elif not target or len(target) > 64:
        raise Invalid("分组名无效", "invalid group name")
    try:
        clean = validate_config(settings)
    except RemoteProtocolError as exc:
        raise Invalid(f"配置无效：{exc}", f"invalid configuration: {exc}") from None
    row = DeviceConfigVersion(
        scope=scope, target=target, settings=clean, created_at=utcnow(), created_by=actor
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="device.config_desired",
        target_type=scope,
        target_id=target,
        detail={"version": row.id, "settings": clean},
    )
    return row


def _latest(session: Session, scope: str, target: str) -> DeviceConfigVersion | None:
    return session.scalar(
        select(DeviceConfigVersion)
        .where(DeviceConfigVersion.scope == scope, DeviceConfigVersion.target == target)
        .order_by(DeviceConfigVersion.id.desc())
        .limit(1)
    )


def desired_for(session: Session, device_id: str) -> DesiredConfig | None:
    """The effective desired config: the group's, overridden key by key by the device's own.

    Its version is the newest contributing row id, so any change to either raises it.
    """
    profile = session.get(DeviceProfile, device_id)
    rows = [
        r
        for r in (
            _latest(session, "group", profile.group_name) if profile and profile.group_name else None,
            _latest(session, "device", device_id),
        )
        if r is not None
    ]
    if not rows:
        return None
    merged: dict[str, Any] = {}
    for row in rows:
        merged.update(row.settings)
    return DesiredConfig(device_id=device_id, version=max(r.id for r in rows), settings=merged)


def group_overview(session: Session) -> list[dict[str, Any]]:
    """Every group (with members or a desired config), its member count and its latest desired config."""
    counts: dict[str, int] = {
        name: int(count)
        for name, count in session.execute(
            select(DeviceProfile.group_name, func.count())
            .where(DeviceProfile.group_name != "")
            .group_by(DeviceProfile.group_name)
        )
    }
    configured = set(
        session.scalars(select(DeviceConfigVersion.target).where(DeviceConfigVersion.scope == "group"))
    )
    out = []
    for name in sorted(set(counts) | configured):
        row = _latest(session, "group", name) if name in configured else None
        out.append(
            {
                "group": name,
                "members": counts.get(name, 0),
                "desired": None
                if row is None
                else {
                    "version": row.id,
                    "settings": row.settings,
                    "at": row.created_at.isoformat(),
                    "by": row.created_by,
                },
            }
        )
    return out


def latest_version_id(session: Session) -> int:
    """The newest config version of any scope (0 if none), to notice changes cheaply."""
    return int(session.scalar(select(func.max(DeviceConfigVersion.id))) or 0)


def pending_publications(session: Session) -> list[DesiredConfig]:
    """Desired configs newer than what was last published to each in-service device.

    Runs every dispatcher tick, so it first narrows the fleet with three set queries to the devices
    that have any configuration and have not been sent the newest version yet; walking every device
    cost thousands of statements per tick at 2,000 devices (docs/performance.md, Fleet).
    """
    newest = latest_version_id(session)
    if newest == 0:
        return []
    configured_groups = select(DeviceConfigVersion.target).where(DeviceConfigVersion.scope == "group")
    configured = set(
        session.scalars(select(DeviceConfigVersion.target).where(DeviceConfigVersion.scope == "device"))
    ) | set(
        session.scalars(
            select(DeviceProfile.device_id).where(DeviceProfile.group_name.in_(configured_groups))
        )
    )
    if not configured:
        return []
    behind = session.scalars(
        select(Device.id)
        .outerjoin(DeviceConfigState, DeviceConfigState.device_id == Device.id)
        .where(
            Device.status.in_(DeviceStatus.ACCEPTING),
            Device.id.in_(configured),
            (DeviceConfigState.device_id.is_(None)) | (DeviceConfigState.published_version < newest),
        )
    ).all()
    out = []
    for device_id in behind:
        desired = desired_for(session, device_id)
        state = session.get(DeviceConfigState, device_id)
        if desired is not None and (state is None or state.published_version < desired.version):
            out.append(desired)
    return out


def _state(session: Session, device_id: str) -> DeviceConfigState:
    state = session.get(DeviceConfigState, device_id)
    if state is None:
        state = DeviceConfigState(
            device_id=device_id, published_version=0, reported_settings={}, reported_error=""
        )
        session.add(state)
    return state


def record_published(session: Session, device_id: str, version: int) -> None:
    """Remember that ``version`` was published (retained) to the device."""
    state = _state(session, device_id)
    state.published_version = max(state.published_version or 0, version)
    session.flush()


def record_reported(session: Session, msg: ReportedConfig) -> None:
    """Store what the device says it applied (an older version than stored is ignored)."""
    if session.get(Device, msg.device_id) is None:
        return
    state = _state(session, msg.device_id)
    if state.reported_version is not None and msg.version < state.reported_version:
        return
    state.reported_version = msg.version
    state.reported_settings = dict(msg.settings)
    state.reported_error = msg.error
    state.reported_at = utcnow()
    session.flush()


def shadow(session: Session, device_id: str) -> dict[str, Any]:
    """Desired and reported configuration side by side, and whether they agree."""
    get_device(session, device_id)
    desired = desired_for(session, device_id)
    state = session.get(DeviceConfigState, device_id)
    reported_version = state.reported_version if state else None
    return {
        "device_id": device_id,
        "desired": None if desired is None else {"version": desired.version, "settings": desired.settings},
        "published_version": state.published_version if state else 0,
        "reported": None
        if state is None or reported_version is None
        else {
            "version": reported_version,
            "settings": state.reported_settings,
            "error": state.reported_error,
            "at": state.reported_at.isoformat() if state.reported_at else None,
        },
        "in_sync": desired is None
        or (reported_version == desired.version and not (state and state.reported_error)),
    }
