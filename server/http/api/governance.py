"""Evidence governance over JSON (JL-19, JL-20): requests, approvals, grants, holds, retention, disposal.

Parsing and answer shapes only; the rules are ``server/domain/governance/{approvals,retention,access}.py``.
Every step is audited by the domain and every stored fact is a ledger leaf (docs/governance.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.base import utcnow
from server.domain.evidence import queries as recording_queries
from server.domain.governance import access, approvals, disposal, lock_job, retention
from server.domain.governance.approvals import RequestInput
from server.http.context import audit_request, caller, get_store, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.db import session_scope

__all__ = ["bp", "request_input"]

bp = Blueprint("governance", __name__)

_DECISION = {
    "type": ["object", "null"],
    "properties": {
        "outcome": {"enum": ["approve", "reject"]},
        "reason": {"type": "string"},
        "decided_by": {"type": "string"},
        "decided_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "kind": {"enum": list(approvals.KINDS)},
        "agency_id": {"type": "integer"},
        "requested_by": {"type": "string"},
        "requester_role": {"type": "string"},
        "purpose": {"type": "string"},
        "recipient": {"type": "string"},
        "recipient_body": {"enum": [*approvals.RECIPIENT_BODIES, None]},
        "actions": {"type": "array", "items": {"enum": list(approvals.ACTIONS)}},
        "recording_ids": {"type": "array", "items": {"type": "integer"}},
        "case_id": {"type": ["integer", "null"]},
        "duration_days": {"type": ["integer", "null"]},
        "requested_at": {"type": "string", "format": "date-time"},
        "status": {"enum": ["pending", "approved", "rejected", "expired", "revoked", "done"]},
        "decision": _DECISION,
        "revocation": {
            "type": ["object", "null"],
            "properties": {
                "reason": {"type": "string"},
                "revoked_by": {"type": "string"},
                "revoked_at": {"type": "string", "format": "date-time"},
            },
        },
    },
}
_NEW_REQUEST = {
    "type": "object",
    "required": ["kind", "purpose"],
    "properties": {
        "kind": {"enum": list(approvals.KINDS)},
        "purpose": {"type": "string", "description": "用途；销毁申请为理由 / purpose; for a disposal, why"},
        "recipient": {"type": "string", "description": "接收方 / who receives it (provision, retrieval)"},
        "recipient_body": {"enum": list(approvals.RECIPIENT_BODIES)},
        "actions": {"type": "array", "items": {"enum": list(approvals.ACTIONS)}},
        "recording_ids": {"type": "array", "items": {"type": "integer"}},
        "case_id": {"type": "integer", "description": "该案关联的全部录像 / every recording linked to it"},
        "duration_days": {"type": "integer", "minimum": 1, "maximum": approvals.MAX_DURATION_DAYS},
    },
}
_HOLD = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "recording_id": {"type": ["integer", "null"]},
        "case_id": {"type": ["integer", "null"]},
        "reason": {"type": "string"},
        "placed_by": {"type": "string"},
        "placed_at": {"type": "string", "format": "date-time"},
        "active": {"type": "boolean"},
    },
}
_RETENTION = {
    "type": "object",
    "properties": {
        "recording_id": {"type": "integer"},
        "categories": {"type": "array", "items": {"enum": list(retention.CATEGORIES)}},
        "retained_until": {"type": ["string", "null"], "format": "date-time"},
        "permanent": {"type": "boolean"},
        "open_cases": {"type": "array", "items": {"type": "integer"}},
        "evidence_cases": {"type": "array", "items": {"type": "integer"}},
        "legal_holds": {"type": "array", "items": {"type": "integer"}},
        "disposed": {"type": "boolean"},
        "disposable": {"type": "boolean"},
        "access_class": {"enum": list(access.ACCESS_CLASSES)},
        "store_lock_extended": {"type": "boolean"},
    },
}


def _store() -> retention.RetentionStore:
    return retention.as_retention_store(get_store())


def _text_field(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_request", f"{name} 必须是字符串", f"{name} must be a string")
    return value


def _optional_int(fields: Mapping[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_request", f"{name} 必须是整数", f"{name} must be an integer")
    return value


def _int_list(fields: Mapping[str, Any], name: str) -> list[int]:
    value = fields.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ApiError(400, "invalid_request", f"{name} 必须是整数数组", f"{name} must be a list of integers")
    return value


def _str_list(fields: Mapping[str, Any], name: str) -> list[str]:
    value = fields.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(
            400, "invalid_request", f"{name} 必须是字符串数组", f"{name} must be a list of strings"
        )
    return value


def request_input(fields: Mapping[str, Any]) -> RequestInput:
    """A decoded request body (JSON, or the workspace's form as the same fields) as the domain's input."""
    return RequestInput.checked(
        kind=_text_field(fields, "kind"),
        purpose=_text_field(fields, "purpose"),
        recipient=_text_field(fields, "recipient"),
        recipient_body=_text_field(fields, "recipient_body"),
        actions=_str_list(fields, "actions"),
        recording_ids=_int_list(fields, "recording_ids"),
        case_id=_optional_int(fields, "case_id"),
        duration_days=_optional_int(fields, "duration_days"),
    )


@bp.get("/requests")
@api_view(
    "governance.list_requests",
    "调阅、对外提供、调取与销毁申请列表 / access, provision, retrieval and disposal requests (JL-19, JL-20)",
    query={"pending": {"type": "boolean", "description": "只看待审批 / pending only"}},
    response={"type": "object", "properties": {"items": {"type": "array", "items": REQUEST_SCHEMA}}},
)
def list_requests() -> ResponseReturnValue:
    """Requests the caller may see: their own; their agency's for heads and reviewers; all for supervisors."""
    pending = request.args.get("pending", "").lower() in ("1", "true", "yes")
    now = utcnow()
    with session_scope() as session:
        rows = approvals.list_requests(session, caller(), pending_only=pending)
        revoked = approvals.revocations_of(session, [r.id for r, _d in rows])
        return jsonify(items=[approvals.request_to_dict(r, d, now, revoked.get(r.id)) for r, d in rows])


@bp.post("/requests")
@api_view(
    "governance.create_request",
    "提出申请 / file a request: access beyond duty, external provision, retrieval by a body, disposal",
    request=_NEW_REQUEST,
    response=REQUEST_SCHEMA,
    responses={
        201: "已提交，待机关负责人审批 / filed, awaiting the head's decision",
        403: "不是证据所属机关 / not the evidence's agency (governance_forbidden)",
        409: "保存期未满、案件未结或保全中 / retention running, open case or hold (disposal_refused)",
    },
)
def create_request() -> ResponseReturnValue:
    """File a request; a disposal inside its retention is refused at once (JL-19)."""
    new = request_input(json_body())
    with session_scope() as session:
        row = approvals.create_request(session, caller(), new)
        return jsonify(approvals.request_to_dict(row, None, utcnow())), 201


@bp.get("/requests/<int:request_id>")
@api_view("governance.get_request", "申请详情 / one request with its decision", response=REQUEST_SCHEMA)
def get_request(request_id: int) -> ResponseReturnValue:
    """One request the caller may see."""
    with session_scope() as session:
        row = approvals.get_request(session, caller(), request_id)
        return jsonify(
            approvals.request_to_dict(
                row,
                approvals.decision_of(session, row.id),
                utcnow(),
                approvals.revocation_of(session, row.id),
            )
        )


@bp.post("/requests/<int:request_id>/decision")
@api_view(
    "governance.decide_request",
    "审批（机关负责人，不得审批本人申请）/ approve or reject (a head of the agency, never the requester)",
    request={
        "type": "object",
        "required": ["outcome"],
        "properties": {"outcome": {"enum": ["approve", "reject"]}, "reason": {"type": "string"}},
    },
    response=REQUEST_SCHEMA,
    responses={
        403: "本人申请或非本机关负责人 / own request (self_approval) or not the head (not_the_approver)",
        409: "已审批，或销毁条件不再满足 / already_decided, or disposal_refused",
    },
)
def decide_request(request_id: int) -> ResponseReturnValue:
    """Decide a request; an approved disposal is carried out at once (tombstone, then the object deleted)."""
    body = json_body()
    outcome, reason = _text_field(body, "outcome"), _text_field(body, "reason")
    now = utcnow()
    with session_scope() as session:
        decision = approvals.decide(session, _store(), caller(), request_id, outcome, reason, now=now)
        row = approvals.get_request(session, caller(), decision.request_id)
        return jsonify(approvals.request_to_dict(row, decision, now))


@bp.post("/requests/<int:request_id>/revoke")
@api_view(
    "governance.revoke_grant",
    "提前撤销授权（批准人或本机关负责人，申请人不得撤销）/ revoke a grant before it expires "
    "(its approver or a head of the agency, never the requester)",
    request={"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}},
    response=REQUEST_SCHEMA,
    responses={
        403: "申请人本人或非本机关负责人 / the requester (self_revocation) or not a head (not_the_approver)",
        409: "不是有效的授权 / not a grant in force (not_revocable)",
    },
)
def revoke_grant(request_id: int) -> ResponseReturnValue:
    """Revoke an approved grant at once (JL-20); audited and a ledger leaf."""
    reason = _text_field(json_body(), "reason")
    now = utcnow()
    with session_scope() as session:
        revocation = approvals.revoke(session, caller(), request_id, reason, now=now)
        row = approvals.get_request(session, caller(), request_id)
        return jsonify(
            approvals.request_to_dict(row, approvals.decision_of(session, row.id), now, revocation)
        )


@bp.get("/grants")
@api_view(
    "governance.list_grants",
    "本人有效的授权 / the caller's grants in force",
    response={"type": "object", "properties": {"items": {"type": "array", "items": REQUEST_SCHEMA}}},
)
def list_grants() -> ResponseReturnValue:
    """The caller's approved requests that have not expired."""
    now = utcnow()
    with session_scope() as session:
        rows = approvals.active_grants(session, caller(), now)
        return jsonify(items=[approvals.request_to_dict(r, d, now) for r, d in rows])


@bp.get("/recordings/<int:recording_id>/retention")
@api_view(
    "governance.get_retention", "录像的保存期、保全与密级 / retention, holds and class", response=_RETENTION
)
def get_retention(recording_id: int) -> ResponseReturnValue:
    """Where one recording stands under JL-19, and its access class (JL-20); audited."""
    now = utcnow()
    with session_scope() as session:
        rec = recording_queries.get_recording(session, recording_id, scope=caller())
        state = retention.retention_of(session, rec)
        audit_request(session, "retention.view", "recording", recording_id)
        return jsonify({**state.to_dict(now), "access_class": access.access_class_of(session, rec.id)})


@bp.post("/recordings/<int:recording_id>/categories")
@api_view(
    "governance.assign_category",
    "设定保存类别（多个类别取最长）/ give a retention category (several: the longest applies)",
    request={
        "type": "object",
        "required": ["category", "reason"],
        "properties": {"category": {"enum": list(retention.CATEGORIES)}, "reason": {"type": "string"}},
    },
    response=_RETENTION,
)
def assign_category(recording_id: int) -> ResponseReturnValue:
    """Assign a category; on S3 with Object Lock the object's lock is extended to match."""
    body = json_body()
    category, reason = _text_field(body, "category"), _text_field(body, "reason")
    now = utcnow()
    with session_scope() as session:
        _row, extended = retention.assign_category(
            session,
            caller(),
            recording_id,
            category,
            reason,
            store=_store(),
        )
        rec = recording_queries.get_recording(session, recording_id)
        state = retention.retention_of(session, rec)
        return jsonify(
            {
                **state.to_dict(now),
                "access_class": access.access_class_of(session, rec.id),
                "store_lock_extended": extended,
            }
        )


_PERIOD = {
    "type": "object",
    "properties": {
        "category": {"enum": list(retention.CATEGORIES)},
        "name": {"type": "string"},
        "name_en": {"type": "string"},
        "days": {"type": ["integer", "null"], "description": "null: 永久 / permanent"},
        "default_days": {"type": ["integer", "null"]},
        "permanent": {"type": "boolean"},
        "minimum_days": {"type": ["integer", "null"]},
        "set_by": {"type": ["string", "null"]},
        "set_at": {"type": ["string", "null"], "format": "date-time"},
        "reason": {"type": ["string", "null"]},
    },
}
_LOCK_JOB = {
    "type": "object",
    "description": "延长存储锁定的后台任务 / the background job extending the store locks (JL-19)",
    "properties": {
        "id": {"type": "integer"},
        "period_id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "category": {"type": "string"},
        "state": {"enum": ["pending", "running", "done"]},
        "total": {"type": "integer"},
        "checked": {"type": "integer"},
        "extended": {"type": "integer"},
        "attempts": {"type": "integer"},
        "last_error": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_PERIODS = {
    "type": "object",
    "properties": {
        "agency_id": {"type": "integer"},
        "items": {"type": "array", "items": _PERIOD},
        "lock_jobs": {"type": "array", "items": _LOCK_JOB, "description": "最近的任务 / latest jobs"},
        "lock_job": {
            "oneOf": [_LOCK_JOB, {"type": "null"}],
            "description": "本次延长排入的任务（否则为 null）/ the job this lengthening queued (else null)",
        },
    },
}


@bp.get("/retention-periods")
@api_view(
    "governance.list_retention_periods",
    "本机关的保存期限（按类别）/ the agency's retention period per category (JL-19)",
    query={
        "agency_id": {"type": "integer", "description": "监督、审计人员查看某机关 / for cross-agency readers"}
    },
    response=_PERIODS,
)
def list_retention_periods() -> ResponseReturnValue:
    """The caller's agency's periods; supervisors and auditors name the agency."""
    who = caller()
    agency = who.agency_id
    if who.reads_all and request.args.get("agency_id"):
        try:
            agency = int(request.args["agency_id"])
        except ValueError:
            raise ApiError(
                400, "invalid_request", "agency_id 必须是整数", "agency_id must be an integer"
            ) from None
    if agency is None:
        raise ApiError(400, "invalid_request", "必须指定 agency_id", "agency_id is required")
    with session_scope() as session:
        return jsonify(
            agency_id=agency,
            items=retention.periods_of(session, agency),
            lock_jobs=lock_job.jobs_of(session, agency),
        )


@bp.post("/retention-periods")
@api_view(
    "governance.set_retention_period",
    "设定本机关某类别的保存期限（不得少于六个月；永久类别不可改）/ set the agency's period for a category "
    "(at least six months; permanent categories stay permanent)",
    request={
        "type": "object",
        "required": ["category", "days", "reason"],
        "properties": {
            "category": {"enum": list(retention.CATEGORIES)},
            # The floor is the domain's rule (period_below_minimum, with the legal reason), not the schema's.
            "days": {"type": "integer", "description": f"至少 / at least {retention.MINIMUM_DAYS}"},
            "reason": {"type": "string"},
        },
    },
    response=_PERIODS,
    responses={
        400: "低于法定最短期限或永久类别 / below the legal minimum or permanent (period_below_minimum)"
    },
)
def set_retention_period() -> ResponseReturnValue:
    """Set a period; a longer one queues the job that extends the store locks of the affected recordings."""
    body = json_body()
    category, reason = _text_field(body, "category"), _text_field(body, "reason")
    days = _optional_int(body, "days")
    if days is None:
        raise ApiError(400, "invalid_request", "缺少字段：days", "missing field: days")
    with session_scope() as session:
        row, job = retention.set_period(session, caller(), category, days, reason)
        # The locks are extended by the workers' job, not here (an agency may hold millions of recordings);
        # the answer carries the job so the caller can follow it in ``lock_jobs``.
        return jsonify(
            agency_id=row.agency_id,
            items=retention.periods_of(session, row.agency_id),
            lock_job=None if job is None else lock_job.job_view(job),
            lock_jobs=lock_job.jobs_of(session, row.agency_id),
        )


@bp.post("/recordings/<int:recording_id>/access-class")
@api_view(
    "governance.set_access_class",
    "设定密级：普通、受限、机密 / set the access class: normal, restricted, confidential (JL-20)",
    request={
        "type": "object",
        "required": ["access_class", "reason"],
        "properties": {"access_class": {"enum": list(access.ACCESS_CLASSES)}, "reason": {"type": "string"}},
    },
    response={"type": "object"},
)
def set_access_class(recording_id: int) -> ResponseReturnValue:
    """Set a recording's access class (the head of its agency)."""
    body = json_body()
    value, reason = _text_field(body, "access_class"), _text_field(body, "reason")
    with session_scope() as session:
        row = access.set_access_class(session, caller(), recording_id, value, reason)
        return jsonify(recording_id=row.recording_id, access_class=row.access_class, set_by=row.set_by)


@bp.get("/holds")
@api_view(
    "governance.list_holds",
    "诉讼保全列表 / legal holds",
    response={"type": "object", "properties": {"items": {"type": "array", "items": _HOLD}}},
)
def list_holds() -> ResponseReturnValue:
    """Holds of the caller's agency (all agencies for supervisors and auditors)."""
    with session_scope() as session:
        holds = retention.list_holds(session, caller())
        return jsonify(items=[retention.hold_to_dict(h, r) for h, r in holds])


@bp.post("/holds")
@api_view(
    "governance.place_hold",
    "设置诉讼保全（录像或案件）/ place a legal hold on a recording or a case",
    request={
        "type": "object",
        "required": ["reason"],
        "properties": {
            "recording_id": {"type": "integer"},
            "case_id": {"type": "integer"},
            "reason": {"type": "string"},
        },
    },
    response=_HOLD,
    responses={201: "已保全 / placed"},
)
def place_hold() -> ResponseReturnValue:
    """Place a hold; nothing it covers expires until it is lifted (JL-19)."""
    body = json_body()
    recording_id, case_id = _optional_int(body, "recording_id"), _optional_int(body, "case_id")
    reason = _text_field(body, "reason")
    with session_scope() as session:
        hold = retention.place_hold(
            session,
            caller(),
            recording_id=recording_id,
            case_id=case_id,
            reason=reason,
            store=_store(),
        )
        return jsonify(retention.hold_to_dict(hold, None)), 201


@bp.post("/holds/<int:hold_id>/release")
@api_view(
    "governance.release_hold",
    "解除诉讼保全 / lift a legal hold",
    request={"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}},
    response=_HOLD,
)
def release_hold(hold_id: int) -> ResponseReturnValue:
    """Lift a hold (once)."""
    reason = _text_field(json_body(), "reason")
    with session_scope() as session:
        release = retention.release_hold(session, caller(), hold_id, reason)
        holds = dict(retention.list_holds(session, caller()))
        hold = next(h for h in holds if h.id == release.hold_id)
        return jsonify(retention.hold_to_dict(hold, release))


@bp.get("/disposals")
@api_view(
    "governance.list_disposals",
    "销毁记录（墓碑）/ disposal tombstones: what was destroyed, why, by whom",
    response={"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}}}},
)
def list_disposals() -> ResponseReturnValue:
    """Tombstones of the caller's agency (all for supervisors and auditors)."""
    with session_scope() as session:
        stones = disposal.list_tombstones(session, caller())
        return jsonify(items=[disposal.tombstone_to_dict(s) for s in stones])
