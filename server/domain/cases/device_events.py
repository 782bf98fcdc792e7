"""Case events reported by recorders: signed by the device, refused and logged otherwise (JL-2, JL-8)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.case_events import EVENT_VERSION as CASE_EVENT_VERSION
from protocol.case_events import SignedCaseEvent
from protocol.session import EventAck, EventAckState
from server.domain.cases.inputs import CaseEventInput
from server.domain.cases.models import Case, CaseEvent
from server.domain.cases.service import new_event
from server.domain.errors import Invalid
from server.domain.fleet.assignments import current_assignment
from server.domain.fleet.models import Device, DeviceStatus
from server.domain.people.models import Officer

__all__ = ["CASE_EVENT_REJECTION_CODES", "DeviceEventOutcome", "record_device_event"]


CASE_EVENT_REJECTION_CODES: tuple[str, ...] = (
    "bad_case_event",
    "unknown_device",
    "event_mismatch",
    "bad_signature",
    "device_inactive",
    "event_conflict",
    "device_not_assigned",
    "officer_not_assignee",
    "case_not_found",
    "invalid_case_event",
)


@dataclass(frozen=True)
class DeviceEventOutcome:
    """What became of one signed case event: the ack for the device and, if refused, why."""

    ack: EventAck
    event: CaseEvent | None = None
    refusal: tuple[str, str] | None = None  # (code, message): one ingest_rejections row


def _signed_record(signed: SignedCaseEvent) -> dict[str, Any]:
    """The device's signed statement as kept with the event, so anyone can verify it again later."""
    return {
        "event": signed.event_text,
        "signature": base64.b64encode(signed.signature).decode("ascii"),
        "v": CASE_EVENT_VERSION,
    }


def record_device_event(session: Session, device_id: str, signed: SignedCaseEvent) -> DeviceEventOutcome:
    """Check and append a case event a recorder signed (JL-2, JL-8); flushed, the caller commits.

    Stored only when the registered key of ``device_id`` signed it, the device is in service, the
    officer it names is the one the device is checked out to, and the case belongs to that officer's
    agency. Anything else is refused with a precise code and nothing is written to ``case_events``
    (which is append-only, so an event let in could never be taken out again).
    """
    report = signed.report
    event_id = report.event_id

    def refuse(code: str, message: str) -> DeviceEventOutcome:
        ack = EventAck(
            device_id=device_id,
            event_id=event_id,
            state=EventAckState.REJECTED,
            code=code,
            message=message[:500],
        )
        return DeviceEventOutcome(ack, refusal=(code, message))

    device = session.get(Device, device_id)
    if device is None:
        return refuse("unknown_device", f"device {device_id} is not registered")
    if report.device_id != device_id:
        return refuse(
            "event_mismatch", f"the case event names device {report.device_id}, sent by {device_id}"
        )
    if not signed.verify(bytes(device.public_key)):
        return refuse("bad_signature", f"case event {event_id} is not signed by device {device_id}")
    if device.status not in DeviceStatus.ACCEPTING:
        return refuse("device_inactive", f"device {device_id} is {device.status}")
    existing = session.scalar(
        select(CaseEvent).where(CaseEvent.device_id == device_id, CaseEvent.device_event_id == event_id)
    )
    if existing is not None:
        stored = (existing.data or {}).get("device_signed") or {}
        if stored.get("event") == signed.event_text:
            ack = EventAck(device_id=device_id, event_id=event_id, state=EventAckState.DUPLICATE)
            return DeviceEventOutcome(ack, event=existing)
        return refuse("event_conflict", f"case event {event_id} was already stored with different content")
    assignment = current_assignment(session, device_id)
    if assignment is None:
        return refuse("device_not_assigned", f"device {device_id} is not checked out to anyone")
    officer = session.scalar(select(Officer).where(Officer.user_id == assignment.user_id))
    if officer is None or officer.certificate_number != report.officer:
        return refuse(
            "officer_not_assignee",
            f"officer {report.officer} is not the officer device {device_id} is checked out to",
        )
    case = None
    if report.case_id is not None:
        case = session.get(Case, report.case_id)
    elif report.case_number:
        case = session.scalar(
            select(Case).where(Case.agency_id == officer.agency_id, Case.number == report.case_number)
        )
    if (report.case_id is not None or report.case_number) and (
        case is None or case.agency_id != officer.agency_id
    ):
        # Another agency's case looks missing, as it does in the API.
        return refuse("case_not_found", "case not found in the officer's agency")
    try:
        # Two workers racing on one redelivered event: the unique (device_id, device_event_id) refuses
        # the second insert; its transaction fails and the message is handled again as a duplicate.
        event = new_event(
            session,
            agency_id=officer.agency_id,
            case=case,
            event=CaseEventInput(
                event_type=report.event_type,
                occurred_at=report.at.astimezone(UTC),
                place=report.place,
                text=report.text,
                officer_ids=(officer.id,),
                data={"device_signed": _signed_record(signed)},
            ),
            recorded_by=f"device:{device_id}",
            source="device",
            device_id=device_id,
            device_event_id=event_id,
        )
    except Invalid as exc:
        return refuse("invalid_case_event", exc.message_en)
    ack = EventAck(device_id=device_id, event_id=event_id, state=EventAckState.STORED)
    return DeviceEventOutcome(ack, event=event)
