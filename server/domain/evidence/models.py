"""Evidence tables: stored segments, rejections, signed receipts and scrub findings (JL-6, JL-23)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["IngestRejection", "Recording", "ScrubFinding", "SegmentReceipt"]


class Recording(Base):
    """One durably stored, signed evidence segment."""

    __tablename__ = "recordings"
    __table_args__ = (
        UniqueConstraint("device_id", "sequence", name="uq_recordings_device_sequence"),
        UniqueConstraint("manifest_hash", name="uq_recordings_manifest_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id"))
    sequence: Mapped[int] = mapped_column(BigInteger)
    file_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    media_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    officer_id: Mapped[str] = mapped_column(String(128), default="")
    session_id: Mapped[str] = mapped_column(String(128), default="")
    manifest_text: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    manifest_hash: Mapped[str] = mapped_column(String(64))
    prev_manifest_hash: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(512))
    storage_backend: Mapped[str] = mapped_column(String(16))
    verified: Mapped[bool] = mapped_column(Boolean)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IngestRejection(Base):
    """A refused upload: the security log (bad signatures, unknown devices, conflicts, hash mismatches)."""

    __tablename__ = "ingest_rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Not a foreign key: uploads from unknown devices must be logged too.
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    manifest_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # How many refusals the row stands for: 1, or a flood window's sum (server/ingest/service.py).
    occurrences: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class SegmentReceipt(Base):
    """Append-only proof that a segment was committed (and acknowledged) at this sequence."""

    __tablename__ = "segment_receipts"
    __table_args__ = (UniqueConstraint("device_id", "sequence", name="uq_segment_receipts_device_sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    manifest_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScrubFinding(Base):
    """Append-only result of an integrity check of stored evidence; ``code == "ok"`` clears earlier ones."""

    __tablename__ = "scrub_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    recording_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    sequence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    code: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
