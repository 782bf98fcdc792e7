"""Tables of the approval flow (JL-19, JL-20): requests and their one decision, both append-only leaves.

A request is never edited: its decision is a second row (one per request, the unique key refuses a
second), and an approved access, provision or retrieval request *is* the grant, valid until the
decision's ``expires_at``, or until a head revokes it early (a third row, ``grant_revocations``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["GovernanceDecision", "GovernanceRequest", "GrantRevocation"]


class GovernanceRequest(Base):
    """A request for access beyond one's duty, external provision, retrieval by a body, or disposal."""

    __tablename__ = "governance_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    requested_by: Mapped[str] = mapped_column(String(64), index=True)
    requester_role: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(String(300), default="")
    recipient_body: Mapped[str] = mapped_column(String(32), default="")
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)
    recording_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    case_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("cases.id"), nullable=True)
    duration_days: Mapped[int] = mapped_column(Integer, default=0)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GovernanceDecision(Base):
    """The approval or rejection of one request, by a person other than the requester."""

    __tablename__ = "governance_decisions"
    __table_args__ = (UniqueConstraint("request_id", name="uq_governance_decisions_request"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(Integer, ForeignKey("governance_requests.id"))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(64))
    decider_role: Mapped[str] = mapped_column(String(32))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class GrantRevocation(Base):
    """The early end of one grant (JL-20): by its approver or a head of its agency, with the reason; once."""

    __tablename__ = "grant_revocations"
    __table_args__ = (UniqueConstraint("request_id", name="uq_grant_revocations_request"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(Integer, ForeignKey("governance_requests.id"))
    reason: Mapped[str] = mapped_column(Text)
    revoked_by: Mapped[str] = mapped_column(String(64))
    revoker_role: Mapped[str] = mapped_column(String(32))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
