"""Accounts: users with roles, the login throttle and revoked tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["ROLES", "LoginThrottle", "RevokedToken", "User"]


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
