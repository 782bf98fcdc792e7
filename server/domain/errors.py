"""The server's error root: domain errors with a stable code, a kind, and a message in Chinese and English."""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Conflict", "Invalid", "NotFound", "ServiceError"]


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
