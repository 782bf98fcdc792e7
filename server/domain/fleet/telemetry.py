"""Telemetry from recorders: presence, health samples and signed chain heads (JL-17, JL-23).

Each function writes into the caller's session; the ingest edge owns the transaction and retries the
one race these rows have (two workers inserting a device's first row at once).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.errors import ProtocolError
from protocol.manifest import parse_time
from protocol.messages import ChainHead, DeviceHealth, Presence
from server.domain.fleet.telemetry_models import DeviceChainHead, DeviceHealthSample, DevicePresence

__all__ = ["device_time", "latest_health", "record_chain_head", "record_health", "record_presence"]

# A device clock this far ahead would sort its samples above every real one; the server's time is kept.
_MAX_CLOCK_LEAD = timedelta(days=1)


def device_time(text: str) -> datetime | None:
    """A device-reported time (canonical manifest form or ISO 8601), tz-aware UTC; None if unusable."""
    if not text:
        return None
    try:
        return parse_time(text)
    except ProtocolError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record_presence(session: Session, msg: Presence, *, received: datetime) -> None:
    """Keep a device's latest presence; an older one redelivered (retained) never wins."""
    at = device_time(msg.at) or received
    row = session.get(DevicePresence, msg.device_id)
    if row is None:
        session.add(
            DevicePresence(
                device_id=msg.device_id,
                state=msg.state.value,
                at=at,
                agent_version=msg.agent_version[:64],
                received_at=received,
            )
        )
    elif at >= row.at:
        row.state, row.at = msg.state.value, at
        row.agent_version, row.received_at = msg.agent_version[:64], received


def record_health(session: Session, msg: DeviceHealth, *, received: datetime) -> None:
    """Append one health sample (backlog, storage, battery: the JL-17 24-hour rule reads these)."""
    at = device_time(msg.at) or received
    if at > received + _MAX_CLOCK_LEAD:
        at = received
    session.add(
        DeviceHealthSample(
            device_id=msg.device_id,
            at=at,
            received_at=received,
            backlog_bytes=msg.backlog_bytes,
            backlog_segments=msg.backlog_segments,
            oldest_pending_age_s=msg.oldest_pending_age_s,
            free_bytes=msg.free_bytes,
            battery_pct=msg.battery_pct,
            recording=msg.recording,
            extra=msg.extra,
        )
    )


def record_chain_head(session: Session, head: ChainHead, *, now: datetime) -> None:
    """Remember a chain head the caller has verified; the alert rules compare it with what is stored."""
    row = session.scalar(
        select(DeviceChainHead).where(
            DeviceChainHead.device_id == head.device_id,
            DeviceChainHead.sequence == head.sequence,
            DeviceChainHead.manifest_hash == head.manifest_hash,
        )
    )
    if row is None:
        session.add(
            DeviceChainHead(
                device_id=head.device_id,
                sequence=head.sequence,
                manifest_hash=head.manifest_hash,
                first_reported_at=now,
                last_reported_at=now,
            )
        )
    else:
        row.last_reported_at = now


def latest_health(session: Session, device_id: str) -> DeviceHealthSample | None:
    """The device's most recent health report."""
    return session.scalar(
        select(DeviceHealthSample)
        .where(DeviceHealthSample.device_id == device_id)
        .order_by(DeviceHealthSample.at.desc(), DeviceHealthSample.id.desc())
        .limit(1)
    )
