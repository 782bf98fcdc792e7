"""Publication deadline alerts per agency (GS-22, GS-23), kept the way fleet alerts are kept.

GS-23 asks for a warning *before* a deadline passes, not only a red row after it. The rules below look
at what the item workflow already stores (state, ``due_on`` counted in Chinese working days, GS-11) and
yield the conditions that hold today; :func:`evaluate_deadline_alerts` opens an alert for a new
condition, refreshes an open one, and clears those that no longer hold (the item was published,
excluded, or moved from "due soon" to "overdue") — the same open/refresh/clear cycle as
``server.domain.fleet.alerts.evaluate_alerts``, run by the same kind of worker (``server/workers``).
An alert carries its agency, and an agency-bound caller lists its own agency's alerts only (JL-20).

Two more deadlines are watched the same way. GS-12: a published decision that was revoked, found illegal
or is to be redone must be withdrawn within 3 working days; once :func:`service.order_withdrawal` has
recorded that (``withdrawal_due_on`` on a still-published item) it raises ``withdrawal_due_soon``, then
``withdrawal_overdue``, until it is withdrawn. JL-18: an ended case is archived within 30 days; the
archive deadlines are governance's (``server.domain.governance.archive_listing.archive_deadlines``),
which the worker passes in as :class:`ArchiveDue` — governance already imports publicity, so publicity
must not import governance back. They raise ``archive_due_soon`` in the last
:data:`ARCHIVE_DUE_SOON` days and ``archive_overdue`` after, until the case's package is sealed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.base import utcnow
from server.domain.people.service import Caller
from server.domain.publicity.calendar import WorkingDayCalendar
from server.domain.publicity.models import DeadlineAlert, PublicationItem
from server.domain.publicity.schedules import calendar_of, today_in_china
from server.domain.publicity.workflow import PUBLIC_STATES, ItemState

__all__ = [
    "ALERT_KINDS",
    "ARCHIVE_DUE_SOON",
    "DUE_SOON_WORKING_DAYS",
    "ArchiveDue",
    "DeadlineCondition",
    "archive_conditions",
    "deadline_alert_to_dict",
    "deadline_conditions",
    "evaluate_deadline_alerts",
    "open_deadline_alerts",
    "withdrawal_conditions",
]

# GS-23: warn while three working days are left — the deadline board's "due soon" column uses the same
# count, so an alert and the board never disagree about an item.
DUE_SOON_WORKING_DAYS = 3
# Items that still owe publication; every other state has met or no longer has a deadline.
_UNPUBLISHED = (ItemState.DRAFT.value, ItemState.IN_REVIEW.value)
_MAX_LISTED = 500
# JL-18: warn in the last five days of the 30 an ended case has to be archived.
ARCHIVE_DUE_SOON = timedelta(days=5)
ALERT_KINDS = (
    "publication_due_soon",
    "publication_overdue",
    "withdrawal_due_soon",
    "withdrawal_overdue",
    "archive_due_soon",
    "archive_overdue",
)
_ARCHIVE_KINDS = frozenset({"archive_due_soon", "archive_overdue"})


@dataclass(frozen=True, kw_only=True)
class DeadlineCondition:
    """A deadline condition that holds today for one publication item."""

    agency_id: int
    kind: str  # one of ALERT_KINDS
    severity: str
    message: str
    message_en: str
    detail: dict[str, Any] = field(default_factory=dict)
    item_id: int | None = None  # publication and withdrawal alerts
    case_id: int | None = None  # archive alerts


@dataclass(frozen=True, kw_only=True)
class ArchiveDue:
    """An ended case without an archive package and its JL-18 deadline (from governance)."""

    case_id: int
    agency_id: int
    number: str
    ended_at: datetime
    due_at: datetime


def _working_days_left(calendar: WorkingDayCalendar, today: date, due_on: date) -> int | None:
    """0 when due today, 1..DUE_SOON_WORKING_DAYS when that many working days remain, else None."""
    for left in range(DUE_SOON_WORKING_DAYS + 1):
        if due_on <= calendar.deadline(today, left).due:
            return left
    return None


def _label(item: PublicationItem) -> str:
    return item.title or item.document_number or f"#{item.id}"


def deadline_conditions(
    session: Session, today: date, calendar: WorkingDayCalendar | None = None
) -> list[DeadlineCondition]:
    """GS-23: the overdue and nearly due unpublished items of every agency, as of ``today``."""
    calendar = calendar or calendar_of(session)
    out: list[DeadlineCondition] = []
    query = (
        select(PublicationItem).where(PublicationItem.state.in_(_UNPUBLISHED)).order_by(PublicationItem.id)
    )
    for item in session.scalars(query):
        detail = {
            "due_on": item.due_on.isoformat(),
            "state": item.state,
            "deadline_rule": item.deadline_rule,
            "deadline_provisional": item.deadline_provisional,
        }
        label = _label(item)
        if item.due_on < today:
            days = (today - item.due_on).days
            out.append(
                DeadlineCondition(
                    agency_id=item.agency_id,
                    item_id=item.id,
                    kind="publication_overdue",
                    severity="critical",
                    message=f"公示事项“{label}”已超过公示期限 {item.due_on.isoformat()}（逾期 {days} 天）",
                    message_en=f"publication item “{label}” is past its deadline {item.due_on.isoformat()} "
                    f"({days} days late)",
                    detail={**detail, "days_late": days},
                )
            )
            continue
        left = _working_days_left(calendar, today, item.due_on)
        if left is not None:
            when_zh = "今天到期" if left == 0 else f"还剩 {left} 个工作日"
            when_en = "is due today" if left == 0 else f"has {left} working day(s) left"
            out.append(
                DeadlineCondition(
                    agency_id=item.agency_id,
                    item_id=item.id,
                    kind="publication_due_soon",
                    severity="warning",
                    message=f"公示事项“{label}”将于 {item.due_on.isoformat()} 到期，{when_zh}",
                    message_en=f"publication item “{label}” {when_en} (due {item.due_on.isoformat()})",
                    detail={**detail, "working_days_left": left},
                )
            )
    return out


def withdrawal_conditions(
    session: Session, today: date, calendar: WorkingDayCalendar | None = None
) -> list[DeadlineCondition]:
    """GS-12: published items ordered withdrawn and not yet withdrawn, due soon or overdue as of ``today``."""
    calendar = calendar or calendar_of(session)
    out: list[DeadlineCondition] = []
    query = (
        select(PublicationItem)
        .where(
            PublicationItem.state.in_([state.value for state in PUBLIC_STATES]),
            PublicationItem.withdrawal_due_on.is_not(None),
        )
        .order_by(PublicationItem.id)
    )
    for item in session.scalars(query):
        due_on = item.withdrawal_due_on
        if due_on is None:  # filtered by the query; keeps the type checker honest
            continue
        label = _label(item)
        detail: dict[str, Any] = {"withdrawal_due_on": due_on.isoformat(), "state": item.state}
        if due_on < today:
            days = (today - due_on).days
            out.append(
                DeadlineCondition(
                    agency_id=item.agency_id,
                    item_id=item.id,
                    kind="withdrawal_overdue",
                    severity="critical",
                    message=f"须撤回的公示事项“{label}”已超过撤回期限 {due_on.isoformat()}（逾期 {days} 天）",
                    message_en=f"publication item “{label}” should have been withdrawn by "
                    f"{due_on.isoformat()} ({days} days late)",
                    detail={**detail, "days_late": days},
                )
            )
            continue
        # The whole GS-12 window is three working days, so an ordered withdrawal is always "due soon".
        left = _working_days_left(calendar, today, due_on)
        when_zh = "今天到期" if left == 0 else f"还剩 {left} 个工作日" if left is not None else "尚未到期"
        when_en = (
            "is due today" if left == 0 else f"has {left} working day(s) left" if left is not None else ""
        )
        out.append(
            DeadlineCondition(
                agency_id=item.agency_id,
                item_id=item.id,
                kind="withdrawal_due_soon",
                severity="warning",
                message=f"公示事项“{label}”须于 {due_on.isoformat()} 前撤回，{when_zh}",
                message_en=f"publication item “{label}” must be withdrawn by {due_on.isoformat()}"
                + (f"; it {when_en}" if when_en else ""),
                detail={**detail, "working_days_left": left},
            )
        )
    return out


def archive_conditions(archives: Sequence[ArchiveDue], now: datetime) -> list[DeadlineCondition]:
    """JL-18: ended cases without a package in their last :data:`ARCHIVE_DUE_SOON`, or past their 30 days."""
    out: list[DeadlineCondition] = []
    for case in archives:
        detail: dict[str, Any] = {
            "number": case.number,
            "ended_at": case.ended_at.isoformat(),
            "due_at": case.due_at.isoformat(),
        }
        label = case.number or f"#{case.case_id}"
        due_local = today_in_china(case.due_at).isoformat()
        if case.due_at < now:
            days = (now - case.due_at).days
            out.append(
                DeadlineCondition(
                    agency_id=case.agency_id,
                    case_id=case.case_id,
                    kind="archive_overdue",
                    severity="critical",
                    message=f"案件“{label}”办结已超过 30 日仍未归档（应于 {due_local} 前，逾期 {days} 天）",
                    message_en=f"case “{label}” ended more than 30 days ago and is not archived "
                    f"(due {due_local}, {days} days late)",
                    detail={**detail, "days_late": days},
                )
            )
        elif case.due_at - now <= ARCHIVE_DUE_SOON:
            days_left = (case.due_at - now).days
            out.append(
                DeadlineCondition(
                    agency_id=case.agency_id,
                    case_id=case.case_id,
                    kind="archive_due_soon",
                    severity="warning",
                    message=f"案件“{label}”须于 {due_local} 前归档（还剩 {days_left} 天）",
                    message_en=f"case “{label}” must be archived by {due_local} ({days_left} days left)",
                    detail={**detail, "days_left": days_left},
                )
            )
    return out


def evaluate_deadline_alerts(
    session: Session,
    *,
    today: date | None = None,
    now: datetime | None = None,
    archives: Sequence[ArchiveDue] | None = None,
) -> dict[str, int]:
    """Open, refresh and clear the deadline alerts of every agency; idempotent; return counts.

    ``archives``: every ended case still waiting for its package (JL-18); ``None`` leaves the archive
    alerts untouched (the caller did not look).
    """
    now = now or utcnow()
    day = today or today_in_china(now)
    open_rows = {
        (row.item_id, row.case_id, row.kind): row
        for row in session.scalars(select(DeadlineAlert).where(DeadlineAlert.cleared_at.is_(None)))
    }
    holding: set[tuple[int | None, int | None, str]] = set()
    opened = cleared = 0
    conditions = deadline_conditions(session, day) + withdrawal_conditions(session, day)
    if archives is not None:
        conditions += archive_conditions(archives, now)
    for cond in conditions:
        key = (cond.item_id, cond.case_id, cond.kind)
        holding.add(key)
        row = open_rows.get(key)
        if row is None:
            session.add(
                DeadlineAlert(
                    agency_id=cond.agency_id,
                    item_id=cond.item_id,
                    case_id=cond.case_id,
                    kind=cond.kind,
                    severity=cond.severity,
                    message=cond.message,
                    message_en=cond.message_en,
                    detail=cond.detail,
                    raised_at=now,
                    last_seen_at=now,
                )
            )
            opened += 1
        else:
            row.message, row.message_en, row.detail, row.last_seen_at = (
                cond.message,
                cond.message_en,
                cond.detail,
                now,
            )
    for key, row in open_rows.items():
        if archives is None and row.kind in _ARCHIVE_KINDS:
            continue  # no archive deadlines were given this round: leave those alerts as they are
        if key not in holding:
            row.cleared_at = now
            cleared += 1
    session.flush()
    return {"opened": opened, "cleared": cleared, "open": len(holding)}


def open_deadline_alerts(session: Session, caller: Caller) -> list[DeadlineAlert]:
    """The open deadline alerts the caller may see (own agency; every agency for cross-agency readers)."""
    query = select(DeadlineAlert).where(DeadlineAlert.cleared_at.is_(None))
    if not caller.reads_all:
        query = query.where(DeadlineAlert.agency_id == (caller.agency_id or -1))
    rows = list(
        session.scalars(
            query.order_by(DeadlineAlert.raised_at.desc(), DeadlineAlert.id.desc()).limit(_MAX_LISTED)
        )
    )
    return sorted(rows, key=lambda r: r.severity != "critical")


def deadline_alert_to_dict(row: DeadlineAlert) -> dict[str, Any]:
    """JSON view of a deadline alert."""
    return {
        "id": row.id,
        "agency_id": row.agency_id,
        "item_id": row.item_id,
        "case_id": row.case_id,
        "kind": row.kind,
        "severity": row.severity,
        "message": row.message,
        "message_en": row.message_en,
        "detail": row.detail,
        "raised_at": row.raised_at.isoformat(),
        "last_seen_at": row.last_seen_at.isoformat(),
        "cleared_at": row.cleared_at.isoformat() if row.cleared_at else None,
    }
