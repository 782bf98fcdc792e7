"""Read-only case lookups the evidence workspace shows: the officer filter, what each listed case's record
lacks, the recordings a case file links with their sessions, and the case a session names.

Each takes the caller's session and writes nothing; the pages shape and render what they return, so no
page module runs SQL of its own (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from server.domain.cases.completeness import completeness
from server.domain.cases.models import Case, CaseEvent
from server.domain.evidence.models import Recording
from server.domain.governance.access import viewable_ids
from server.domain.people.models import Officer
from server.domain.people.service import Caller
from server.domain.scope import recording_in_scope
from server.domain.sessions.models import EnforcementSessionRecord

__all__ = ["OFFICERS_MAX", "linked_recordings", "missing_by_case", "officers_in_scope", "readable_case_id"]

# A bound on the officer filter's choices, so a very large agency does not make the page unbounded.
OFFICERS_MAX = 1000


def officers_in_scope(session: Session, caller: Caller) -> list[Officer]:
    """Officers whose cases the caller may list, by name: every agency's for cross-agency readers (JL-20)."""
    query = select(Officer).order_by(Officer.name)
    if not caller.reads_all:
        query = query.where(Officer.agency_id == caller.agency_id)
    return list(session.scalars(query.limit(OFFICERS_MAX)))


def missing_by_case(session: Session, cases: Sequence[Case]) -> dict[int, list[dict[str, str]]]:
    """What each case's record lacks (JL-7 – JL-10), from one query over all their events."""
    events: dict[int, list[CaseEvent]] = {c.id: [] for c in cases}
    if cases:
        for event in session.scalars(select(CaseEvent).where(CaseEvent.case_id.in_(list(events)))):
            events[event.case_id or 0].append(event)
    return {c.id: completeness(c, events[c.id]) for c in cases}


def linked_recordings(session: Session, caller: Caller, recording_ids: Iterable[int]) -> list[dict[str, Any]]:
    """The recordings of ``recording_ids`` in the caller's scope, by start, each with the primary key of its
    enforcement session (``session_pk``, None when it belongs to none the server knows).

    A restricted or confidential recording the caller may not view (JL-20) stays in the list as a
    placeholder (``hidden``: its id, sequence and times only, no device, officer or session link), so the
    case file neither shows its metadata nor pretends it does not exist.
    """
    ids = sorted(set(recording_ids))
    if not ids:
        return []
    rows = list(
        session.scalars(
            select(Recording)
            .where(Recording.id.in_(ids), recording_in_scope(caller))
            .order_by(Recording.started_at, Recording.id)
        )
    )
    shown = viewable_ids(session, caller, rows)
    pairs = {(r.device_id, r.session_id) for r in rows if r.session_id and r.id in shown}
    sessions: dict[tuple[str, str], int] = {}
    if pairs:
        for pk, device_id, session_id in session.execute(
            select(
                EnforcementSessionRecord.id,
                EnforcementSessionRecord.device_id,
                EnforcementSessionRecord.session_id,
            ).where(
                tuple_(EnforcementSessionRecord.device_id, EnforcementSessionRecord.session_id).in_(
                    sorted(pairs)
                )
            )
        ):
            sessions[(device_id, session_id)] = pk
    return [
        {
            "id": r.id,
            "sequence": r.sequence,
            "started_at": r.started_at,
            "ended_at": r.ended_at,
            "hidden": True,
        }
        if r.id not in shown
        else {
            "id": r.id,
            "device_id": r.device_id,
            "sequence": r.sequence,
            "kind": r.kind,
            "started_at": r.started_at,
            "ended_at": r.ended_at,
            "officer_id": r.officer_id,
            "session_pk": sessions.get((r.device_id, r.session_id)),
            "hidden": False,
        }
        for r in rows
    ]


def readable_case_id(session: Session, caller: Caller, number: str) -> int | None:
    """The id of a case numbered ``number`` the caller may read (JL-20), or None; numbers are unique per
    agency, so another agency's case of the same number is skipped, never shown."""
    if not number:
        return None
    for case_id, agency_id in session.execute(select(Case.id, Case.agency_id).where(Case.number == number)):
        if caller.may_read(agency_id):
            return int(case_id)
    return None
