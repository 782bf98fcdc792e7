"""Device telemetry tables: the latest presence per device and a log of health samples."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.models import Base, UTCDateTime, utcnow

__all__ = ["DeviceHealthSample", "DevicePresence"]


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
