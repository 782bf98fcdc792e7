"""The audit log: every access to evidence and every change leaves one row."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from server.domain.base import Base, UTCDateTime, utcnow

__all__ = ["AuditLog", "write_audit"]


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


def write_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | int | None,
    detail: dict[str, Any] | None = None,
    client_ip: str | None = None,
) -> AuditLog:
    """Append one audit row (flushed, committed by the caller)."""
    row = AuditLog(
        at=utcnow(),
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        detail=json.dumps(detail or {}, ensure_ascii=False, sort_keys=True),
        client_ip=client_ip,
    )
    session.add(row)
    session.flush()
    return row
