"""The case file's whole-process record, with the covering recordings found in one query, not one per event.

``case_service.case_record`` (the API's ``/record``) asks the database once per event for the recordings
running at it; at 200 events that is 200 round trips, over a second on PostgreSQL. This builds the same
record from the same service pieces and the same rule — recordings of the case's agency (JL-20) by the
event's officers or its device, running at its time give or take ``RECORDING_SLACK`` (JL-2) — with one
query over the case's whole time span, matched to each event in memory.
``tests/http/pages/workspace/test_workspace_speed.py`` checks that both give the same record.
"""

from __future__ import annotations

import bisect
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from server.domain.cases import service as case_service
from server.domain.cases.models import CaseAttachment, CaseEvent
from server.domain.evidence.models import Recording
from server.domain.people.models import Officer
from server.domain.people.service import Caller
from server.domain.scope import recording_of_agency

__all__ = ["case_file_record"]


class _Covering:
    """The recordings that may cover some event of the case, sorted by start, for look-ups per event."""

    def __init__(
        self, session: Session, agency_id: int, events: list[CaseEvent], certificates: dict[int, str]
    ):
        who = {certificates[i] for e in events for i in e.officer_ids or [] if certificates.get(i)}
        devices = {e.device_id for e in events if e.device_id}
        conditions: list[ColumnElement[bool]] = []
        if who:
            conditions.append(Recording.officer_id.in_(sorted(who)))
        if devices:
            conditions.append(Recording.device_id.in_(sorted(devices)))
        self.rows: list[tuple[Any, Any, int, str, str]] = []
        self.starts: list[Any] = []
        self.longest = timedelta(0)
        if not conditions or not events:
            return
        slack = case_service.RECORDING_SLACK
        first = min(e.occurred_at for e in events) - slack
        last = max(e.occurred_at for e in events) + slack
        query = select(
            Recording.started_at, Recording.ended_at, Recording.id, Recording.officer_id, Recording.device_id
        ).where(
            or_(*conditions),
            recording_of_agency(agency_id),  # JL-20: never another agency's evidence
            Recording.started_at <= last,
            Recording.ended_at >= first,
        )
        self.rows = sorted(
            ((r.started_at, r.ended_at, r.id, r.officer_id, r.device_id) for r in session.execute(query)),
            key=lambda r: (r[0], r[2]),
        )
        self.starts = [row[0] for row in self.rows]
        self.longest = max((row[1] - row[0] for row in self.rows), default=timedelta(0))

    def at(self, event: CaseEvent, certificates: dict[int, str]) -> list[int]:
        """Ids of the recordings running at the event by its officers or its device (the service's rule)."""
        who = {certificates[i] for i in event.officer_ids or [] if certificates.get(i)}
        if not self.rows or (not who and not event.device_id):
            return []
        slack = case_service.RECORDING_SLACK
        # Only recordings starting in [t - slack - longest, t + slack] can still run at t - slack.
        low = bisect.bisect_left(self.starts, event.occurred_at - slack - self.longest)
        high = bisect.bisect_right(self.starts, event.occurred_at + slack)
        return sorted(
            {
                rec_id
                for started, ended, rec_id, officer, device in self.rows[low:high]
                if (officer in who or (event.device_id and device == event.device_id))
                and started <= event.occurred_at + slack
                and ended >= event.occurred_at - slack
            }
        )


def case_file_record(session: Session, caller: Caller, case_id: int) -> dict[str, Any]:
    """What ``case_service.case_record`` answers: events in stage then time order with attachments and
    covering recordings, and the completeness check (JL-7 – JL-10)."""
    case = case_service.get_case(session, caller, case_id)
    events = list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
    stage_rank = {s: i for i, s in enumerate(case_service.STAGES)}
    events.sort(key=lambda e: (stage_rank.get(e.event_type.split(".")[0], 99), e.occurred_at, e.id))
    assigned = case_service.case_officer_ids(session, case.id)
    officer_ids = {i for e in events for i in e.officer_ids or []} | set(assigned)
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
            attachments.setdefault(a.event_id, []).append(case_service.attachment_to_dict(a, case.id))
    covering = _Covering(session, case.agency_id, events, certificates)
    corrected_by = {e.corrects_event_id: e.id for e in events if e.corrects_event_id}
    stages: dict[str, list[dict[str, Any]]] = {s: [] for s in case_service.STAGES}
    for event in events:
        item = case_service.event_to_dict(event)
        item["attachments"] = attachments.get(event.id, [])
        item["covering_recording_ids"] = covering.at(event, certificates)
        item["corrected_by_event_id"] = corrected_by.get(event.id)
        stages.setdefault(item["stage"] or "other", []).append(item)
    missing = case_service.completeness(case, events)
    return {
        "case": case_service.case_to_dict(case, assigned),
        "stages": [{"stage": s, "events": items} for s, items in stages.items()],
        "completeness": {"complete": not missing, "missing": missing},
    }
