"""Fleet tables: recorders and their keys, MQTT credentials, provisioning, profiles, assignments,
alerts and commands."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = [
    "DEVICE_STATUSES",
    "Device",
    "DeviceAlert",
    "DeviceAssignment",
    "DeviceCommand",
    "DeviceConfigState",
    "DeviceConfigVersion",
    "DeviceCredential",
    "DeviceKey",
    "DeviceProfile",
    "DeviceStatus",
    "KeyHistoryBaseline",
    "ProvisioningRequest",
    "SerialAllowlistEntry",
]


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
    # What authorises the entry (JL-6, ``evidence/keys.py`` ``authorize``): the audit row of the act that
    # wrote it, and for a new key the previous key's signature of the change (``protocol.key_rotation``).
    # Both are columns of the entry's ledger leaf. None on entries written before they existed.
    audit_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rotation_signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)


class KeyHistoryBaseline(Base):
    """Up to which ``device_keys`` id the history was written before entries carried their authorisation.

    One row, written by migration 0032 and append-only: entries up to ``through_id`` are trusted as they
    stood (they are leaves of the ledger, and the backdating check still applies); any later entry must be
    authorised. The first row counts, so an inserted second row changes nothing, and without any row no
    entry is trusted unauthorised (a deleted baseline flags the whole old history).
    """

    __tablename__ = "key_history_baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    through_id: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceCredential(Base):
    """One MQTT username/password of a device; only the broker's PBKDF2 hash is stored."""

    __tablename__ = "device_credentials"
    __table_args__ = (Index("ix_device_credentials_device", "device_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id"))
    username: Mapped[str] = mapped_column(String(64))
    # Mosquitto 2 ``$7$`` PBKDF2-SHA512 hash, written verbatim into the broker's password file.
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_reason: Mapped[str] = mapped_column(String(255), default="")


class SerialAllowlistEntry(Base):
    """A serial number an admin expects: a device presenting it is approved without a token."""

    __tablename__ = "device_serial_allowlist"

    serial: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), default="")
    added_by: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_by_device: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ProvisioningRequest(Base):
    """A device asking to join: approved at once (allow-list) or pending an admin's decision."""

    __tablename__ = "device_provisioning_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    serial: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128), default="")
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    # SHA-256 of the one-time claim secret the device polls with (the secret itself is never stored).
    claim_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | approved | rejected | collected
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeviceProfile(Base):
    """Fleet facts about a device beyond its key: agent version and capabilities (JL-13)."""

    __tablename__ = "device_profiles"

    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id"), primary_key=True)
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    group_name: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceAssignment(Base):
    """A device checked out to an officer, and (once returned) checked back in."""

    __tablename__ = "device_assignments"
    __table_args__ = (Index("ix_device_assignments_device", "device_id", "checked_out_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id"))
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"))
    checked_out_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    checked_out_by: Mapped[str] = mapped_column(String(64))
    battery_at_checkout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checked_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    checked_in_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The assignee's agency at check-out (migration 0015): evidence recorded under this check-out
    # belongs to it (JL-20), even if the officer later moves to another agency. A snapshot: no FK.
    agency_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class DeviceAlert(Base):
    """A condition an admin must see (offline, JL-17 backlog, storage, clock, integrity)."""

    __tablename__ = "device_alerts"
    __table_args__ = (
        UniqueConstraint("device_id", "kind", "raised_at", name="uq_device_alerts_device_kind_raised"),
        Index("ix_device_alerts_open", "device_id", "cleared_at"),
        # One open alert per device and kind, whoever evaluates (migration 0035; fleet/alerts.py).
        Index(
            "uq_device_alerts_one_open",
            "device_id",
            "kind",
            unique=True,
            postgresql_where=text("cleared_at IS NULL"),
            sqlite_where=text("cleared_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    message_en: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeviceConfigVersion(Base):
    """One desired configuration for a device or a group; its id is the version (ever increasing)."""

    __tablename__ = "device_config_versions"
    __table_args__ = (Index("ix_device_config_versions_target", "scope", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # device | group
    target: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))


class DeviceConfigState(Base):
    """A device's shadow: the version last published to it and what it reported it applied."""

    __tablename__ = "device_config_state"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    published_version: Mapped[int] = mapped_column(Integer, default=0)
    reported_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reported_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reported_error: Mapped[str] = mapped_column(Text, default="")
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeviceCommand(Base):
    """A command to a device and where it is in its lifecycle (protocol.fleet.COMMAND_TRANSITIONS)."""

    __tablename__ = "device_commands"
    __table_args__ = (Index("ix_device_commands_device_state", "device_id", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), ForeignKey("devices.id"))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
