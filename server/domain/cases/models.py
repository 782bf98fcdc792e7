"""Cases: the case file, its officers, its events in stage order and attachments (JL-7 – JL-11)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = [
    "ACT_KINDS",
    "CASE_ORIGINS",
    "ActKind",
    "Case",
    "CaseAttachment",
    "CaseEvent",
    "CaseOfficer",
    "CaseOrigin",
]


# GS-2, JL-2: the five kinds of enforcement act.
ActKind = Literal["penalty", "coercion", "inspection", "levy", "licensing"]
ACT_KINDS: tuple[ActKind, ...] = get_args(ActKind)


# JL-7: a case starts ex officio or on application.
CaseOrigin = Literal["ex_officio", "on_application"]
CASE_ORIGINS: tuple[CaseOrigin, ...] = get_args(CaseOrigin)


class Case(Base):
    """An enforcement case of one agency (JL-2); its number is unique within the agency."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("agency_id", "number", name="uq_cases_agency_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    number: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300), default="")
    act_kind: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(16))
    party: Mapped[str] = mapped_column(String(300), default="")
    major: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaseOfficer(Base):
    """An officer assigned to a case."""

    __tablename__ = "case_officers"

    case_id: Mapped[int] = mapped_column(Integer, ForeignKey("cases.id"), primary_key=True)
    officer_id: Mapped[int] = mapped_column(Integer, ForeignKey("officers.id"), primary_key=True)


class CaseEvent(Base):
    """One append-only step of the whole-process record (JL-2, JL-7 – JL-10); corrections point back."""

    __tablename__ = "case_events"
    __table_args__ = (UniqueConstraint("device_id", "device_event_id", name="uq_case_events_device_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("cases.id"), nullable=True, index=True)
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    place: Mapped[str] = mapped_column(String(300), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    officer_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    recording_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(16), default="api")
    recorded_by: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    device_event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    corrects_event_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("case_events.id"), nullable=True
    )


class CaseAttachment(Base):
    """A document, photo or signed page of an event (JL-11), held in the object store by sha256."""

    __tablename__ = "case_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, ForeignKey("case_events.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(512))
    signed_by_party: Mapped[bool] = mapped_column(Boolean, default=False)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
