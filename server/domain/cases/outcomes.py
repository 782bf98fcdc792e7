"""What a case event must carry when the annual report counts it (GS-17 (2), (3), (5)).

A refused licence, a reconsideration or a lawsuit against a decision and its outcome, and a suspected
crime transferred to the judicial organs are steps of the case's record like any other; the annual
report counts them. So that the count means something, these events are checked when recorded: the
kind of case they belong to, the step that must come first, and a vocabulary for the outcome. The
rules are one table (``EVENT_RULES``) and one pure function (``check_event``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from server.domain.errors import Invalid

__all__ = [
    "CORRECTIVE_OUTCOMES",
    "DECISION_EVENTS",
    "EVENT_RULES",
    "EventRule",
    "ReviewOutcome",
    "TransferOutcome",
    "check_event",
]


class ReviewOutcome(StrEnum):
    """How a reconsideration body or a court disposed of a case against the agency's decision."""

    UPHELD = "upheld"  # 维持 / 驳回诉讼请求
    ALTERED = "altered"  # 变更
    REVOKED = "revoked"  # 撤销（含部分撤销、责令重作）
    CONFIRMED_ILLEGAL = "confirmed_illegal"  # 确认违法、确认无效
    ORDERED_TO_PERFORM = "ordered_to_perform"  # 责令履行
    DISMISSED = "dismissed"  # 驳回复议申请 / 驳回起诉（程序性）
    WITHDRAWN = "withdrawn"  # 申请人撤回申请 / 原告撤诉
    SETTLED = "settled"  # 调解、和解
    TERMINATED = "terminated"  # 终止


# The outcomes that find the decision wrong: a reconsideration "corrects" it (纠错), a court rules
# against the agency (败诉). The usual statistics of the justice departments count these four.
CORRECTIVE_OUTCOMES = frozenset(
    {
        ReviewOutcome.ALTERED,
        ReviewOutcome.REVOKED,
        ReviewOutcome.CONFIRMED_ILLEGAL,
        ReviewOutcome.ORDERED_TO_PERFORM,
    }
)


class TransferOutcome(StrEnum):
    """What the judicial organs did with a case transferred to them (GS-17 (5))."""

    FILED = "filed"  # 立案
    NOT_FILED = "not_filed"  # 不予立案
    RETURNED = "returned"  # 退回移送机关


# A reconsideration or a lawsuit is against a decision: the case must have one first.
DECISION_EVENTS = frozenset({"decision.decided", "decision.licence_refused"})


@dataclass(frozen=True, kw_only=True)
class EventRule:
    """What one kind of event needs: the case's kind, earlier steps, an outcome, required text fields."""

    act_kinds: frozenset[str] | None = None
    after: frozenset[str] = frozenset()
    outcome: type[StrEnum] | None = None
    text_fields: tuple[str, ...] = ()


EVENT_RULES: dict[str, EventRule] = {
    "decision.licence_refused": EventRule(act_kinds=frozenset({"licensing"})),
    "remedy.reconsideration_filed": EventRule(after=DECISION_EVENTS),
    "remedy.reconsideration_decided": EventRule(
        after=frozenset({"remedy.reconsideration_filed"}), outcome=ReviewOutcome
    ),
    "remedy.litigation_filed": EventRule(after=DECISION_EVENTS),
    "remedy.litigation_judged": EventRule(
        after=frozenset({"remedy.litigation_filed"}), outcome=ReviewOutcome
    ),
    "remedy.criminal_transfer": EventRule(text_fields=("receiving_body",)),
    "remedy.criminal_transfer_result": EventRule(
        after=frozenset({"remedy.criminal_transfer"}), outcome=TransferOutcome
    ),
}


def check_event(event_type: str, data: Mapping[str, Any], act_kind: str, recorded: frozenset[str]) -> None:
    """Refuse, with a precise message, an event the annual report could not count truthfully.

    ``recorded`` is the set of event types the case already holds. An event type without a rule
    passes untouched.
    """
    rule = EVENT_RULES.get(event_type)
    if rule is None:
        return
    if rule.act_kinds is not None and act_kind not in rule.act_kinds:
        kinds = "/".join(sorted(rule.act_kinds))
        raise Invalid(
            f"{event_type} 只能记录在 {kinds} 案件中", f"{event_type} can only be recorded in a {kinds} case"
        )
    if rule.after and not rule.after & recorded:
        first = " / ".join(sorted(rule.after))
        raise Invalid(
            f"{event_type} 之前须先记录 {first}", f"{event_type} needs {first} recorded in the case first"
        )
    if rule.outcome is not None:
        outcome = data.get("outcome")
        allowed = [member.value for member in rule.outcome]
        if not isinstance(outcome, str) or outcome not in allowed:
            raise Invalid(
                f"data.outcome 只能是 {'/'.join(allowed)}",
                f"data.outcome must be one of {', '.join(allowed)}",
            )
    for name in rule.text_fields:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > 300:
            raise Invalid(
                f"data.{name} 须为 1–300 字的文本", f"data.{name} must be text of 1 to 300 characters"
            )
