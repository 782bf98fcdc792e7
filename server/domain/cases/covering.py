"""Which recordings were running at each event of a case (JL-2: the text record and the AV record go
together), found with one query per agency of the events rather than one per event.

The rule: a recording of the event's agency (JL-20: never another agency's evidence), made by one of the
event's officers (their certificate numbers) or by the event's device, running at the event's time give
or take ``RECORDING_SLACK``. Asking the database once per event costs 200 round trips for a case of 200
events, over a second on PostgreSQL; this loads every candidate over the case's whole time span once and
matches each event in memory.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from server.domain.cases.models import CaseEvent
from server.domain.evidence.models import Recording
from server.domain.scope import recording_of_agency

__all__ = ["RECORDING_SLACK", "CoveringRecordings"]

# An event is covered by a recording running at its time, give or take this much.
RECORDING_SLACK = timedelta(seconds=60)

# (started_at, ended_at, id, officer_id, device_id) of one candidate recording.
_Row = tuple[datetime, datetime, int, str, str]


def _officers(event: CaseEvent, certificates: dict[int, str]) -> set[str]:
    """Certificate numbers of the event's officers (the officer id a recording carries)."""
    return {certificates[i] for i in event.officer_ids or [] if certificates.get(i)}


class _AgencyRows:
    """One agency's candidate recordings, sorted by start, with the longest one's length for look-ups."""

    def __init__(self, rows: Iterable[_Row]):
        self.rows = sorted(rows, key=lambda r: (r[0], r[2]))
        self.starts = [row[0] for row in self.rows]
        self.longest = max((row[1] - row[0] for row in self.rows), default=timedelta(0))

    def at(self, moment: datetime, officers: set[str], device_id: str | None) -> list[int]:
        """Ids of the recordings running at ``moment`` by one of ``officers`` or by ``device_id``."""
        # Only recordings starting in [t - slack - longest, t + slack] can still run at t - slack.
        low = bisect.bisect_left(self.starts, moment - RECORDING_SLACK - self.longest)
        high = bisect.bisect_right(self.starts, moment + RECORDING_SLACK)
        return sorted(
            {
                rec_id
                for started, ended, rec_id, officer, device in self.rows[low:high]
                if (officer in officers or (device_id and device == device_id))
                and started <= moment + RECORDING_SLACK
                and ended >= moment - RECORDING_SLACK
            }
        )


class CoveringRecordings:
    """The recordings that may cover some event of a case, loaded at once, looked up per event."""

    def __init__(self, session: Session, events: Sequence[CaseEvent], certificates: dict[int, str]):
        self._certificates = certificates
        self._by_agency: dict[int, _AgencyRows] = {}
        by_agency: dict[int, list[CaseEvent]] = {}
        for event in events:
            by_agency.setdefault(event.agency_id, []).append(event)
        # A case's events are of its agency; grouping keeps the rule per event should one not be.
        for agency_id, group in by_agency.items():
            self._by_agency[agency_id] = _AgencyRows(self._candidates(session, agency_id, group))

    def _candidates(self, session: Session, agency_id: int, events: list[CaseEvent]) -> list[_Row]:
        """Recordings of the agency by any of the events' officers or devices, over their time span."""
        officers: set[str] = set()
        for event in events:
            officers |= _officers(event, self._certificates)
        devices = {e.device_id for e in events if e.device_id}
        conditions: list[ColumnElement[bool]] = []
        if officers:
            conditions.append(Recording.officer_id.in_(sorted(officers)))
        if devices:
            conditions.append(Recording.device_id.in_(sorted(devices)))
        if not conditions:
            return []
        first = min(e.occurred_at for e in events) - RECORDING_SLACK
        last = max(e.occurred_at for e in events) + RECORDING_SLACK
        query = select(
            Recording.started_at, Recording.ended_at, Recording.id, Recording.officer_id, Recording.device_id
        ).where(
            or_(*conditions),
            recording_of_agency(agency_id),  # JL-20: never another agency's evidence
            Recording.started_at <= last,
            Recording.ended_at >= first,
        )
        return [(r.started_at, r.ended_at, r.id, r.officer_id, r.device_id) for r in session.execute(query)]

    def at(self, event: CaseEvent) -> list[int]:
        """Ids, ascending, of the recordings running at the event by its officers or its device (JL-2)."""
        officers = _officers(event, self._certificates)
        rows = self._by_agency.get(event.agency_id)
        if rows is None or (not officers and not event.device_id):
            return []
        return rows.at(event.occurred_at, officers, event.device_id)
