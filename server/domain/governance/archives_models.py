"""Tables of archiving (JL-18) and case-file review (JL-22): both append-only, both ledger leaves.

An archive package is built once per request and never changed; a second package of the same case is a
new row (a re-archive after a correction), and the earliest one decides whether the case was archived
within 30 days. A review is one supervisor's or legal reviewer's judgement of a case file at one moment;
a later review is a new row, so the history of findings and rectification requests stays readable.
Migration 0020 gives both tables triggers that refuse UPDATE and DELETE.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["ArchiveFailure", "ArchivePackage", "CaseReview", "ProvisionExport"]


class ArchivePackage(Base):
    """One sealed BagIt package of a case file (JL-18): where it is, what it hashes to, what it proves."""

    __tablename__ = "archive_packages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(Integer, ForeignKey("cases.id"), index=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    bag_name: Mapped[str] = mapped_column(String(128))
    # SHA-256 of tagmanifest-sha256.txt: it covers the payload manifest, which covers every payload file.
    tagmanifest_sha256: Mapped[str] = mapped_column(String(64))
    zip_sha256: Mapped[str] = mapped_column(String(64))
    zip_size: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(512))
    payload_oxum: Mapped[str] = mapped_column(String(64))
    recording_count: Mapped[int] = mapped_column(Integer)
    leaf_count: Mapped[int] = mapped_column(Integer)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    on_time: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # Where the package was delivered in the archive store (migration 0025); None before delivery existed.
    delivered_key: Mapped[str | None] = mapped_column(String(512), nullable=True)


class ArchiveFailure(Base):
    """One failed attempt of the archiving job: the case stays pending, the error stays readable."""

    __tablename__ = "archive_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(Integer, ForeignKey("cases.id"), index=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    error: Mapped[str] = mapped_column(Text)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProvisionExport(Base):
    """A sealed export package built for an approved external provision (JL-20), served by an expiring
    link until ``expires_at`` (the grant's own expiry)."""

    __tablename__ = "provision_exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(Integer, ForeignKey("governance_requests.id"), index=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    bag_name: Mapped[str] = mapped_column(String(128))
    object_key: Mapped[str] = mapped_column(String(512))
    zip_sha256: Mapped[str] = mapped_column(String(64))
    zip_size: Mapped[int] = mapped_column(BigInteger)
    recording_count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaseReview(Base):
    """One 案卷评查 of a case file (JL-22): findings per item, a verdict, rectification requests."""

    __tablename__ = "case_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(Integer, ForeignKey("cases.id"), index=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    score: Mapped[int] = mapped_column(Integer)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    rectifications: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    rectify_by: Mapped[date | None] = mapped_column(Date, nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    follows_review_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("case_reviews.id"), nullable=True
    )
    reviewer: Mapped[str] = mapped_column(String(64))
    reviewer_role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
