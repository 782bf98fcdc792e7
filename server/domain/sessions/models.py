"""Enforcement sessions (JL-16): signed session events, interruption markers, written explanations.

Every table here is append-only — the database refuses UPDATE and DELETE (migration 0003) — so a
correction is a new row. What changes over time (is a marker closed, explained?) is derived on read
from the events, the stored recordings and the signatures.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = [
    "APPEND_ONLY_TABLES",
    "EnforcementSessionRecord",
    "ExplanationSignature",
    "InterruptionMarker",
    "SessionEventRecord",
    "WrittenExplanation",
]

APPEND_ONLY_TABLES: tuple[str, ...] = (
    "enforcement_sessions",
    "session_events",
    "interruption_markers",
    "written_explanations",
    "explanation_signatures",
)


class EnforcementSessionRecord(Base):
    """One enforcement session of one device, known from its first event to arrive."""

    __tablename__ = "enforcement_sessions"
    __table_args__ = (
        UniqueConstraint("device_id", "session_id", name="uq_enforcement_sessions_device_session"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id"))
    session_id: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SessionEventRecord(Base):
    """One signed session event as received: the exact signed text, its signature and its fields."""

    __tablename__ = "session_events"
    __table_args__ = (
        UniqueConstraint("device_id", "event_id", name="uq_session_events_device_event"),
        UniqueConstraint("device_id", "seq", name="uq_session_events_device_seq"),
        Index("ix_session_events_session_seq", "enforcement_session_id", "seq"),
        Index("ix_session_events_kind_at", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enforcement_session_id: Mapped[int] = mapped_column(Integer, ForeignKey("enforcement_sessions.id"))
    device_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    officer_id: Mapped[str] = mapped_column(String(128), default="")
    case_id: Mapped[str] = mapped_column(String(128), default="")
    marker_id: Mapped[str] = mapped_column(String(64), default="")
    cause: Mapped[str] = mapped_column(String(128), default="")
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    bookmark_type: Mapped[str] = mapped_column(String(128), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    event_text: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InterruptionMarker(Base):
    """An interruption as opened by its signed ``interrupted`` event (JL-16); closing is derived."""

    __tablename__ = "interruption_markers"
    __table_args__ = (
        UniqueConstraint(
            "enforcement_session_id", "marker_id", name="uq_interruption_markers_session_marker"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enforcement_session_id: Mapped[int] = mapped_column(Integer, ForeignKey("enforcement_sessions.id"))
    marker_id: Mapped[str] = mapped_column(String(64))
    opened_event_id: Mapped[int] = mapped_column(Integer, ForeignKey("session_events.id"))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cause: Mapped[str] = mapped_column(String(128))
    automatic: Mapped[bool] = mapped_column(Boolean)


class WrittenExplanation(Base):
    """JL-16 second clause: a written reason for a marker, or for the session's listed gaps."""

    __tablename__ = "written_explanations"
    __table_args__ = (Index("ix_written_explanations_session", "enforcement_session_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enforcement_session_id: Mapped[int] = mapped_column(Integer, ForeignKey("enforcement_sessions.id"))
    # Null: the explanation covers the gaps listed in ``gaps`` (what was unexplained when filed).
    marker_ref: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("interruption_markers.id"), nullable=True
    )
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    gaps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    filed_by: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"))
    filed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExplanationSignature(Base):
    """One officer's signature under a written explanation (the filer's is the first)."""

    __tablename__ = "explanation_signatures"
    __table_args__ = (
        UniqueConstraint("explanation_id", "user_id", name="uq_explanation_signatures_explanation_user"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    explanation_id: Mapped[int] = mapped_column(Integer, ForeignKey("written_explanations.id"))
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    # The signer signs these exact words: the hash of the text they saw.
    text_sha256: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # JL-16: the register entry the signer signed as, as it stood then (migration 0008); NULL on
    # rows signed before officers were checked. A snapshot, so no foreign key.
    officer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    certificate_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
