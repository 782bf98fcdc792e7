"""Device telemetry tables: the latest presence per device and a log of health samples."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["DeviceChainHead", "DeviceHealthSample", "DevicePresence"]


class DevicePresence(Base):
    """A device's latest presence (online/offline), as it last reported it."""

    __tablename__ = "device_presence"

    # Not foreign keys, like ingest_rejections: telemetry must never block device administration.
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceHealthSample(Base):
    """One periodic health report: the upload backlog (JL-17), storage, battery."""

    __tablename__ = "device_health"
    __table_args__ = (Index("ix_device_health_device_at", "device_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    backlog_bytes: Mapped[int] = mapped_column(BigInteger)
    backlog_segments: Mapped[int] = mapped_column(Integer)
    oldest_pending_age_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    free_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    battery_pct: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recording: Mapped[bool] = mapped_column(Boolean, default=False)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeviceChainHead(Base):
    """A chain head a device signed in its health (sequence + manifest hash) and when we first heard it.

    Compared with ``recordings`` by the alert rules: a head not stored after a grace period, or a hash we
    never stored, means a segment is missing on our side (finding 1; JL-19).
    """

    __tablename__ = "device_chain_heads"
    __table_args__ = (
        UniqueConstraint("device_id", "sequence", "manifest_hash", name="uq_device_chain_heads"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    manifest_hash: Mapped[str] = mapped_column(String(64))
    first_reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
