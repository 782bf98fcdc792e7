"""Read-only figures for the operators' ``/metrics``: stored evidence, refusals, backlog, open alerts.

Queries only (no writes, no commit): the web edge turns them into Prometheus metric families.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.evidence.models import IngestRejection, Recording
from server.domain.fleet.models import DeviceAlert
from server.domain.fleet.telemetry_models import DeviceHealthSample

__all__ = [
    "Backlog",
    "latest_backlogs",
    "newest_recording_id",
    "open_alerts_by_kind",
    "rejections_by_code",
    "stored_latencies",
    "stored_totals",
]


@dataclass(frozen=True)
class Backlog:
    """A device's unsent segments as its latest health report gave them (JL-17)."""

    device_id: str
    segments: int
    size: int
    oldest_pending_age_s: float | None


def stored_totals(session: Session) -> tuple[int, int]:
    """(segments, bytes) stored."""
    count, total = session.execute(
        select(func.count(Recording.id), func.coalesce(func.sum(Recording.size), 0))
    ).one()
    return int(count), int(total)


def newest_recording_id(session: Session) -> int:
    """The highest recording id (0 when none is stored)."""
    return int(session.scalar(select(func.coalesce(func.max(Recording.id), 0))) or 0)


def stored_latencies(session: Session, after_id: int, limit: int) -> list[tuple[int, float]]:
    """(id, seconds from the end of recording to stored) of recordings above ``after_id``, oldest first."""
    rows = session.execute(
        select(Recording.id, Recording.ended_at, Recording.stored_at)
        .where(Recording.id > after_id)
        .order_by(Recording.id)
        .limit(limit)
    ).all()
    return [(int(rec_id), _seconds(ended_at, stored_at)) for rec_id, ended_at, stored_at in rows]


def _seconds(ended_at: datetime, stored_at: datetime) -> float:
    return max(0.0, (stored_at - ended_at).total_seconds())


def rejections_by_code(session: Session) -> dict[str, int]:
    """Refused uploads by code, a flood summary counted by its occurrences."""
    rows = session.execute(
        select(IngestRejection.code, func.sum(IngestRejection.occurrences)).group_by(IngestRejection.code)
    )
    return {str(code): int(occurrences or 0) for code, occurrences in rows}


def latest_backlogs(session: Session) -> list[Backlog]:
    """Each device's backlog from its most recently received health report."""
    latest = select(func.max(DeviceHealthSample.id)).group_by(DeviceHealthSample.device_id)
    samples = session.scalars(
        select(DeviceHealthSample).where(DeviceHealthSample.id.in_(latest)).order_by(DeviceHealthSample.device_id)
    )
    return [
        Backlog(s.device_id, s.backlog_segments, s.backlog_bytes, s.oldest_pending_age_s) for s in samples
    ]


def open_alerts_by_kind(session: Session) -> dict[str, int]:
    """Open (not cleared) device alerts by kind."""
    rows = session.execute(
        select(DeviceAlert.kind, func.count(DeviceAlert.id))
        .where(DeviceAlert.cleared_at.is_(None))
        .group_by(DeviceAlert.kind)
    )
    return {str(kind): int(count) for kind, count in rows}
