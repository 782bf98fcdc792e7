"""Typed inputs of the before-enforcement catalogue (GS-9), checked once at the edge.

A view turns the decoded JSON body into one of these with ``from_json``; the catalogue service receives
checked, typed values and never a dict. Each error names the field (``kind``, ``content.phone``,
``change.effective_on``) in Chinese and in English.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from server.domain.errors import Invalid
from server.domain.publicity.catalogue import (
    CatalogueContent,
    CatalogueKind,
    ChangeCause,
    content_from_mapping,
)

__all__ = ["CatalogueChange", "EntryRevision", "NewCatalogueEntry"]

_REFERENCE_LIMIT = 300
_FIRST_YEAR, _LAST_YEAR = 1950, 2099
_CHANGE_KEYS = frozenset({"cause", "effective_on", "reference"})


def _kind(value: Any) -> CatalogueKind:
    try:
        return CatalogueKind(value)
    except ValueError:
        names = ", ".join(kind.value for kind in CatalogueKind)
        raise Invalid(f"kind 只能是 {names}", f"kind must be one of {names}") from None


def _content(kind: CatalogueKind, value: Any) -> CatalogueContent:
    if not isinstance(value, Mapping):
        raise Invalid("content 须为对象", "content must be an object")
    return content_from_mapping(kind, value)


def _agency(body: Mapping[str, Any], default: int | None) -> int:
    agency_id = body.get("agency_id", default)
    if not isinstance(agency_id, int) or isinstance(agency_id, bool) or agency_id <= 0:
        raise Invalid("须指定 agency_id（正整数）", "agency_id (a positive integer) is required")
    return agency_id


@dataclass(frozen=True, kw_only=True)
class CatalogueChange:
    """Why content changes: a law or duty change (GS-9's 20 working days run from ``effective_on``)."""

    cause: ChangeCause
    effective_on: date
    reference: str

    @classmethod
    def from_json(cls, value: Any) -> CatalogueChange | None:
        """The ``change`` object of a body, or None when the body names none."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise Invalid("change 须为对象", "change must be an object")
        unknown = sorted(set(value) - _CHANGE_KEYS)
        if unknown:
            raise Invalid(
                f"change 没有字段：{', '.join(unknown)}", f"change has no field {', '.join(unknown)}"
            )
        try:
            cause = ChangeCause(str(value.get("cause")))
        except ValueError:
            names = ", ".join(c.value for c in ChangeCause)
            raise Invalid(f"change.cause 只能是 {names}", f"change.cause must be one of {names}") from None
        raw_day = value.get("effective_on")
        try:
            effective_on = date.fromisoformat(raw_day) if isinstance(raw_day, str) else None
        except ValueError:
            effective_on = None
        if effective_on is not None and not _FIRST_YEAR <= effective_on.year <= _LAST_YEAR:
            # A deadline is counted from it; a date out of any plausible range is a typing error.
            raise Invalid(
                f"change.effective_on 须在 {_FIRST_YEAR} 至 {_LAST_YEAR} 年之间",
                f"change.effective_on must lie in the years {_FIRST_YEAR} to {_LAST_YEAR}",
            )
        if effective_on is None:
            raise Invalid(
                "change.effective_on 须为 YYYY-MM-DD 日期（法律生效、废止或职责调整之日）",
                "change.effective_on must be a YYYY-MM-DD date (the day the law or duty change took effect)",
            )
        reference = value.get("reference")
        if (
            not isinstance(reference, str)
            or not reference.strip()
            or len(reference.strip()) > _REFERENCE_LIMIT
        ):
            raise Invalid(
                f"change.reference 须为不超过 {_REFERENCE_LIMIT} 字的非空文本（法律文件或职责调整文件）",
                f"change.reference must be non-empty text of at most {_REFERENCE_LIMIT} characters "
                "(the law or the duty adjustment)",
            )
        return cls(cause=cause, effective_on=effective_on, reference=reference.strip())


@dataclass(frozen=True, kw_only=True)
class NewCatalogueEntry:
    """A new draft entry of an agency's catalogue, optionally made because of a change in law or duties."""

    agency_id: int
    kind: CatalogueKind
    content: CatalogueContent
    change: CatalogueChange | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, default_agency: int | None) -> NewCatalogueEntry:
        """Checked fields of a JSON body; ``agency_id`` defaults to the caller's agency."""
        kind = _kind(body.get("kind"))
        return cls(
            agency_id=_agency(body, default_agency),
            kind=kind,
            content=_content(kind, body.get("content")),
            change=CatalogueChange.from_json(body.get("change")),
        )


@dataclass(frozen=True, kw_only=True)
class EntryRevision:
    """New content for an entry: a draft is edited; a published entry gets a revision to review."""

    content: Mapping[str, Any]
    change: CatalogueChange | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> EntryRevision:
        """The body's content (checked against the entry's kind by the service) and its change."""
        content = body.get("content")
        if not isinstance(content, Mapping):
            raise Invalid("content 须为对象", "content must be an object")
        return cls(content=dict(content), change=CatalogueChange.from_json(body.get("change")))

    def typed(self, kind: CatalogueKind) -> CatalogueContent:
        """The content checked against the entry's kind (known only once the entry is read)."""
        return _content(kind, self.content)
