"""Service layer: business rules over a SQLAlchemy session, knowing nothing of HTTP."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from server.models import AuditLog, utcnow

__all__ = ["Conflict", "Invalid", "NotFound", "ServiceError", "write_audit"]


class ServiceError(Exception):
    """Root of service errors: a stable ``code``, a Chinese message and an English one."""

    code: ClassVar[str] = "service_error"
    # What kind of failure this is; the API maps kinds to HTTP statuses (services stay HTTP-free).
    kind: ClassVar[str] = "invalid"

    def __init__(self, message: str, message_en: str) -> None:
        super().__init__(message_en)
        self.message = message
        self.message_en = message_en


class NotFound(ServiceError):
    """The requested object does not exist."""

    code = "not_found"
    kind = "not_found"


class Invalid(ServiceError):
    """The input is malformed."""

    code = "invalid_request"
    kind = "invalid"


class Conflict(ServiceError):
    """The request contradicts stored state."""

    code = "conflict"
    kind = "conflict"


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
