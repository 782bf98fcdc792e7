"""ORM models (SQLAlchemy 2 typed mappings); the schema itself is created by Alembic migrations."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ROLES",
    "AuditLog",
    "Base",
    "Device",
    "DeviceKey",
    "DeviceStatus",
    "IngestRejection",
    "LoginThrottle",
    "Recording",
    "RevokedToken",
    "ScrubFinding",
    "SegmentReceipt",
    "UTCDateTime",
    "User",
    "utcnow",
]

ROLES: tuple[str, ...] = (
    "officer",
    "auxiliary",
    "device_admin",
    "legal_reviewer",
    "agency_head",
    "supervisor",
    "auditor",
    "system_admin",
)


class DeviceStatus(enum.StrEnum):
    """Lifecycle of a recorder; members are ``str``, so the ``devices.status`` column keeps these values."""

    PROVISIONED = "provisioned"
    ACTIVE = "active"
    LOST = "lost"
    RETIRED = "retired"

    # Statuses whose device may still connect to the broker, upload evidence (JL-17), receive commands
    # and configuration: a lost or retired device is refused everywhere, so the rule is named once here.
    # (Inside the class body the names above are still the plain strings.)
    ACCEPTING = enum.nonmember((PROVISIONED, ACTIVE))
    # Statuses that take a device out of service for good: its key's validity ends on entering one.
    OUT_OF_SERVICE = enum.nonmember((LOST, RETIRED))


DEVICE_STATUSES: tuple[str, ...] = tuple(status.value for status in DeviceStatus)


def utcnow() -> datetime:
    """Current time, tz-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Tz-aware UTC datetimes on every backend (SQLite has no time zones, so store naive UTC there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: store tz-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of all models."""


class User(Base):
    """A person who logs in to the web UI or API."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("username", name="uq_users_username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    agency_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Tokens issued before this moment are refused (set at suspension, kept at reinstatement).
    tokens_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoginThrottle(Base):
    """Failed-login count and backoff of one throttle key (account, address, or account at address).

    Kept in the database so every server process sees the same state; ``key`` is a SHA-256 of the kind
    and value, so a password typed into the user name field is not stored in clear.
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # server_default as migration 0013 creates it (autogenerate compares server defaults).
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class RevokedToken(Base):
    """A JWT (by jti) revoked at logout; rows may be purged after ``expires_at``."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    token_type: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class Device(Base):
    """A body-worn recorder and the Ed25519 key that signs its manifests."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    key_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="provisioned")
    serial: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    registered_by: Mapped[str] = mapped_column(String(64))


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
    # How many refusals the row stands for: 1, or a flood window's sum (server/ingest.py).
    occurrences: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class DeviceKey(Base):
    """One append-only entry of a device's signing-key history (JL-6): which key held when, and who said so.

    The newest entry for a (device, key) pair states that key's validity; a revocation or reinstatement
    appends a new entry instead of editing one, so ``devices.public_key`` replaced in place is detected.
    """

    __tablename__ = "device_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    event: Mapped[str] = mapped_column(String(16))
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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


class AuditLog(Base):
    """Append-only record of who did what to which object."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def detail_dict(self) -> dict[str, Any]:
        """The detail JSON decoded."""
        import json

        value: dict[str, Any] = json.loads(self.detail or "{}")
        return value
