"""Re-checking stored case events that a recorder signed (JL-2, JL-6, JL-8).

A recorder's case event is stored with the exact text it signed and its signature
(``data["device_signed"]``, :mod:`server.domain.cases.device_events`). ``case_events`` is append-only,
and the ledger detects an edited row, but an insider with database rights can still *insert* a row that
claims to come from a recorder: the append-only triggers allow inserts, and the ledger then sequences it
like any other. Only the device's signature tells the two apart. These checks run with the scrubber's
device-level checks (and so in every chain report): a device event whose signature does not verify with
a key the append-only key history says was valid when it was stored, or whose columns differ from what
was signed, or which has no signed record at all, is a finding.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.case_events import CaseEventReport, SignedCaseEvent
from protocol.errors import ProtocolError
from server.domain.cases.models import CaseEvent
from server.domain.evidence.keys import KeyPeriod, keys_valid_at
from server.domain.people.models import Officer

__all__ = ["EventProblem", "check_device_case_events"]

# How many event ids one finding names (the rest are counted).
_IDS_SHOWN = 20


@dataclass(frozen=True)
class EventProblem:
    """One kind of failure over a device's stored case events, with the events it concerns."""

    code: str
    event_ids: tuple[int, ...]

    def messages(self) -> tuple[str, str]:
        """(Chinese, English) text naming the events."""
        shown = ", ".join(str(i) for i in self.event_ids[:_IDS_SHOWN])
        more = len(self.event_ids) - _IDS_SHOWN
        tail_zh, tail_en = (f" 等 {len(self.event_ids)} 条", f" and {more} more") if more > 0 else ("", "")
        zh, en = _TEXT[self.code]
        return f"{zh}：案件事件 {shown}{tail_zh}", f"{en}: case events {shown}{tail_en}"


_TEXT = {
    "case_event_unsigned": (
        "记录为设备上报的案件事件没有设备签名记录",
        "case events recorded as reported by the device carry no signed record",
    ),
    "case_event_bad_signature": (
        "案件事件的签名无法用当时有效的设备公钥（密钥历史）验证",
        "case event signatures do not verify with the device key valid when they were stored (key history)",
    ),
    "case_event_altered": (
        "案件事件的字段与设备签名的内容不符",
        "case event columns differ from what the device signed",
    ),
}


def _signed_of(event: CaseEvent) -> SignedCaseEvent | None:
    """The signed statement kept with ``event``, None if it is missing or unreadable."""
    record = (event.data or {}).get("device_signed") if isinstance(event.data, dict) else None
    if not isinstance(record, dict):
        return None
    text, signature = record.get("event"), record.get("signature")
    if not isinstance(text, str) or not isinstance(signature, str):
        return None
    try:
        report = CaseEventReport.from_json_dict(json.loads(text))
        raw_signature = base64.b64decode(signature, validate=True)
    except (ValueError, ProtocolError, binascii.Error, TypeError):
        return None
    if report.canonical_bytes().decode("utf-8") != text:
        return None
    return SignedCaseEvent(report=report, event_text=text, signature=raw_signature)


def _differs(event: CaseEvent, report: CaseEventReport, certificate_of: dict[int, str | None]) -> bool:
    """Whether a column the device's statement determines differs from it."""
    occurred = event.occurred_at
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    certificates = {certificate_of.get(officer_id) for officer_id in (event.officer_ids or [])}
    return (
        event.device_id != report.device_id
        or event.device_event_id != report.event_id
        or event.event_type != report.event_type
        or occurred != report.at.astimezone(UTC)
        or event.place != report.place
        or event.text != report.text
        or report.officer not in certificates
    )


def check_device_case_events(
    session: Session, device_id: str, periods: Sequence[KeyPeriod]
) -> list[EventProblem]:
    """Every case event stored as ``device_id``'s, re-checked against its signed statement."""
    events = list(
        session.scalars(
            select(CaseEvent)
            .where((CaseEvent.device_id == device_id) | (CaseEvent.recorded_by == f"device:{device_id}"))
            .order_by(CaseEvent.id)
        )
    )
    if not events:
        return []
    officer_ids = {officer_id for e in events for officer_id in (e.officer_ids or [])}
    certificate_of: dict[int, str | None] = {}
    if officer_ids:
        rows = session.execute(
            select(Officer.id, Officer.certificate_number).where(Officer.id.in_(officer_ids))
        )
        certificate_of = {officer_id: number for officer_id, number in rows}
    found: dict[str, list[int]] = {}
    for event in events:
        claims_the_device = (
            event.source == "device"
            or event.recorded_by == f"device:{device_id}"
            or bool((event.data or {}).get("device_signed"))
        )
        if not claims_the_device:
            continue  # an event a user recorded through the API names the device only as context
        signed = _signed_of(event)
        if signed is None:
            found.setdefault("case_event_unsigned", []).append(event.id)
            continue
        keys = keys_valid_at(periods, event.recorded_at)
        if not any(signed.verify(key) for key in keys):
            found.setdefault("case_event_bad_signature", []).append(event.id)
            continue
        if _differs(event, signed.report, certificate_of):
            found.setdefault("case_event_altered", []).append(event.id)
    return [EventProblem(code, tuple(ids)) for code, ids in found.items()]
