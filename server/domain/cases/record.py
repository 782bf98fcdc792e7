"""The whole-process record of a case: events in stage order, attachments, recordings, completeness."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.cases.catalogue import STAGES
from server.domain.cases.completeness import completeness
from server.domain.cases.covering import CoveringRecordings
from server.domain.cases.models import CaseAttachment, CaseEvent
from server.domain.cases.service import (
    attachment_to_dict,
    case_officer_ids,
    case_to_dict,
    event_to_dict,
    get_case,
)
from server.domain.people.models import Officer
from server.domain.people.service import Caller

__all__ = ["case_record"]


def case_record(session: Session, caller: Caller, case_id: int) -> dict[str, Any]:
    """The whole-process record: events in stage then time order, attachments, recordings, gaps."""
    case = get_case(session, caller, case_id)
    events = list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
    stage_rank = {s: i for i, s in enumerate(STAGES)}
    events.sort(key=lambda e: (stage_rank.get(e.event_type.split(".")[0], 99), e.occurred_at, e.id))
    officer_ids = {i for e in events for i in e.officer_ids or []} | set(case_officer_ids(session, case.id))
    certificates = {
        o.id: o.certificate_number or ""
        for o in session.scalars(select(Officer).where(Officer.id.in_(sorted(officer_ids))))
    }
    attachments: dict[int, list[dict[str, Any]]] = {}
    if events:
        for a in session.scalars(
            select(CaseAttachment)
            .where(CaseAttachment.event_id.in_([e.id for e in events]))
            .order_by(CaseAttachment.id)
        ):
            attachments.setdefault(a.event_id, []).append(attachment_to_dict(a, case.id))
    # JL-2: one query for the recordings covering every event, not one per event.
    covering = CoveringRecordings(session, events, certificates)
    corrected_by = {e.corrects_event_id: e.id for e in events if e.corrects_event_id}
    stages: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}
    for event in events:
        item = event_to_dict(event)
        item["attachments"] = attachments.get(event.id, [])
        item["covering_recording_ids"] = covering.at(event)
        item["corrected_by_event_id"] = corrected_by.get(event.id)
        stages.setdefault(item["stage"] or "other", []).append(item)
    missing = completeness(case, events)
    return {
        "case": case_to_dict(case, case_officer_ids(session, case.id)),
        "stages": [{"stage": s, "events": items} for s, items in stages.items()],
        "completeness": {"complete": not missing, "missing": missing},
    }
