"""Domain errors: the rule refusals every area raises, under the server's one root (server/errors.py)."""

from __future__ import annotations

from typing import ClassVar

from server.errors import ErrorKind, ZfjlError

__all__ = ["Conflict", "Invalid", "NotFound", "ServiceError"]


class ServiceError(ZfjlError):
    """A domain rule refused the request: a stable ``code``, a Chinese message and an English one."""

    code: ClassVar[str] = "service_error"
    # What kind of failure this is; each edge maps kinds (to HTTP statuses, to MQTT refusals).
    kind: ClassVar[ErrorKind] = ErrorKind.INVALID

    def __init__(self, message: str, message_en: str) -> None:
        super().__init__(message, message_en)


class NotFound(ServiceError):
    """The requested object does not exist."""

    code = "not_found"
    kind = ErrorKind.NOT_FOUND


class Invalid(ServiceError):
    """The input is malformed."""

    code = "invalid_request"
    kind = ErrorKind.INVALID


class Conflict(ServiceError):
    """The request contradicts stored state."""

    code = "conflict"
    kind = ErrorKind.CONFLICT
