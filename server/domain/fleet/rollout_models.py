"""Signed update bundles and staged rollouts of them to device groups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["Rollout", "RolloutTarget", "UpdateBundle"]


class UpdateBundle(Base):
    """A signed agent bundle accepted by the server (verified against a trusted update key on upload)."""

    __tablename__ = "update_bundles"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    # SHA-256 of the whole bundle file: the object key and what devices check their download against.
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(String(16))
    bundle_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    object_key: Mapped[str] = mapped_column(String(255))
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Rollout(Base):
    """One bundle rolled out to a device group in batches; the next batch waits for the previous one."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bundle_id: Mapped[str] = mapped_column(String(32), ForeignKey("update_bundles.id"))
    group_name: Mapped[str] = mapped_column(String(64))
    batch_size: Mapped[int] = mapped_column(Integer)
    # A batch counts as passed when at least this share of its devices succeeded.
    success_threshold_pct: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # running | completed | halted
    current_batch: Mapped[int] = mapped_column(Integer, default=0)
    command_ttl_s: Mapped[int] = mapped_column(Integer)
    base_url: Mapped[str] = mapped_column(String(255))
    halted_reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RolloutTarget(Base):
    """One device of a rollout: its batch and the apply_update command sent to it (once started)."""

    __tablename__ = "rollout_targets"
    __table_args__ = (Index("ix_rollout_targets_rollout", "rollout_id", "batch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(Integer, ForeignKey("rollouts.id"))
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id"))
    batch: Mapped[int] = mapped_column(Integer)
    command_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Capability in the command's download URL: this device, this bundle, while its command is open.
    download_token: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    state: Mapped[str] = mapped_column(String(16))  # pending, then the command's state
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
