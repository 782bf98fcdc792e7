"""Requests and their approval by the agency head (JL-19, JL-20).

JL-20: use of the record is limited by duty, post and authority; nothing is provided outside the agency
without the head's approval; superior, judicial, supervisory and audit bodies may retrieve records.
JL-19: nothing is destroyed within the retention period. One flow serves all four kinds of request:

* ``access``: viewing beyond one's duty, copying or exporting inside the agency;
* ``external_provision``: providing records to anyone outside the agency (the recipient is named);
* ``retrieval``: retrieval by a superior, judicial, supervisory or audit body (its own type, JL-20 ¶2);
* ``disposal``: destroying recordings whose retention ended (JL-19).

A request records requester, purpose, recipient, scope (recordings, or a case's recordings) and
duration. It is decided once, by an agency head of the evidence's agency who is **not** the requester.
An approved access, provision or retrieval request is a grant that expires by itself after its
duration; an approved disposal is carried out at once (``disposal.dispose``). A grant can also be
revoked before it expires (:func:`revoke`): by the head who approved it or another head of its agency,
never by the requester, with the reason; it stops working at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.models import Case
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.evidence import queries as recording_queries
from server.domain.evidence.models import Recording
from server.domain.governance.approvals_models import GovernanceDecision, GovernanceRequest, GrantRevocation
from server.domain.governance.disposal import dispose, require_disposable
from server.domain.governance.retention import (
    GovernanceForbidden,
    RetentionStore,
    agency_of,
    case_recording_ids,
)
from server.domain.people.service import Caller
from server.errors import ErrorKind

__all__ = [
    "ACTIONS",
    "APPROVER_ROLES",
    "KINDS",
    "MAX_DURATION_DAYS",
    "RECIPIENT_BODIES",
    "AlreadyDecided",
    "NoRecordings",
    "NotRevocable",
    "NotTheApprover",
    "RequestInput",
    "SelfApproval",
    "SelfRevocation",
    "active_grants",
    "create_request",
    "decide",
    "decision_of",
    "get_request",
    "grant_for",
    "list_requests",
    "request_to_dict",
    "revocation_of",
    "revocations_of",
    "revoke",
    "status_of",
]

KINDS: tuple[str, ...] = ("access", "external_provision", "retrieval", "disposal")
# view: play beyond one's duty; copy: download a file; export: a sealed package; provide: hand it outside.
ACTIONS: tuple[str, ...] = ("view", "copy", "export", "provide")
# JL-20 ¶2: 上级行政执法机关及司法、监察、审计等机关.
RECIPIENT_BODIES: tuple[str, ...] = ("superior", "judicial", "supervisory", "audit")
# JL-20 ¶1: 行政执法机关负责人批准. Disposal (JL-19) takes the same authority.
APPROVER_ROLES: tuple[str, ...] = ("agency_head",)
# Who may ask to destroy evidence: those who manage the agency's records, never an officer alone.
DISPOSAL_REQUESTERS: tuple[str, ...] = ("legal_reviewer", "agency_head")
MAX_DURATION_DAYS = 90
MAX_RECORDINGS = 500
MAX_TEXT = 2000


class SelfApproval(GovernanceForbidden):
    """The requester may never approve or reject their own request (two people, JL-19, JL-20)."""

    code: ClassVar[str] = "self_approval"
    keeps_writes = True  # the attempt's audit row stays (JL-23: who tried what)


class NotTheApprover(GovernanceForbidden):
    """Only a head of the evidence's agency decides a request."""

    code: ClassVar[str] = "not_the_approver"


class SelfRevocation(GovernanceForbidden):
    """The requester never revokes their own grant: revoking and filing again would let them choose
    the grant's terms; the decision stays with a head other than them (JL-20)."""

    code: ClassVar[str] = "self_revocation"
    keeps_writes = True  # the attempt's audit row stays


class NotRevocable(Conflict):
    """Only a grant in force can be revoked: not a pending, rejected, expired, disposal or revoked one."""

    code: ClassVar[str] = "not_revocable"


class AlreadyDecided(Conflict):
    """A request is decided once."""

    code: ClassVar[str] = "already_decided"


class NoRecordings(Invalid):
    """The request names no recording (a case without linked recordings, an empty list)."""

    code: ClassVar[str] = "no_recordings"
    kind = ErrorKind.INVALID


def _limited(value: str, name: str, *, required: bool, limit: int = MAX_TEXT) -> str:
    value = value.strip()
    if required and not value:
        raise Invalid(f"缺少字段：{name}", f"missing field: {name}")
    if len(value) > limit:
        raise Invalid(f"{name} 不能超过 {limit} 个字符", f"{name} must be at most {limit} characters")
    return value


@dataclass(frozen=True, kw_only=True)
class RequestInput:
    """A request, typed and checked for shape (the service checks what needs the database).

    The web edge decodes JSON or a form into typed values and calls :meth:`checked`.
    """

    kind: str
    purpose: str
    recipient: str = ""
    recipient_body: str = ""
    actions: tuple[str, ...] = ()
    recording_ids: tuple[int, ...] = ()
    case_id: int | None = None
    duration_days: int = 0

    @classmethod
    def checked(
        cls,
        *,
        kind: str,
        purpose: str,
        recipient: str = "",
        recipient_body: str = "",
        actions: Sequence[str] = (),
        recording_ids: Sequence[int] = (),
        case_id: int | None = None,
        duration_days: int | None = None,
    ) -> RequestInput:
        """The request if its fields make sense together; Invalid with a precise message if not."""
        if kind not in KINDS:
            raise Invalid(f"kind 必须是 {'、'.join(KINDS)} 之一", f"kind must be one of {', '.join(KINDS)}")
        purpose = _limited(purpose, "purpose", required=True)
        recipient = _limited(
            recipient, "recipient", required=kind in ("external_provision", "retrieval"), limit=300
        )
        recipient_body = _limited(recipient_body, "recipient_body", required=kind == "retrieval", limit=32)
        if recipient_body and recipient_body not in RECIPIENT_BODIES:
            raise Invalid(
                f"recipient_body 必须是 {'、'.join(RECIPIENT_BODIES)} 之一",
                f"recipient_body must be one of {', '.join(RECIPIENT_BODIES)}",
            )
        if len(recording_ids) > MAX_RECORDINGS:
            raise Invalid(
                f"recording_ids 不能超过 {MAX_RECORDINGS} 个",
                f"recording_ids must be at most {MAX_RECORDINGS}",
            )
        if not recording_ids and case_id is None:
            raise Invalid("必须指定 recording_ids 或 case_id", "give recording_ids or case_id")
        if kind == "disposal":
            chosen: tuple[str, ...] = ()
            duration = 0
        else:
            asked = set(actions) or ({"provide"} if kind == "external_provision" else {"view"})
            if any(a not in ACTIONS for a in asked):
                raise Invalid(
                    f"actions 必须是 {'、'.join(ACTIONS)} 中的若干项",
                    f"actions must be some of {', '.join(ACTIONS)}",
                )
            if kind == "external_provision":
                asked.add("provide")
            elif "provide" in asked:
                raise Invalid(
                    "对外提供须以 external_provision 申请",
                    "providing outside the agency is an external_provision",
                )
            chosen = tuple(sorted(asked))
            duration = 7 if duration_days is None else duration_days
            if not 1 <= duration <= MAX_DURATION_DAYS:
                raise Invalid(
                    f"duration_days 必须在 1 到 {MAX_DURATION_DAYS} 之间",
                    f"duration_days must be between 1 and {MAX_DURATION_DAYS}",
                )
        return cls(
            kind=kind,
            purpose=purpose,
            recipient=recipient,
            recipient_body=recipient_body,
            actions=chosen,
            recording_ids=tuple(sorted(set(recording_ids))),
            case_id=case_id,
            duration_days=duration,
        )


def _case_recordings(session: Session, caller: Caller, case_id: int) -> tuple[Case, set[int]]:
    case = session.get(Case, case_id)
    if case is None or not caller.may_read(case.agency_id):
        raise NotFound(f"案件 {case_id} 不存在", f"case {case_id} not found")
    return case, case_recording_ids(session, case_id)


def create_request(
    session: Session, caller: Caller, new: RequestInput, *, now: datetime | None = None
) -> GovernanceRequest:
    """File a request (flushed, audited). Every recording must be one the caller may know of, all of one
    agency; a disposal is refused at once if any recording is still within its retention (JL-19)."""
    when = now or utcnow()
    ids = set(new.recording_ids)
    case_agency: int | None = None
    if new.case_id is not None:
        case, linked = _case_recordings(session, caller, new.case_id)
        case_agency = case.agency_id
        ids |= linked
    if not ids:
        raise NoRecordings("申请没有涉及任何录像", "the request names no recording")
    agencies: set[int | None] = set()
    recordings: list[Recording] = []
    for rid in sorted(ids):
        # Another agency's recording reads exactly like a missing one (JL-20, no oracle).
        rec = recording_queries.get_recording(session, rid, scope=caller)
        recordings.append(rec)
        agencies.add(agency_of(session, rec))
    if case_agency is not None:
        agencies.add(case_agency)
    if len(agencies) != 1 or None in agencies:
        raise Invalid("一份申请只能涉及同一机关的录像", "one request covers recordings of one agency only")
    agency = next(iter(agencies))
    assert agency is not None
    # A retrieval is filed by a body outside the agency (or its liaison); the head of the agency decides.
    if new.kind != "retrieval" and caller.agency_id != agency:
        raise GovernanceForbidden("只能为本机关的录像提出申请", "requests are filed by the evidence's agency")
    if new.kind == "disposal":
        if caller.role not in DISPOSAL_REQUESTERS:
            raise GovernanceForbidden(
                "只有法制审核人员或机关负责人可以申请销毁", "only reviewers or heads ask to dispose"
            )
        for rec in recordings:
            require_disposable(session, rec, when)
    row = GovernanceRequest(
        kind=new.kind,
        agency_id=agency,
        requested_by=caller.user_id,
        requester_role=caller.role,
        purpose=new.purpose,
        recipient=new.recipient,
        recipient_body=new.recipient_body,
        actions=list(new.actions),
        recording_ids=sorted(ids),
        case_id=new.case_id,
        duration_days=new.duration_days,
        requested_at=when,
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="governance.request",
        target_type="governance_request",
        target_id=row.id,
        detail={"kind": row.kind, "recording_ids": row.recording_ids, "recipient": row.recipient},
    )
    return row


def _visible(caller: Caller, request: GovernanceRequest) -> bool:
    """Requesters see their own; heads and reviewers their agency's; supervisors and auditors all."""
    if request.requested_by == caller.user_id or caller.reads_all:
        return True
    return caller.role in ("agency_head", "legal_reviewer") and caller.agency_id == request.agency_id


def get_request(session: Session, caller: Caller, request_id: int) -> GovernanceRequest:
    """One request the caller may see (NotFound otherwise, the same as a missing one)."""
    row = session.get(GovernanceRequest, request_id)
    if row is None or not _visible(caller, row):
        raise NotFound(f"申请 {request_id} 不存在", f"request {request_id} not found")
    return row


def decision_of(session: Session, request_id: int) -> GovernanceDecision | None:
    """The decision on a request, if decided."""
    return session.scalars(
        select(GovernanceDecision).where(GovernanceDecision.request_id == request_id)
    ).first()


def decide(
    session: Session,
    store: RetentionStore | None,
    caller: Caller,
    request_id: int,
    outcome: str,
    reason: str,
    *,
    now: datetime | None = None,
) -> GovernanceDecision:
    """Approve or reject a request, once, as a head of its agency other than the requester (flushed)."""
    when = now or utcnow()
    request = get_request(session, caller, request_id)
    if outcome not in ("approve", "reject"):
        raise Invalid("outcome 必须是 approve 或 reject", "outcome must be approve or reject")
    why = (reason or "").strip()
    if len(why) > MAX_TEXT:
        raise Invalid(f"reason 不能超过 {MAX_TEXT} 个字符", f"reason must be at most {MAX_TEXT} characters")
    if outcome == "reject" and not why:
        raise Invalid("驳回必须说明理由", "a rejection needs a reason")
    if caller.user_id == request.requested_by:
        write_audit(
            session,
            actor=caller.user_id,
            action="governance.decide",
            target_type="governance_request",
            target_id=request.id,
            detail={"refused": "self_approval", "outcome": outcome},
        )
        raise SelfApproval("申请人不能审批自己的申请", "the requester cannot decide their own request")
    if caller.role not in APPROVER_ROLES or caller.agency_id != request.agency_id:
        raise NotTheApprover(
            "只有证据所属机关的负责人可以审批", "only a head of the evidence's agency decides"
        )
    if decision_of(session, request.id) is not None:
        raise AlreadyDecided(f"申请 {request.id} 已经审批", f"request {request.id} was already decided")
    expires = None
    if outcome == "approve" and request.kind != "disposal":
        expires = when + timedelta(days=request.duration_days)
    decision = GovernanceDecision(
        request_id=request.id,
        outcome=outcome,
        reason=why,
        decided_by=caller.user_id,
        decider_role=caller.role,
        decided_at=when,
        expires_at=expires,
    )
    session.add(decision)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="governance.decide",
        target_type="governance_request",
        target_id=request.id,
        detail={"outcome": outcome, "kind": request.kind, "reason": why},
    )
    if outcome == "approve" and request.kind == "disposal":
        if store is None:
            raise Invalid("销毁需要对象存储", "disposal needs the object store")
        dispose(session, store, request, caller, when)
    return decision


def list_requests(
    session: Session, caller: Caller, *, pending_only: bool = False, limit: int = 200
) -> list[tuple[GovernanceRequest, GovernanceDecision | None]]:
    """The requests the caller may see, newest first, each with its decision."""
    query = select(GovernanceRequest).order_by(GovernanceRequest.id.desc())
    if not caller.reads_all:
        if caller.role in ("agency_head", "legal_reviewer") and caller.agency_id is not None:
            query = query.where(
                (GovernanceRequest.agency_id == caller.agency_id)
                | (GovernanceRequest.requested_by == caller.user_id)
            )
        else:
            query = query.where(GovernanceRequest.requested_by == caller.user_id)
    rows = list(session.scalars(query.limit(limit * 4 if pending_only else limit)))
    decisions = {
        d.request_id: d
        for d in session.scalars(
            select(GovernanceDecision).where(GovernanceDecision.request_id.in_([r.id for r in rows]))
        )
    }
    out: list[tuple[GovernanceRequest, GovernanceDecision | None]] = [(r, decisions.get(r.id)) for r in rows]
    if pending_only:
        out = [pair for pair in out if pair[1] is None][:limit]
    return out


def status_of(
    decision: GovernanceDecision | None, now: datetime, revocation: GrantRevocation | None = None
) -> str:
    """pending, rejected, approved (a grant in force), expired, revoked, or done (disposal carried out)."""
    if decision is None:
        return "pending"
    if decision.outcome == "reject":
        return "rejected"
    if decision.expires_at is None:
        return "done"
    if now >= decision.expires_at:
        return "expired"
    if revocation is not None and revocation.revoked_at <= now:
        return "revoked"
    return "approved"


def _revoked_by(now: datetime) -> Any:
    """The ids of requests whose grant was revoked at or before ``now`` (a subquery)."""
    return select(GrantRevocation.request_id).where(GrantRevocation.revoked_at <= now)


def revocation_of(session: Session, request_id: int) -> GrantRevocation | None:
    """The revocation of a grant, if it was revoked."""
    return session.scalars(select(GrantRevocation).where(GrantRevocation.request_id == request_id)).first()


def revocations_of(session: Session, request_ids: Sequence[int]) -> dict[int, GrantRevocation]:
    """The revocations of several requests, by request id."""
    if not request_ids:
        return {}
    rows = session.scalars(select(GrantRevocation).where(GrantRevocation.request_id.in_(list(request_ids))))
    return {r.request_id: r for r in rows}


def revoke(
    session: Session, caller: Caller, request_id: int, reason: str, *, now: datetime | None = None
) -> GrantRevocation:
    """End an approved grant before it expires (JL-20), flushed and audited; it stops working at once.

    The head who approved it, or another head of the evidence's agency, revokes it with a reason; the
    requester never does (``SelfRevocation``, audited), nor anyone of another agency (who does not see it).
    """
    when = now or utcnow()
    request = get_request(session, caller, request_id)
    why = (reason or "").strip()
    if not why:
        raise Invalid("撤销必须说明理由", "a revocation needs a reason")
    if len(why) > MAX_TEXT:
        raise Invalid(f"reason 不能超过 {MAX_TEXT} 个字符", f"reason must be at most {MAX_TEXT} characters")
    if caller.user_id == request.requested_by:
        write_audit(
            session,
            actor=caller.user_id,
            action="governance.revoke",
            target_type="governance_request",
            target_id=request.id,
            detail={"refused": "self_revocation"},
        )
        raise SelfRevocation("申请人不能撤销自己的授权", "the requester cannot revoke their own grant")
    decision = decision_of(session, request.id)
    approver = decision is not None and decision.decided_by == caller.user_id
    if not approver and (caller.role not in APPROVER_ROLES or caller.agency_id != request.agency_id):
        raise NotTheApprover(
            "只有批准人或证据所属机关的负责人可以撤销授权",
            "only the approver or a head of the evidence's agency revokes a grant",
        )
    revocation = revocation_of(session, request.id)
    status = status_of(decision, when, revocation)
    if status != "approved":
        raise NotRevocable(
            f"申请 {request.id} 不是有效的授权（{status}），不能撤销",
            f"request {request.id} is not a grant in force ({status}) and cannot be revoked",
        )
    row = GrantRevocation(
        request_id=request.id,
        reason=why,
        revoked_by=caller.user_id,
        revoker_role=caller.role,
        revoked_at=when,
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="governance.revoke",
        target_type="governance_request",
        target_id=request.id,
        detail={"kind": request.kind, "reason": why, "requested_by": request.requested_by},
    )
    return row


def request_to_dict(
    request: GovernanceRequest,
    decision: GovernanceDecision | None,
    now: datetime,
    revocation: GrantRevocation | None = None,
) -> dict[str, Any]:
    """A request and its decision as JSON."""
    return {
        "id": request.id,
        "kind": request.kind,
        "agency_id": request.agency_id,
        "requested_by": request.requested_by,
        "requester_role": request.requester_role,
        "purpose": request.purpose,
        "recipient": request.recipient,
        "recipient_body": request.recipient_body or None,
        "actions": list(request.actions),
        "recording_ids": list(request.recording_ids),
        "case_id": request.case_id,
        "duration_days": request.duration_days or None,
        "requested_at": request.requested_at.isoformat(),
        "status": status_of(decision, now, revocation),
        "decision": None
        if decision is None
        else {
            "outcome": decision.outcome,
            "reason": decision.reason,
            "decided_by": decision.decided_by,
            "decided_at": decision.decided_at.isoformat(),
            "expires_at": decision.expires_at.isoformat() if decision.expires_at else None,
        },
        "revocation": None
        if revocation is None
        else {
            "reason": revocation.reason,
            "revoked_by": revocation.revoked_by,
            "revoked_at": revocation.revoked_at.isoformat(),
        },
    }


def grant_for(
    session: Session, caller: Caller, recording_id: int, actions: tuple[str, ...], now: datetime
) -> GovernanceRequest | None:
    """An approved, unexpired request of the caller covering the recording for one of ``actions``."""
    approved = session.execute(
        select(GovernanceRequest, GovernanceDecision)
        .join(GovernanceDecision, GovernanceDecision.request_id == GovernanceRequest.id)
        .where(
            GovernanceRequest.requested_by == caller.user_id,
            GovernanceRequest.kind != "disposal",
            GovernanceDecision.outcome == "approve",
            GovernanceDecision.decided_at <= now,
            GovernanceDecision.expires_at > now,
            GovernanceRequest.id.not_in(_revoked_by(now)),
        )
        .order_by(GovernanceRequest.id)
    )
    for request, _decision in approved:
        if recording_id in (request.recording_ids or []) and set(actions) & set(request.actions or []):
            return request
    return None


def active_grants(
    session: Session, caller: Caller, now: datetime
) -> list[tuple[GovernanceRequest, GovernanceDecision]]:
    """The caller's grants in force at ``now``."""
    rows = session.execute(
        select(GovernanceRequest, GovernanceDecision)
        .join(GovernanceDecision, GovernanceDecision.request_id == GovernanceRequest.id)
        .where(
            GovernanceRequest.requested_by == caller.user_id,
            GovernanceDecision.outcome == "approve",
            GovernanceDecision.expires_at > now,
            GovernanceRequest.id.not_in(_revoked_by(now)),
        )
        .order_by(GovernanceRequest.id.desc())
    )
    return [(r, d) for r, d in rows]
