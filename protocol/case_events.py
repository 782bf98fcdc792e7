"""The case-event message a recorder publishes on ``zfjl/v1/{d}/up/event`` (JL-2, JL-8).

A recorder reports steps it witnessed (showing the credential, an inquiry, a coercive measure...) so
they land in the case's whole-process record next to its recordings. The payload is compact JSON::

    {"event_id": "...", "event_type": "investigation.inquiry", "at": "2026-...Z",
     "officer": "<certificate number>", "case_id": 12 | null, "case_number": "..." | null,
     "place": "...", "text": "..."}

``event_id`` is chosen by the device and makes redelivery (QoS 1) idempotent. Sans-IO: pure data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from protocol import topics
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.topics import TopicKind

__all__ = ["MAX_PAYLOAD", "CaseEventReport", "decode", "encode"]

MAX_PAYLOAD = 16 * 1024
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_EVENT_TYPE = re.compile(r"[a-z_]{1,32}\.[a-z_]{1,32}")


@dataclass(frozen=True, kw_only=True)
class CaseEventReport:
    """One case event as reported by a device; validates when built."""

    device_id: str
    event_id: str
    event_type: str
    at: str
    officer: str
    case_id: int | None = None
    case_number: str | None = None
    place: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        if not topics.valid_device_id(self.device_id):
            raise RemoteProtocolError(f"bad device id {self.device_id!r}")
        if not _EVENT_ID.fullmatch(self.event_id):
            raise RemoteProtocolError(f"bad event_id {self.event_id!r}")
        if not _EVENT_TYPE.fullmatch(self.event_type):
            raise RemoteProtocolError(f"bad event_type {self.event_type!r}")
        if not self.officer or len(self.officer) > 64:
            raise RemoteProtocolError("officer must be a certificate number of 1–64 characters")
        if self.case_id is not None and (isinstance(self.case_id, bool) or self.case_id < 1):
            raise RemoteProtocolError("case_id must be a positive integer")
        if self.case_number is not None and not 0 < len(self.case_number) <= 64:
            raise RemoteProtocolError("case_number must be 1–64 characters")
        if len(self.place) > 300 or len(self.text) > 4000:
            raise RemoteProtocolError("place or text too long")


def encode(report: CaseEventReport) -> tuple[str, bytes]:
    """Topic and payload of a case event (QoS 1, not retained)."""
    body: dict[str, Any] = {
        "event_id": report.event_id,
        "event_type": report.event_type,
        "at": report.at,
        "officer": report.officer,
        "case_id": report.case_id,
        "case_number": report.case_number,
        "place": report.place,
        "text": report.text,
    }
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(f"case event too large ({len(payload)} bytes)")
    return topics.case_event(report.device_id), payload


def _str(data: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{key} must be a string")
    return value


def decode(topic: str, payload: bytes) -> CaseEventReport:
    """Parse a case-event topic and payload; ``RemoteProtocolError`` for anything malformed."""
    parsed = topics.parse(topic)
    if parsed.kind is not TopicKind.CASE_EVENT:
        raise RemoteProtocolError(f"not a case-event topic: {topic!r}")
    if len(payload) > MAX_PAYLOAD:
        raise RemoteProtocolError(f"case event payload too large ({len(payload)} bytes)")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RemoteProtocolError(f"case event payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RemoteProtocolError("case event payload must be a JSON object")
    case_id = data.get("case_id")
    if case_id is not None and (isinstance(case_id, bool) or not isinstance(case_id, int)):
        raise RemoteProtocolError("case_id must be an integer or null")
    return CaseEventReport(
        device_id=parsed.device_id,
        event_id=_str(data, "event_id") or "",
        event_type=_str(data, "event_type") or "",
        at=_str(data, "at") or "",
        officer=_str(data, "officer") or "",
        case_id=case_id,
        case_number=_str(data, "case_number", optional=True),
        place=_str(data, "place", optional=True) or "",
        text=_str(data, "text", optional=True) or "",
    )
