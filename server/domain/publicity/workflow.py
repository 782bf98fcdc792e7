"""The publication item's states and transitions, all in one table (GS-7 review, GS-12, GS-18 roles, GS-19).

``draft → in_review → published → (corrected | withdrawn | expired)``; a reviewer may send an item back
to draft or exclude it whole (GS-15: a minor's case, a secret). Each transition produces a history
entry (actor, time, reason) that the service appends and never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from server.domain.publicity.errors import PublicityError, TransitionForbidden, TransitionRefused

__all__ = [
    "PUBLIC_STATES",
    "TRANSITIONS",
    "Action",
    "Actor",
    "HistoryEntry",
    "ItemState",
    "Role",
    "Transition",
    "apply_action",
]


class ItemState(StrEnum):
    """Where a publication item stands."""

    DRAFT = "draft"
    IN_REVIEW = "in_review"
    PUBLISHED = "published"
    CORRECTED = "corrected"  # published, and corrected at least once (the portal says when, GS-19)
    WITHDRAWN = "withdrawn"  # off the portal; its withdrawal reason stays public (GS-12)
    EXPIRED = "expired"  # its 公示截止期 passed, or ended early after a credit repair (GS-13)
    EXCLUDED = "excluded"  # never to be published (GS-15); the reason stays visible to supervisors


# The states in which the portal shows an item (still subject to its disclosure window).
PUBLIC_STATES = frozenset({ItemState.PUBLISHED, ItemState.CORRECTED})


class Action(StrEnum):
    """What someone does to an item."""

    SUBMIT = "submit"
    RETURN = "return"
    PUBLISH = "publish"
    CORRECT = "correct"
    WITHDRAW = "withdraw"
    EXPIRE = "expire"
    EXCLUDE = "exclude"


class Role(StrEnum):
    """GS-18 duties: who collects, who reviews and publishes, who supervises; the system expires items."""

    COLLECTOR = "collector"
    REVIEWER = "reviewer"
    SUPERVISOR = "supervisor"
    SYSTEM = "system"


@dataclass(frozen=True, kw_only=True)
class Transition:
    """One row of the table: the next state and the conditions to get there."""

    next_state: ItemState
    roles: frozenset[Role]
    reason_required: bool
    # GS-7: the one who reviews and publishes is never the item's author.
    not_author: bool


def _row(next_state: ItemState, *roles: Role, reason: bool = False, not_author: bool = False) -> Transition:
    return Transition(
        next_state=next_state, roles=frozenset(roles), reason_required=reason, not_author=not_author
    )


_S, _A, _R = ItemState, Action, Role

# (state, action) → transition. Any pair not in the table is refused.
TRANSITIONS: dict[tuple[ItemState, Action], Transition] = {
    (_S.DRAFT, _A.SUBMIT): _row(_S.IN_REVIEW, _R.COLLECTOR, _R.REVIEWER),
    (_S.DRAFT, _A.EXCLUDE): _row(_S.EXCLUDED, _R.REVIEWER, _R.SYSTEM, reason=True),
    (_S.IN_REVIEW, _A.RETURN): _row(_S.DRAFT, _R.REVIEWER, reason=True, not_author=True),
    (_S.IN_REVIEW, _A.PUBLISH): _row(_S.PUBLISHED, _R.REVIEWER, not_author=True),
    (_S.IN_REVIEW, _A.EXCLUDE): _row(_S.EXCLUDED, _R.REVIEWER, _R.SYSTEM, reason=True, not_author=True),
    (_S.PUBLISHED, _A.CORRECT): _row(_S.CORRECTED, _R.REVIEWER, reason=True),
    (_S.PUBLISHED, _A.WITHDRAW): _row(_S.WITHDRAWN, _R.REVIEWER, reason=True),
    (_S.PUBLISHED, _A.EXPIRE): _row(_S.EXPIRED, _R.SYSTEM, _R.REVIEWER, reason=True),
    (_S.CORRECTED, _A.CORRECT): _row(_S.CORRECTED, _R.REVIEWER, reason=True),
    (_S.CORRECTED, _A.WITHDRAW): _row(_S.WITHDRAWN, _R.REVIEWER, reason=True),
    (_S.CORRECTED, _A.EXPIRE): _row(_S.EXPIRED, _R.SYSTEM, _R.REVIEWER, reason=True),
}


@dataclass(frozen=True, kw_only=True)
class Actor:
    """Who acts, with the publicity roles they hold."""

    user_id: str
    roles: frozenset[Role]


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """One append-only line of an item's history."""

    action: Action
    from_state: ItemState
    to_state: ItemState
    actor: str
    at: datetime
    reason: str | None


def apply_action(
    state: ItemState,
    action: Action,
    *,
    author: str,
    actor: Actor,
    at: datetime,
    reason: str | None = None,
) -> HistoryEntry:
    """The history entry of ``action`` on an item in ``state``, or an error saying why it is refused."""
    if at.tzinfo is None:
        raise PublicityError("时间须带时区", "the time of a transition must carry a time zone", field="at")
    row = TRANSITIONS.get((state, action))
    if row is None:
        raise TransitionRefused(
            f"状态为“{_STATE_LABELS[state]}”的公示事项不能执行“{_ACTION_LABELS[action]}”",
            f"an item in state {state.value} cannot be {_ACTION_EN[action]}",
        )
    if not row.roles & actor.roles:
        names = "、".join(_ROLE_LABELS[role] for role in sorted(row.roles, key=list(Role).index))
        raise TransitionForbidden(
            f"“{_ACTION_LABELS[action]}”需要以下角色之一：{names}",
            f"to have an item {_ACTION_EN[action]} needs one of the roles: "
            + ", ".join(sorted(role.value for role in row.roles)),
        )
    if row.not_author and actor.user_id == author:
        raise TransitionForbidden(
            "公示事项须由撰写人以外的人员审核",
            "an item must be reviewed by someone other than its author",
        )
    cleaned = (reason or "").strip()
    if row.reason_required and not cleaned:
        raise TransitionRefused(
            f"“{_ACTION_LABELS[action]}”须说明理由",
            f"a reason is required to have an item {_ACTION_EN[action]}",
        )
    return HistoryEntry(
        action=action,
        from_state=state,
        to_state=row.next_state,
        actor=actor.user_id,
        at=at,
        reason=cleaned or None,
    )


_STATE_LABELS = {
    ItemState.DRAFT: "草稿",
    ItemState.IN_REVIEW: "待审核",
    ItemState.PUBLISHED: "已公示",
    ItemState.CORRECTED: "已更正",
    ItemState.WITHDRAWN: "已撤回",
    ItemState.EXPIRED: "已到期",
    ItemState.EXCLUDED: "不予公示",
}
_ACTION_LABELS = {
    Action.SUBMIT: "提交审核",
    Action.RETURN: "退回",
    Action.PUBLISH: "审核发布",
    Action.CORRECT: "更正",
    Action.WITHDRAW: "撤回",
    Action.EXPIRE: "到期下线",
    Action.EXCLUDE: "不予公示",
}
_ACTION_EN = {
    Action.SUBMIT: "submitted for review",
    Action.RETURN: "returned to draft",
    Action.PUBLISH: "published",
    Action.CORRECT: "corrected",
    Action.WITHDRAW: "withdrawn",
    Action.EXPIRE: "expired",
    Action.EXCLUDE: "excluded",
}
_ROLE_LABELS = {
    Role.COLLECTOR: "信息采集",
    Role.REVIEWER: "审核发布",
    Role.SUPERVISOR: "监督",
    Role.SYSTEM: "系统",
}
