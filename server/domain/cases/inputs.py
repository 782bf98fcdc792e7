"""Typed inputs of the cases area (JL-2, JL-7 – JL-11): a new case, a status change, an event.

A view turns the decoded JSON body into one of these with ``from_json``; the credential view, the
status change and signed recorder reports build a ``CaseEventInput`` from values they already hold.
The domain functions receive checked, typed values and never a dict. The checks, error codes and
messages are those the API has always answered (tests assert on them); what needs the database (does
the agency, the officer, the recording, the corrected event exist, is the event type in the
catalogue) stays in ``service.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar, get_args

from server.domain.cases.models import ACT_KINDS, CASE_ORIGINS, ActKind, CaseOrigin
from server.domain.errors import Invalid

__all__ = [
    "CASE_STATUSES",
    "MAX_REASON_CHARS",
    "CaseEventInput",
    "CaseStatus",
    "NewCase",
    "StatusChange",
]

# JL-2, JL-7 – JL-10: the lifecycle of a case (service.STATUS_TRANSITIONS says which move is allowed).
CaseStatus = Literal["open", "under_review", "decided", "executed", "closed", "withdrawn", "revoked"]
CASE_STATUSES: tuple[CaseStatus, ...] = get_args(CaseStatus)
MAX_REASON_CHARS = 2000
_PLACE_CHARS = 300
_TEXT_CHARS = 20000
_T = TypeVar("_T")


def _int_list(value: Any, key: str) -> tuple[int, ...] | None:
    """A JSON array of integers (booleans are not integers); None when absent or null."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise Invalid(f"{key} 必须是整数数组", f"{key} must be a list of integers")
    return tuple(value)


def _bounded_text(value: Any, key: str, limit: int) -> str:
    """Text of at most ``limit`` characters, kept as sent."""
    if not isinstance(value, str) or len(value) > limit:
        raise Invalid(
            f"{key} 必须是不超过 {limit} 字的文本", f"{key} must be text of at most {limit} characters"
        )
    return value


def _member(value: Any, choices: tuple[_T, ...]) -> _T | None:
    """``value`` typed as the vocabulary ``choices``, or None if it is not one of them."""
    for choice in choices:
        if isinstance(value, str) and value == choice:
            return choice
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class NewCase:
    """A case to open (JL-7); ``agency_id`` None means the caller's own agency."""

    number: str
    act_kind: ActKind
    origin: CaseOrigin
    agency_id: int | None = None
    title: str = ""
    party: str = ""
    major: bool = False
    officer_ids: tuple[int, ...] = ()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> NewCase:
        """Checked fields of a JSON body, in the order the API always checked them."""
        agency_id = body.get("agency_id")
        if "agency_id" in body and not _is_int(agency_id):
            raise Invalid("必须指定本机关", "a case needs the caller's agency")
        number = body.get("number")
        if not isinstance(number, str) or not number.strip() or len(number) > 64:
            raise Invalid("案号必须是 1–64 字的文本", "number must be 1–64 characters")
        act_kind = _member(body.get("act_kind"), ACT_KINDS)
        if act_kind is None:
            raise Invalid(
                f"act_kind 只能是 {'/'.join(ACT_KINDS)}", f"act_kind must be one of {', '.join(ACT_KINDS)}"
            )
        origin = _member(body.get("origin"), CASE_ORIGINS)
        if origin is None:
            raise Invalid(
                "origin 只能是 ex_officio/on_application", "origin must be ex_officio or on_application"
            )
        title, party = (_bounded_text(body.get(key, ""), key, 300) for key in ("title", "party"))
        return cls(
            number=number.strip(),
            act_kind=act_kind,
            origin=origin,
            agency_id=agency_id,
            title=title,
            party=party,
            # Any truthy value marks a major decision, as the API always read it (JL-9(3)).
            major=bool(body.get("major", False)),
            officer_ids=_int_list(body.get("officer_ids"), "officer_ids") or (),
        )


@dataclass(frozen=True, kw_only=True)
class StatusChange:
    """Move a case to ``status`` for ``reason`` (JL-2); ``force`` closes an incomplete record (JL-9(4))."""

    status: CaseStatus
    reason: str
    force: bool = False

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StatusChange:
        """Checked fields of a JSON body; the reason is required and kept stripped."""
        status = _member(body.get("status"), CASE_STATUSES)
        if status is None:
            raise Invalid(
                f"status 只能是 {'/'.join(CASE_STATUSES)}",
                f"status must be one of {', '.join(CASE_STATUSES)}",
            )
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_CHARS:
            raise Invalid(
                f"必须填写理由（不超过 {MAX_REASON_CHARS} 字）",
                f"reason is required (at most {MAX_REASON_CHARS} characters)",
            )
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise Invalid("force 必须是布尔值", "force must be a boolean")
        return cls(status=status, reason=reason.strip(), force=force)


def _parse_time(value: Any) -> datetime:
    """An ISO 8601 time with an offset (a naive time would be ambiguous in the record)."""
    parsed = None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Invalid(
            "occurred_at 必须是带时区的 ISO 8601 时间", "occurred_at must be an ISO 8601 time with offset"
        )
    return parsed


@dataclass(frozen=True, kw_only=True)
class CaseEventInput:
    """One step of the record (JL-2, JL-7 – JL-10); place and text are checked however it is built.

    ``occurred_at`` None is "now"; ``officer_ids`` None is "not given" (an officer's own event names
    them by default), an empty tuple names nobody.
    """

    event_type: str
    occurred_at: datetime | None = None
    place: str = ""
    text: str = ""
    officer_ids: tuple[int, ...] | None = None
    recording_ids: tuple[int, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    corrects_event_id: int | None = None

    def __post_init__(self) -> None:
        _bounded_text(self.place, "place", _PLACE_CHARS)
        _bounded_text(self.text, "text", _TEXT_CHARS)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CaseEventInput:
        """Checked fields of a JSON body, in the order the API always checked them."""
        event_type = body.get("event_type")
        if not isinstance(event_type, str):
            raise Invalid(f"未知的事件类型 {event_type}", f"unknown event type {event_type}")
        occurred = body.get("occurred_at")
        occurred_at = _parse_time(occurred) if occurred is not None else None
        place = _bounded_text(body.get("place", ""), "place", _PLACE_CHARS)
        text = _bounded_text(body.get("text", ""), "text", _TEXT_CHARS)
        officer_ids = _int_list(body.get("officer_ids"), "officer_ids")
        recording_ids = body.get("recording_ids") or []
        if not isinstance(recording_ids, list) or not all(_is_int(r) for r in recording_ids):
            raise Invalid("recording_ids 必须是整数数组", "recording_ids must be a list of integers")
        data = body.get("data") or {}
        if not isinstance(data, dict):
            raise Invalid("data 必须是对象", "data must be an object")
        corrects = body.get("corrects_event_id")
        if corrects is not None and not _is_int(corrects):
            # Not an id, so not an event of this case.
            raise Invalid("被更正的事件不属于本案", "the corrected event is not in this case")
        return cls(
            event_type=event_type,
            occurred_at=occurred_at,
            place=place,
            text=text,
            officer_ids=officer_ids,
            recording_ids=tuple(recording_ids),
            data=data,
            corrects_event_id=corrects,
        )
