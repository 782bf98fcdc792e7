"""People: agencies, officers and auxiliary staff, credential scans (GS-9, GS-10)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal, get_args

from sqlalchemy import (
    Date,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = [
    "OFFICER_STATUSES",
    "STAFF_KINDS",
    "Agency",
    "CredentialScan",
    "Officer",
    "OfficerStatus",
    "StaffKind",
]


OfficerStatus = Literal["active", "suspended", "revoked"]
OFFICER_STATUSES: tuple[OfficerStatus, ...] = get_args(OfficerStatus)


# GS-9(2): certified officers and auxiliary staff are published differently.
StaffKind = Literal["officer", "auxiliary"]
STAFF_KINDS: tuple[StaffKind, ...] = get_args(StaffKind)


class Agency(Base):
    """An enforcement agency, the tenant boundary of data (GS-9(1): name, head, duties, address, contacts)."""

    __tablename__ = "agencies"
    __table_args__ = (UniqueConstraint("name", name="uq_agencies_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    head: Mapped[str] = mapped_column(String(100), default="")
    duties: Mapped[str] = mapped_column(Text, default="")
    address: Mapped[str] = mapped_column(String(300), default="")
    contacts: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Officer(Base):
    """A certified enforcement officer or auxiliary staff member (GS-9(2))."""

    __tablename__ = "officers"
    __table_args__ = (
        UniqueConstraint("certificate_number", name="uq_officers_certificate_number"),
        UniqueConstraint("user_id", name="uq_officers_user_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="officer")
    name: Mapped[str] = mapped_column(String(100))
    enforcement_category: Mapped[str] = mapped_column(String(100), default="")
    certificate_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    issuing_body: Mapped[str] = mapped_column(String(200), default="")
    valid_from: Mapped[date | None] = mapped_column(Date, nullable=True)
    valid_to: Mapped[date | None] = mapped_column(Date, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    duties: Mapped[str] = mapped_column(Text, default="")
    authority: Mapped[str] = mapped_column(Text, default="")
    photo: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    photo_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CredentialScan(Base):
    """One public verification of a credential (GS-10(1)); coarse client info only (no full IP)."""

    __tablename__ = "credential_scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    officer_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    method: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user_agent_family: Mapped[str] = mapped_column(String(32), default="other")
    ip_prefix: Mapped[str | None] = mapped_column(String(64), nullable=True)
