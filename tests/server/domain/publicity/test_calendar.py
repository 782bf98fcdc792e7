"""Working days and publicity deadlines (GS-9, GS-11, GS-12; issue #10 point 7)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from server.domain.publicity.calendar import (
    DeadlineRule,
    HolidaySchedule,
    WorkingDayCalendar,
    add_working_days,
    default_calendar,
    publication_rule,
    schedule_from_file,
    schedule_from_json,
    schedule_to_json,
)
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.errors import CalendarDataError, PublicityError, UnknownCalendarYear

D = date.fromisoformat

# (event day, rule, expected due day, why) — expectations checked against the State Council schedules.
DEADLINES = [
    (
        "2026-09-30",
        DeadlineRule.GS11_PENALTY_OR_LICENSING,
        "2026-10-15",
        "National Day 10/1-7 off, Sat 10/10 on",
    ),
    (
        "2026-02-13",
        DeadlineRule.GS11_PENALTY_OR_LICENSING,
        "2026-03-02",
        "Spring Festival 2/15-23 off, 2/14, 2/28 on",
    ),
    ("2026-09-18", DeadlineRule.GS12_WITHDRAWAL, "2026-09-22", "Sun 9/20 is a make-up workday"),
    ("2026-04-30", DeadlineRule.GS12_WITHDRAWAL, "2026-05-08", "Labour Day 5/1-5 off"),
    ("2026-04-01", DeadlineRule.GS9_UPDATE, "2026-04-30", "Qingming Mon 4/6 off"),
    ("2026-09-30", DeadlineRule.GS11_OTHER, "2026-11-03", "20 working days across National Day"),
    (
        "2025-09-30",
        DeadlineRule.GS11_PENALTY_OR_LICENSING,
        "2025-10-16",
        "2025 National Day 10/1-8, Sat 10/11 on",
    ),
    ("2025-01-24", DeadlineRule.GS11_PENALTY_OR_LICENSING, "2025-02-10", "2025 Spring Festival, Sun 1/26 on"),
    ("2026-01-01", DeadlineRule.GS12_WITHDRAWAL, "2026-01-06", "New Year 1/1-3 off, Sun 1/4 on"),
]


@pytest.mark.parametrize(("start", "rule", "due", "why"), DEADLINES)
def test_deadlines_count_chinese_working_days(start: str, rule: DeadlineRule, due: str, why: str) -> None:
    deadline = rule.due(D(start))
    assert deadline.due == D(due), why
    assert not deadline.provisional
    assert deadline.working_days == rule.working_days
    assert add_working_days(D(start), rule.working_days) == D(due)


def test_gs11_penalty_decision_due_in_7_working_days_across_national_day_2026() -> None:
    rule = publication_rule(EnforcementAct.PENALTY)
    assert rule.working_days == 7
    assert rule.due(D("2026-09-30")).due == D("2026-10-15")


def test_gs11_licensing_decision_due_in_7_working_days_across_spring_festival_2026() -> None:
    assert publication_rule(EnforcementAct.LICENSING).due(D("2026-02-13")).due == D("2026-03-02")


@pytest.mark.parametrize(
    "act", [EnforcementAct.COERCION, EnforcementAct.INSPECTION, EnforcementAct.LEVY, EnforcementAct.OTHER]
)
def test_gs11_other_acts_due_in_20_working_days(act: EnforcementAct) -> None:
    assert publication_rule(act) is DeadlineRule.GS11_OTHER
    assert publication_rule(act).working_days == 20


def test_gs12_withdrawal_due_in_3_working_days() -> None:
    assert DeadlineRule.GS12_WITHDRAWAL.working_days == 3
    assert DeadlineRule.GS12_WITHDRAWAL.article == "GS-12"


def test_gs9_update_due_in_20_working_days() -> None:
    assert DeadlineRule.GS9_UPDATE.due(D("2026-04-01")).due == D("2026-04-30")


@pytest.mark.parametrize(
    ("day", "working"),
    [
        ("2026-02-14", True),  # Saturday made a working day
        ("2026-02-16", False),  # Monday in the Spring Festival
        ("2026-10-07", False),
        ("2026-10-08", True),
        ("2026-10-11", False),  # ordinary Sunday
        ("2025-04-27", True),  # Sunday made a working day in 2025
        ("2025-06-02", False),  # Dragon Boat Monday 2025
    ],
)
def test_is_working_day(day: str, working: bool) -> None:
    assert default_calendar().is_working_day(D(day)) is working


def test_start_day_is_not_counted_and_zero_days_is_the_start() -> None:
    assert add_working_days(D("2026-03-02"), 1) == D("2026-03-03")
    assert add_working_days(D("2026-03-02"), 0) == D("2026-03-02")


def test_negative_count_is_a_precise_error() -> None:
    with pytest.raises(PublicityError) as info:
        add_working_days(D("2026-03-02"), -1)
    assert "negative" in info.value.message_en


# A schedule made up for these tests (2027's official one is not published yet): New Year 1/1-3 off.
TEST_2027 = {
    "year": 2027,
    "source": "test schedule",
    "holidays": [["2027-01-01", "2027-01-03"]],
    "workdays": [],
}


def test_unknown_year_is_an_explicit_error_for_the_strict_count() -> None:
    with pytest.raises(UnknownCalendarYear) as info:
        add_working_days(D("2026-12-25"), 7)
    assert info.value.year == 2027
    assert "2027" in info.value.message and "2027" in info.value.message_en


def test_deadline_in_2027_is_provisional_before_its_schedule_is_loaded() -> None:
    deadline = DeadlineRule.GS11_PENALTY_OR_LICENSING.due(D("2026-12-25"))
    # Weekends only in 2027: Fri 1/1 counts as a working day.
    assert deadline.due == D("2027-01-05")
    assert deadline.provisional
    assert deadline.provisional_years == (2027,)
    assert deadline.calendar_version.endswith("2027:weekends-only")
    assert deadline.calendar_version.startswith("2026:")


def test_deadline_in_2027_is_recomputed_and_final_after_its_schedule_is_loaded() -> None:
    calendar = default_calendar().with_schedule(schedule_from_json(json.dumps(TEST_2027)))
    deadline = DeadlineRule.GS11_PENALTY_OR_LICENSING.due(D("2026-12-25"), calendar)
    assert deadline.due == D("2027-01-06")
    assert not deadline.provisional
    assert "weekends-only" not in deadline.calendar_version
    assert calendar.add_working_days(D("2026-12-25"), 7) == D("2027-01-06")


def test_deadline_inside_a_known_year_names_only_that_year() -> None:
    deadline = DeadlineRule.GS12_WITHDRAWAL.due(D("2026-06-01"))
    assert deadline.calendar_version == default_calendar().schedule(2026).version


def test_a_loaded_schedule_overrides_the_shipped_one_of_the_same_year() -> None:
    shipped = default_calendar()
    corrected = dict(year=2026, source="corrected notice", holidays=["2026-03-03"], workdays=[])
    calendar = shipped.with_schedule(schedule_from_json(json.dumps(corrected)))
    assert not calendar.is_working_day(D("2026-03-03"))
    assert calendar.is_working_day(D("2026-10-05"))  # the shipped holidays are gone with the override
    assert shipped.is_working_day(D("2026-03-03"))  # calendars are immutable
    assert calendar.schedule(2026).version != shipped.schedule(2026).version


def test_schedule_file_round_trip(tmp_path: Path) -> None:
    schedule = default_calendar().schedule(2026)
    path = tmp_path / "2026.json"
    path.write_text(schedule_to_json(schedule), encoding="utf-8")
    loaded = schedule_from_file(path)
    assert loaded == schedule
    assert loaded.version == schedule.version


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({**TEST_2027, "workdays": ["2027-01-04"]}, "not a weekend day"),
        ({**TEST_2027, "holidays": ["2026-12-31"]}, "outside the schedule's year"),
        ({**TEST_2027, "holidays": ["2027-01-09"], "workdays": ["2027-01-09"]}, "both a holiday"),
        ({**TEST_2027, "holidays": [["2027-01-03", "2027-01-01"]]}, "ends before it starts"),
        ({**TEST_2027, "holidays": ["2027-02-30"]}, "not a valid ISO date"),
        ({**TEST_2027, "year": "2027"}, "year must be an integer"),
        ({**TEST_2027, "source": ""}, "names no source"),
        ({**TEST_2027, "extra": 1}, "unknown key"),
    ],
)
def test_bad_schedule_file_is_refused_with_a_precise_error(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(CalendarDataError) as info:
        schedule_from_json(json.dumps(data))
    assert fragment in info.value.message_en
    assert info.value.message


def test_schedule_that_is_not_json_is_refused() -> None:
    with pytest.raises(CalendarDataError):
        schedule_from_json("{year: 2027")


def test_shipped_years_are_2025_and_2026() -> None:
    assert default_calendar().years == (2025, 2026)
    assert WorkingDayCalendar([]).years == ()
    assert isinstance(default_calendar().schedule(2025), HolidaySchedule)
