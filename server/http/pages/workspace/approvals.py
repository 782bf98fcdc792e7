"""The approval queue of the workspace (JL-19, JL-20): requests to file, and for agency heads to decide.

A page over ``server/domain/governance/approvals.py`` with the JSON API's roles: the queue takes those of
``governance.list_requests``, deciding those of ``governance.decide_request`` (agency heads), filing those
of ``governance.create_request``. The service's rules apply unchanged: the requester never decides their
own request, only a head of the evidence's agency decides, an approved disposal is carried out at once
and leaves a tombstone in the ledger, an approved access is a grant that expires by itself.
"""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.base import utcnow
from server.domain.errors import ServiceError
from server.domain.governance import approvals as approval_service
from server.domain.governance import retention as retention_service
from server.http.api.governance import request_input
from server.http.context import caller, get_store
from server.http.pages.workspace.core import back, bp, lang, message_of, render, workspace_view
from server.infra.db import session_scope

__all__ = ["TEXTS", "approvals", "decide", "file_request", "revoke"]

TEXTS: dict[str, dict[str, str]] = {
    "zh": {
        "pending": "待审批",
        "history": "全部申请",
        "none_pending": "没有待审批的申请。",
        "none": "还没有申请。",
        "kind": "类型",
        "requester": "申请人",
        "purpose": "用途／理由",
        "recipient": "接收方",
        "recordings": "录像",
        "case": "案件",
        "duration": "期限（天）",
        "requested_at": "申请时间",
        "status": "状态",
        "expires": "授权到期",
        "reason": "审批意见",
        "approve": "批准",
        "reject": "驳回",
        "own_request": "本人申请，须由其他负责人审批",
        "file": "提出申请",
        "recording_ids": "录像编号（逗号分隔）",
        "case_id": "案件编号（该案关联的全部录像）",
        "recipient_body": "调取机关类别",
        "actions": "申请事项",
        "submit": "提交申请",
        "filed": "申请已提交，待机关负责人审批",
        "decided": "已审批",
        "bad_number": "编号必须是整数",
        "kind.access": "超出职责的查看、复制、导出",
        "kind.external_provision": "对外提供",
        "kind.retrieval": "上级、司法、监察、审计机关调取",
        "kind.disposal": "保存期满销毁",
        "status.pending": "待审批",
        "status.approved": "已批准（有效）",
        "status.rejected": "已驳回",
        "status.expired": "已批准（已过期）",
        "status.done": "已批准并执行",
        "status.revoked": "已批准（已撤销）",
        "revoke": "撤销授权",
        "revoke_reason": "撤销理由",
        "revoked": "授权已撤销",
        "action.view": "查看",
        "action.copy": "复制",
        "action.export": "导出",
        "action.provide": "对外提供",
        "body.superior": "上级行政执法机关",
        "body.judicial": "司法机关",
        "body.supervisory": "监察机关",
        "body.audit": "审计机关",
        "note": "依据《安徽省行政执法全过程记录办法》第十九条、第二十条：对外提供、超出职责使用"
        "须经机关负责人批准；保存期内不得销毁。申请人不能审批本人的申请。",
    },
    "en": {
        "pending": "Awaiting decision",
        "history": "All requests",
        "none_pending": "Nothing awaits a decision.",
        "none": "No requests yet.",
        "kind": "Kind",
        "requester": "Requester",
        "purpose": "Purpose / reason",
        "recipient": "Recipient",
        "recordings": "Recordings",
        "case": "Case",
        "duration": "Days",
        "requested_at": "Requested",
        "status": "Status",
        "expires": "Grant expires",
        "reason": "Decision note",
        "approve": "Approve",
        "reject": "Reject",
        "own_request": "Your own request: another head decides it",
        "file": "File a request",
        "recording_ids": "Recording ids (comma-separated)",
        "case_id": "Case id (all its linked recordings)",
        "recipient_body": "Retrieving body",
        "actions": "Asked for",
        "submit": "Submit",
        "filed": "Request filed; the agency head decides it",
        "decided": "Decided",
        "bad_number": "ids must be integers",
        "kind.access": "View, copy or export beyond duty",
        "kind.external_provision": "Provide outside the agency",
        "kind.retrieval": "Retrieval by a superior, judicial, supervisory or audit body",
        "kind.disposal": "Disposal after retention",
        "status.pending": "Pending",
        "status.approved": "Approved (in force)",
        "status.rejected": "Rejected",
        "status.expired": "Approved (expired)",
        "status.done": "Approved and carried out",
        "status.revoked": "Approved (revoked)",
        "revoke": "Revoke grant",
        "revoke_reason": "Why revoke",
        "revoked": "Grant revoked",
        "action.view": "view",
        "action.copy": "copy",
        "action.export": "export",
        "action.provide": "provide outside",
        "body.superior": "superior agency",
        "body.judicial": "judicial body",
        "body.supervisory": "supervisory commission",
        "body.audit": "audit office",
        "note": "Anhui Recording Measures arts. 19 and 20: providing records outside the agency or using "
        "them beyond one's duty needs the head's approval; nothing is destroyed within its retention. "
        "Nobody decides their own request.",
    },
}


def _texts() -> dict[str, str]:
    return TEXTS["en" if lang() == "en" else "zh"]


@bp.get("/approvals")
@workspace_view("governance.list_requests")
def approvals() -> ResponseReturnValue:
    """The queue: requests awaiting a decision (a head's agency's, or one's own), then every request."""
    who = caller()
    now = utcnow()
    with session_scope() as session:
        rows = approval_service.list_requests(session, who)
        revoked = approval_service.revocations_of(session, [r.id for r, _d in rows])
        items = [approval_service.request_to_dict(r, d, now, revoked.get(r.id)) for r, d in rows]
    pending = [i for i in items if i["status"] == "pending"]
    return render(
        "approvals.html",
        q=_texts(),
        pending=pending,
        items=items,
        me=who.user_id,
        can_decide=who.role in approval_service.APPROVER_ROLES,
        kinds=approval_service.KINDS,
        actions=approval_service.ACTIONS,
        bodies=approval_service.RECIPIENT_BODIES,
    )


def _ids(text: str) -> list[int]:
    parts = [p.strip() for p in text.replace("，", ",").split(",") if p.strip()]
    if not all(p.isdigit() and len(p) < 12 for p in parts):
        raise ValueError(text)
    return [int(p) for p in parts]


@bp.post("/approvals/requests")
@workspace_view("governance.create_request")
def file_request() -> ResponseReturnValue:
    """File a request from the form, with the API's rules and error codes."""
    fallback = url_for("workspace.approvals")
    form = request.form
    try:
        recording_ids = _ids(form.get("recording_ids", ""))
        case_text = form.get("case_id", "").strip()
        case_id = _ids(case_text)[0] if case_text else None
    except (ValueError, IndexError):
        return back(fallback, "error", _texts()["bad_number"])
    fields: dict[str, Any] = {
        "kind": form.get("kind", ""),
        "purpose": form.get("purpose", ""),
        "recipient": form.get("recipient", ""),
        "recipient_body": form.get("recipient_body", ""),
        "actions": form.getlist("actions"),
        "recording_ids": recording_ids,
        "case_id": case_id,
    }
    duration = form.get("duration_days", "").strip()
    if duration:
        if not duration.isdigit() or len(duration) > 6:
            return back(fallback, "error", _texts()["bad_number"])
        fields["duration_days"] = int(duration)
    try:
        new = request_input(fields)
        with session_scope() as session:
            approval_service.create_request(session, caller(), new)
    except ServiceError as exc:
        return back(fallback, "error", message_of(exc))
    return back(fallback, "ok", _texts()["filed"])


@bp.post("/approvals/<int:request_id>/decision")
@workspace_view("governance.decide_request")
def decide(request_id: int) -> ResponseReturnValue:
    """Approve or reject as the agency head; the requester's own request is refused by the service."""
    fallback = url_for("workspace.approvals")
    try:
        with session_scope() as session:
            approval_service.decide(
                session,
                retention_service.as_retention_store(get_store()),
                caller(),
                request_id,
                request.form.get("outcome", ""),
                request.form.get("reason", ""),
            )
    except ServiceError as exc:
        return back(fallback, "error", message_of(exc))
    return back(fallback, "ok", f"{_texts()['decided']} #{request_id}")


@bp.post("/approvals/<int:request_id>/revoke")
@workspace_view("governance.revoke_grant")
def revoke(request_id: int) -> ResponseReturnValue:
    """Revoke a grant in force before it expires (JL-20); the service refuses the requester themselves."""
    fallback = url_for("workspace.approvals")
    try:
        with session_scope() as session:
            approval_service.revoke(session, caller(), request_id, request.form.get("reason", ""))
    except ServiceError as exc:
        return back(fallback, "error", message_of(exc))
    return back(fallback, "ok", f"{_texts()['revoked']} #{request_id}")
