"""The server's one error root: every failure says what kind it is, and each edge maps the kind.

The HTTP edge (``server/http/errors.py``) turns a kind into a status; the MQTT edge
(``server/ingest/``) turns it into a rejection in the security log, or into silence when the failure is
ours and the device's resend is the recovery (no ack is ever sent for something not done). This module
imports nothing of the server, so every layer, infrastructure included, may raise these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import ClassVar

__all__ = ["HTTP_STATUS", "RETRY_KINDS", "ErrorKind", "ZfjlError"]


class ErrorKind(enum.StrEnum):
    """Whose fault a failure is and what the caller can do about it."""

    INVALID = "invalid"  # the input is malformed
    UNAUTHORIZED = "unauthorized"  # who is asking is not established
    FORBIDDEN = "forbidden"  # the caller may not do this
    NOT_FOUND = "not_found"  # no such object (or not one the caller may know of)
    CONFLICT = "conflict"  # the request contradicts stored state
    REJECTED = "rejected"  # well-formed, but a rule refuses it (e.g. an incomplete case record)
    LOCKED = "locked"  # the object is frozen (e.g. a closed case)
    THROTTLED = "throttled"  # too many attempts; try again later
    UNAVAILABLE = "unavailable"  # a store or service of ours is down; the same request may succeed later
    INTERNAL = "internal"  # our bug or an impossible state


HTTP_STATUS: Mapping[ErrorKind, int] = {
    ErrorKind.INVALID: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.REJECTED: 422,
    ErrorKind.LOCKED: 423,
    ErrorKind.THROTTLED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INTERNAL: 500,
}

# Kinds where the MQTT edge sends no answer: the fault is ours, and the device's timeout, status query
# and resend recover it. Every other kind is the message's fault and is refused with its code.
RETRY_KINDS: frozenset[ErrorKind] = frozenset({ErrorKind.UNAVAILABLE, ErrorKind.INTERNAL})


class ZfjlError(Exception):
    """Root of every server error: a stable ``code``, a ``kind``, and a message in Chinese and English."""

    code: ClassVar[str] = "error"
    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL
    # A refusal whose bookkeeping must stay (a failed login counts towards the throttle): the edge's
    # transaction (``session_scope``) commits what was flushed before this error instead of rolling
    # it back. The domain itself never commits; the caller owns the transaction.
    keeps_writes: ClassVar[bool] = False

    def __init__(self, message: str, message_en: str | None = None) -> None:
        super().__init__(message_en if message_en is not None else message)
        self.message = message
        self.message_en = message_en if message_en is not None else message
