"""Holiday schedules in the database: the working-day calendar deadlines count in (GS-11, GS-12)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
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
from server.domain.publicity.models import HolidayScheduleRow, PublicationItem
from server.domain.publicity.workflow import ItemState

__all__ = ["CHINA", "calendar_of", "load_schedule", "parse_schedule", "today_in_china"]


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


def load_schedule(session: Session, caller: Caller, schedule: HolidaySchedule) -> list[int]:
    """Store a year's official schedule and recount the deadlines it changes (issue #10 point 7).

    Every item not yet published whose deadline was counted over that year (provisionally on weekends,
    or on an earlier schedule) gets its deadline recounted and the new calendar version; returns their ids.
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
    changed = []
    pending = session.scalars(
        select(PublicationItem).where(
            PublicationItem.state.in_([ItemState.DRAFT.value, ItemState.IN_REVIEW.value]),
            PublicationItem.calendar_version.contains(marker),
        )
    )
    for item in pending:
        start = item.decided_on or item.created_at.astimezone(CHINA).date()
        deadline = calendar.deadline(start, DeadlineRule[item.deadline_rule].working_days)
        if deadline.calendar_version == item.calendar_version:
            continue
        write_audit(
            session,
            actor=caller.user_id,
            action="publicity.deadline_recounted",
            target_type="publication_item",
            target_id=item.id,
            detail={
                "from": item.due_on.isoformat(),
                "to": deadline.due.isoformat(),
                "calendar": deadline.calendar_version,
            },
        )
        item.due_on = deadline.due
        item.deadline_provisional = deadline.provisional
        item.calendar_version = deadline.calendar_version
        changed.append(item.id)
    write_audit(
        session,
        actor=caller.user_id,
        action="publicity.calendar_loaded",
        target_type="holiday_schedule",
        target_id=schedule.year,
        detail={"version": schedule.version, "recounted": changed},
    )
    return changed


def today_in_china(now: datetime | None = None) -> date:
    """Today's date in Beijing (deadlines and disclosure windows are counted in Chinese dates)."""
    return (now or utcnow()).astimezone(CHINA).date()
