"""Read-only fleet queries the admin and workspace pages show: health series, a device's alerts, the
allow-list, recent rollouts, group names, who a device is or may be checked out to, and which devices a
caller may read.

Each takes the caller's session and writes nothing; the pages shape and render what they return, so no
page module runs SQL of its own (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.accounts.models import User
from server.domain.fleet.models import Device, DeviceAlert, DeviceProfile, SerialAllowlistEntry
from server.domain.fleet.rollout_models import Rollout
from server.domain.fleet.telemetry_models import DeviceHealthSample
from server.domain.people.models import Officer
from server.domain.people.service import Caller
from server.domain.scope import device_in_scope

__all__ = [
    "CHECKOUT_ROLES",
    "HealthPoint",
    "allowlist_entries",
    "checkout_candidates",
    "device_alerts",
    "group_names",
    "health_since",
    "recent_rollouts",
    "user_labels",
    "visible_device_ids",
]

# Accounts a recorder can be checked out to: the officers who wear it and their auxiliaries.
CHECKOUT_ROLES = ("officer", "auxiliary")
# A bound on the check-out choice list, so a very large agency does not make the page unbounded.
_CANDIDATES_MAX = 1000


@dataclass(frozen=True, slots=True)
class HealthPoint:
    """One health report as the charts need it (JL-17 backlog age, storage, battery); None = not reported."""

    at: datetime
    battery_pct: int | None
    free_bytes: int | None
    oldest_pending_age_s: float | None


def health_since(session: Session, device_id: str, start: datetime) -> list[HealthPoint]:
    """The device's health reports taken at or after ``start``, oldest first."""
    rows = session.execute(
        select(
            DeviceHealthSample.at,
            DeviceHealthSample.battery_pct,
            DeviceHealthSample.free_bytes,
            DeviceHealthSample.oldest_pending_age_s,
        )
        .where(DeviceHealthSample.device_id == device_id, DeviceHealthSample.at >= start)
        .order_by(DeviceHealthSample.at, DeviceHealthSample.id)
    )
    return [HealthPoint(at, battery, free, age) for at, battery, free, age in rows]


def device_alerts(session: Session, device_id: str, *, limit: int) -> list[DeviceAlert]:
    """A device's alerts: the open ones first, then the most recently raised."""
    return list(
        session.scalars(
            select(DeviceAlert)
            .where(DeviceAlert.device_id == device_id)
            .order_by(DeviceAlert.cleared_at.is_not(None), DeviceAlert.raised_at.desc())
            .limit(limit)
        )
    )


def allowlist_entries(session: Session, *, limit: int) -> list[SerialAllowlistEntry]:
    """The serial allow-list, most recently added first."""
    return list(
        session.scalars(
            select(SerialAllowlistEntry).order_by(SerialAllowlistEntry.added_at.desc()).limit(limit)
        )
    )


def recent_rollouts(session: Session, *, limit: int) -> list[Rollout]:
    """The newest rollouts first."""
    return list(session.scalars(select(Rollout).order_by(Rollout.id.desc()).limit(limit)))


def group_names(session: Session) -> list[str]:
    """Every device group in use (a device's group is set in its profile), sorted."""
    return sorted({name for name in session.scalars(select(DeviceProfile.group_name).distinct()) if name})


def user_labels(session: Session, user_ids: set[int]) -> dict[int, str]:
    """``username`` of each user id, ``officer name（username）`` for an officer's account; two queries."""
    if not user_ids:
        return {}
    labels: dict[int, str] = {
        uid: name
        for uid, name in session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
    }
    for uid, name in session.execute(
        select(Officer.user_id, Officer.name).where(Officer.user_id.in_(user_ids))
    ):
        if uid is not None:
            labels[uid] = f"{name}（{labels.get(uid, uid)}）"
    return labels


def checkout_candidates(session: Session) -> list[tuple[int, str]]:
    """Active officer and auxiliary accounts a device can be checked out to, as ``(id, label)`` by label."""
    ids = set(
        session.scalars(
            select(User.id).where(User.active.is_(True), User.role.in_(CHECKOUT_ROLES)).limit(_CANDIDATES_MAX)
        )
    )
    return sorted(user_labels(session, ids).items(), key=lambda item: item[1])


def visible_device_ids(session: Session, caller: Caller) -> set[str]:
    """Ids of the devices whose chain the caller may read (JL-20: an agency that ever had it checked out)."""
    # The scope clause correlates on whatever names the device: here the column, one query for all.
    clause = device_in_scope(caller, Device.id)  # type: ignore[arg-type]
    return set(session.scalars(select(Device.id).where(clause)))
