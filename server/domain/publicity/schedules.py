"""Holiday schedules in the database: the working-day calendar deadlines count in (GS-9, GS-11, GS-12)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Invalid
from server.domain.people.service import Caller
from server.domain.publicity.calendar import (
    DeadlineRule,
    HolidaySchedule,
    WorkingDayCalendar,
    default_calendar,
    schedule_from_mapping,
)
from server.domain.publicity.errors import TransitionForbidden
from server.domain.publicity.models import (
    CatalogueUpdate,
    HolidayScheduleRow,
    PublicationItem,
    WithdrawalOrder,
)
from server.domain.publicity.workflow import PUBLIC_STATES, ItemState

__all__ = [
    "CHINA",
    "DeadlineChange",
    "ScheduleLoad",
    "calendar_of",
    "load_schedule",
    "parse_schedule",
    "today_in_china",
]


# Deadlines are counted in Chinese working days on Beijing dates (UTC+8 all year, no summer time).
CHINA = timezone(timedelta(hours=8))


def calendar_of(session: Session) -> WorkingDayCalendar:
    """The shipped schedules, overridden by those an admin has loaded (a newer year, a corrected notice)."""
    calendar = default_calendar()
    for row in session.scalars(select(HolidayScheduleRow).order_by(HolidayScheduleRow.year)):
        schedule = schedule_from_mapping(
            {"year": row.year, "source": row.source, "holidays": row.holidays, "workdays": row.workdays}
        )
        calendar = calendar.with_schedule(schedule)
    return calendar


def parse_schedule(data: Any) -> HolidaySchedule:
    """Decode a schedule's JSON once, at the edge; a bad date or key is a precise error."""
    if not isinstance(data, dict):
        raise Invalid("节假日安排须为对象", "a holiday schedule must be an object")
    schedule: HolidaySchedule = schedule_from_mapping(data)
    return schedule


@dataclass(frozen=True, kw_only=True)
class DeadlineChange:
    """One deadline recounted on a newly loaded schedule: what it was and what it is now."""

    target: str  # "publication_item" (GS-11), "catalogue_update" (GS-9) or "withdrawal_order" (GS-12)
    id: int
    due_before: date
    due_after: date
    provisional: bool
    calendar_version: str


@dataclass(frozen=True, kw_only=True)
class ScheduleLoad:
    """What loading a schedule changed: every recounted deadline, in order."""

    year: int
    version: str
    changes: tuple[DeadlineChange, ...]

    @property
    def recounted(self) -> list[int]:
        """The ids of the publication items whose deadline was recounted."""
        return [c.id for c in self.changes if c.target == "publication_item"]

    @property
    def updates_recounted(self) -> list[int]:
        """The ids of the catalogue update items (GS-9) whose deadline was recounted."""
        return [c.id for c in self.changes if c.target == "catalogue_update"]

    @property
    def withdrawals_recounted(self) -> list[int]:
        """The ids of the GS-12 withdrawal orders whose deadline was recounted."""
        return [c.id for c in self.changes if c.target == "withdrawal_order"]


def load_schedule(session: Session, caller: Caller, schedule: HolidaySchedule) -> ScheduleLoad:
    """Store a year's official schedule and recount the deadlines it changes (issue #10 point 7).

    Every item not yet published whose deadline was counted over that year (provisionally on weekends,
    or on an earlier schedule), every open GS-9 catalogue update item and every GS-12 withdrawal order
    of an item still published counted over it, gets its deadline recounted and the new calendar
    version, with an audit row each; the latest order's new deadline is its item's. The API
    (``POST /api/v1/publicity/calendar``) and ``zfjl-server calendar load`` both call this.
    """
    if caller.role != "system_admin":
        raise TransitionForbidden(
            "只有系统管理员可以载入节假日安排", "only a system admin loads holiday schedules"
        )
    row = session.get(HolidayScheduleRow, schedule.year)
    values = {
        "source": schedule.source,
        "holidays": sorted(day.isoformat() for day in schedule.holidays),
        "workdays": sorted(day.isoformat() for day in schedule.workdays),
        "version": schedule.version,
        "loaded_by": caller.user_id,
        "loaded_at": utcnow(),
    }
    if row is None:
        session.add(HolidayScheduleRow(year=schedule.year, **values))
    else:
        for key, value in values.items():
            setattr(row, key, value)
    session.flush()
    calendar = calendar_of(session)
    marker = f"{schedule.year}:"
    changes: list[DeadlineChange] = []
    pending = session.scalars(
        select(PublicationItem)
        .where(
            PublicationItem.state.in_([ItemState.DRAFT.value, ItemState.IN_REVIEW.value]),
            PublicationItem.calendar_version.contains(marker),
        )
        .order_by(PublicationItem.id)
    )
    for item in pending:
        start = item.decided_on or item.created_at.astimezone(CHINA).date()
        change = _recount(
            session, caller, calendar, "publication_item", item, start, DeadlineRule[item.deadline_rule]
        )
        if change is not None:
            changes.append(change)
    open_updates = session.scalars(
        select(CatalogueUpdate)
        .where(CatalogueUpdate.closed_at.is_(None), CatalogueUpdate.calendar_version.contains(marker))
        .order_by(CatalogueUpdate.id)
    )
    for update in open_updates:
        change = _recount(
            session,
            caller,
            calendar,
            "catalogue_update",
            update,
            update.effective_on,
            DeadlineRule.GS9_UPDATE,
        )
        if change is not None:
            changes.append(change)
    changes.extend(_recount_withdrawals(session, caller, calendar, marker))
    write_audit(
        session,
        actor=caller.user_id,
        action="publicity.calendar_loaded",
        target_type="holiday_schedule",
        target_id=schedule.year,
        detail={
            "version": schedule.version,
            "recounted": [c.id for c in changes if c.target == "publication_item"],
            "updates_recounted": [c.id for c in changes if c.target == "catalogue_update"],
            "withdrawals_recounted": [c.id for c in changes if c.target == "withdrawal_order"],
        },
    )
    return ScheduleLoad(year=schedule.year, version=schedule.version, changes=tuple(changes))


def _recount_withdrawals(
    session: Session, caller: Caller, calendar: WorkingDayCalendar, marker: str
) -> list[DeadlineChange]:
    """GS-12 orders of items still on the portal, counted over the loaded year: recount each; the item
    owes its withdrawal by the deadline of its latest order, so that one moves the item's deadline."""
    changes = []
    ordered = session.scalars(
        select(WithdrawalOrder)
        .join(PublicationItem, PublicationItem.id == WithdrawalOrder.item_id)
        .where(
            PublicationItem.state.in_([state.value for state in PUBLIC_STATES]),
            WithdrawalOrder.calendar_version.contains(marker),
        )
        .order_by(WithdrawalOrder.id)
    ).all()
    for order in ordered:
        change = _recount(
            session,
            caller,
            calendar,
            "withdrawal_order",
            order,
            order.revoked_on,
            DeadlineRule.GS12_WITHDRAWAL,
        )
        if change is None:
            continue
        changes.append(change)
        latest = session.scalar(
            select(func.max(WithdrawalOrder.id)).where(WithdrawalOrder.item_id == order.item_id)
        )
        item = session.get(PublicationItem, order.item_id)
        if item is not None and latest == order.id:
            item.withdrawal_due_on = order.due_on
    return changes


def _recount(
    session: Session,
    caller: Caller,
    calendar: WorkingDayCalendar,
    target: str,
    row: PublicationItem | CatalogueUpdate | WithdrawalOrder,
    start: date,
    rule: DeadlineRule,
) -> DeadlineChange | None:
    """Recount one stored deadline on ``calendar``; None when its calendar version did not change."""
    deadline = calendar.deadline(start, rule.working_days)
    if deadline.calendar_version == row.calendar_version:
        return None
    write_audit(
        session,
        actor=caller.user_id,
        action="publicity.deadline_recounted",
        target_type=target,
        target_id=row.id,
        detail={
            "from": row.due_on.isoformat(),
            "to": deadline.due.isoformat(),
            "calendar": deadline.calendar_version,
        },
    )
    change = DeadlineChange(
        target=target,
        id=row.id,
        due_before=row.due_on,
        due_after=deadline.due,
        provisional=deadline.provisional,
        calendar_version=deadline.calendar_version,
    )
    row.due_on = deadline.due
    row.deadline_provisional = deadline.provisional
    row.calendar_version = deadline.calendar_version
    return change


def today_in_china(now: datetime | None = None) -> date:
    """Today's date in Beijing (deadlines and disclosure windows are counted in Chinese dates)."""
    return (now or utcnow()).astimezone(CHINA).date()
