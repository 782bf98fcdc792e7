"""Typed inputs of the people area (GS-9(1)(2)): agency and officer fields, checked once at the edge.

A view turns the decoded JSON body into one of these with ``from_json`` and the CSV import builds the
same type from a row, so the domain functions receive checked, typed values and never a dict. The
checks, error codes and messages are those the API has always answered (tests assert on them).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, TypeVar

from server.domain.errors import Invalid
from server.domain.people.models import OFFICER_STATUSES, STAFF_KINDS, OfficerStatus, StaffKind

__all__ = [
    "AGENCY_FIELDS",
    "OFFICER_FIELDS",
    "UNSET",
    "AgencyFields",
    "OfficerFields",
    "Unset",
]

AGENCY_FIELDS: tuple[str, ...] = ("name", "head", "duties", "address", "contacts")
OFFICER_FIELDS: tuple[str, ...] = (
    "kind",
    "name",
    "enforcement_category",
    "certificate_number",
    "issuing_body",
    "valid_from",
    "valid_to",
    "status",
    "duties",
    "authority",
    "user_id",
)
_AGENCY_TEXT_LIMIT = 300
_T = TypeVar("_T")


class Unset(enum.Enum):
    """A field the request did not name: an update leaves it as it is (unlike an explicit null)."""

    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


def _text(body: Mapping[str, Any], key: str, limit: int, *, required: bool = False) -> str | None:
    """The stripped text of ``key``, or None when absent or null (refused when ``required``)."""
    value = body.get(key)
    if value is None:
        if required:
            raise Invalid(f"缺少字段 {key}", f"missing field {key}")
        return None
    if not isinstance(value, str) or len(value.strip()) > limit or (required and not value.strip()):
        raise Invalid(
            f"{key} 必须是不超过 {limit} 字的非空文本", f"{key} must be text of at most {limit} characters"
        )
    return value.strip()


def _date(value: Any, key: str) -> date | None:
    """A YYYY-MM-DD date; empty or null clears it."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise Invalid(f"{key} 必须是 YYYY-MM-DD 日期", f"{key} must be a YYYY-MM-DD date")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(f"{key} 必须是 YYYY-MM-DD 日期", f"{key} must be a YYYY-MM-DD date") from None


def _choice(value: Any, key: str, choices: tuple[_T, ...]) -> _T:
    """``value`` if it is one of ``choices``, typed as the vocabulary."""
    for choice in choices:
        if value == choice and isinstance(value, str):
            return choice
    names = [str(c) for c in choices]
    raise Invalid(f"{key} 只能是 {'/'.join(names)}", f"{key} must be one of {', '.join(names)}")


@dataclass(frozen=True, kw_only=True)
class AgencyFields:
    """An agency's published particulars (GS-9(1)); None is "not given" (kept on update, "" on create)."""

    name: str | None = None
    head: str | None = None
    duties: str | None = None
    address: str | None = None
    contacts: str | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, creating: bool) -> AgencyFields:
        """Checked fields of a JSON body; ``name`` is required when ``creating``."""
        values = {
            f: _text(body, f, _AGENCY_TEXT_LIMIT, required=creating and f == "name") for f in AGENCY_FIELDS
        }
        return cls(**values)

    def given(self) -> dict[str, str]:
        """The fields the request named, in the published order."""
        return {f: v for f in AGENCY_FIELDS if (v := getattr(self, f)) is not None}


@dataclass(frozen=True, kw_only=True)
class OfficerFields:
    """An officer's registry entry (GS-9(2)); UNSET is "not given", None clears a nullable field."""

    kind: StaffKind | Unset = UNSET
    name: str | Unset = UNSET
    enforcement_category: str | Unset = UNSET
    certificate_number: str | Unset | None = UNSET
    issuing_body: str | Unset = UNSET
    valid_from: date | Unset | None = UNSET
    valid_to: date | Unset | None = UNSET
    status: OfficerStatus | Unset = UNSET
    duties: str | Unset = UNSET
    authority: str | Unset = UNSET
    user_id: int | Unset | None = UNSET

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, creating: bool) -> OfficerFields:
        """Checked fields of a JSON body (or a CSV row); ``name`` is required when ``creating``.

        Checked in the order the API always checked them, so a body with several faults gets the
        same first error as before.
        """
        values: dict[str, Any] = {}
        for key in ("name", "enforcement_category", "issuing_body", "duties", "authority"):
            limit = 1000 if key in ("duties", "authority") else 200
            text = _text(body, key, limit, required=creating and key == "name")
            if text is not None:
                values[key] = text
        if "certificate_number" in body:
            # An empty number is no number (auxiliary staff have none).
            values["certificate_number"] = _text(body, "certificate_number", 64) or None
        if "kind" in body:
            values["kind"] = _choice(body["kind"], "kind", STAFF_KINDS)
        if "status" in body:
            values["status"] = _choice(body["status"], "status", OFFICER_STATUSES)
        for key in ("valid_from", "valid_to"):
            if key in body:
                values[key] = _date(body[key], key)
        if "user_id" in body:
            user_id = body["user_id"]
            if user_id is not None and (isinstance(user_id, bool) or not isinstance(user_id, int)):
                raise Invalid("user_id 必须是整数", "user_id must be an integer")
            values["user_id"] = user_id
        return cls(**values)

    def given(self) -> dict[str, object]:
        """The fields the request named (None included: it clears the field), in checking order."""
        order = (
            "name",
            "enforcement_category",
            "issuing_body",
            "duties",
            "authority",
            "certificate_number",
            "kind",
            "status",
            "valid_from",
            "valid_to",
            "user_id",
        )
        return {f: v for f in order if not isinstance(v := getattr(self, f), Unset)}
