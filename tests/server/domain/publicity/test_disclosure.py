"""Disclosure periods (GS-13): 3 months to 3 years, 1 year minimum in safety fields, the longest wins."""

from __future__ import annotations

from datetime import date

import pytest

from server.domain.publicity.codes import EnforcementAct, PenaltyKind
from server.domain.publicity.disclosure import DisclosurePolicy, DisclosureRule, RegulatedField, add_months
from server.domain.publicity.errors import DisclosureError

D = date.fromisoformat
POLICY = DisclosurePolicy()


@pytest.mark.parametrize(
    ("fields", "earliest_end", "ends"),
    [
        ((), "2026-06-02", "2029-03-02"),
        ((RegulatedField.GENERAL,), "2026-06-02", "2029-03-02"),
        ((RegulatedField.SPECIAL_EQUIPMENT,), "2027-03-02", "2029-03-02"),
        ((RegulatedField.WORK_SAFETY,), "2027-03-02", "2029-03-02"),
        ((RegulatedField.FIRE_SAFETY, RegulatedField.GENERAL), "2027-03-02", "2029-03-02"),
    ],
)
def test_gs13_default_window_by_field(
    fields: tuple[RegulatedField, ...], earliest_end: str, ends: str
) -> None:
    window = POLICY.window(
        EnforcementAct.PENALTY, D("2026-03-02"), penalty_kinds=[PenaltyKind.FINE], fields=fields
    )
    assert window.earliest_end == D(earliest_end)
    assert window.ends == D(ends)


def test_gs13_several_kinds_take_the_longest_period() -> None:
    policy = DisclosurePolicy(
        penalty_rules={
            PenaltyKind.WARNING: DisclosureRule(min_months=3, max_months=12),
            PenaltyKind.REVOKE_LICENCE: DisclosureRule(min_months=6, max_months=36),
        },
        act_rules={EnforcementAct.PENALTY: DisclosureRule(min_months=3, max_months=12)},
    )
    warning_only = policy.window(EnforcementAct.PENALTY, D("2026-03-02"), penalty_kinds=[PenaltyKind.WARNING])
    assert warning_only.ends == D("2027-03-02")
    both = policy.window(
        EnforcementAct.PENALTY,
        D("2026-03-02"),
        penalty_kinds=[PenaltyKind.WARNING, PenaltyKind.REVOKE_LICENCE],
    )
    assert both.earliest_end == D("2026-09-02")
    assert both.ends == D("2029-03-02")


@pytest.mark.parametrize(("minimum", "maximum"), [(2, 12), (3, 37), (12, 6)])
def test_gs13_a_rule_outside_the_national_bounds_is_refused(minimum: int, maximum: int) -> None:
    with pytest.raises(DisclosureError) as info:
        DisclosureRule(min_months=minimum, max_months=maximum)
    assert info.value.message and info.value.message_en


def test_gs13_safety_field_minimum_cannot_be_shortened() -> None:
    with pytest.raises(DisclosureError):
        DisclosurePolicy(
            field_rules={RegulatedField.FIRE_SAFETY: DisclosureRule(min_months=6, max_months=36)}
        )
    longer = DisclosurePolicy(
        field_rules={RegulatedField.FIRE_SAFETY: DisclosureRule(min_months=18, max_months=36)}
    )
    window = longer.window(EnforcementAct.PENALTY, D("2026-03-02"), fields=[RegulatedField.FIRE_SAFETY])
    assert window.earliest_end == D("2027-09-02")


def test_gs13_item_leaves_the_portal_after_its_disclosure_deadline() -> None:
    window = POLICY.window(EnforcementAct.PENALTY, D("2026-03-02"))
    assert window.is_public_on(D("2026-03-02"))
    assert window.is_public_on(D("2029-03-02"))
    assert not window.is_public_on(D("2029-03-03"))
    assert not window.is_public_on(D("2026-03-01"))


def test_gs13_early_termination_only_after_the_minimum() -> None:
    window = POLICY.window(EnforcementAct.PENALTY, D("2026-03-02"), fields=[RegulatedField.WORK_SAFETY])
    with pytest.raises(DisclosureError) as info:
        window.terminate_early(D("2027-03-01"))
    assert "2027-03-02" in info.value.message_en
    ended = window.terminate_early(D("2027-03-02"))
    assert ended.terminated_early
    assert ended.ends == D("2027-03-02")
    assert not ended.is_public_on(D("2027-03-03"))
    with pytest.raises(DisclosureError):
        window.terminate_early(D("2029-03-03"))


@pytest.mark.parametrize(
    ("day", "months", "result"),
    [("2026-11-30", 3, "2027-02-28"), ("2027-11-30", 3, "2028-02-29"), ("2026-01-31", 1, "2026-02-28"),
     ("2026-03-02", 36, "2029-03-02"), ("2026-12-15", 1, "2027-01-15")],
)  # fmt: skip
def test_months_are_calendar_months_clamped_to_the_month_end(day: str, months: int, result: str) -> None:
    assert add_months(D(day), months) == D(result)
