"""How long a published decision stays public: the per-category disclosure period (GS-13).

GS-13 sends credit-related periods to the national credit rules (国家发展改革委令第58号, 2023): a penalty
is public for at least 3 months and at most 3 years from the decision date; at least 1 year in the
fields of special equipment, work safety and fire safety; with several kinds, the longest applies. The
item leaves the portal by itself when the maximum ends (its 公示截止期); it may be taken down early
(信用修复) only once the minimum has passed.
"""

from __future__ import annotations

import calendar as _gregorian
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from server.domain.publicity.codes import EnforcementAct, PenaltyKind
from server.domain.publicity.errors import DisclosureError

__all__ = [
    "NATIONAL_MAX_MONTHS",
    "NATIONAL_MIN_MONTHS",
    "SAFETY_MIN_MONTHS",
    "DisclosurePolicy",
    "DisclosureRule",
    "DisclosureWindow",
    "RegulatedField",
    "add_months",
]

NATIONAL_MIN_MONTHS = 3
NATIONAL_MAX_MONTHS = 36
SAFETY_MIN_MONTHS = 12


class RegulatedField(StrEnum):
    """The field a decision belongs to, where the national rules set a longer minimum."""

    GENERAL = "general"
    SPECIAL_EQUIPMENT = "special_equipment"  # 特种设备
    WORK_SAFETY = "work_safety"  # 安全生产
    FIRE_SAFETY = "fire_safety"  # 消防

    @property
    def label(self) -> str:
        """The Chinese name of the field."""
        return _FIELD_LABELS[self]


_FIELD_LABELS = {
    RegulatedField.GENERAL: "一般领域",
    RegulatedField.SPECIAL_EQUIPMENT: "特种设备",
    RegulatedField.WORK_SAFETY: "安全生产",
    RegulatedField.FIRE_SAFETY: "消防",
}
_SAFETY_FIELDS = frozenset(
    {RegulatedField.SPECIAL_EQUIPMENT, RegulatedField.WORK_SAFETY, RegulatedField.FIRE_SAFETY}
)


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months`` calendar months, clamped to the month's last day (30 Nov + 3 → 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, _gregorian.monthrange(year, month)[1]))


@dataclass(frozen=True, kw_only=True)
class DisclosureRule:
    """The shortest and longest disclosure of a category, in months from the decision date."""

    min_months: int
    max_months: int

    def __post_init__(self) -> None:
        if self.min_months < NATIONAL_MIN_MONTHS or self.max_months > NATIONAL_MAX_MONTHS:
            raise DisclosureError(
                f"公示期限须在{NATIONAL_MIN_MONTHS}个月至{NATIONAL_MAX_MONTHS}个月之间，"
                f"实际为{self.min_months}–{self.max_months}个月",
                f"a disclosure period lies between {NATIONAL_MIN_MONTHS} and {NATIONAL_MAX_MONTHS} months, "
                f"not {self.min_months}-{self.max_months}",
                field="disclosure_rule",
            )
        if self.min_months > self.max_months:
            raise DisclosureError(
                "最短公示期限不能长于最长公示期限",
                "the shortest disclosure period cannot be longer than the longest",
                field="disclosure_rule",
            )

    def combine(self, other: DisclosureRule) -> DisclosureRule:
        """With several kinds or fields the longest applies, at both ends."""
        return DisclosureRule(
            min_months=max(self.min_months, other.min_months),
            max_months=max(self.max_months, other.max_months),
        )


_NATIONAL_DEFAULT = DisclosureRule(min_months=NATIONAL_MIN_MONTHS, max_months=NATIONAL_MAX_MONTHS)
_SAFETY_DEFAULT = DisclosureRule(min_months=SAFETY_MIN_MONTHS, max_months=NATIONAL_MAX_MONTHS)


@dataclass(frozen=True, kw_only=True)
class DisclosureWindow:
    """When an item is public: from its decision date to its 公示截止期, and when it may end early."""

    start: date
    earliest_end: date  # the minimum has passed on this day; 信用修复 may end disclosure from here on
    ends: date  # 公示截止期 (CF_GSJZQ): the item is public up to and including this day
    terminated_early: bool = False

    def is_public_on(self, day: date) -> bool:
        """Whether the portal shows the item on ``day``."""
        return self.start <= day <= self.ends

    def terminate_early(self, on: date) -> DisclosureWindow:
        """End disclosure on ``on`` after a credit repair; refused before the minimum has passed (GS-13)."""
        if on < self.earliest_end:
            raise DisclosureError(
                f"最短公示期限至 {self.earliest_end.isoformat()} 届满，之前不能提前终止公示",
                f"the minimum disclosure period runs until {self.earliest_end.isoformat()}; "
                "disclosure cannot end early before then",
                field="terminate_on",
            )
        if on > self.ends:
            raise DisclosureError(
                f"公示已于 {self.ends.isoformat()} 截止，无需提前终止",
                f"disclosure already ended on {self.ends.isoformat()}; there is nothing to end early",
                field="terminate_on",
            )
        return DisclosureWindow(
            start=self.start, earliest_end=self.earliest_end, ends=on, terminated_early=True
        )


class DisclosurePolicy:
    """Per-category disclosure rules: by penalty kind, by kind of act, and by regulated field."""

    def __init__(
        self,
        *,
        penalty_rules: Mapping[PenaltyKind, DisclosureRule] | None = None,
        act_rules: Mapping[EnforcementAct, DisclosureRule] | None = None,
        field_rules: Mapping[RegulatedField, DisclosureRule] | None = None,
    ) -> None:
        self._penalty = dict(penalty_rules or {})
        self._act = dict(act_rules or {})
        fields = {field: _SAFETY_DEFAULT for field in _SAFETY_FIELDS}
        fields.update(field_rules or {})
        for field, rule in fields.items():
            # An agency may lengthen a safety field's minimum, never shorten it below the national year.
            if field in _SAFETY_FIELDS and rule.min_months < SAFETY_MIN_MONTHS:
                raise DisclosureError(
                    f"{field.label}领域最短公示期限不得少于{SAFETY_MIN_MONTHS}个月",
                    f"the minimum disclosure for {field.value} is at least {SAFETY_MIN_MONTHS} months",
                    field="disclosure_rule",
                )
        self._field = fields

    def rule_for(
        self,
        act: EnforcementAct,
        *,
        penalty_kinds: Iterable[PenaltyKind] = (),
        fields: Iterable[RegulatedField] = (),
    ) -> DisclosureRule:
        """The rule of a decision: the longest over its act, each penalty kind and each field."""
        rule = self._act.get(act, _NATIONAL_DEFAULT)
        for kind in penalty_kinds:
            rule = rule.combine(self._penalty.get(kind, _NATIONAL_DEFAULT))
        for field in fields:
            rule = rule.combine(self._field.get(field, _NATIONAL_DEFAULT))
        return rule

    def window(
        self,
        act: EnforcementAct,
        decided_on: date,
        *,
        penalty_kinds: Iterable[PenaltyKind] = (),
        fields: Iterable[RegulatedField] = (),
    ) -> DisclosureWindow:
        """The disclosure window of a decision taken on ``decided_on`` (the period starts on that date)."""
        rule = self.rule_for(act, penalty_kinds=penalty_kinds, fields=fields)
        return DisclosureWindow(
            start=decided_on,
            earliest_end=add_months(decided_on, rule.min_months),
            ends=add_months(decided_on, rule.max_months),
        )
