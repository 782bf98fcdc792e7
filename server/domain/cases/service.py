"""Cases and their append-only whole-process event log (JL-2, JL-7 – JL-11), with a completeness check."""

from __future__ import annotations

import base64
import hashlib
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from protocol.case_events import EVENT_VERSION as CASE_EVENT_VERSION
from protocol.case_events import SignedCaseEvent
from protocol.session import EventAck, EventAckState
from server.domain.accounts.service import Forbidden
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.covering import RECORDING_SLACK, CoveringRecordings
from server.domain.cases.inputs import CASE_STATUSES, CaseEventInput, NewCase, StatusChange
from server.domain.cases.models import Case, CaseAttachment, CaseEvent, CaseOfficer
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.evidence.models import Recording
from server.domain.fleet.assignments import current_assignment
from server.domain.fleet.models import Device, DeviceStatus
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.domain.publicity.service import collect_from_case_event
from server.domain.scope import recording_of_agency
from server.domain.sniff import ATTACHMENT_TYPES, check_attachment
from server.infra.storage import ObjectStore

__all__ = [
    "ATTACHMENT_KINDS",
    "CASE_EVENT_REJECTION_CODES",
    "CASE_STATUSES",
    "EVENT_TYPES",
    "FINAL_STATUSES",
    "FORCE_CLOSE_ROLES",
    "RECORDING_SLACK",
    "STAGES",
    "STATUS_EVENT",
    "STATUS_TRANSITIONS",
    "CaseEventInput",
    "DeviceEventOutcome",
    "EventType",
    "NewCase",
    "RecordIncomplete",
    "StatusChange",
    "add_attachment",
    "case_record",
    "change_status",
    "completeness",
    "create_case",
    "get_case",
    "list_cases",
    "record_device_event",
    "record_event",
    "served_type",
]

STAGES: tuple[str, ...] = ("initiation", "investigation", "decision", "execution")
ATTACHMENT_KINDS: tuple[str, ...] = ("document", "photo", "signed_page", "other")
MAX_ATTACHMENT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class EventType:
    """One kind of step in the record: its stage, the article item it records, and its names."""

    code: str
    article: str
    zh: str
    en: str

    @property
    def stage(self) -> str:
        """The stage (JL-2) this step belongs to."""
        return self.code.split(".")[0]


# The catalogue covers every item of JL-7, JL-8 (1)–(11), JL-9 (1)–(5) and JL-10 (1)–(5).
_CATALOGUE: tuple[EventType, ...] = (
    EventType(
        "initiation.ex_officio_source",
        "JL-7",
        "依职权启动：案件来源及立案理由",
        "ex officio: source and reason",
    ),
    EventType(
        "initiation.application_received", "JL-7", "依申请：接收申请", "on application: application received"
    ),
    EventType(
        "initiation.application_correction",
        "JL-7",
        "依申请：通知补正",
        "on application: correction requested",
    ),
    EventType("initiation.application_accepted", "JL-7", "依申请：受理", "on application: accepted"),
    EventType("initiation.application_rejected", "JL-7", "依申请：不予受理", "on application: not accepted"),
    EventType(
        "investigation.credential_shown",
        "JL-8(1)",
        "执法人员出示执法证件",
        "officers showed their credentials",
    ),
    EventType("investigation.inquiry", "JL-8(2)", "询问", "inquiry"),
    EventType("investigation.on_site_inspection", "JL-8(3)", "现场检查（勘验）", "on-site inspection"),
    EventType(
        "investigation.evidence_collected",
        "JL-8(4)",
        "查阅、调取、复制书证物证",
        "documentary/physical evidence",
    ),
    EventType("investigation.sampling", "JL-8(5)", "抽样取证", "sampling"),
    EventType("investigation.testing_appraisal", "JL-8(6)", "检测、检验、鉴定", "testing and appraisal"),
    EventType("investigation.evidence_preservation", "JL-8(7)", "证据保全", "evidence preservation"),
    EventType("investigation.coercive_measure", "JL-8(8)", "实施行政强制措施", "coercive measure"),
    EventType(
        "investigation.rights_notified", "JL-8(9)", "告知陈述、申辩、回避、听证等权利", "rights notified"
    ),
    EventType("investigation.party_response", "JL-8(9)", "当事人陈述、申辩", "party's statement and defence"),
    EventType("investigation.hearing", "JL-8(10)", "听证", "hearing"),
    EventType("investigation.other", "JL-8(11)", "其他调查取证", "other investigation"),
    EventType(
        "decision.recommendation", "JL-9(1)", "调查终结报告（事实、证据、依据、裁量）", "recommendation"
    ),
    EventType("decision.proposed", "JL-9(2)", "拟作出的决定", "proposed decision"),
    EventType("decision.legal_review", "JL-9(3)", "法制审核", "legal review"),
    EventType("decision.collective_discussion", "JL-9(3)", "集体讨论", "collective discussion"),
    EventType("decision.head_approval", "JL-9(4)", "机关负责人审批", "head's approval"),
    EventType("decision.decided", "JL-9, JL-11", "作出决定（决定书）", "decision issued"),
    EventType("decision.other", "JL-9(5)", "其他审查决定", "other review or decision"),
    EventType("execution.served", "JL-10(1)", "送达", "service"),
    EventType("execution.performed", "JL-10(2)", "当事人履行", "performance by the party"),
    EventType("execution.compulsory", "JL-10(3)", "强制执行", "compulsory execution"),
    EventType("execution.property_disposed", "JL-10(4)", "罚没财物处置", "disposal of confiscated property"),
    EventType("execution.other", "JL-10(5)", "其他送达执行", "other service or execution"),
)
# A status change is recorded as an event too (JL-2: the record shows the whole process); only
# change_status() writes it, never POST /events nor a recorder.
STATUS_EVENT = EventType("case.status_changed", "JL-2", "案件状态变更", "case status changed")
EVENT_TYPES: dict[str, EventType] = {t.code: t for t in (*_CATALOGUE, STATUS_EVENT)}
# Kinds of act done on site, where showing the certificate is required (GS-10(1), JL-8(1)).
_ON_SITE_KINDS = ("penalty", "coercion", "inspection", "levy")
# Decisions adverse to the party need a prior notice of rights (JL-8(9)).
_RIGHTS_NOTICE_KINDS = ("penalty", "coercion", "levy")


def event_type_dicts() -> list[dict[str, str]]:
    """The catalogue as JSON."""
    return [
        {"code": t.code, "stage": t.stage, "article": t.article, "zh": t.zh, "en": t.en} for t in _CATALOGUE
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
    event = _new_event(
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


def _new_event(
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
    row = _new_event(
        session, agency_id=agency_id, case=case, event=event, recorded_by=caller.user_id, source=source
    )
    write_audit(
        session, actor=caller.user_id, action="case.event", target_type="case_event", target_id=row.id
    )
    return row


# -- events reported by recorders (signed, finding 2 of the zero-trust review) -------------------

CASE_EVENT_REJECTION_CODES: tuple[str, ...] = (
    "bad_case_event",
    "unknown_device",
    "event_mismatch",
    "bad_signature",
    "device_inactive",
    "event_conflict",
    "device_not_assigned",
    "officer_not_assignee",
    "case_not_found",
    "invalid_case_event",
)


@dataclass(frozen=True)
class DeviceEventOutcome:
    """What became of one signed case event: the ack for the device and, if refused, why."""

    ack: EventAck
    event: CaseEvent | None = None
    refusal: tuple[str, str] | None = None  # (code, message): one ingest_rejections row


def _signed_record(signed: SignedCaseEvent) -> dict[str, Any]:
    """The device's signed statement as kept with the event, so anyone can verify it again later."""
    return {
        "event": signed.event_text,
        "signature": base64.b64encode(signed.signature).decode("ascii"),
        "v": CASE_EVENT_VERSION,
    }


def record_device_event(session: Session, device_id: str, signed: SignedCaseEvent) -> DeviceEventOutcome:
    """Check and append a case event a recorder signed (JL-2, JL-8); flushed, the caller commits.

    Stored only when the registered key of ``device_id`` signed it, the device is in service, the
    officer it names is the one the device is checked out to, and the case belongs to that officer's
    agency. Anything else is refused with a precise code and nothing is written to ``case_events``
    (which is append-only, so an event let in could never be taken out again).
    """
    report = signed.report
    event_id = report.event_id

    def refuse(code: str, message: str) -> DeviceEventOutcome:
        ack = EventAck(
            device_id=device_id,
            event_id=event_id,
            state=EventAckState.REJECTED,
            code=code,
            message=message[:500],
        )
        return DeviceEventOutcome(ack, refusal=(code, message))

    device = session.get(Device, device_id)
    if device is None:
        return refuse("unknown_device", f"device {device_id} is not registered")
    if report.device_id != device_id:
        return refuse(
            "event_mismatch", f"the case event names device {report.device_id}, sent by {device_id}"
        )
    if not signed.verify(bytes(device.public_key)):
        return refuse("bad_signature", f"case event {event_id} is not signed by device {device_id}")
    if device.status not in DeviceStatus.ACCEPTING:
        return refuse("device_inactive", f"device {device_id} is {device.status}")
    existing = session.scalar(
        select(CaseEvent).where(CaseEvent.device_id == device_id, CaseEvent.device_event_id == event_id)
    )
    if existing is not None:
        stored = (existing.data or {}).get("device_signed") or {}
        if stored.get("event") == signed.event_text:
            ack = EventAck(device_id=device_id, event_id=event_id, state=EventAckState.DUPLICATE)
            return DeviceEventOutcome(ack, event=existing)
        return refuse("event_conflict", f"case event {event_id} was already stored with different content")
    assignment = current_assignment(session, device_id)
    if assignment is None:
        return refuse("device_not_assigned", f"device {device_id} is not checked out to anyone")
    officer = session.scalar(select(Officer).where(Officer.user_id == assignment.user_id))
    if officer is None or officer.certificate_number != report.officer:
        return refuse(
            "officer_not_assignee",
            f"officer {report.officer} is not the officer device {device_id} is checked out to",
        )
    case = None
    if report.case_id is not None:
        case = session.get(Case, report.case_id)
    elif report.case_number:
        case = session.scalar(
            select(Case).where(Case.agency_id == officer.agency_id, Case.number == report.case_number)
        )
    if (report.case_id is not None or report.case_number) and (
        case is None or case.agency_id != officer.agency_id
    ):
        # Another agency's case looks missing, as it does in the API.
        return refuse("case_not_found", "case not found in the officer's agency")
    try:
        # Two workers racing on one redelivered event: the unique (device_id, device_event_id) refuses
        # the second insert; its transaction fails and the message is handled again as a duplicate.
        event = _new_event(
            session,
            agency_id=officer.agency_id,
            case=case,
            event=CaseEventInput(
                event_type=report.event_type,
                occurred_at=report.at.astimezone(UTC),
                place=report.place,
                text=report.text,
                officer_ids=(officer.id,),
                data={"device_signed": _signed_record(signed)},
            ),
            recorded_by=f"device:{device_id}",
            source="device",
            device_id=device_id,
            device_event_id=event_id,
        )
    except Invalid as exc:
        return refuse("invalid_case_event", exc.message_en)
    ack = EventAck(device_id=device_id, event_id=event_id, state=EventAckState.STORED)
    return DeviceEventOutcome(ack, event=event)


def add_attachment(
    session: Session,
    store: ObjectStore,
    caller: Caller,
    case_id: int,
    event_id: int,
    data: bytes,
    *,
    name: str,
    content_type: str,
    kind: str,
    signed_by_party: bool,
) -> CaseAttachment:
    """Store a document, photo or signed page (JL-11) write-once by sha256 and attach it to an event."""
    case = get_case(session, caller, case_id)
    event = session.get(CaseEvent, event_id)
    if event is None or event.case_id != case.id or not caller.may_write(case.agency_id):
        raise NotFound("事件不存在", "event not found")
    if kind not in ATTACHMENT_KINDS:
        raise Invalid(
            f"kind 只能是 {'/'.join(ATTACHMENT_KINDS)}", f"kind must be one of {', '.join(ATTACHMENT_KINDS)}"
        )
    if not data or len(data) > MAX_ATTACHMENT_BYTES:
        raise Invalid("附件不能为空且不超过 1 MiB", "attachment must be non-empty and at most 1 MiB")
    # The declared type must be an evidence type and the bytes must be that type (no HTML, no script).
    content_type = check_attachment(data, content_type)
    name = (name or "attachment").strip()[:200]
    sha256 = hashlib.sha256(data).hexdigest()
    key = f"case-attachments/{sha256[:2]}/{sha256}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob"
        path.write_bytes(data)
        store.put_file(key, path, sha256)
    attachment = CaseAttachment(
        event_id=event.id,
        kind=kind,
        name=name,
        content_type=content_type,
        size=len(data),
        sha256=sha256,
        object_key=key,
        signed_by_party=signed_by_party,
        uploaded_by=caller.user_id,
        uploaded_at=utcnow(),
    )
    session.add(attachment)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="case.attachment",
        target_type="case_attachment",
        target_id=attachment.id,
    )
    return attachment


def served_type(content_type: str) -> str:
    """The type an attachment is served as: its own if on the allow-list, else octet-stream."""
    return content_type if content_type in ATTACHMENT_TYPES else "application/octet-stream"


def get_attachment(session: Session, caller: Caller, case_id: int, attachment_id: int) -> CaseAttachment:
    """An attachment of a case the caller may see."""
    case = get_case(session, caller, case_id)
    attachment = session.get(CaseAttachment, attachment_id)
    event = session.get(CaseEvent, attachment.event_id) if attachment else None
    if attachment is None or event is None or event.case_id != case.id:
        raise NotFound("附件不存在", "attachment not found")
    return attachment


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


def completeness(case: Case, events: list[CaseEvent]) -> list[dict[str, str]]:
    """What the record still lacks for this kind of act (JL-7 – JL-10); corrected events do not count."""
    corrected = {e.corrects_event_id for e in events if e.corrects_event_id}
    live = [e for e in events if e.id not in corrected]

    def first(code: str) -> datetime | None:
        times = [e.occurred_at for e in live if e.event_type == code]
        return min(times) if times else None

    missing: list[dict[str, str]] = []

    def need(code: str, article: str, zh: str, en: str) -> None:
        missing.append({"requirement": code, "article": article, "message": zh, "message_en": en})

    if case.origin == "ex_officio" and not first("initiation.ex_officio_source"):
        need(
            "initiation.ex_officio_source",
            "JL-7",
            "缺少案件来源及立案理由记录",
            "no record of the case's source and reason",
        )
    if case.origin == "on_application":
        if not first("initiation.application_received"):
            need(
                "initiation.application_received", "JL-7", "缺少申请接收记录", "no record of the application"
            )
        if not first("initiation.application_accepted") and not first("initiation.application_rejected"):
            need(
                "initiation.application_accepted",
                "JL-7",
                "缺少受理（或不予受理）记录",
                "no record of acceptance",
            )
    if case.act_kind in _ON_SITE_KINDS and not first("investigation.credential_shown"):
        need(
            "investigation.credential_shown",
            "JL-8(1)",
            "缺少出示执法证件记录",
            "no record of showing credentials",
        )
    if case.act_kind == "inspection" and not first("investigation.on_site_inspection"):
        need(
            "investigation.on_site_inspection", "JL-8(3)", "缺少现场检查记录", "no on-site inspection record"
        )
    decided = first("decision.decided")
    if case.act_kind == "inspection":
        return missing
    if decided is None:
        need("decision.decided", "JL-9", "尚未作出决定", "no decision yet")
        return missing
    if case.act_kind in _RIGHTS_NOTICE_KINDS:
        notice = first("investigation.rights_notified")
        if notice is None or notice > decided:
            need(
                "investigation.rights_notified",
                "JL-8(9)",
                "决定作出前未告知当事人陈述、申辩等权利",
                "decision without a prior notice of the party's rights",
            )
    if case.major:
        for code, article, zh, en in (
            (
                "decision.legal_review",
                "JL-9(3)",
                "重大执法决定缺少法制审核",
                "major decision without legal review",
            ),
            (
                "decision.collective_discussion",
                "JL-9(3)",
                "重大执法决定缺少集体讨论",
                "major decision without collective discussion",
            ),
            (
                "decision.head_approval",
                "JL-9(4)",
                "重大执法决定缺少机关负责人审批",
                "major decision without the head's approval",
            ),
        ):
            at = first(code)
            if at is None or at > decided:
                need(code, article, zh, en)
    served = first("execution.served")
    if served is None or served < decided:
        need("execution.served", "JL-10(1)", "缺少决定书送达记录", "no record of serving the decision")
    return missing


def case_record(session: Session, caller: Caller, case_id: int) -> dict[str, Any]:
    """The whole-process record: events in stage then time order, attachments, recordings, gaps."""
    case = get_case(session, caller, case_id)
    events = list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
    stage_rank = {s: i for i, s in enumerate(STAGES)}
    events.sort(key=lambda e: (stage_rank.get(e.event_type.split(".")[0], 99), e.occurred_at, e.id))
    officer_ids = {i for e in events for i in e.officer_ids or []} | set(case_officer_ids(session, case.id))
    certificates = {
        o.id: o.certificate_number or ""
        for o in session.scalars(select(Officer).where(Officer.id.in_(sorted(officer_ids))))
    }
    attachments: dict[int, list[dict[str, Any]]] = {}
    if events:
        for a in session.scalars(
            select(CaseAttachment)
            .where(CaseAttachment.event_id.in_([e.id for e in events]))
            .order_by(CaseAttachment.id)
        ):
            attachments.setdefault(a.event_id, []).append(attachment_to_dict(a, case.id))
    # JL-2: one query for the recordings covering every event, not one per event.
    covering = CoveringRecordings(session, events, certificates)
    corrected_by = {e.corrects_event_id: e.id for e in events if e.corrects_event_id}
    stages: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}
    for event in events:
        item = event_to_dict(event)
        item["attachments"] = attachments.get(event.id, [])
        item["covering_recording_ids"] = covering.at(event)
        item["corrected_by_event_id"] = corrected_by.get(event.id)
        stages.setdefault(item["stage"] or "other", []).append(item)
    missing = completeness(case, events)
    return {
        "case": case_to_dict(case, case_officer_ids(session, case.id)),
        "stages": [{"stage": s, "events": items} for s, items in stages.items()],
        "completeness": {"complete": not missing, "missing": missing},
    }
