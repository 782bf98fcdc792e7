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
* An agency may set its own period for a finite category (:func:`set_period`), never below the legal
  minimum (six months) and never making a permanent category finite. A recording keeps the longest
  period in force at any time since it started: lengthening reaches recordings already stored (and,
  through a background job, their store lock: ``lock_job.py``), shortening only recordings started
  after it.

Disposal is a request (``approvals.py``) that an agency head other than the requester approves; only then
:func:`dispose` writes a tombstone (a ledger leaf) and deletes the object from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from sqlalchemy import Select, func, or_, select, true
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.models import Case, CaseEvent
from server.domain.cases.service import FINAL_STATUSES
from server.domain.errors import Conflict, Invalid, NotFound, ServiceError
from server.domain.evidence import queries as recording_queries
from server.domain.evidence.models import Recording
from server.domain.fleet.models import DeviceAssignment
from server.domain.governance.lock_job_models import LockJobState, RetentionLockJob
from server.domain.governance.retention_models import (
    DisposalTombstone,
    LegalHold,
    LegalHoldRelease,
    RetentionAssignment,
    RetentionPeriod,
)
from server.domain.people.service import Caller
from server.domain.scope import recording_of_agency
from server.errors import ErrorKind

__all__ = [
    "ASSIGN_ROLES",
    "CATEGORIES",
    "DEFAULT_CATEGORY",
    "HOLD_ROLES",
    "MINIMUM_DAYS",
    "RELEASE_ROLES",
    "DisposalRefused",
    "GovernanceForbidden",
    "PeriodBelowMinimum",
    "Retention",
    "RetentionCategory",
    "RetentionStore",
    "StoreCannotDispose",
    "affected_recordings",
    "agency_of",
    "as_retention_store",
    "assign_category",
    "case_recording_ids",
    "hold_to_dict",
    "linked_cases",
    "list_holds",
    "lock_store",
    "periods_of",
    "place_hold",
    "protect",
    "protect_linked",
    "release_hold",
    "retention_of",
    "set_period",
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
        RetentionCategory(code="routine", days=184, name="日常执法记录（至少六个月）",
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
# The legal floor of any finite period an agency sets: six months (MPS on-site recording rule art. 13,
# 至少保存六个月). 184 days covers every run of six calendar months (1 July to 1 January is 184).
MINIMUM_DAYS = 184
# An upper bound only so that a typo cannot read as "forever" and dates stay representable.
MAXIMUM_DAYS = 100 * 366
# Who sets an agency's periods: its head (JL-19: the agency answers for its records).
PERIOD_ROLES: tuple[str, ...] = ("agency_head",)
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


class PeriodBelowMinimum(Invalid):
    """JL-19: an agency's period may not go below the legal minimum nor make a permanent category finite."""

    code: ClassVar[str] = "period_below_minimum"


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


def lock_store(store: object) -> RetentionStore | None:
    """The object store if it can extend its own lock (every store here can); None for one that cannot."""
    if callable(getattr(store, "extend_retention", None)) and callable(getattr(store, "delete", None)):
        return store  # type: ignore[return-value]
    return None


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
    agency = agency_of(session, rec)
    cases = linked_cases(session, rec.id, agency)
    open_cases = tuple(c.id for c in cases if c.status not in FINAL_STATUSES)
    evidence_cases = tuple(c.id for c in cases if c.status in _EVIDENCE_STATUSES)
    categories = {DEFAULT_CATEGORY, *assigned}
    if evidence_cases:
        categories.add("evidence")
    known = [CATEGORIES[c] for c in categories if c in CATEGORIES]
    permanent = any(c.days is None for c in known)
    periods = _periods_since(session, agency, rec.started_at)
    longest = max(
        (periods.get(c.code, c.days) or 0 for c in known if c.days is not None),
        default=CATEGORIES[DEFAULT_CATEGORY].days,
    )
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


def _period_rows(session: Session, agency_id: int) -> list[RetentionPeriod]:
    return list(
        session.scalars(
            select(RetentionPeriod).where(RetentionPeriod.agency_id == agency_id).order_by(RetentionPeriod.id)
        )
    )


def _periods_since(session: Session, agency_id: int | None, started_at: datetime) -> dict[str, int]:
    """Per finite category, the longest period the agency had in force at any time since ``started_at``:
    the one in force when recording started (the default if none was set), and every one set later. So a
    lengthening reaches recordings already stored, and a shortening only recordings started after it."""
    if agency_id is None:
        return {}
    rows = _period_rows(session, agency_id)
    if not rows:
        return {}
    out: dict[str, int] = {}
    for code, category in CATEGORIES.items():
        if category.days is None:
            continue
        in_force = category.days
        later: list[int] = []
        for row in rows:
            if row.category != code:
                continue
            if row.set_at <= started_at:
                in_force = row.days
            else:
                later.append(row.days)
        out[code] = max([in_force, *later])
    return out


def periods_of(session: Session, agency_id: int) -> list[dict[str, Any]]:
    """The agency's period in force now for every category (permanent ones stay permanent)."""
    current: dict[str, RetentionPeriod] = {}
    for stored in _period_rows(session, agency_id):
        current[stored.category] = stored
    out = []
    for code, category in CATEGORIES.items():
        row = current.get(code)
        out.append(
            {
                "category": code,
                "name": category.name,
                "name_en": category.name_en,
                "days": row.days if row else category.days,
                "default_days": category.days,
                "permanent": category.days is None,
                "minimum_days": None if category.days is None else MINIMUM_DAYS,
                "set_by": row.set_by if row else None,
                "set_at": row.set_at.isoformat() if row else None,
                "reason": row.reason if row else None,
            }
        )
    return out


def set_period(
    session: Session,
    caller: Caller,
    category: str,
    days: int,
    reason: str,
    *,
    now: datetime | None = None,
) -> tuple[RetentionPeriod, RetentionLockJob | None]:
    """Set the caller's agency's period for a finite category (JL-19); flushed, audited, a ledger leaf.

    Refused below :data:`MINIMUM_DAYS` or for a permanent category (``PeriodBelowMinimum``). When the
    period grows, a lock job (``lock_job.py``) is queued in the same transaction to extend the store lock
    of every affected recording of the agency; it is returned so the caller can show its state. The
    request itself touches no lock: from this commit :func:`retention_of`, which every disposal checks,
    already gives those recordings the longer period, so none is destroyed early while the job runs. A
    shorter period never shortens a lock and queues nothing.
    """
    if category not in CATEGORIES:
        raise Invalid(
            f"未知的保存类别“{category}”，可选：{'、'.join(CATEGORIES)}",
            f"unknown retention category {category!r}; one of {', '.join(CATEGORIES)}",
        )
    if caller.role not in PERIOD_ROLES or caller.agency_id is None:
        raise GovernanceForbidden(
            "只有机关负责人可以设定本机关的保存期限", "only an agency head sets periods"
        )
    if CATEGORIES[category].days is None:
        raise PeriodBelowMinimum(
            f"“{CATEGORIES[category].name}”依法永久保存，不能设定期限",
            f"{category} is permanent by law and cannot be given a period",
        )
    if days < MINIMUM_DAYS:
        raise PeriodBelowMinimum(
            f"保存期限不能少于 {MINIMUM_DAYS} 天（六个月），收到 {days} 天",
            f"a period must be at least {MINIMUM_DAYS} days (six months); got {days}",
        )
    if days > MAXIMUM_DAYS:
        raise Invalid(f"保存期限不能超过 {MAXIMUM_DAYS} 天", f"a period must be at most {MAXIMUM_DAYS} days")
    why = _reason(reason)
    agency = caller.agency_id
    current = {row.category: row.days for row in _period_rows(session, agency)}
    before = current.get(category, CATEGORIES[category].days) or 0
    when = now or utcnow()
    row = RetentionPeriod(
        agency_id=agency,
        category=category,
        days=days,
        reason=why,
        set_by=caller.user_id,
        set_at=when,
    )
    session.add(row)
    session.flush()
    job: RetentionLockJob | None = None
    if days > before:
        total = session.scalar(
            select(func.count()).select_from(affected_recordings(agency, category).subquery())
        )
        job = RetentionLockJob(
            period_id=row.id,
            agency_id=agency,
            category=category,
            state=LockJobState.PENDING.value,
            total=total or 0,
            checked=0,
            extended=0,
            cursor=0,
            attempts=0,
            created_at=when,
            updated_at=when,
        )
        session.add(job)
        session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="retention.period",
        target_type="agency",
        target_id=agency,
        detail={
            "category": category,
            "days": days,
            "before": before,
            "reason": why,
            "lock_job": None if job is None else job.id,
        },
    )
    return row, job


def affected_recordings(agency_id: int, category: str) -> Select[Recording]:
    """The stored, not disposed recordings of the agency a period of ``category`` reaches, by id.

    ``routine`` reaches every recording; another finite category only those it was assigned to.
    """
    query = select(Recording).where(
        recording_of_agency(agency_id), Recording.id.not_in(select(DisposalTombstone.recording_id))
    )
    if category != DEFAULT_CATEGORY:
        query = query.where(
            Recording.id.in_(
                select(RetentionAssignment.recording_id).where(RetentionAssignment.category == category)
            )
        )
    return query.order_by(Recording.id)


def protect_linked(session: Session, store: RetentionStore | None, recording_ids: list[int]) -> int:
    """After recordings were linked to a case: make each one's store lock match its retention (JL-19).

    A recording linked to an open case never expires, so on S3 with Object Lock this sets the object's
    legal hold. The case service does not call the governance domain (it sits below it); the edge that
    records the event calls this in the same transaction. The hold is lifted only by an approved disposal,
    which the retention rules allow only once the case has ended and the retention has run out.
    """
    if store is None or not recording_ids:
        return 0
    count = 0
    for rec in session.scalars(select(Recording).where(Recording.id.in_(sorted(set(recording_ids))))):
        if protect(session, store, rec):
            count += 1
    return count


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
