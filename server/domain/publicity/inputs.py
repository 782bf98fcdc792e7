"""Typed inputs of the before-enforcement catalogue (GS-9) and of a withdrawal order (GS-12), checked once
at the edge.

A view (the API's or the workspace's) turns the decoded JSON body into one of these with ``from_json``;
the services receive checked, typed values and never a dict. Each error names the field (``kind``,
``content.phone``, ``change.effective_on``, ``source.document_number``) in Chinese and in English.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from server.domain.errors import Invalid
from server.domain.publicity.catalogue import (
    CatalogueContent,
    CatalogueKind,
    ChangeCause,
    content_from_mapping,
)

__all__ = [
    "CatalogueChange",
    "EntryRevision",
    "NewCatalogueEntry",
    "OrderSourceKind",
    "WithdrawalOrderInput",
    "WithdrawalOrderSource",
    "plausible_date",
]

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


# -- GS-12: an order to withdraw a published decision, and the record it comes from --------------------

_REASON_LIMIT = 2000
_BODY_LIMIT, _DOCUMENT_LIMIT = 200, 128
_ORDER_KEYS = frozenset({"reason", "revoked_on", "source"})
_SOURCE_KEYS = frozenset({"kind", "body", "document_number", "decided_on"})


class OrderSourceKind(StrEnum):
    """Who ordered the withdrawal: a reconsideration body (行政复议机关) or a people's court (人民法院)."""

    RECONSIDERATION = "reconsideration"
    LITIGATION = "litigation"

    def label(self, lang: str = "zh") -> str:
        """The kind of record in the page's language."""
        zh, en = _SOURCE_LABELS[self]
        return en if lang == "en" else zh


_SOURCE_LABELS = {
    OrderSourceKind.RECONSIDERATION: ("行政复议决定", "reconsideration decision"),
    OrderSourceKind.LITIGATION: ("人民法院裁判", "court judgment"),
}


def plausible_date(value: Any, name: str, what_zh: str, what_en: str) -> date | None:
    """An optional YYYY-MM-DD date within the years a deadline can plausibly be counted from (a year 9999
    is a typing error, and would overflow the count)."""
    if value is None or value == "":
        return None
    day = None
    if isinstance(value, str):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            day = None
    if day is None:
        raise Invalid(
            f"{name} 须为 YYYY-MM-DD 日期（{what_zh}）", f"{name} must be a YYYY-MM-DD date ({what_en})"
        )
    if not _FIRST_YEAR <= day.year <= _LAST_YEAR:
        raise Invalid(
            f"{name} 须在 {_FIRST_YEAR} 至 {_LAST_YEAR} 年之间",
            f"{name} must lie in the years {_FIRST_YEAR} to {_LAST_YEAR}",
        )
    return day


def _text(value: Any, name: str, limit: int, what_zh: str, what_en: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > limit:
        raise Invalid(
            f"{name} 须为不超过 {limit} 字的非空文本（{what_zh}）",
            f"{name} must be non-empty text of at most {limit} characters ({what_en})",
        )
    return value.strip()


@dataclass(frozen=True, kw_only=True)
class WithdrawalOrderSource:
    """The reconsideration decision or judgment that revoked a decision, found it illegal or had it redone."""

    kind: OrderSourceKind
    body: str
    document_number: str
    decided_on: date

    @classmethod
    def from_json(cls, value: Any, *, today: date) -> WithdrawalOrderSource | None:
        """The ``source`` object of an order's body, or None when the body names none."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise Invalid("source 须为对象", "source must be an object")
        unknown = sorted(set(value) - _SOURCE_KEYS)
        if unknown:
            raise Invalid(
                f"source 没有字段：{', '.join(unknown)}", f"source has no field {', '.join(unknown)}"
            )
        try:
            kind = OrderSourceKind(str(value.get("kind")))
        except ValueError:
            raise Invalid(
                "source.kind 只能是 reconsideration（行政复议决定）或 litigation（人民法院裁判）",
                "source.kind must be reconsideration (a reconsideration decision) or litigation "
                "(a court judgment)",
            ) from None
        body = _text(
            value.get("body"),
            "source.body",
            _BODY_LIMIT,
            "复议机关或人民法院的名称",
            "the reconsideration body or court",
        )
        document = _text(
            value.get("document_number"),
            "source.document_number",
            _DOCUMENT_LIMIT,
            "复议决定书或裁判文书的文号",
            "the number of the decision or judgment",
        )
        decided_on = plausible_date(
            value.get("decided_on"), "source.decided_on", "复议决定或裁判作出之日", "the day it was made"
        )
        if decided_on is None:
            raise Invalid(
                "source.decided_on 须为 YYYY-MM-DD 日期（复议决定或裁判作出之日）",
                "source.decided_on must be a YYYY-MM-DD date (the day it was made)",
            )
        if decided_on > today:
            raise Invalid(
                f"source.decided_on 不能晚于今天（{today.isoformat()}）",
                f"source.decided_on cannot be after today ({today.isoformat()})",
            )
        return cls(kind=kind, body=body, document_number=document, decided_on=decided_on)


@dataclass(frozen=True, kw_only=True)
class WithdrawalOrderInput:
    """GS-12: why a published decision must come off the portal, since when, and on whose order."""

    reason: str
    revoked_on: date | None = None
    source: WithdrawalOrderSource | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, today: date) -> WithdrawalOrderInput:
        """Checked fields of the body of ``POST …/withdrawal-order`` (or of the workspace's form)."""
        unknown = sorted(set(body) - _ORDER_KEYS)
        if unknown:
            raise Invalid(f"没有字段：{', '.join(unknown)}", f"no such field: {', '.join(unknown)}")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > _REASON_LIMIT:
            raise Invalid(
                f"须说明理由（不超过{_REASON_LIMIT}字）", f"a reason of at most {_REASON_LIMIT} characters"
            )
        revoked_on = plausible_date(
            body.get("revoked_on"),
            "revoked_on",
            "决定被撤销、确认违法或责令重作之日",
            "the day the decision was revoked",
        )
        source = WithdrawalOrderSource.from_json(body.get("source"), today=today)
        if source is not None and revoked_on is not None and revoked_on < source.decided_on:
            # The decision was revoked by that record: it cannot have been revoked before the record was made.
            raise Invalid(
                f"revoked_on（{revoked_on.isoformat()}）不能早于复议决定或裁判作出之日 source.decided_on"
                f"（{source.decided_on.isoformat()}）",
                f"revoked_on ({revoked_on.isoformat()}) cannot be before the day the decision or judgment "
                f"was made, source.decided_on ({source.decided_on.isoformat()})",
            )
        return cls(reason=reason.strip(), revoked_on=revoked_on, source=source)
