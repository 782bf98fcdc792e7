"""Publication items over a database session (GS-7, GS-11 – GS-15, GS-18, GS-19); the caller commits.

Every function takes a session and typed input; the rules themselves are the pure modules beside this
one (calendar, disclosure, redaction, workflow, content). Each transition appends one history row and
one audit row; the history table is append-only in the database (migration 0017).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.models import Case, CaseEvent
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity.calendar import DeadlineRule, WorkingDayCalendar, publication_rule
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.content import (
    TEXT_FIELDS,
    DecisionContent,
    FieldRedactions,
    content_from_mapping,
    content_to_mapping,
    people_of,
    public_copy,
    redactions_from_mapping,
    redactions_to_mapping,
    require_complete,
)
from server.domain.publicity.disclosure import DisclosurePolicy, DisclosureWindow
from server.domain.publicity.errors import PublicityError, TransitionForbidden
from server.domain.publicity.inputs import WithdrawalOrderSource
from server.domain.publicity.models import PublicationHistory, PublicationItem, WithdrawalOrder
from server.domain.publicity.redaction import ExclusionClaim, ExclusionGround, exclusion_verdict
from server.domain.publicity.schedules import CHINA, calendar_of, today_in_china
from server.domain.publicity.workflow import PUBLIC_STATES, Action, Actor, ItemState, Role, apply_action

__all__ = [
    "DUTIES",
    "CollectInput",
    "CorrectionInput",
    "actor_of",
    "collect",
    "collect_from_case_event",
    "correct",
    "exclude",
    "expire_due",
    "get_item",
    "order_withdrawal",
    "parse_content",
    "publish",
    "return_to_draft",
    "set_redactions",
    "submit",
    "terminate_early",
    "update_draft",
    "withdraw",
]


# GS-18: which publicity duties each account role carries. Legal reviewers and heads review and
# publish; officers collect; supervisors and auditors watch (GS-22). The author never reviews (GS-7).
DUTIES: dict[str, frozenset[Role]] = {
    "officer": frozenset({Role.COLLECTOR}),
    "legal_reviewer": frozenset({Role.COLLECTOR, Role.REVIEWER}),
    "agency_head": frozenset({Role.COLLECTOR, Role.REVIEWER}),
    "supervisor": frozenset({Role.SUPERVISOR}),
    "auditor": frozenset({Role.SUPERVISOR}),
    "system_admin": frozenset({Role.COLLECTOR, Role.REVIEWER, Role.SUPERVISOR}),
}
_SYSTEM = Actor(user_id="system", roles=frozenset({Role.SYSTEM}))


def actor_of(caller: Caller) -> Actor:
    """The workflow's view of a caller: their user id and publicity duties."""
    return Actor(user_id=caller.user_id, roles=DUTIES.get(caller.role, frozenset()))


@dataclass(frozen=True, kw_only=True)
class CollectInput:
    """A new publication item: which decision, of which kind, on which date, with what content."""

    agency_id: int
    act: EnforcementAct
    decided_on: date
    title: str = ""
    content: DecisionContent = field(default_factory=DecisionContent)
    case_id: int | None = None
    source_event_id: int | None = None
    replaces_item_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class CorrectionInput:
    """A correction of a published item (GS-19): the new content and why."""

    content: DecisionContent
    reason: str


def parse_content(data: Any) -> DecisionContent:
    """Decode a decision's JSON content once, at the edge; a bad field is a precise error."""
    if not isinstance(data, dict):
        raise Invalid("content 须为对象", "content must be an object")
    content: DecisionContent = content_from_mapping(data)
    return content


def content_of(item: PublicationItem) -> DecisionContent:
    return content_from_mapping(item.content or {})


def redactions_of(item: PublicationItem) -> dict[str, FieldRedactions]:
    return redactions_from_mapping(item.redactions or {})


def _agency_name(session: Session, agency_id: int) -> str:
    agency = session.get(Agency, agency_id)
    return agency.name if agency else ""


def _window(item: PublicationItem, content: DecisionContent, policy: DisclosurePolicy) -> DisclosureWindow:
    decided = item.decided_on or item.created_at.astimezone(CHINA).date()
    window: DisclosureWindow = policy.window(
        EnforcementAct(item.act_kind),
        decided,
        penalty_kinds=content.penalty_kinds,
        fields=content.regulated_fields,
    )
    return window


def _append(
    session: Session, item: PublicationItem, action: Action, actor: Actor, reason: str | None, **detail: Any
) -> PublicationHistory:
    """Apply the workflow table, then append the history row and the audit row."""
    entry = apply_action(
        ItemState(item.state),
        action,
        author=item.author,
        actor=actor,
        at=utcnow(),
        reason=reason,
    )
    item.state = entry.to_state.value
    item.updated_at = entry.at
    row = PublicationHistory(
        item_id=item.id,
        action=entry.action.value,
        from_state=entry.from_state.value,
        to_state=entry.to_state.value,
        actor=entry.actor,
        at=entry.at,
        reason=entry.reason,
        detail=detail,
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=actor.user_id,
        action=f"publicity.{action.value}",
        target_type="publication_item",
        target_id=item.id,
        detail={"from": entry.from_state.value, "to": entry.to_state.value},
    )
    return row


def collect(
    session: Session,
    caller: Caller,
    data: CollectInput,
    *,
    calendar: WorkingDayCalendar | None = None,
) -> PublicationItem:
    """Create a draft item with its GS-11 deadline (provisional where the year's schedule is unknown)."""
    if not caller.may_write(data.agency_id):
        raise NotFound("机关不存在", "agency not found")
    if Role.COLLECTOR not in actor_of(caller).roles:
        raise forbidden_collect()
    if data.replaces_item_id is not None:
        replaced = session.get(PublicationItem, data.replaces_item_id)
        if replaced is None or replaced.agency_id != data.agency_id:
            raise Invalid("被替代的公示事项不存在", "the replaced item does not exist")
        if replaced.state != ItemState.WITHDRAWN.value:
            raise Conflict(
                "只有已撤回的事项可以被重新公示的决定替代", "only a withdrawn item can be replaced"
            )
    return _create(session, caller.user_id, data, calendar)


def forbidden_collect() -> PublicityError:
    return TransitionForbidden("没有采集公示信息的权限", "your role may not collect publicity items")


def _create(
    session: Session,
    author: str,
    data: CollectInput,
    calendar: WorkingDayCalendar | None,
    problem: dict[str, str] | None = None,
) -> PublicationItem:
    rule = publication_rule(data.act)
    deadline = (calendar or calendar_of(session)).deadline(data.decided_on, rule.working_days)
    now = utcnow()
    item = PublicationItem(
        agency_id=data.agency_id,
        case_id=data.case_id,
        source_event_id=data.source_event_id,
        act_kind=data.act.value,
        title=data.title[:300],
        party_name=data.content.party_name,
        document_number=data.content.document_number,
        decided_on=data.decided_on,
        content=content_to_mapping(data.content),
        redactions={},
        published=None,
        state=ItemState.DRAFT.value,
        author=author,
        due_on=deadline.due,
        deadline_rule=rule.name,
        deadline_provisional=deadline.provisional,
        calendar_version=deadline.calendar_version,
        excluded_grounds=[],
        replaces_item_id=data.replaces_item_id,
        created_at=now,
        updated_at=now,
    )
    session.add(item)
    session.flush()
    session.add(
        PublicationHistory(
            item_id=item.id,
            action="collect",
            from_state=None,
            to_state=ItemState.DRAFT.value,
            actor=author,
            at=now,
            reason=None,
            detail={
                "due_on": deadline.due.isoformat(),
                "provisional": deadline.provisional,
                **(problem or {}),
            },
        )
    )
    session.flush()
    write_audit(
        session, actor=author, action="publicity.collect", target_type="publication_item", target_id=item.id
    )
    _exclude_minors(session, item)
    return item


# Case act kinds (server.domain.cases.models.ACT_KINDS) are EnforcementAct values.
def collect_from_case_event(
    session: Session, case: Case, event: CaseEvent, *, calendar: WorkingDayCalendar | None = None
) -> PublicationItem | None:
    """GS-11: a ``decision.decided`` event opens its publication item, due in 7 or 20 working days.

    The event's ``data.publication`` may carry the decision's content (the keys of ``DecisionContent``);
    what it lacks the collector fills in later. Content that does not parse does not refuse the case
    event (the record of the case comes first, JL-2): the item is still created so its deadline runs,
    and its history says what was wrong, for the collector to fix.
    """
    if event.event_type != "decision.decided" or event.corrects_event_id is not None:
        return None
    existing = session.scalar(select(PublicationItem).where(PublicationItem.source_event_id == event.id))
    if existing is not None:
        return existing
    raw = (event.data or {}).get("publication")
    content, problem = DecisionContent(), None
    if isinstance(raw, dict):
        try:
            content = content_from_mapping(raw)
        except PublicityError as error:
            problem = {"content_error": error.message, "content_error_en": error.message_en}
    elif raw is not None:
        problem = {
            "content_error": "publication 须为对象",
            "content_error_en": "publication must be an object",
        }
    if not content.party_name and case.party:
        content = replace(content, party_name=case.party)
    data = CollectInput(
        agency_id=case.agency_id,
        act=EnforcementAct(case.act_kind),
        decided_on=event.occurred_at.astimezone(CHINA).date(),
        title=case.title,
        content=content,
        case_id=case.id,
        source_event_id=event.id,
    )
    return _create(session, event.recorded_by, data, calendar, problem)


def _exclude_minors(session: Session, item: PublicationItem) -> bool:
    """GS-15(3): an item whose case involves a minor is excluded whole, by the system, at once."""
    if item.state not in (ItemState.DRAFT.value, ItemState.IN_REVIEW.value):
        return False
    content = content_of(item)
    verdict = exclusion_verdict(people_of(content), item.decided_on or today_in_china())
    if ExclusionGround.MINOR not in verdict.grounds:
        return False
    item.excluded_grounds = [ExclusionGround.MINOR.value]
    item.excluded_reason = verdict.reasons[0]
    _append(session, item, Action.EXCLUDE, _SYSTEM, verdict.reasons[0])
    return True


def get_item(session: Session, caller: Caller, item_id: int) -> PublicationItem:
    """An item the caller may see (another agency's looks missing)."""
    item = session.get(PublicationItem, item_id)
    if item is None or not caller.may_read(item.agency_id):
        raise NotFound("公示事项不存在", "publication item not found")
    return item


def _writable(session: Session, caller: Caller, item_id: int) -> PublicationItem:
    item = get_item(session, caller, item_id)
    if not caller.may_write(item.agency_id):
        raise NotFound("公示事项不存在", "publication item not found")
    return item


def update_draft(
    session: Session, caller: Caller, item_id: int, content: DecisionContent, *, title: str | None = None
) -> PublicationItem:
    """Replace a draft's content; text fields whose text changed lose their redaction decisions."""
    item = _writable(session, caller, item_id)
    if item.state != ItemState.DRAFT.value:
        raise Conflict(
            "只有草稿可以修改，已公示的事项请走更正", "only a draft can be edited; correct a published item"
        )
    if not actor_of(caller).roles & {Role.COLLECTOR, Role.REVIEWER}:
        raise forbidden_collect()
    _replace_content(item, content)
    if title is not None:
        item.title = title[:300]
    item.updated_at = utcnow()
    write_audit(
        session,
        actor=caller.user_id,
        action="publicity.edit",
        target_type="publication_item",
        target_id=item.id,
    )
    _exclude_minors(session, item)
    return item


def _replace_content(item: PublicationItem, content: DecisionContent) -> list[str]:
    old = content_of(item)
    changed = [name for name in TEXT_FIELDS if getattr(old, name) != getattr(content, name)]
    # Redaction decisions are spans of the old text; on new text they would hide the wrong words.
    item.redactions = {k: v for k, v in (item.redactions or {}).items() if k not in changed}
    item.content = content_to_mapping(content)
    item.party_name = content.party_name
    item.document_number = content.document_number
    return changed


def set_redactions(
    session: Session, caller: Caller, item_id: int, decisions: Mapping[str, FieldRedactions]
) -> PublicationItem:
    """Record the reviewer's accept/undo/add decisions on the proposed redactions (GS-14)."""
    item = _writable(session, caller, item_id)
    if item.state not in (ItemState.DRAFT.value, ItemState.IN_REVIEW.value):
        raise Conflict("只有草稿或待审核事项可以调整隐去内容", "redactions change only before publication")
    if not actor_of(caller).roles & {Role.COLLECTOR, Role.REVIEWER}:
        raise forbidden_collect()
    content = content_of(item)
    for name, decision in decisions.items():
        text = getattr(content, name)
        for span in decision.added:
            if not 0 <= span.start < span.end <= len(text):
                raise Invalid(f"{name} 的隐去范围超出原文", f"a redaction of {name} lies outside the text")
    item.redactions = {**(item.redactions or {}), **redactions_to_mapping(decisions)}
    item.updated_at = utcnow()
    write_audit(
        session,
        actor=caller.user_id,
        action="publicity.redactions",
        target_type="publication_item",
        target_id=item.id,
        detail={"fields": sorted(decisions)},
    )
    return item


def published_copy(
    session: Session, item: PublicationItem, disclosure_until: date | None = None
) -> dict[str, Any]:
    content = content_of(item)
    window = _window(item, content, DisclosurePolicy())
    ends = disclosure_until or window.ends
    return dict(
        public_copy(
            content,
            EnforcementAct(item.act_kind),
            redactions_of(item),
            agency_name=_agency_name(session, item.agency_id),
            decided_on=window.start,
            disclosure_until=ends,
        )
    )


def submit(session: Session, caller: Caller, item_id: int) -> PublicationItem:
    """Send a complete draft for review (GS-7); incomplete national fields are a precise error."""
    item = _writable(session, caller, item_id)
    if _exclude_minors(session, item):
        return item
    content = content_of(item)
    window = _window(item, content, DisclosurePolicy())
    require_complete(
        content,
        EnforcementAct(item.act_kind),
        agency_name=_agency_name(session, item.agency_id),
        decided_on=window.start,
        disclosure_until=window.ends,
    )
    _append(session, item, Action.SUBMIT, actor_of(caller), None)
    return item


def return_to_draft(session: Session, caller: Caller, item_id: int, reason: str) -> PublicationItem:
    """The reviewer sends the item back with a reason."""
    item = _writable(session, caller, item_id)
    _append(session, item, Action.RETURN, actor_of(caller), reason)
    return item


def publish(
    session: Session, caller: Caller, item_id: int, *, policy: DisclosurePolicy | None = None
) -> PublicationItem:
    """Review and publish (GS-7): another person than the author, the redacted copy, the disclosure window.

    A case involving a minor is excluded instead (GS-15(3)): the returned item's state says so.
    """
    item = _writable(session, caller, item_id)
    if _exclude_minors(session, item):
        return item
    # Check who may act before anything is computed, so a refusal says the real reason.
    apply_action(
        ItemState(item.state),
        Action.PUBLISH,
        author=item.author,
        actor=actor_of(caller),
        at=utcnow(),
    )
    content = content_of(item)
    window = _window(item, content, policy or DisclosurePolicy())
    item.published = published_copy(session, item, window.ends)
    item.disclosure_earliest_end = window.earliest_end
    item.disclosure_ends = window.ends
    _append(session, item, Action.PUBLISH, actor_of(caller), None, disclosure_ends=window.ends.isoformat())
    item.published_at = item.updated_at
    return item


def exclude(session: Session, caller: Caller, item_id: int, claim: ExclusionClaim) -> PublicationItem:
    """GS-15: not published on a secrecy or privacy ground; the reason stays visible to supervisors."""
    item = _writable(session, caller, item_id)
    verdict = exclusion_verdict([], item.decided_on or today_in_china(), [claim])
    item.excluded_grounds = [ground.value for ground in verdict.grounds]
    item.excluded_reason = verdict.reasons[0]
    _append(session, item, Action.EXCLUDE, actor_of(caller), claim.reason, ground=claim.ground.value)
    return item


def correct(session: Session, caller: Caller, item_id: int, data: CorrectionInput) -> PublicationItem:
    """GS-19: correct a published item; the portal shows that and when it was corrected."""
    item = _writable(session, caller, item_id)
    if item.state not in {state.value for state in PUBLIC_STATES}:
        raise Conflict("只有已公示的事项可以更正", "only a published item can be corrected")
    previous = dict(item.content or {})
    changed = _replace_content(item, data.content)
    try:
        item.published = published_copy(session, item, item.disclosure_ends)
    except PublicityError:
        item.content = previous
        raise
    _append(session, item, Action.CORRECT, actor_of(caller), data.reason, changed_fields=changed)
    item.corrected_at = item.updated_at
    return item


def withdraw(
    session: Session,
    caller: Caller,
    item_id: int,
    reason: str,
    *,
    revoked_on: date | None = None,
    calendar: WorkingDayCalendar | None = None,
) -> PublicationItem:
    """GS-12: withdraw a revoked, illegal or redone decision within 3 working days; the reason is public.

    The deadline runs from ``revoked_on``; without it, from the date :func:`order_withdrawal` recorded,
    else from today.
    """
    item = _writable(session, caller, item_id)
    if revoked_on is None and item.withdrawal_due_on is not None:
        started, due = None, item.withdrawal_due_on  # ordered earlier: that deadline stands
    else:
        started = revoked_on or today_in_china()
        calendar = calendar or calendar_of(session)
        due = calendar.deadline(started, DeadlineRule.GS12_WITHDRAWAL.working_days).due
    _append(
        session,
        item,
        Action.WITHDRAW,
        actor_of(caller),
        reason,
        revoked_on=started.isoformat() if started else None,
        due_on=due.isoformat(),
        on_time=today_in_china() <= due,
    )
    item.withdrawal_reason = reason.strip()
    item.withdrawal_due_on = due
    item.withdrawn_at = item.updated_at
    return item


def order_withdrawal(
    session: Session,
    caller: Caller,
    item_id: int,
    reason: str,
    *,
    revoked_on: date | None = None,
    source: WithdrawalOrderSource | None = None,
    calendar: WorkingDayCalendar | None = None,
) -> PublicationItem:
    """GS-12: record that a published decision must come off the portal, before it does.

    The decision was revoked, found illegal or is to be redone: from ``revoked_on`` (default today) the
    agency has 3 working days to withdraw it. The item stays published with its ``withdrawal_due_on``
    set, so the deadline alerts (GS-23) warn until :func:`withdraw` is done. The order is kept
    (``withdrawal_orders``) with the reconsideration decision or judgment it comes from (``source``), and
    in the audit trail; the public reason is the one given when withdrawing.
    """
    item = _writable(session, caller, item_id)
    if Role.REVIEWER not in actor_of(caller).roles:
        raise TransitionForbidden("没有撤回公示信息的权限", "your role may not withdraw publicity items")
    if item.state not in {state.value for state in PUBLIC_STATES}:
        raise Conflict("只有已公示的事项需要撤回", "only a published item can be ordered withdrawn")
    if not reason.strip():
        raise Invalid("须说明撤回理由", "a reason is required")
    started = revoked_on or today_in_china()
    if source is not None and started < source.decided_on:
        raise Invalid(
            f"撤销之日（{started.isoformat()}）不能早于复议决定或裁判作出之日（{source.decided_on.isoformat()}）",
            f"the decision cannot have been revoked ({started.isoformat()}) before the decision or judgment "
            f"was made ({source.decided_on.isoformat()})",
        )
    deadline = (calendar or calendar_of(session)).deadline(started, DeadlineRule.GS12_WITHDRAWAL.working_days)
    now = utcnow()
    order = WithdrawalOrder(
        item_id=item.id,
        agency_id=item.agency_id,
        reason=reason.strip(),
        revoked_on=started,
        due_on=deadline.due,
        deadline_provisional=deadline.provisional,
        calendar_version=deadline.calendar_version,
        source_kind=source.kind.value if source else None,
        source_body=source.body if source else "",
        source_document=source.document_number if source else "",
        source_decided_on=source.decided_on if source else None,
        ordered_by=caller.user_id,
        ordered_at=now,
    )
    session.add(order)
    item.withdrawal_due_on = deadline.due
    item.updated_at = now
    session.flush()
    detail: dict[str, Any] = {
        "order": order.id,
        "reason": reason.strip(),
        "revoked_on": started.isoformat(),
        "due_on": deadline.due.isoformat(),
    }
    if source is not None:
        detail["source"] = {
            "kind": source.kind.value,
            "body": source.body,
            "document_number": source.document_number,
            "decided_on": source.decided_on.isoformat(),
        }
    write_audit(
        session,
        actor=caller.user_id,
        action="publicity.order_withdrawal",
        target_type="publication_item",
        target_id=item.id,
        detail=detail,
    )
    return item


def terminate_early(
    session: Session, caller: Caller, item_id: int, reason: str, *, on: date | None = None
) -> PublicationItem:
    """GS-13: end disclosure early after a credit repair, never before the minimum period has passed."""
    item = _writable(session, caller, item_id)
    if item.state not in {state.value for state in PUBLIC_STATES} or item.disclosure_ends is None:
        raise Conflict("只有公示中的事项可以提前终止公示", "only a published item can end early")
    window = DisclosureWindow(
        start=item.decided_on or today_in_china(),
        earliest_end=item.disclosure_earliest_end or item.disclosure_ends,
        ends=item.disclosure_ends,
    )
    ended = window.terminate_early(on or today_in_china())
    _append(session, item, Action.EXPIRE, actor_of(caller), reason, early=True)
    item.disclosure_ends = ended.ends
    return item


def expire_due(session: Session, today: date | None = None) -> list[int]:
    """GS-13: items whose 公示截止期 has passed leave the portal (the portal already hides them)."""
    day = today or today_in_china()
    due = session.scalars(
        select(PublicationItem).where(
            PublicationItem.state.in_([state.value for state in PUBLIC_STATES]),
            PublicationItem.disclosure_ends < day,
        )
    ).all()
    for item in due:
        _append(session, item, Action.EXPIRE, _SYSTEM, "公示期满 / disclosure period ended")
    return [item.id for item in due]


# -- the public side: portal search, one item, corrections requested by the public (GS-5, GS-8, GS-19) --
