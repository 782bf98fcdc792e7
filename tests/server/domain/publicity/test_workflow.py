"""The publication item's workflow (GS-7 review before publication, GS-12, GS-18 roles, GS-19)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.domain.publicity.errors import PublicityError, TransitionForbidden, TransitionRefused
from server.domain.publicity.workflow import (
    PUBLIC_STATES,
    TRANSITIONS,
    Action,
    Actor,
    ItemState,
    Role,
    apply_action,
)

AT = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
AUTHOR = Actor(user_id="collector-1", roles=frozenset({Role.COLLECTOR}))
AUTHOR_WHO_REVIEWS = Actor(user_id="collector-1", roles=frozenset({Role.COLLECTOR, Role.REVIEWER}))
REVIEWER = Actor(user_id="reviewer-1", roles=frozenset({Role.REVIEWER}))
SYSTEM = Actor(user_id="system", roles=frozenset({Role.SYSTEM}))

S, A = ItemState, Action

# (from, action, actor, reason, expected next state) — every row of the table, walked once.
ALLOWED = [
    (S.DRAFT, A.SUBMIT, AUTHOR, None, S.IN_REVIEW),
    (S.DRAFT, A.EXCLUDE, SYSTEM, "涉及未成年人", S.EXCLUDED),
    (S.IN_REVIEW, A.RETURN, REVIEWER, "事实表述不准确", S.DRAFT),
    (S.IN_REVIEW, A.PUBLISH, REVIEWER, None, S.PUBLISHED),
    (S.IN_REVIEW, A.EXCLUDE, REVIEWER, "涉及商业秘密", S.EXCLUDED),
    (S.PUBLISHED, A.CORRECT, REVIEWER, "当事人名称有误", S.CORRECTED),
    (S.PUBLISHED, A.WITHDRAW, REVIEWER, "决定已被复议撤销", S.WITHDRAWN),
    (S.PUBLISHED, A.EXPIRE, SYSTEM, "公示期满", S.EXPIRED),
    (S.CORRECTED, A.CORRECT, REVIEWER, "再次更正", S.CORRECTED),
    (S.CORRECTED, A.WITHDRAW, REVIEWER, "决定被确认违法", S.WITHDRAWN),
    (S.CORRECTED, A.EXPIRE, SYSTEM, "信用修复，提前终止公示", S.EXPIRED),
]


@pytest.mark.parametrize(("state", "action", "actor", "reason", "next_state"), ALLOWED)
def test_gs7_allowed_transition_records_actor_time_and_reason(
    state: ItemState, action: Action, actor: Actor, reason: str | None, next_state: ItemState
) -> None:
    entry = apply_action(state, action, author=AUTHOR.user_id, actor=actor, at=AT, reason=reason)
    assert (entry.from_state, entry.to_state, entry.action) == (state, next_state, action)
    assert entry.actor == actor.user_id
    assert entry.at == AT
    assert entry.reason == reason


def test_every_row_of_the_table_is_tested() -> None:
    assert {(row[0], row[1]) for row in ALLOWED} == set(TRANSITIONS)


REFUSED = [(state, action) for state in ItemState for action in Action if (state, action) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "action"), REFUSED)
def test_a_pair_not_in_the_table_is_refused(state: ItemState, action: Action) -> None:
    everyone = Actor(user_id="admin", roles=frozenset(Role))
    with pytest.raises(TransitionRefused) as info:
        apply_action(state, action, author="someone-else", actor=everyone, at=AT, reason="理由")
    assert info.value.kind == "conflict"


def test_gs7_author_cannot_publish_their_own_item() -> None:
    with pytest.raises(TransitionForbidden) as info:
        apply_action(S.IN_REVIEW, A.PUBLISH, author=AUTHOR.user_id, actor=AUTHOR_WHO_REVIEWS, at=AT)
    assert info.value.kind == "forbidden"
    assert "other than its author" in info.value.message_en


def test_gs18_collector_without_review_role_cannot_publish() -> None:
    collector = Actor(user_id="collector-2", roles=frozenset({Role.COLLECTOR}))
    with pytest.raises(TransitionForbidden) as info:
        apply_action(S.IN_REVIEW, A.PUBLISH, author=AUTHOR.user_id, actor=collector, at=AT)
    assert "reviewer" in info.value.message_en


def test_gs12_withdrawal_needs_a_reason() -> None:
    with pytest.raises(TransitionRefused) as info:
        apply_action(S.PUBLISHED, A.WITHDRAW, author=AUTHOR.user_id, actor=REVIEWER, at=AT, reason="  ")
    assert "reason" in info.value.message_en


def test_gs19_correction_needs_a_reason_and_keeps_the_item_public() -> None:
    with pytest.raises(TransitionRefused):
        apply_action(S.PUBLISHED, A.CORRECT, author=AUTHOR.user_id, actor=REVIEWER, at=AT)
    entry = apply_action(
        S.PUBLISHED, A.CORRECT, author=AUTHOR.user_id, actor=REVIEWER, at=AT, reason=" 名称有误 "
    )
    assert entry.reason == "名称有误"
    assert entry.to_state in PUBLIC_STATES


def test_withdrawn_expired_and_excluded_items_are_not_public() -> None:
    assert {S.PUBLISHED, S.CORRECTED} == PUBLIC_STATES


def test_naive_time_is_refused() -> None:
    with pytest.raises(PublicityError):
        apply_action(S.DRAFT, A.SUBMIT, author=AUTHOR.user_id, actor=AUTHOR, at=datetime(2026, 3, 3, 9, 0))
