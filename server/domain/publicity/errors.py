"""Errors of the pure publicity rules: a stable code, a Chinese message, an English twin and a kind."""

from __future__ import annotations

from typing import ClassVar

from server.errors import ErrorKind, ZfjlError

__all__ = [
    "CalendarDataError",
    "CatalogueError",
    "DisclosureError",
    "ExportError",
    "IdentifierError",
    "PublicityError",
    "RedactionError",
    "TransitionForbidden",
    "TransitionRefused",
    "UnknownCalendarYear",
]


class PublicityError(ZfjlError):
    """Root of the publicity rules' errors, under the server's one root: each edge maps its ``kind``."""

    code: ClassVar[str] = "publicity_error"
    kind: ClassVar[ErrorKind] = ErrorKind.INVALID

    def __init__(self, message: str, message_en: str, *, field: str | None = None) -> None:
        super().__init__(message, message_en)
        # Which input field is wrong, for a form to point at (None when it is the whole request).
        self.field = field


class IdentifierError(PublicityError):
    """A unified social credit code or a resident ID number is malformed."""

    code = "invalid_identifier"


class CalendarDataError(PublicityError):
    """A holiday schedule file is malformed or contradicts itself."""

    code = "invalid_calendar"


class UnknownCalendarYear(PublicityError):
    """The official holiday schedule of a year has not been loaded; a strict lookup refuses to guess."""

    code = "calendar_year_unknown"
    kind = ErrorKind.CONFLICT

    def __init__(self, year: int) -> None:
        super().__init__(
            f"{year}年的法定节假日安排尚未载入，无法确定工作日",
            f"the official holiday schedule of {year} has not been loaded; working days are unknown",
        )
        self.year = year


class CatalogueError(PublicityError):
    """A before-enforcement catalogue entry's content is malformed (GS-9): the message names the field."""

    code = "invalid_catalogue_entry"


class ExportError(PublicityError):
    """A decision cannot be mapped to the national 双公示 fields."""

    code = "invalid_decision"


class DisclosureError(PublicityError):
    """A disclosure period or an early termination breaks the national bounds (GS-13)."""

    code = "disclosure_refused"
    kind = ErrorKind.CONFLICT


class RedactionError(PublicityError):
    """A reviewer's redaction decision does not fit the text it applies to (GS-14)."""

    code = "invalid_redaction"


class TransitionRefused(PublicityError):
    """A publication item cannot move that way from its present state (GS-7)."""

    code = "transition_refused"
    kind = ErrorKind.CONFLICT


class TransitionForbidden(TransitionRefused):
    """The person lacks the role, or is the item's author where another must act (GS-7, GS-18)."""

    code = "transition_forbidden"
    kind = ErrorKind.FORBIDDEN
