"""Cases and their append-only whole-process event log (JL-2, JL-7 – JL-11), with a completeness check."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from server.domain.accounts.service import Forbidden
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.catalogue import EVENT_TYPES, STATUS_EVENT
from server.domain.cases.completeness import completeness
from server.domain.cases.covering import RECORDING_SLACK
from server.domain.cases.inputs import CASE_STATUSES, CaseEventInput, NewCase, StatusChange
from server.domain.cases.models import Case, CaseAttachment, CaseEvent, CaseOfficer
from server.domain.cases.outcomes import EVENT_RULES, check_event
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.evidence.models import Recording
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.domain.publicity.service import collect_from_case_event
from server.domain.scope import recording_of_agency

__all__ = [
    "CASE_STATUSES",
    "FINAL_STATUSES",
    "FORCE_CLOSE_ROLES",
    "RECORDING_SLACK",
    "STATUS_TRANSITIONS",
    "CaseEventInput",
    "NewCase",
    "RecordIncomplete",
    "StatusChange",
    "change_status",
    "create_case",
    "get_case",
    "list_cases",
    "record_event",
]


# -- cases -----------------------------------------------------------------------------------------


def case_to_dict(case: Case, officer_ids: list[int]) -> dict[str, Any]:
    """A case as JSON."""
    return {
        "id": case.id,
        "agency_id": case.agency_id,
        "number": case.number,
        "title": case.title,
        "act_kind": case.act_kind,
        "origin": case.origin,
        "party": case.party,
        "major": case.major,
        "status": case.status,
        "officer_ids": officer_ids,
        "created_at": case.created_at.isoformat(),
    }


def case_officer_ids(session: Session, case_id: int) -> list[int]:
    """Officers assigned to a case."""
    return list(
        session.scalars(
            select(CaseOfficer.officer_id)
            .where(CaseOfficer.case_id == case_id)
            .order_by(CaseOfficer.officer_id)
        )
    )


def _officer_list(session: Session, officer_ids: tuple[int, ...] | None, agency_id: int) -> list[int]:
    """The named officers, each of ``agency_id`` (JL-20), sorted without repeats."""
    ids = sorted(set(officer_ids or ()))
    if not ids:
        return []
    found = set(
        session.scalars(select(Officer.id).where(Officer.id.in_(ids), Officer.agency_id == agency_id))
    )
    if found != set(ids):
        raise Invalid("有执法人员不存在或不属于本机关", "some officers are missing or of another agency")
    return ids


def create_case(session: Session, caller: Caller, new: NewCase) -> Case:
    """Open a case in the caller's agency (system_admin may name another)."""
    agency_id = new.agency_id if new.agency_id is not None else caller.agency_id
    if agency_id is None or session.get(Agency, agency_id) is None or not caller.may_write(agency_id):
        raise Invalid("必须指定本机关", "a case needs the caller's agency")
    number = new.number
    if session.scalar(select(Case.id).where(Case.agency_id == agency_id, Case.number == number)):
        raise Conflict(f"案号 {number} 已存在", f"case number {number} already exists in this agency")
    officer_ids = _officer_list(session, new.officer_ids, agency_id)
    case = Case(
        agency_id=agency_id,
        number=number,
        title=new.title,
        act_kind=new.act_kind,
        origin=new.origin,
        party=new.party,
        major=new.major,
        status="open",
        created_by=caller.user_id,
        created_at=utcnow(),
    )
    session.add(case)
    session.flush()
    for officer_id in officer_ids:
        session.add(CaseOfficer(case_id=case.id, officer_id=officer_id))
    write_audit(session, actor=caller.user_id, action="case.create", target_type="case", target_id=case.id)
    return case


def get_case(session: Session, caller: Caller, case_id: int) -> Case:
    """A case the caller may see (another agency's case looks missing)."""
    case = session.get(Case, case_id)
    if case is None or not caller.may_read(case.agency_id):
        raise NotFound("案件不存在", "case not found")
    return case


def list_cases(session: Session, caller: Caller, *, officer_id: int | None = None) -> list[Case]:
    """Cases the caller may see, newest first; optionally those of one officer."""
    query = select(Case).order_by(Case.id.desc())
    if not caller.reads_all:
        query = query.where(Case.agency_id == caller.agency_id)
    if officer_id is not None:
        query = query.join(CaseOfficer, CaseOfficer.case_id == Case.id).where(
            CaseOfficer.officer_id == officer_id
        )
    return list(session.scalars(query))


# -- status lifecycle (JL-2, JL-7 – JL-10) ---------------------------------------------------------

# From -> allowed targets. open: initiation and investigation (JL-7, JL-8); under_review: review and
# decision (JL-9), may go back to open for more investigation (JL-9(1)); decided: the decision is
# issued (JL-9, JL-11); executed: served and performed or enforced (JL-10); closed: archived.
# withdrawn: the application is withdrawn or the case is dropped before a decision (JL-7);
# revoked: an issued decision is revoked (by the agency or on reconsideration/litigation).
# An inspection without a decision may be closed straight from open. closed, withdrawn and revoked
# are final.
STATUS_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("under_review", "closed", "withdrawn"),
    "under_review": ("open", "decided", "withdrawn"),
    "decided": ("executed", "revoked"),
    "executed": ("closed", "revoked"),
    "closed": (),
    "withdrawn": (),
    "revoked": (),
}
# Officers still record service and execution (JL-10) until a case reaches one of these.
FINAL_STATUSES: tuple[str, ...] = tuple(k for k, v in STATUS_TRANSITIONS.items() if not v)
# Closing a case whose record is incomplete is the head's decision (JL-9(4)), never an officer's.
FORCE_CLOSE_ROLES: tuple[str, ...] = ("agency_head", "system_admin")


class RecordIncomplete(Conflict):
    """Closing refused: the record still lacks items (``missing``); an agency head may force it."""

    code: ClassVar[str] = "record_incomplete"

    def __init__(self, missing: list[dict[str, str]]) -> None:
        super().__init__(
            f"全过程记录不完整（缺少 {len(missing)} 项），不能结案；机关负责人可注明理由强制结案",
            f"the record lacks {len(missing)} items; only an agency head may force closing, with a reason",
        )
        self.missing = missing


def change_status(session: Session, caller: Caller, case_id: int, change: StatusChange) -> CaseEvent:
    """Move a case along STATUS_TRANSITIONS and append a ``case.status_changed`` event (JL-2)."""
    case = get_case(session, caller, case_id)
    if not caller.may_write(case.agency_id):
        raise NotFound("案件不存在", "case not found")
    target, force = change.status, change.force
    current = case.status
    if target not in STATUS_TRANSITIONS.get(current, ()):
        raise Conflict(
            f"案件状态不能从 {current} 变为 {target}", f"a case cannot go from {current} to {target}"
        )
    missing: list[dict[str, str]] = []
    if target == "closed":
        events = list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
        missing = completeness(case, events)
        if missing and not force:
            raise RecordIncomplete(missing)
        if missing and caller.role not in FORCE_CLOSE_ROLES:
            raise Forbidden(
                "只有机关负责人可以强制结案", "only an agency head may close an incomplete record"
            )
    elif force:
        raise Invalid("force 只用于结案", "force applies only to closing a case")
    # Compare-and-set: of two concurrent changes from the same status only one wins.
    result = session.execute(
        update(Case).where(Case.id == case.id, Case.status == current).values(status=target)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        raise Conflict("案件状态已被他人修改，请刷新", "the case status changed meanwhile; reload")
    session.expire(case, ["status"])
    data: dict[str, Any] = {"from": current, "to": target, "force": bool(missing)}
    if missing:
        data["missing"] = [m["requirement"] for m in missing]
    event = new_event(
        session,
        agency_id=case.agency_id,
        case=case,
        event=CaseEventInput(event_type=STATUS_EVENT.code, text=change.reason, data=data, officer_ids=()),
        recorded_by=caller.user_id,
        source="api",
        status_change=True,
    )
    write_audit(
        session, actor=caller.user_id, action="case.status", target_type="case_event", target_id=event.id
    )
    return event


# -- events ----------------------------------------------------------------------------------------


def event_to_dict(event: CaseEvent) -> dict[str, Any]:
    """An event as JSON."""
    kind = EVENT_TYPES.get(event.event_type)
    return {
        "id": event.id,
        "case_id": event.case_id,
        "event_type": event.event_type,
        "stage": kind.stage if kind else None,
        "article": kind.article if kind else None,
        "label": kind.zh if kind else event.event_type,
        "label_en": kind.en if kind else event.event_type,
        "occurred_at": event.occurred_at.isoformat(),
        "recorded_at": event.recorded_at.isoformat(),
        "place": event.place,
        "text": event.text,
        "officer_ids": list(event.officer_ids or []),
        "recording_ids": list(event.recording_ids or []),
        "data": dict(event.data or {}),
        "source": event.source,
        "recorded_by": event.recorded_by,
        "device_id": event.device_id,
        "corrects_event_id": event.corrects_event_id,
    }


def new_event(
    session: Session,
    *,
    agency_id: int,
    case: Case | None,
    event: CaseEventInput,
    recorded_by: str,
    source: str,
    device_id: str | None = None,
    device_event_id: str | None = None,
    status_change: bool = False,
) -> CaseEvent:
    """Check and append one event (shared by the API, the mobile page and devices)."""
    event_type = event.event_type
    if event_type not in EVENT_TYPES or (event_type == STATUS_EVENT.code and not status_change):
        raise Invalid(f"未知的事件类型 {event_type}", f"unknown event type {event_type}")
    if case is None and event_type != "investigation.credential_shown":
        raise Invalid("只有出示证件可以不关联案件", "only credential_shown may be recorded without a case")
    occurred_at = event.occurred_at or utcnow()
    officer_ids = _officer_list(session, event.officer_ids, agency_id)
    recording_ids = event.recording_ids
    if recording_ids and len(
        # JL-20: only the case's agency's own recordings; another's is "missing" (no oracle).
        set(
            session.scalars(
                select(Recording.id).where(Recording.id.in_(recording_ids), recording_of_agency(agency_id))
            )
        )
    ) != len(set(recording_ids)):
        raise Invalid("有录像不存在", "some recordings do not exist")
    corrects = event.corrects_event_id
    if corrects is not None:
        target = session.get(CaseEvent, corrects)
        if target is None or case is None or target.case_id != case.id:
            raise Invalid("被更正的事件不属于本案", "the corrected event is not in this case")
    if case is not None and event_type in EVENT_RULES:
        # GS-17: refusals, reconsideration, litigation and transfers are counted in the annual report.
        recorded = frozenset(
            session.scalars(select(CaseEvent.event_type).where(CaseEvent.case_id == case.id).distinct())
        )
        check_event(event_type, event.data, case.act_kind, recorded)
    row = CaseEvent(
        case_id=case.id if case else None,
        agency_id=agency_id,
        event_type=event_type,
        occurred_at=occurred_at,
        recorded_at=utcnow(),
        place=event.place,
        text=event.text,
        officer_ids=officer_ids,
        recording_ids=sorted(set(recording_ids)),
        data=dict(event.data),
        source=source,
        recorded_by=recorded_by,
        device_id=device_id,
        device_event_id=device_event_id,
        corrects_event_id=corrects,
    )
    session.add(row)
    session.flush()
    if case is not None:
        # GS-11: a recorded decision opens its publication item, with its deadline, in the same transaction.
        collect_from_case_event(session, case, row)
    return row


def record_event(
    session: Session, caller: Caller, case_id: int | None, event: CaseEventInput, *, source: str = "api"
) -> CaseEvent:
    """Append an event to a case (JL-2); a correction is a new event with ``corrects_event_id``."""
    case = None
    if case_id is not None:
        case = get_case(session, caller, case_id)
        if not caller.may_write(case.agency_id):
            raise NotFound("案件不存在", "case not found")
        agency_id = case.agency_id
    elif caller.agency_id is None:
        raise Invalid("账户没有所属机关", "the account has no agency")
    else:
        agency_id = caller.agency_id
    if event.officer_ids is None and caller.user_id.isdigit():
        # By default the event is the recording officer's own act (links it to their recordings, JL-2).
        own = session.scalar(select(Officer.id).where(Officer.user_id == int(caller.user_id)))
        mine = (own,) if own is not None and agency_id == caller.agency_id else ()
        event = replace(event, officer_ids=mine)
    row = new_event(
        session, agency_id=agency_id, case=case, event=event, recorded_by=caller.user_id, source=source
    )
    write_audit(
        session, actor=caller.user_id, action="case.event", target_type="case_event", target_id=row.id
    )
    return row


# -- events reported by recorders (signed, finding 2 of the zero-trust review) -------------------


def attachment_to_dict(a: CaseAttachment, case_id: int) -> dict[str, Any]:
    """An attachment as JSON."""
    return {
        "id": a.id,
        "event_id": a.event_id,
        "kind": a.kind,
        "name": a.name,
        "content_type": a.content_type,
        "size": a.size,
        "sha256": a.sha256,
        "signed_by_party": a.signed_by_party,
        "uploaded_at": a.uploaded_at.isoformat(),
        "url": f"/api/v1/cases/{case_id}/attachments/{a.id}",
    }


# -- the whole-process record --------------------------------------------------------------------
