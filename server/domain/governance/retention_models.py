"""Tables of retention, legal hold and disposal (JL-19); every one is append-only and a ledger leaf source.

A fact is never changed: a category once assigned stays (retention only lengthens), a hold is lifted by
a release row, and a disposal leaves a tombstone while the ``recordings`` row stays, so the ledger still
proves what was stored and now proves when, why and by whom it was destroyed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["DisposalTombstone", "LegalHold", "LegalHoldRelease", "RetentionAssignment", "RetentionPeriod"]


class RetentionAssignment(Base):
    """A retention category given to one recording (JL-19): who, when, why."""

    __tablename__ = "retention_assignments"
    __table_args__ = (UniqueConstraint("recording_id", "category", name="uq_retention_assignments_category"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recording_id: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"), index=True)
    category: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    assigned_by: Mapped[str] = mapped_column(String(64))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LegalHold(Base):
    """A legal hold on one recording or on every recording linked to one case: nothing under it expires."""

    __tablename__ = "legal_holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    recording_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("recordings.id"), nullable=True)
    case_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("cases.id"), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    placed_by: Mapped[str] = mapped_column(String(64))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LegalHoldRelease(Base):
    """The lifting of one legal hold (once: the unique key refuses a second release)."""

    __tablename__ = "legal_hold_releases"
    __table_args__ = (UniqueConstraint("hold_id", name="uq_legal_hold_releases_hold"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hold_id: Mapped[int] = mapped_column(Integer, ForeignKey("legal_holds.id"))
    reason: Mapped[str] = mapped_column(Text)
    released_by: Mapped[str] = mapped_column(String(64))
    released_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DisposalTombstone(Base):
    """What was destroyed, why, on whose request and whose approval (JL-19); the object is gone after it."""

    __tablename__ = "disposal_tombstones"
    __table_args__ = (UniqueConstraint("recording_id", name="uq_disposal_tombstones_recording"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recording_id: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"))
    request_id: Mapped[int] = mapped_column(Integer, ForeignKey("governance_requests.id"), index=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    device_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(512))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    officer_id: Mapped[str] = mapped_column(String(128))
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    retained_until: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str] = mapped_column(String(64))
    disposed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RetentionPeriod(Base):
    """An agency's own period for a finite retention category (JL-19), never below the legal minimum.

    Append-only: the latest row of an (agency, category) is in force from ``set_at``; earlier rows stay,
    so a recording keeps the longest period in force at any time since it started (``retention_of``).
    """

    __tablename__ = "retention_periods"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    category: Mapped[str] = mapped_column(String(32))
    days: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
