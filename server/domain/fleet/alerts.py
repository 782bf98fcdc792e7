"""Fleet alerts: evaluated periodically (the runner's housekeeping thread) and stored in device_alerts.

Each rule looks at what ingest already stores (presence, health, the security log) and yields the
conditions that hold now; :func:`evaluate_alerts` opens an alert for a new condition, refreshes an open
one, and clears those that no longer hold, so an admin sees both the current state and its history.

Evaluations run hourly in the holder of the ``hourly-alerts`` lease and on demand (an admin's
"evaluate now", an integrity finding by the scrubber or an API or workspace read, ``zfjl-server
scrub``), possibly in several processes at once. Two evaluations reading the open alerts at the same
time would each open the same new one, so every evaluation first takes a lock named after that job
(:func:`server.domain.leases.exclusive`) and the database allows one open alert per device and kind
(migration 0035).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from server.domain import leases
from server.domain.base import utcnow
from server.domain.evidence.models import IngestRejection, Recording
from server.domain.evidence.scrub import open_findings_count
from server.domain.fleet.models import Device, DeviceAlert, DeviceStatus
from server.domain.fleet.telemetry import latest_health
from server.domain.fleet.telemetry_models import DeviceChainHead, DeviceHealthSample, DevicePresence

__all__ = [
    "ALERTS_JOB",
    "BACKLOG_ALERT_S",
    "CHAIN_HEAD_GRACE",
    "CLOCK_DRIFT_S_PER_DAY",
    "INTEGRITY_CODES",
    "LOW_STORAGE_BYTES",
    "AlertCondition",
    "alert_to_dict",
    "evaluate_alerts",
    "open_alerts",
]

# The hourly job's lease; every evaluation, on demand too, works under a lock of the same name.
ALERTS_JOB = "hourly-alerts"
# JL-17: records must be stored within 24 h; warn at 20 h so there is time to fetch the device.
BACKLOG_ALERT_S = 20 * 3600
LOW_STORAGE_BYTES = 2 * 1024**3
# Device clocks stamp the evidence (JL-18 "when"): drift beyond 3 s per day needs attention.
CLOCK_DRIFT_S_PER_DAY = 3.0
# Security-log codes that mean the evidence chain or a signature failed.
INTEGRITY_CODES = ("bad_signature", "hash_mismatch", "size_mismatch", "segment_conflict", "device_mismatch")
_INTEGRITY_WINDOW = timedelta(hours=24)
# A device's signed chain head may run ahead of what is stored while it uploads; JL-17 gives 24 h.
CHAIN_HEAD_GRACE = timedelta(hours=24)
# A head reported with the health sample that says "nothing pending" needs no grace.
_SAME_REPORT = timedelta(minutes=5)


@dataclass(frozen=True, kw_only=True)
class AlertCondition:
    """A condition that holds now for a device."""

    device_id: str
    kind: str
    severity: str
    message: str
    message_en: str
    detail: dict[str, Any] = field(default_factory=dict)


def _chain_head_conditions(
    session: Session, device: Device, now: datetime, grace: timedelta, health: DeviceHealthSample | None
) -> list[AlertCondition]:
    """Finding 1: the device's signed chain head names a segment we do not hold (JL-19).

    A head whose hash differs from the stored segment at that sequence is an alert at once; a head beyond
    the newest stored segment is one after ``grace`` (the device may still be uploading), or at once when
    the same report says nothing is pending on the device — so a deleted newest recordings row is caught.
    """
    out: list[AlertCondition] = []
    mismatch = session.execute(
        select(DeviceChainHead.sequence, DeviceChainHead.manifest_hash, Recording.manifest_hash)
        .join(
            Recording,
            and_(
                Recording.device_id == DeviceChainHead.device_id,
                Recording.sequence == DeviceChainHead.sequence,
            ),
        )
        .where(
            DeviceChainHead.device_id == device.id, Recording.manifest_hash != DeviceChainHead.manifest_hash
        )
        .order_by(DeviceChainHead.sequence.desc())
        .limit(1)
    ).first()
    if mismatch is not None:
        sequence, reported, stored = mismatch
        out.append(
            AlertCondition(
                device_id=device.id,
                kind="chain_head_unknown",
                severity="critical",
                message=f"设备报告的第 {sequence} 段哈希与服务器存储的不一致",
                message_en=f"the device's signed head names a hash for segment {sequence} we do not hold",
                detail={"sequence": sequence, "reported": reported, "stored": stored},
            )
        )
    stored_max = session.scalar(select(func.max(Recording.sequence)).where(Recording.device_id == device.id))
    beyond = select(DeviceChainHead).where(
        DeviceChainHead.device_id == device.id,
        DeviceChainHead.sequence > (-1 if stored_max is None else stored_max),
    )
    overdue = session.scalar(
        beyond.where(DeviceChainHead.first_reported_at <= now - grace)
        .order_by(DeviceChainHead.sequence.desc())
        .limit(1)
    )
    if overdue is None and health is not None and health.backlog_segments == 0:
        overdue = session.scalar(
            beyond.where(DeviceChainHead.last_reported_at >= health.received_at - _SAME_REPORT)
            .order_by(DeviceChainHead.sequence.desc())
            .limit(1)
        )
    if overdue is not None:
        out.append(
            AlertCondition(
                device_id=device.id,
                kind="chain_head_missing",
                severity="critical",
                message=f"设备已记录到第 {overdue.sequence} 段，服务器只存有到第 {stored_max} 段",
                message_en=(
                    f"the device signed segment {overdue.sequence} as its head since "
                    f"{overdue.first_reported_at.isoformat()}; the server holds up to {stored_max}"
                ),
                detail={
                    "device_head": overdue.sequence,
                    "manifest_hash": overdue.manifest_hash,
                    "stored_head": stored_max,
                    "first_reported_at": overdue.first_reported_at.isoformat(),
                },
            )
        )
    return out


def _conditions(
    session: Session,
    device: Device,
    now: datetime,
    offline_after: timedelta,
    chain_head_grace: timedelta = CHAIN_HEAD_GRACE,
) -> list[AlertCondition]:
    out: list[AlertCondition] = []
    presence = session.get(DevicePresence, device.id)
    if presence is not None and presence.state == "offline" and now - presence.received_at > offline_after:
        hours = round((now - presence.received_at).total_seconds() / 3600, 1)
        out.append(
            AlertCondition(
                device_id=device.id,
                kind="offline",
                severity="warning",
                message=f"设备已离线 {hours} 小时",
                message_en=f"device offline for {hours} h",
                detail={"since": presence.received_at.isoformat()},
            )
        )
    health = latest_health(session, device.id)
    if health is not None:
        age = health.oldest_pending_age_s
        if age is not None and age >= BACKLOG_ALERT_S:
            out.append(
                AlertCondition(
                    device_id=device.id,
                    kind="backlog",
                    severity="critical",
                    message=f"有录像 {age / 3600:.1f} 小时未上传，即将超过 24 小时存储时限（JL-17）",
                    message_en=f"a recording has waited {age / 3600:.1f} h; the 24 h limit (JL-17) is near",
                    detail={"oldest_pending_age_s": age, "backlog_segments": health.backlog_segments},
                )
            )
        if health.free_bytes is not None and health.free_bytes < LOW_STORAGE_BYTES:
            out.append(
                AlertCondition(
                    device_id=device.id,
                    kind="low_storage",
                    severity="warning",
                    message=f"存储空间不足：剩余 {health.free_bytes // 1024**2} MiB",
                    message_en=f"low storage: {health.free_bytes // 1024**2} MiB free",
                    detail={"free_bytes": health.free_bytes},
                )
            )
        drift = _clock_drift_per_day(health.at, health.received_at, health.extra)
        if drift is not None and abs(drift) > CLOCK_DRIFT_S_PER_DAY:
            out.append(
                AlertCondition(
                    device_id=device.id,
                    kind="clock_drift",
                    severity="warning",
                    message=f"设备时钟偏差 {drift:+.1f} 秒/天",
                    message_en=f"device clock drifts {drift:+.1f} s/day",
                    detail={"drift_s_per_day": drift},
                )
            )
    out.extend(_chain_head_conditions(session, device, now, chain_head_grace, health))
    failures = session.scalar(
        select(func.count(IngestRejection.id)).where(
            IngestRejection.device_id == device.id,
            IngestRejection.code.in_(INTEGRITY_CODES),
            IngestRejection.at >= now - _INTEGRITY_WINDOW,
        )
    )
    if failures:
        out.append(
            AlertCondition(
                device_id=device.id,
                kind="integrity",
                severity="critical",
                message=f"24 小时内有 {failures} 次签名或哈希链校验失败",
                message_en=f"{failures} signature or chain failures in 24 h",
                detail={"count": failures},
            )
        )
    broken = open_findings_count(session, device.id)  # JL-6: stored evidence failed a check
    if broken:
        out.append(
            AlertCondition(
                device_id=device.id,
                kind="evidence_integrity",
                severity="critical",
                message=f"有 {broken} 项存储证据与签名清单不符或缺失（见哈希链报告）",
                message_en=f"{broken} stored evidence findings: missing or not matching the signed manifest",
                detail={"open_findings": broken},
            )
        )
    return out


def _clock_drift_per_day(device_at: datetime, received_at: datetime, extra: dict[str, Any]) -> float | None:
    """Drift in s/day: the agent's own estimate (``extra.clock_drift_s_per_day``) or the offset per report.

    Without the agent's estimate, the offset between the device's stamp and our receipt is itself a
    drift of at least that much since the last sync; network delay is far below the 3 s threshold.
    """
    reported = extra.get("clock_drift_s_per_day") if isinstance(extra, dict) else None
    if isinstance(reported, int | float) and not isinstance(reported, bool):
        return float(reported)
    return (device_at - received_at).total_seconds()


def evaluate_alerts(
    session: Session,
    *,
    offline_after: timedelta,
    now: datetime | None = None,
    chain_head_grace: timedelta = CHAIN_HEAD_GRACE,
) -> dict[str, int]:
    """Open, refresh and clear alerts for every in-service device; return counts.

    Waits for any other evaluation (the hourly job, another process's request) to commit first.
    """
    leases.exclusive(session, ALERTS_JOB)
    now = now or utcnow()
    opened = cleared = 0
    open_rows = {
        (row.device_id, row.kind): row
        for row in session.scalars(select(DeviceAlert).where(DeviceAlert.cleared_at.is_(None)))
    }
    holding: set[tuple[str, str]] = set()
    accepting = select(Device).where(Device.status.in_(DeviceStatus.ACCEPTING)).order_by(Device.id)
    for device in session.scalars(accepting):
        for cond in _conditions(session, device, now, offline_after, chain_head_grace):
            key = (cond.device_id, cond.kind)
            holding.add(key)
            row = open_rows.get(key)
            if row is None:
                session.add(
                    DeviceAlert(
                        device_id=cond.device_id,
                        kind=cond.kind,
                        severity=cond.severity,
                        message=cond.message,
                        message_en=cond.message_en,
                        detail=cond.detail,
                        raised_at=now,
                        last_seen_at=now,
                    )
                )
                opened += 1
            else:
                row.message, row.message_en, row.detail, row.last_seen_at = (
                    cond.message,
                    cond.message_en,
                    cond.detail,
                    now,
                )
    for key, row in open_rows.items():
        if key not in holding:
            row.cleared_at = now
            cleared += 1
    session.flush()
    return {"opened": opened, "cleared": cleared, "open": len(holding)}


def open_alerts(session: Session, device_id: str | None = None) -> list[DeviceAlert]:
    """Open alerts, critical first, then newest."""
    query = select(DeviceAlert).where(DeviceAlert.cleared_at.is_(None))
    if device_id is not None:
        query = query.where(DeviceAlert.device_id == device_id)
    rows = list(session.scalars(query.order_by(DeviceAlert.raised_at.desc(), DeviceAlert.id.desc())))
    return sorted(rows, key=lambda r: r.severity != "critical")


def alert_to_dict(row: DeviceAlert) -> dict[str, Any]:
    """JSON view of an alert."""
    return {
        "id": row.id,
        "device_id": row.device_id,
        "kind": row.kind,
        "severity": row.severity,
        "message": row.message,
        "message_en": row.message_en,
        "detail": row.detail,
        "raised_at": row.raised_at.isoformat(),
        "last_seen_at": row.last_seen_at.isoformat(),
        "cleared_at": row.cleared_at.isoformat() if row.cleared_at else None,
    }
