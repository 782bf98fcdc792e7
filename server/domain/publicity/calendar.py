"""Chinese working days and the publicity deadlines counted in them (GS-9, GS-11, GS-12).

A working day is a Monday to Friday that is not a public holiday, or a weekend day the State Council
has made a working day (调休). The State Council publishes each year's schedule in November or
December of the year before, so the schedule is data, one year at a time, loadable from a JSON file.

Two ways to ask, on purpose:
- ``WorkingDayCalendar.add_working_days`` is strict: a year whose schedule is not loaded raises
  ``UnknownCalendarYear`` instead of guessing.
- ``WorkingDayCalendar.deadline`` never raises for an unknown year: it counts weekends only there and
  says so (``provisional=True`` and the calendar version), so a deadline in a year not yet published
  is shown as provisional and recomputed once the schedule is loaded (issue #10, point 7).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import Enum
from pathlib import Path

from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.errors import CalendarDataError, PublicityError, UnknownCalendarYear

__all__ = [
    "BUILTIN_SCHEDULES",
    "Deadline",
    "DeadlineRule",
    "HolidaySchedule",
    "WorkingDayCalendar",
    "add_working_days",
    "default_calendar",
    "publication_rule",
    "schedule_from_file",
    "schedule_from_json",
    "schedule_from_mapping",
    "schedule_to_json",
]

_SATURDAY = 5


def _days(first: str, last: str | None = None) -> frozenset[date]:
    """Every day from ``first`` to ``last`` inclusive (one day when ``last`` is omitted)."""
    start = date.fromisoformat(first)
    end = date.fromisoformat(last) if last else start
    return frozenset(start + timedelta(days=i) for i in range((end - start).days + 1))


@dataclass(frozen=True, kw_only=True)
class HolidaySchedule:
    """One year's official schedule: the public holidays and the weekend days made working days."""

    year: int
    holidays: frozenset[date]
    workdays: frozenset[date]
    source: str

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise CalendarDataError(
                f"{self.year}年节假日安排缺少来源", f"the holiday schedule of {self.year} names no source"
            )
        for day in self.holidays | self.workdays:
            if day.year != self.year:
                raise CalendarDataError(
                    f"{day.isoformat()} 不属于 {self.year} 年的节假日安排",
                    f"{day.isoformat()} is outside the schedule's year {self.year}",
                )
        both = self.holidays & self.workdays
        if both:
            clash = min(both).isoformat()
            raise CalendarDataError(
                f"{clash} 不能既是节假日又是调休工作日",
                f"{clash} cannot be both a holiday and a make-up workday",
            )
        for day in self.workdays:
            # A make-up workday moves a weekend day; a weekday listed here is a typing error.
            if day.weekday() < _SATURDAY:
                raise CalendarDataError(
                    f"调休工作日 {day.isoformat()} 不是周末",
                    f"make-up workday {day.isoformat()} is not a weekend day",
                )

    @property
    def version(self) -> str:
        """``<year>:<digest>`` of the schedule's days, stored with each deadline computed from it."""
        canonical = "|".join(
            [
                ",".join(sorted(d.isoformat() for d in self.holidays)),
                ",".join(sorted(d.isoformat() for d in self.workdays)),
            ]
        )
        return f"{self.year}:{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"

    def is_working_day(self, day: date) -> bool:
        """Whether ``day`` (in this schedule's year) is a working day."""
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.weekday() < _SATURDAY


# 国务院办公厅关于2025年部分节假日安排的通知 (published 2024-11-12).
_SCHEDULE_2025 = HolidaySchedule(
    year=2025,
    holidays=_days("2025-01-01")
    | _days("2025-01-28", "2025-02-04")
    | _days("2025-04-04", "2025-04-06")
    | _days("2025-05-01", "2025-05-05")
    | _days("2025-05-31", "2025-06-02")
    | _days("2025-10-01", "2025-10-08"),
    workdays=_days("2025-01-26")
    | _days("2025-02-08")
    | _days("2025-04-27")
    | _days("2025-09-28")
    | _days("2025-10-11"),
    source="国务院办公厅关于2025年部分节假日安排的通知（2024-11-12）",
)

# 国务院办公厅关于2026年部分节假日安排的通知 (published 2025-11-04).
_SCHEDULE_2026 = HolidaySchedule(
    year=2026,
    holidays=_days("2026-01-01", "2026-01-03")
    | _days("2026-02-15", "2026-02-23")
    | _days("2026-04-04", "2026-04-06")
    | _days("2026-05-01", "2026-05-05")
    | _days("2026-06-19", "2026-06-21")
    | _days("2026-09-25", "2026-09-27")
    | _days("2026-10-01", "2026-10-07"),
    workdays=_days("2026-01-04")
    | _days("2026-02-14")
    | _days("2026-02-28")
    | _days("2026-05-09")
    | _days("2026-09-20")
    | _days("2026-10-10"),
    source="国务院办公厅关于2026年部分节假日安排的通知（2025-11-04）",
)

# 2027 is deliberately absent: its schedule had not been published when this table was written.
# Load it with `schedule_from_json` when the State Council publishes it; until then 2027 deadlines
# are provisional (weekends only).
BUILTIN_SCHEDULES: tuple[HolidaySchedule, ...] = (_SCHEDULE_2025, _SCHEDULE_2026)


def _parse_day(raw: object, where: str) -> date:
    if not isinstance(raw, str):
        raise CalendarDataError(f"{where} 应为日期字符串", f"{where} must be a date string")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise CalendarDataError(
            f"{where} 不是有效日期：{raw!r}", f"{where} is not a valid ISO date: {raw!r}"
        ) from None


def _parse_days(raw: object, where: str) -> frozenset[date]:
    """A list whose items are ``"YYYY-MM-DD"`` or ``["first", "last"]`` ranges."""
    if not isinstance(raw, list):
        raise CalendarDataError(f"{where} 应为列表", f"{where} must be a list")
    days: set[date] = set()
    for index, item in enumerate(raw):
        spot = f"{where}[{index}]"
        if isinstance(item, list):
            if len(item) != 2:
                raise CalendarDataError(f"{spot} 应为 [起, 止]", f"{spot} must be [first, last]")
            first, last = _parse_day(item[0], spot), _parse_day(item[1], spot)
            if last < first:
                raise CalendarDataError(f"{spot} 止日早于起日", f"{spot} ends before it starts")
            days |= {first + timedelta(days=i) for i in range((last - first).days + 1)}
        else:
            days.add(_parse_day(item, spot))
    return frozenset(days)


def schedule_from_mapping(data: Mapping[str, object]) -> HolidaySchedule:
    """Build a schedule from ``{"year", "source", "holidays", "workdays"}``; unknown keys are refused."""
    unknown = set(data) - {"year", "source", "holidays", "workdays"}
    if unknown:
        name = sorted(unknown)[0]
        raise CalendarDataError(f"节假日文件含未知字段 {name}", f"unknown key in holiday file: {name}")
    year = data.get("year")
    if not isinstance(year, int) or isinstance(year, bool) or not 2000 <= year <= 2200:
        raise CalendarDataError("year 应为 2000–2200 的整数", "year must be an integer between 2000 and 2200")
    source = data.get("source")
    if not isinstance(source, str):
        raise CalendarDataError(
            "source 应为字符串（通知名称或网址）", "source must be a string (notice title or URL)"
        )
    return HolidaySchedule(
        year=year,
        holidays=_parse_days(data.get("holidays"), "holidays"),
        workdays=_parse_days(data.get("workdays", []), "workdays"),
        source=source,
    )


def schedule_from_json(text: str) -> HolidaySchedule:
    """Parse one year's schedule from JSON text (the file an admin loads for a newly published year)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalendarDataError(
            f"节假日文件不是有效 JSON：{exc.msg}", f"holiday file is not valid JSON: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise CalendarDataError("节假日文件应为 JSON 对象", "holiday file must be a JSON object")
    return schedule_from_mapping(data)


def schedule_from_file(path: Path) -> HolidaySchedule:
    """Read one year's schedule from a UTF-8 JSON file."""
    return schedule_from_json(path.read_text(encoding="utf-8"))


def schedule_to_json(schedule: HolidaySchedule) -> str:
    """The JSON form ``schedule_from_json`` reads (one date per entry, sorted)."""
    return json.dumps(
        {
            "year": schedule.year,
            "source": schedule.source,
            "holidays": sorted(d.isoformat() for d in schedule.holidays),
            "workdays": sorted(d.isoformat() for d in schedule.workdays),
        },
        ensure_ascii=False,
        indent=1,
    )


@dataclass(frozen=True, kw_only=True)
class Deadline:
    """A due date counted in working days, with the calendar it was counted on."""

    start: date
    working_days: int
    due: date
    # True when some year between start and due had no official schedule (weekends only there).
    provisional: bool
    # ``2026:<digest>,2027:weekends-only``: which schedules the count used, stored with the deadline.
    calendar_version: str
    provisional_years: tuple[int, ...] = field(default=())


class WorkingDayCalendar:
    """Working days over the loaded yearly schedules; immutable, ``with_schedule`` returns a new one."""

    def __init__(self, schedules: Iterable[HolidaySchedule] = BUILTIN_SCHEDULES) -> None:
        by_year: dict[int, HolidaySchedule] = {}
        for schedule in schedules:
            # A later schedule for the same year overrides an earlier one (a corrected notice).
            by_year[schedule.year] = schedule
        self._by_year = by_year

    def with_schedule(self, schedule: HolidaySchedule) -> WorkingDayCalendar:
        """A calendar with ``schedule`` added, replacing any schedule of the same year."""
        return WorkingDayCalendar([*self._by_year.values(), schedule])

    @property
    def years(self) -> tuple[int, ...]:
        """The years with an official schedule, ascending."""
        return tuple(sorted(self._by_year))

    def schedule(self, year: int) -> HolidaySchedule:
        """The schedule of ``year``; ``UnknownCalendarYear`` when it is not loaded."""
        try:
            return self._by_year[year]
        except KeyError:
            raise UnknownCalendarYear(year) from None

    def is_working_day(self, day: date) -> bool:
        """Strict: whether ``day`` is a working day; raises ``UnknownCalendarYear`` for an unknown year."""
        return self.schedule(day.year).is_working_day(day)

    def _is_working_day_or_weekday(self, day: date) -> bool:
        schedule = self._by_year.get(day.year)
        if schedule is None:
            return day.weekday() < _SATURDAY
        return schedule.is_working_day(day)

    def add_working_days(self, start: date, count: int) -> date:
        """Strict: the ``count``-th working day after ``start`` (the start day itself is not counted).

        民法典 art. 201: a period counted in days starts on the day after the event. ``count == 0`` is
        ``start``. Raises ``UnknownCalendarYear`` as soon as the count enters a year without data.
        """
        _check_count(count)
        day = start
        remaining = count
        while remaining:
            day += timedelta(days=1)
            if self.is_working_day(day):
                remaining -= 1
        return day

    def deadline(self, start: date, count: int) -> Deadline:
        """Lenient: the due date, provisional (weekends only) where a year has no official schedule."""
        _check_count(count)
        _check_start(start)
        day = start
        remaining = count
        while remaining:
            day += timedelta(days=1)
            if self._is_working_day_or_weekday(day):
                remaining -= 1
        years = range(start.year, day.year + 1)
        missing = tuple(year for year in years if year not in self._by_year)
        version = ",".join(
            self._by_year[year].version if year in self._by_year else f"{year}:weekends-only"
            for year in years
        )
        return Deadline(
            start=start,
            working_days=count,
            due=day,
            provisional=bool(missing),
            calendar_version=version,
            provisional_years=missing,
        )


def _check_count(count: int) -> None:
    if count < 0:
        raise PublicityError(
            f"工作日数不能为负：{count}",
            f"the number of working days cannot be negative: {count}",
            field="count",
        )


# Deadlines are counted for decisions and changes of this span; a date outside it is a typing error
# (and 9999-12-31 plus one day would overflow), answered precisely instead of failing the count.
FIRST_YEAR, LAST_YEAR = 1950, 2099


def _check_start(start: date) -> None:
    if not FIRST_YEAR <= start.year <= LAST_YEAR:
        raise PublicityError(
            f"日期须在 {FIRST_YEAR} 至 {LAST_YEAR} 年之间：{start.isoformat()}",
            f"the date must lie in the years {FIRST_YEAR} to {LAST_YEAR}: {start.isoformat()}",
            field="start",
        )


def default_calendar() -> WorkingDayCalendar:
    """The calendar of the schedules shipped with the code."""
    return WorkingDayCalendar(BUILTIN_SCHEDULES)


def add_working_days(start: date, count: int, calendar: WorkingDayCalendar | None = None) -> date:
    """Strict ``count``-th working day after ``start`` on ``calendar`` (default: the shipped schedules)."""
    return (calendar or default_calendar()).add_working_days(start, count)


class DeadlineRule(Enum):
    """The publicity time limits, each a number of working days and the article that sets it."""

    # value = (working days, article)
    GS9_UPDATE = (20, "GS-9")
    GS11_PENALTY_OR_LICENSING = (7, "GS-11")
    GS11_OTHER = (20, "GS-11")
    GS12_WITHDRAWAL = (3, "GS-12")

    @property
    def working_days(self) -> int:
        """How many working days the rule allows."""
        return self.value[0]

    @property
    def article(self) -> str:
        """The article of the Publicity Measures that sets the limit."""
        return self.value[1]

    def due(self, start: date, calendar: WorkingDayCalendar | None = None) -> Deadline:
        """The deadline of this rule for an event on ``start`` (provisional where a year is unknown)."""
        return (calendar or default_calendar()).deadline(start, self.working_days)


def publication_rule(act: EnforcementAct) -> DeadlineRule:
    """GS-11: licensing and penalty decisions are published within 7 working days, other acts within 20."""
    if act in (EnforcementAct.PENALTY, EnforcementAct.LICENSING):
        return DeadlineRule.GS11_PENALTY_OR_LICENSING
    return DeadlineRule.GS11_OTHER
