"""The before-enforcement catalogue over a database session (GS-9, GS-7, GS-18); the caller commits.

Entries move through the publication workflow's one table (``workflow.TRANSITIONS``): draft → in_review
→ published → corrected | withdrawn, the reviewer never the author, every step an append-only history
row and an audit row. A published entry is revised without leaving the portal: the revision waits in
``pending`` until a reviewer other than the reviser applies it (the ``correct`` transition).

GS-9's update rule: an entry created or revised because a law, regulation, rule or normative document
was made, amended or repealed, or because the agency's duties changed, opens an update item due 20
working days after the change took effect (provisional while that year's holiday schedule is unknown);
publishing the entry's new content, or withdrawing the entry, closes it and records whether in time.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity.calendar import DeadlineRule, WorkingDayCalendar
from server.domain.publicity.catalogue import (
    CHANGE_CAUSES,
    CatalogueContent,
    CatalogueKind,
    content_from_mapping,
    content_to_mapping,
    public_fields,
)
from server.domain.publicity.errors import TransitionForbidden
from server.domain.publicity.inputs import CatalogueChange, EntryRevision, NewCatalogueEntry
from server.domain.publicity.models import CatalogueEntry, CatalogueHistory, CatalogueUpdate
from server.domain.publicity.schedules import calendar_of, today_in_china
from server.domain.publicity.service import actor_of, forbidden_collect
from server.domain.publicity.workflow import PUBLIC_STATES, Action, ItemState, Role, apply_action

__all__ = [
    "agency_names",
    "apply_revision",
    "create_entry",
    "entry_to_dict",
    "get_entry",
    "list_entries",
    "list_updates",
    "portal_catalogue",
    "publish_entry",
    "return_entry",
    "revise_entry",
    "submit_entry",
    "update_to_dict",
    "withdraw_entry",
]

_PUBLIC = [state.value for state in PUBLIC_STATES]


def _missing() -> NotFound:
    return NotFound("公示目录条目不存在", "catalogue entry not found")


def get_entry(session: Session, caller: Caller, entry_id: int) -> CatalogueEntry:
    """An entry the caller may see; another agency's reads as missing (no existence oracle)."""
    entry = session.get(CatalogueEntry, entry_id)
    if entry is None or not caller.may_read(entry.agency_id):
        raise _missing()
    return entry


def _writable(session: Session, caller: Caller, entry_id: int) -> CatalogueEntry:
    entry = get_entry(session, caller, entry_id)
    if not caller.may_write(entry.agency_id):
        raise _missing()
    return entry


def _require_collector(caller: Caller) -> None:
    if not actor_of(caller).roles & {Role.COLLECTOR, Role.REVIEWER}:
        raise forbidden_collect()


def _history(
    session: Session,
    entry: CatalogueEntry,
    action: str,
    actor: str,
    from_state: str | None,
    reason: str | None = None,
    **detail: Any,
) -> None:
    now = utcnow()
    session.add(
        CatalogueHistory(
            entry_id=entry.id,
            action=action,
            from_state=from_state,
            to_state=entry.state,
            actor=actor,
            at=now,
            reason=reason,
            detail=detail,
        )
    )
    entry.updated_at = now
    session.flush()
    write_audit(
        session,
        actor=actor,
        action=f"catalogue.{action}",
        target_type="catalogue_entry",
        target_id=entry.id,
        detail={"from": from_state, "to": entry.state, **detail},
    )


def _transition(
    session: Session,
    caller: Caller,
    entry: CatalogueEntry,
    action: Action,
    reason: str | None = None,
    **detail: Any,
) -> None:
    """Apply the workflow table to the entry, then append its history and audit rows."""
    entry_ = apply_action(
        ItemState(entry.state),
        action,
        author=entry.author,
        actor=actor_of(caller),
        at=utcnow(),
        reason=reason,
    )
    entry.state = entry_.to_state.value
    _history(session, entry, action.value, caller.user_id, entry_.from_state.value, entry_.reason, **detail)


def _open_update(
    session: Session,
    caller: Caller,
    entry: CatalogueEntry,
    change: CatalogueChange | None,
    calendar: WorkingDayCalendar | None,
) -> CatalogueUpdate | None:
    """GS-9: a change in law or duties opens an update item due 20 working days after it took effect."""
    if change is None or change.cause not in CHANGE_CAUSES:
        return None
    rule = DeadlineRule.GS9_UPDATE
    deadline = (calendar or calendar_of(session)).deadline(change.effective_on, rule.working_days)
    update = CatalogueUpdate(
        agency_id=entry.agency_id,
        entry_id=entry.id,
        cause=change.cause.value,
        reference=change.reference,
        effective_on=change.effective_on,
        due_on=deadline.due,
        deadline_provisional=deadline.provisional,
        calendar_version=deadline.calendar_version,
        opened_by=caller.user_id,
        opened_at=utcnow(),
    )
    session.add(update)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="catalogue.update_opened",
        target_type="catalogue_update",
        target_id=update.id,
        detail={"entry": entry.id, "due_on": deadline.due.isoformat(), "provisional": deadline.provisional},
    )
    return update


def _close_updates(session: Session, caller: Caller, entry: CatalogueEntry) -> list[int]:
    """The entry's new content is public (or the entry withdrawn): its open update items are done."""
    today, now = today_in_china(), utcnow()
    closed = []
    for update in session.scalars(
        select(CatalogueUpdate).where(
            CatalogueUpdate.entry_id == entry.id, CatalogueUpdate.closed_at.is_(None)
        )
    ):
        update.closed_at, update.closed_by = now, caller.user_id
        update.closed_on_time = today <= update.due_on
        closed.append(update.id)
    if closed:
        write_audit(
            session,
            actor=caller.user_id,
            action="catalogue.updates_closed",
            target_type="catalogue_entry",
            target_id=entry.id,
            detail={"updates": closed},
        )
    return closed


def _store(entry: CatalogueEntry, content: CatalogueContent) -> None:
    entry.content = content_to_mapping(content)
    entry.title = content.title[:300]


def create_entry(
    session: Session, caller: Caller, data: NewCatalogueEntry, *, calendar: WorkingDayCalendar | None = None
) -> CatalogueEntry:
    """A new draft entry of the agency's catalogue (and its update item, for a change in law or duties)."""
    if not caller.may_write(data.agency_id) or session.get(Agency, data.agency_id) is None:
        raise NotFound("机关不存在", "agency not found")
    _require_collector(caller)
    now = utcnow()
    entry = CatalogueEntry(
        agency_id=data.agency_id,
        kind=data.kind.value,
        state=ItemState.DRAFT.value,
        author=caller.user_id,
        created_at=now,
        updated_at=now,
    )
    _store(entry, data.content)
    session.add(entry)
    session.flush()
    update = _open_update(session, caller, entry, data.change, calendar)
    _history(
        session, entry, "create", caller.user_id, None, None, **({"update": update.id} if update else {})
    )
    return entry


def revise_entry(
    session: Session,
    caller: Caller,
    entry_id: int,
    data: EntryRevision,
    *,
    calendar: WorkingDayCalendar | None = None,
) -> CatalogueEntry:
    """Edit a draft, or put a revision of a published entry up for review; a law or duty change opens
    an update item (GS-9)."""
    entry = _writable(session, caller, entry_id)
    _require_collector(caller)
    content = data.typed(CatalogueKind(entry.kind))
    state = entry.state
    if state == ItemState.DRAFT.value:
        _store(entry, content)
        action = "edit"
    elif state in _PUBLIC:
        # The portal keeps the published copy until a reviewer applies the revision.
        entry.pending = content_to_mapping(content)
        entry.revised_by = caller.user_id
        action = "revise"
    else:
        raise Conflict(
            "只有草稿或已公示的条目可以修改（待审核的请先退回）",
            "only a draft or a published entry can be changed (return one in review first)",
        )
    update = _open_update(session, caller, entry, data.change, calendar)
    detail: dict[str, Any] = {"update": update.id} if update else {}
    if data.change is not None:
        detail["cause"] = data.change.cause.value
        detail["reference"] = data.change.reference
    _history(session, entry, action, caller.user_id, state, None, **detail)
    return entry


def submit_entry(session: Session, caller: Caller, entry_id: int) -> CatalogueEntry:
    """Draft → in review (GS-7)."""
    entry = _writable(session, caller, entry_id)
    _transition(session, caller, entry, Action.SUBMIT)
    return entry


def return_entry(session: Session, caller: Caller, entry_id: int, reason: str) -> CatalogueEntry:
    """In review → draft, with the reviewer's reason."""
    entry = _writable(session, caller, entry_id)
    _transition(session, caller, entry, Action.RETURN, reason)
    return entry


def _public_copy(session: Session, entry: CatalogueEntry, content: dict[str, Any]) -> dict[str, Any]:
    agency = session.get(Agency, entry.agency_id)
    return {
        "kind": entry.kind,
        "title": entry.title,
        "agency_id": entry.agency_id,
        "agency_name": agency.name if agency else "",
        "content": content,
    }


def publish_entry(session: Session, caller: Caller, entry_id: int) -> CatalogueEntry:
    """In review → published by a reviewer other than the author (GS-7); closes its update items."""
    entry = _writable(session, caller, entry_id)
    _transition(session, caller, entry, Action.PUBLISH)
    entry.published = _public_copy(session, entry, dict(entry.content))
    entry.published_at = entry.updated_at
    _close_updates(session, caller, entry)
    return entry


def apply_revision(session: Session, caller: Caller, entry_id: int, reason: str) -> CatalogueEntry:
    """Published → corrected: a reviewer other than the reviser publishes the revision (GS-9, GS-19)."""
    entry = _writable(session, caller, entry_id)
    if entry.pending is None:
        raise Conflict("该条目没有待审核的修订", "the entry has no revision to apply")
    if entry.revised_by == caller.user_id:
        raise TransitionForbidden(
            "修订须由修订人以外的人员审核发布", "a revision must be applied by someone other than its author"
        )
    _transition(session, caller, entry, Action.CORRECT, reason)
    # The revision was checked when it was stored; re-reading it gives its title.
    _store(entry, content_from_mapping(CatalogueKind(entry.kind), entry.pending))
    entry.pending, entry.revised_by = None, None
    entry.published = _public_copy(session, entry, dict(entry.content))
    entry.corrected_at = entry.updated_at
    _close_updates(session, caller, entry)
    return entry


def withdraw_entry(session: Session, caller: Caller, entry_id: int, reason: str) -> CatalogueEntry:
    """Published → withdrawn (a repealed law, a power no longer held); closes its update items."""
    entry = _writable(session, caller, entry_id)
    _transition(session, caller, entry, Action.WITHDRAW, reason)
    entry.pending, entry.revised_by = None, None
    entry.withdrawn_at = entry.updated_at
    _close_updates(session, caller, entry)
    return entry


def list_entries(
    session: Session, caller: Caller, *, kind: str | None = None, state: str | None = None
) -> list[CatalogueEntry]:
    """Entries the caller may see (their agency; every agency for supervisors), by kind then id."""
    query = select(CatalogueEntry).order_by(CatalogueEntry.agency_id, CatalogueEntry.kind, CatalogueEntry.id)
    if not caller.reads_all:
        query = query.where(CatalogueEntry.agency_id == (caller.agency_id or -1))
    if kind is not None:
        if kind not in {k.value for k in CatalogueKind}:
            raise Invalid(f"未知的目录类别 {kind[:40]}", f"unknown catalogue kind {kind[:40]}")
        query = query.where(CatalogueEntry.kind == kind)
    if state is not None:
        if state not in {s.value for s in ItemState}:
            raise Invalid(f"未知的状态 {state[:40]}", f"unknown state {state[:40]}")
        query = query.where(CatalogueEntry.state == state)
    return list(session.scalars(query.limit(1000)))


def list_updates(session: Session, caller: Caller, *, open_only: bool = False) -> list[CatalogueUpdate]:
    """Update items the caller may see, earliest deadline first."""
    query = select(CatalogueUpdate).order_by(CatalogueUpdate.due_on, CatalogueUpdate.id)
    if not caller.reads_all:
        query = query.where(CatalogueUpdate.agency_id == (caller.agency_id or -1))
    if open_only:
        query = query.where(CatalogueUpdate.closed_at.is_(None))
    return list(session.scalars(query.limit(1000)))


def agency_names(session: Session, agency_ids: set[int]) -> dict[int, str]:
    """The names of the given agencies, for lists that span agencies (a supervisor's catalogue)."""
    if not agency_ids:
        return {}
    rows = session.execute(select(Agency.id, Agency.name).where(Agency.id.in_(sorted(agency_ids))))
    return {agency_id: name for agency_id, name in rows}


def update_to_dict(update: CatalogueUpdate, today: date | None = None) -> dict[str, Any]:
    """An update item as the API shows it; ``overdue`` when open past its deadline."""
    day = today or today_in_china()
    return {
        "id": update.id,
        "agency_id": update.agency_id,
        "entry_id": update.entry_id,
        "cause": update.cause,
        "reference": update.reference,
        "effective_on": update.effective_on.isoformat(),
        "due_on": update.due_on.isoformat(),
        "deadline_provisional": update.deadline_provisional,
        "calendar_version": update.calendar_version,
        "opened_by": update.opened_by,
        "opened_at": update.opened_at.isoformat(),
        "closed_at": update.closed_at.isoformat() if update.closed_at else None,
        "closed_on_time": update.closed_on_time,
        "overdue": update.closed_at is None and update.due_on < day,
    }


def entry_to_dict(session: Session, entry: CatalogueEntry, *, history: bool = False) -> dict[str, Any]:
    """An entry as the staff API shows it, with its update items (and its history on request)."""
    data: dict[str, Any] = {
        "id": entry.id,
        "agency_id": entry.agency_id,
        "kind": entry.kind,
        "paragraph": CatalogueKind(entry.kind).paragraph,
        "title": entry.title,
        "state": entry.state,
        "author": entry.author,
        "content": entry.content,
        "pending": entry.pending,
        "revised_by": entry.revised_by,
        "published": entry.published,
        "published_at": entry.published_at.isoformat() if entry.published_at else None,
        "corrected_at": entry.corrected_at.isoformat() if entry.corrected_at else None,
        "withdrawn_at": entry.withdrawn_at.isoformat() if entry.withdrawn_at else None,
        "updates": [
            update_to_dict(u)
            for u in session.scalars(
                select(CatalogueUpdate)
                .where(CatalogueUpdate.entry_id == entry.id)
                .order_by(CatalogueUpdate.id)
            )
        ],
    }
    if history:
        data["history"] = [
            {
                "action": h.action,
                "from_state": h.from_state,
                "to_state": h.to_state,
                "actor": h.actor,
                "at": h.at.isoformat(),
                "reason": h.reason,
                "detail": h.detail,
            }
            for h in session.scalars(
                select(CatalogueHistory)
                .where(CatalogueHistory.entry_id == entry.id)
                .order_by(CatalogueHistory.id)
            )
        ]
    return data


def portal_catalogue(
    session: Session, *, agency_id: int | None = None, lang: str = "zh"
) -> list[dict[str, Any]]:
    """GS-9 on the public portal: per agency, per kind, the published copies only (never a draft or a
    pending revision), each as (label, text) rows in the page's language."""
    query = (
        select(CatalogueEntry, Agency.name)
        .join(Agency, Agency.id == CatalogueEntry.agency_id)
        .where(CatalogueEntry.state.in_(_PUBLIC))
        .order_by(Agency.name, CatalogueEntry.agency_id, CatalogueEntry.kind, CatalogueEntry.id)
    )
    if agency_id is not None:
        query = query.where(CatalogueEntry.agency_id == agency_id)
    agencies: dict[int, dict[str, Any]] = {}
    for entry, agency_name in session.execute(query.limit(5000)):
        copy = entry.published or {}
        kind = CatalogueKind(entry.kind)
        agency = agencies.setdefault(
            entry.agency_id, {"id": entry.agency_id, "name": agency_name, "kinds": {}}
        )
        section = agency["kinds"].setdefault(kind.value, {"label": kind.label(lang), "entries": []})
        section["entries"].append(
            {
                "id": entry.id,
                "title": copy.get("title", entry.title),
                "rows": public_fields(kind, copy.get("content") or {}, lang),
                "corrected_at": entry.corrected_at.date().isoformat() if entry.corrected_at else None,
            }
        )
    order = [kind.value for kind in CatalogueKind]
    for agency in agencies.values():
        agency["kinds"] = [agency["kinds"][k] for k in order if k in agency["kinds"]]
    return list(agencies.values())
