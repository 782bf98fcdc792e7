"""The access class of a recording (JL-20): append-only changes, the latest one applies; a ledger leaf."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["AccessClassChange"]


class AccessClassChange(Base):
    """One recording set to normal, restricted or confidential, by whom and why."""

    __tablename__ = "access_class_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recording_id: Mapped[int] = mapped_column(Integer, ForeignKey("recordings.id"), index=True)
    access_class: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
