"""Access by duty and approval (JL-20): the check made wherever evidence is served.

On top of the roles table and the agency scope (``server/domain/scope.py``), each recording has an
access class. What a caller may do *by duty*, without asking anyone:

============  ==========================================================  ===================================
class         view (play, see details)                                    copy (download a file)
============  ==========================================================  ===================================
normal        every role that may read recordings, in scope               the head, legal reviewers, the
                                                                          recording's own officer
restricted    the head, legal reviewers, the recording's own officer,     the head
              officers of a case the recording is linked to
confidential  the head                                                    the head
============  ==========================================================  ===================================

Supervisory and audit roles (which read across agencies) view normal recordings by duty; anything else
they *retrieve*, through a ``retrieval`` request the agency's head approves (JL-20 ¶2). Everything
beyond duty takes an approved, unexpired request of the caller (``approvals.grant_for``). A refusal is
audited (``recording.access_refused``) and kept even though the request fails; a disposed recording
answers ``evidence_disposed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.models import CaseOfficer
from server.domain.errors import Conflict, Invalid, ServiceError
from server.domain.evidence import queries as recording_queries
from server.domain.evidence.models import Recording
from server.domain.governance.access_models import AccessClassChange
from server.domain.governance.approvals import grant_for
from server.domain.governance.retention import GovernanceForbidden, agency_of, linked_cases, tombstone_of
from server.domain.people.models import Officer
from server.domain.people.service import Caller
from server.errors import ErrorKind

__all__ = [
    "ACCESS_CLASSES",
    "ApprovalRequired",
    "Authorization",
    "EvidenceDisposed",
    "access_class_of",
    "authorize",
    "listable",
    "set_access_class",
    "viewable_ids",
]

ACCESS_CLASSES: tuple[str, ...] = ("normal", "restricted", "confidential")
# What a served request does to the evidence: play or read it, or take a copy away.
SERVE_ACTIONS: tuple[str, ...] = ("view", "copy")
# Which granted actions cover a served action: a copy, export or provision grant lets one view too.
_COVERED_BY: dict[str, tuple[str, ...]] = {
    "view": ("view", "copy", "export", "provide"),
    "copy": ("copy", "export", "provide"),
}


class ApprovalRequired(ServiceError):
    """Beyond the caller's duty: the head's approval is needed first (JL-20). The refusal stays audited."""

    code: ClassVar[str] = "approval_required"
    kind = ErrorKind.FORBIDDEN
    keeps_writes = True


class EvidenceDisposed(Conflict):
    """The recording was destroyed after its retention, by an approved disposal; its tombstone remains."""

    code: ClassVar[str] = "evidence_disposed"
    keeps_writes = True


@dataclass(frozen=True, kw_only=True)
class Authorization:
    """Why a served request was allowed: by duty, or by which approved request."""

    access_class: str
    basis: str  # "duty" or "grant"
    grant_id: int | None = None

    def audit_detail(self) -> dict[str, object]:
        """What the access's audit row adds: the grant it used, if any (by duty adds nothing)."""
        if self.grant_id is None:
            return {}
        return {"access_class": self.access_class, "basis": self.basis, "grant_id": self.grant_id}


def access_class_of(session: Session, recording_id: int) -> str:
    """The recording's access class: the latest change, normal if never set."""
    latest = session.scalar(
        select(AccessClassChange.access_class)
        .where(AccessClassChange.recording_id == recording_id)
        .order_by(AccessClassChange.id.desc())
        .limit(1)
    )
    return latest or "normal"


def _classes_of(session: Session, recording_ids: list[int]) -> dict[int, str]:
    """The current class of each recording that ever had one set (the others are normal)."""
    if not recording_ids:
        return {}
    latest: dict[int, str] = {}
    rows = session.execute(
        select(AccessClassChange.recording_id, AccessClassChange.access_class)
        .where(AccessClassChange.recording_id.in_(recording_ids))
        .order_by(AccessClassChange.id)
    )
    for recording_id, access_class in rows:
        latest[recording_id] = access_class
    return latest


def listable(
    session: Session, caller: Caller, recordings: list[Recording], *, now: datetime | None = None
) -> list[Recording]:
    """The recordings of a list the caller may view, by duty or by a grant (JL-20); no audit row.

    A list shows a recording's metadata (officer, device, times, hash), so it follows the view rule of the
    details page: a restricted or confidential recording beyond the caller's duty is left out rather than
    refused. Normal recordings (most of them) cost one query for the page.
    """
    shown = viewable_ids(session, caller, recordings, now=now)
    return [rec for rec in recordings if rec.id in shown]


def viewable_ids(
    session: Session, caller: Caller, recordings: list[Recording], *, now: datetime | None = None
) -> set[int]:
    """The ids of ``recordings`` the caller may view, by duty or by a grant (JL-20); no audit row.

    For pages that must still account for the others (a session's timeline, a case file's recordings):
    they show a hidden recording as a placeholder in its place, so that what is withheld never reads as
    a gap in the record (JL-16).
    """
    classes = _classes_of(session, [r.id for r in recordings])
    when = now or utcnow()
    shown: set[int] = set()
    for rec in recordings:
        access_class = classes.get(rec.id, "normal")
        if (
            access_class == "normal"
            or _by_duty(session, caller, rec, access_class, "view")
            or grant_for(session, caller, rec.id, _COVERED_BY["view"], when) is not None
        ):
            shown.add(rec.id)
    return shown


def set_access_class(
    session: Session, caller: Caller, recording_id: int, access_class: str, reason: str
) -> AccessClassChange:
    """Set a recording's class; only a head of its agency decides who may see it (JL-20)."""
    rec = recording_queries.get_recording(session, recording_id, scope=caller)
    if access_class not in ACCESS_CLASSES:
        raise Invalid(
            f"access_class 必须是 {'、'.join(ACCESS_CLASSES)} 之一",
            f"access_class must be one of {', '.join(ACCESS_CLASSES)}",
        )
    why = (reason or "").strip()
    if not why or len(why) > 2000:
        raise Invalid("必须填写理由（不超过 2000 字）", "a reason of at most 2000 characters is required")
    agency = agency_of(session, rec)
    if caller.role != "agency_head" or agency is None or caller.agency_id != agency:
        raise GovernanceForbidden(
            "只有录像所属机关的负责人可以设定密级", "only a head of the agency sets the class"
        )
    row = AccessClassChange(
        recording_id=rec.id, access_class=access_class, reason=why, set_by=caller.user_id, set_at=utcnow()
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="recording.access_class",
        target_type="recording",
        target_id=rec.id,
        detail={"access_class": access_class, "reason": why},
    )
    return row


def _own_certificate(session: Session, caller: Caller) -> str | None:
    if not caller.user_id.isdigit():
        return None
    return session.scalar(select(Officer.certificate_number).where(Officer.user_id == int(caller.user_id)))


def _on_linked_case(session: Session, caller: Caller, rec: Recording) -> bool:
    if not caller.user_id.isdigit():
        return False
    officer_id = session.scalar(select(Officer.id).where(Officer.user_id == int(caller.user_id)))
    if officer_id is None:
        return False
    case_ids = [c.id for c in linked_cases(session, rec.id, agency_of(session, rec))]
    if not case_ids:
        return False
    found = session.scalar(
        select(CaseOfficer.case_id).where(
            CaseOfficer.case_id.in_(case_ids), CaseOfficer.officer_id == officer_id
        )
    )
    return found is not None


def _by_duty(session: Session, caller: Caller, rec: Recording, access_class: str, action: str) -> bool:
    """The table of the module docstring."""
    role = caller.role
    own_agency = caller.agency_id is not None and caller.agency_id == agency_of(session, rec)
    head = role == "agency_head" and own_agency
    if head:
        return True
    own_recording = (
        role in ("officer", "auxiliary")
        and bool(rec.officer_id)
        and _own_certificate(session, caller) == rec.officer_id
    )
    if access_class == "normal":
        if action == "view":
            return True  # the roles table and the agency scope already decided
        return own_agency and (role == "legal_reviewer" or own_recording)
    if access_class == "restricted" and action == "view":
        if not own_agency:
            return False
        return role == "legal_reviewer" or own_recording or _on_linked_case(session, caller, rec)
    return False


def authorize(
    session: Session,
    caller: Caller,
    rec: Recording,
    action: str,
    *,
    now: datetime | None = None,
    metadata_only: bool = False,
) -> Authorization:
    """Whether ``caller`` may ``view`` or ``copy`` ``rec`` now: by duty or by an approved grant.

    The caller has already passed the roles table and the agency scope. A refusal writes its audit row
    and raises ApprovalRequired (kept by the caller's transaction); a disposed recording raises
    EvidenceDisposed, unless ``metadata_only`` (its details and tombstone stay readable).
    """
    if action not in SERVE_ACTIONS:
        raise Invalid(f"未知的访问动作 {action}", f"unknown access action {action!r}")
    stone = None if metadata_only else tombstone_of(session, rec.id)
    if stone is not None:
        write_audit(
            session,
            actor=caller.user_id,
            action="recording.access_refused",
            target_type="recording",
            target_id=rec.id,
            detail={"action": action, "refused": "disposed", "tombstone_id": stone.id},
        )
        raise EvidenceDisposed(
            f"录像 {rec.id} 已于 {stone.disposed_at:%Y-%m-%d} 经批准销毁（申请 {stone.request_id}）",
            f"recording {rec.id} was disposed of on {stone.disposed_at:%Y-%m-%d} "
            f"(request {stone.request_id})",
        )
    access_class = access_class_of(session, rec.id)
    if _by_duty(session, caller, rec, access_class, action):
        return Authorization(access_class=access_class, basis="duty")
    grant = grant_for(session, caller, rec.id, _COVERED_BY[action], now or utcnow())
    if grant is not None:
        return Authorization(access_class=access_class, basis="grant", grant_id=grant.id)
    write_audit(
        session,
        actor=caller.user_id,
        action="recording.access_refused",
        target_type="recording",
        target_id=rec.id,
        detail={"action": action, "access_class": access_class, "refused": "approval_required"},
    )
    raise ApprovalRequired(
        f"查看或复制该录像（{access_class}）超出您的职责范围，需经机关负责人批准",
        f"{action} of this {access_class} recording is beyond your duty: "
        "the agency head's approval is needed",
    )
