"""Retention, legal hold and disposal of recordings (JL-19).

JL-19 forbids destroying the record within its retention period. The rules, per recording:

* Every recording has the ``routine`` category (at least six months, the floor of the Ministry of Public
  Security's rule on on-site recordings, art. 13, which agencies follow in practice); more categories
  can be assigned, and several categories give the **longest** retention. Assignments are append-only,
  so a retention never shortens.
* Permanent: used as evidence (linked to a case that reached a final status other than withdrawn),
  the party obstructed enforcement, a major incident.
* Linked to a case that is still open: never expires while it is open.
* A legal hold (on the recording, or on a case it is linked to) stops expiry until it is lifted.
* Retention runs from the moment recording started (what the recorder signed).

Disposal is a request (``approvals.py``) that an agency head other than the requester approves; only then
:func:`dispose` writes a tombstone (a ledger leaf) and deletes the object from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from sqlalchemy import or_, select, true
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.models import Case, CaseEvent
from server.domain.cases.service import FINAL_STATUSES
from server.domain.errors import Conflict, Invalid, NotFound, ServiceError
from server.domain.evidence import queries as recording_queries
from server.domain.evidence.models import Recording
from server.domain.fleet.models import DeviceAssignment
from server.domain.governance.retention_models import (
    DisposalTombstone,
    LegalHold,
    LegalHoldRelease,
    RetentionAssignment,
)
from server.domain.people.service import Caller
from server.errors import ErrorKind

__all__ = [
    "ASSIGN_ROLES",
    "CATEGORIES",
    "DEFAULT_CATEGORY",
    "HOLD_ROLES",
    "RELEASE_ROLES",
    "DisposalRefused",
    "GovernanceForbidden",
    "Retention",
    "RetentionCategory",
    "RetentionStore",
    "StoreCannotDispose",
    "agency_of",
    "as_retention_store",
    "assign_category",
    "case_recording_ids",
    "hold_to_dict",
    "linked_cases",
    "list_holds",
    "place_hold",
    "protect",
    "release_hold",
    "retention_of",
    "tombstone_of",
]

MAX_REASON = 2000


@dataclass(frozen=True, kw_only=True)
class RetentionCategory:
    """A retention category: how long, and why in both languages. ``days`` None means permanent."""

    code: str
    days: int | None
    name: str
    name_en: str


# Defaults from practice (research note: MPS on-site recording rule art. 13, Axon/Clearance categories).
CATEGORIES: dict[str, RetentionCategory] = {
    c.code: c
    for c in (
        RetentionCategory(code="routine", days=183, name="日常执法记录（至少六个月）",
                          name_en="routine (6 months)"),
        RetentionCategory(code="complaint", days=3 * 366, name="投诉、信访、复议或诉讼相关（三年）",
                          name_en="complaint, petition, review or suit (3 years)"),
        RetentionCategory(code="evidence", days=None, name="作为行政、刑事证据使用（永久）",
                          name_en="used as administrative or criminal evidence (permanent)"),
        RetentionCategory(code="obstruction", days=None, name="当事人阻碍执法（永久）",
                          name_en="the party obstructed enforcement (permanent)"),
        RetentionCategory(code="major_incident", days=None, name="重大突发事件、群体性事件（永久）",
                          name_en="major emergency or mass incident (permanent)"),
    )
}  # fmt: skip
DEFAULT_CATEGORY = "routine"
# Who may place a hold: the agency's reviewers and head, and the supervisory and audit bodies (JL-20, JL-22).
HOLD_ROLES: tuple[str, ...] = ("legal_reviewer", "agency_head", "supervisor", "auditor", "system_admin")
RELEASE_ROLES: tuple[str, ...] = ("agency_head", "supervisor", "auditor", "system_admin")
ASSIGN_ROLES: tuple[str, ...] = ("legal_reviewer", "agency_head", "system_admin")
# A case that ended with these statuses used its linked recordings as evidence; a withdrawn one did not.
_EVIDENCE_STATUSES = tuple(s for s in FINAL_STATUSES if s != "withdrawn")


class GovernanceForbidden(ServiceError):
    """The caller's role or agency may not take this governance step."""

    code: ClassVar[str] = "governance_forbidden"
    kind = ErrorKind.FORBIDDEN


class DisposalRefused(Conflict):
    """JL-19: the recording may not be destroyed now; ``reason`` says why (retention, case, hold, …)."""

    code: ClassVar[str] = "disposal_refused"

    def __init__(self, recording_id: int, reason: str, message: str, message_en: str) -> None:
        super().__init__(
            f"录像 {recording_id} 不能销毁：{message}", f"recording {recording_id}: {message_en}"
        )
        self.recording_id = recording_id
        self.reason = reason


class RetentionStore(Protocol):
    """What disposal and retention need of an object store (``server/infra/storage.py``)."""

    def delete(self, key: str) -> None:
        """Remove the object for good."""

    def extend_retention(self, key: str, until: datetime | None) -> bool:
        """Lengthen the store's own lock, if it has one (None: indefinitely)."""


def as_retention_store(store: object) -> RetentionStore:
    """The object store as disposal needs it; a store without delete/extend cannot dispose (unavailable)."""
    if not (callable(getattr(store, "delete", None)) and callable(getattr(store, "extend_retention", None))):
        raise StoreCannotDispose("该对象存储不支持销毁", "this object store cannot dispose of objects")
    return store  # type: ignore[return-value]


class StoreCannotDispose(ServiceError):
    """The configured store offers no deletion (a read-only mirror): nothing can be destroyed."""

    code: ClassVar[str] = "store_cannot_dispose"
    kind = ErrorKind.UNAVAILABLE


@dataclass(frozen=True, kw_only=True)
class Retention:
    """Where one recording stands under JL-19."""

    recording_id: int
    categories: tuple[str, ...]
    until: datetime | None  # None: permanent or held (see ``permanent``, ``open_cases``, ``holds``)
    permanent: bool
    open_cases: tuple[int, ...]
    evidence_cases: tuple[int, ...]
    holds: tuple[int, ...]
    disposed: bool

    def expired(self, now: datetime) -> bool:
        """Whether the recording may be disposed of at ``now``."""
        return (
            not self.disposed
            and not self.permanent
            and not self.open_cases
            and not self.holds
            and self.until is not None
            and now >= self.until
        )

    @property
    def protected_until(self) -> datetime | None:
        """Until when the store must keep the object (None: indefinitely)."""
        if self.permanent or self.open_cases or self.holds:
            return None
        return self.until

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """The retention as JSON."""
        return {
            "recording_id": self.recording_id,
            "categories": list(self.categories),
            "retained_until": self.until.isoformat() if self.until and not self.permanent else None,
            "permanent": self.permanent,
            "open_cases": list(self.open_cases),
            "evidence_cases": list(self.evidence_cases),
            "legal_holds": list(self.holds),
            "disposed": self.disposed,
            "disposable": self.expired(now),
        }


def agency_of(session: Session, rec: Recording) -> int | None:
    """The recording's agency: the check-out open when it started (as ``server/domain/scope.py`` says)."""
    return session.scalar(
        select(DeviceAssignment.agency_id)
        .where(
            DeviceAssignment.device_id == rec.device_id,
            DeviceAssignment.checked_out_at <= rec.started_at,
            or_(DeviceAssignment.checked_in_at.is_(None), DeviceAssignment.checked_in_at > rec.started_at),
        )
        .order_by(DeviceAssignment.checked_out_at.desc())
        .limit(1)
    )


def linked_cases(session: Session, recording_id: int, agency_id: int | None = None) -> list[Case]:
    """Cases with an event that names the recording. Every link ever made counts, a corrected one too:
    keeping evidence longer is the safe side of JL-19.

    ``agency_id``, the recording's agency when known, narrows the search: a case links only recordings
    of its own agency (``cases.service.record_event``). The ids are a JSON list, read on this side so
    the same query runs on SQLite and PostgreSQL.
    """
    query = select(CaseEvent.case_id, CaseEvent.recording_ids).where(CaseEvent.case_id.is_not(None))
    if agency_id is not None:
        query = query.where(CaseEvent.agency_id == agency_id)
    case_ids = {case_id for case_id, ids in session.execute(query) if ids and recording_id in ids}
    if not case_ids:
        return []
    return list(session.scalars(select(Case).where(Case.id.in_(case_ids)).order_by(Case.id)))


def _active_holds(session: Session, recording_id: int, case_ids: list[int]) -> list[int]:
    target = LegalHold.recording_id == recording_id
    if case_ids:
        target = or_(target, LegalHold.case_id.in_(case_ids))
    released = select(LegalHoldRelease.hold_id)
    return list(
        session.scalars(
            select(LegalHold.id).where(target, LegalHold.id.not_in(released)).order_by(LegalHold.id)
        )
    )


def tombstone_of(session: Session, recording_id: int) -> DisposalTombstone | None:
    """The tombstone of a disposed recording, if it was disposed."""
    return session.scalars(
        select(DisposalTombstone).where(DisposalTombstone.recording_id == recording_id)
    ).first()


def retention_of(session: Session, rec: Recording) -> Retention:
    """The recording's categories (assigned and derived from its cases), its end, its holds."""
    assigned = set(
        session.scalars(
            select(RetentionAssignment.category).where(RetentionAssignment.recording_id == rec.id)
        )
    )
    cases = linked_cases(session, rec.id, agency_of(session, rec))
    open_cases = tuple(c.id for c in cases if c.status not in FINAL_STATUSES)
    evidence_cases = tuple(c.id for c in cases if c.status in _EVIDENCE_STATUSES)
    categories = {DEFAULT_CATEGORY, *assigned}
    if evidence_cases:
        categories.add("evidence")
    known = [CATEGORIES[c] for c in categories if c in CATEGORIES]
    permanent = any(c.days is None for c in known)
    longest = max((c.days for c in known if c.days is not None), default=CATEGORIES[DEFAULT_CATEGORY].days)
    until = None if permanent else rec.started_at + timedelta(days=longest or 0)
    return Retention(
        recording_id=rec.id,
        categories=tuple(sorted(categories)),
        until=until,
        permanent=permanent,
        open_cases=open_cases,
        evidence_cases=evidence_cases,
        holds=tuple(_active_holds(session, rec.id, [c.id for c in cases])),
        disposed=tombstone_of(session, rec.id) is not None,
    )


def _reason(text: str | None, field: str = "reason") -> str:
    value = (text or "").strip()
    if not value:
        raise Invalid(f"必须填写{'理由' if field == 'reason' else field}", f"{field} is required")
    if len(value) > MAX_REASON:
        raise Invalid(
            f"{field} 不能超过 {MAX_REASON} 个字符", f"{field} must be at most {MAX_REASON} characters"
        )
    return value


def _require_write(session: Session, caller: Caller, rec: Recording) -> int:
    """The recording's agency, if the caller may act on it (agency-bound) — else GovernanceForbidden."""
    agency = agency_of(session, rec)
    if agency is None or not caller.may_write(agency):
        raise GovernanceForbidden(
            "只有录像所属机关的人员可以执行此操作", "only the recording's agency may do this"
        )
    return agency


def assign_category(
    session: Session,
    caller: Caller,
    recording_id: int,
    category: str,
    reason: str,
    *,
    store: RetentionStore | None = None,
) -> tuple[RetentionAssignment, bool]:
    """Give a recording a category (idempotent); extend the store's lock when the retention grew.

    Returns the assignment and whether the store's own lock (S3 Object Lock) was extended.
    """
    rec = recording_queries.get_recording(session, recording_id, scope=caller)
    if category not in CATEGORIES:
        raise Invalid(
            f"未知的保存类别“{category}”，可选：{'、'.join(CATEGORIES)}",
            f"unknown retention category {category!r}; one of {', '.join(CATEGORIES)}",
        )
    if caller.role not in ASSIGN_ROLES:
        raise GovernanceForbidden(
            "只有法制审核人员或机关负责人可以设定保存类别", "only reviewers or heads set categories"
        )
    _require_write(session, caller, rec)
    why = _reason(reason)
    existing = session.scalars(
        select(RetentionAssignment).where(
            RetentionAssignment.recording_id == rec.id, RetentionAssignment.category == category
        )
    ).first()
    if existing is not None:
        return existing, False
    row = RetentionAssignment(
        recording_id=rec.id, category=category, reason=why, assigned_by=caller.user_id, assigned_at=utcnow()
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="retention.assign",
        target_type="recording",
        target_id=rec.id,
        detail={"category": category, "reason": why},
    )
    extended = protect(session, store, rec) if store is not None else False
    return row, extended


def protect(session: Session, store: RetentionStore, rec: Recording) -> bool:
    """Make the store's own lock at least as long as the retention (S3 Object Lock; a directory has none)."""
    if tombstone_of(session, rec.id) is not None:
        return False
    return store.extend_retention(rec.object_key, retention_of(session, rec).protected_until)


def place_hold(
    session: Session,
    caller: Caller,
    *,
    recording_id: int | None,
    case_id: int | None,
    reason: str,
    store: RetentionStore | None = None,
) -> LegalHold:
    """Put a legal hold on one recording or on every recording linked to one case (JL-19)."""
    if caller.role not in HOLD_ROLES:
        raise GovernanceForbidden("无权设置诉讼保全", "this role may not place a legal hold")
    if (recording_id is None) == (case_id is None):
        raise Invalid("必须指定 recording_id 或 case_id 之一", "give exactly one of recording_id and case_id")
    why = _reason(reason)
    recordings: list[Recording] = []
    if recording_id is not None:
        rec = recording_queries.get_recording(session, recording_id, scope=caller)
        agency = agency_of(session, rec)
        recordings.append(rec)
    else:
        case = session.get(Case, case_id)
        if case is None or not caller.may_read(case.agency_id):
            raise NotFound(f"案件 {case_id} 不存在", f"case {case_id} not found")
        agency = case.agency_id
    if agency is None:
        raise Invalid("该录像不属于任何机关，无法设置保全", "the recording belongs to no agency")
    hold = LegalHold(
        agency_id=agency,
        recording_id=recording_id,
        case_id=case_id,
        reason=why,
        placed_by=caller.user_id,
        placed_at=utcnow(),
    )
    session.add(hold)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="retention.hold",
        target_type="legal_hold",
        target_id=hold.id,
        detail={"recording_id": recording_id, "case_id": case_id, "reason": why},
    )
    if store is not None:
        if case_id is not None:
            ids = {rid for c in [case_id] for rid in case_recording_ids(session, c)}
            recordings = list(session.scalars(select(Recording).where(Recording.id.in_(ids))))
        for rec in recordings:
            protect(session, store, rec)
    return hold


def case_recording_ids(session: Session, case_id: int) -> set[int]:
    return {
        rid
        for ids in session.scalars(select(CaseEvent.recording_ids).where(CaseEvent.case_id == case_id))
        for rid in ids or []
    }


def _visible_holds(caller: Caller) -> Any:
    if caller.reads_all:
        return true()
    return LegalHold.agency_id == (caller.agency_id if caller.agency_id is not None else -1)


def release_hold(session: Session, caller: Caller, hold_id: int, reason: str) -> LegalHoldRelease:
    """Lift a legal hold (once); retention then runs again as its categories say."""
    hold = session.scalars(select(LegalHold).where(LegalHold.id == hold_id, _visible_holds(caller))).first()
    if hold is None:
        raise NotFound(f"保全 {hold_id} 不存在", f"legal hold {hold_id} not found")
    if caller.role not in RELEASE_ROLES or not (caller.reads_all or caller.agency_id == hold.agency_id):
        raise GovernanceForbidden(
            "只有机关负责人或监督、审计机关可以解除保全", "only a head or supervisor may lift a hold"
        )
    why = _reason(reason)
    if session.scalar(select(LegalHoldRelease.id).where(LegalHoldRelease.hold_id == hold.id)) is not None:
        raise Conflict(f"保全 {hold_id} 已解除", f"legal hold {hold_id} was already lifted")
    release = LegalHoldRelease(hold_id=hold.id, reason=why, released_by=caller.user_id, released_at=utcnow())
    session.add(release)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="retention.release",
        target_type="legal_hold",
        target_id=hold.id,
        detail={"reason": why},
    )
    return release


def list_holds(session: Session, caller: Caller) -> list[tuple[LegalHold, LegalHoldRelease | None]]:
    """The legal holds the caller may see, newest first, each with its release if lifted."""
    holds = list(
        session.scalars(select(LegalHold).where(_visible_holds(caller)).order_by(LegalHold.id.desc()))
    )
    releases = {
        r.hold_id: r
        for r in session.scalars(
            select(LegalHoldRelease).where(LegalHoldRelease.hold_id.in_([h.id for h in holds]))
        )
    }
    return [(h, releases.get(h.id)) for h in holds]


def hold_to_dict(hold: LegalHold, release: LegalHoldRelease | None) -> dict[str, Any]:
    """A hold as JSON."""
    return {
        "id": hold.id,
        "agency_id": hold.agency_id,
        "recording_id": hold.recording_id,
        "case_id": hold.case_id,
        "reason": hold.reason,
        "placed_by": hold.placed_by,
        "placed_at": hold.placed_at.isoformat(),
        "active": release is None,
        "released_by": release.released_by if release else None,
        "released_at": release.released_at.isoformat() if release else None,
    }


