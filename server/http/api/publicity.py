"""Publication items for staff: collect, review, publish, withdraw, correct, export (GS-7, GS-11 – GS-19).

Thin views over :mod:`server.domain.publicity.service`; who may call what is in ENDPOINT_ROLES, and the
publicity duties of each role (collector, reviewer, supervisor) in ``service.DUTIES``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.publicity import alerts as deadline_alerts
from server.domain.publicity import portal as portal_service
from server.domain.publicity import schedules, service
from server.domain.publicity import views as publicity_views
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.content import redactions_from_mapping
from server.domain.publicity.export import CF_FIELDS, XK_FIELDS, to_csv, to_json
from server.domain.publicity.inputs import WithdrawalOrderInput, plausible_date
from server.domain.publicity.redaction import ExclusionClaim, ExclusionGround
from server.http.context import caller, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.db import session_scope

__all__ = ["ITEM_SCHEMA", "bp"]

bp = Blueprint("publicity", __name__)

ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "case_id": {"type": ["integer", "null"]},
        "act_kind": {"enum": [act.value for act in EnforcementAct]},
        "state": {
            "enum": ["draft", "in_review", "published", "corrected", "withdrawn", "expired", "excluded"]
        },
        "due_on": {"type": "string", "format": "date", "description": "GS-11 / GS-9 期限（工作日）"},
        "deadline_provisional": {"type": "boolean", "description": "该年节假日安排未载入，按周末推算"},
        "calendar_version": {"type": "string"},
        "disclosure_ends": {
            "type": ["string", "null"],
            "format": "date",
            "description": "公示截止期 (GS-13)",
        },
        "content": {"type": "object"},
        "published": {"type": ["object", "null"], "description": "隐去后的公开副本 (GS-14)"},
    },
}
_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": ITEM_SCHEMA}},
}
_REASON_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "maxLength": 2000}},
}
_CONTENT_PROPERTY: dict[str, Any] = {
    "type": "object",
    "description": "决定内容：party_name, party_category, party_uscc, document_number, facts, basis, "
    "conclusion, penalty_kinds, fine_yuan（字符串，元）… / decision content; amounts are decimal strings "
    "in yuan",
}


def _date(value: Any, key: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ApiError(400, "invalid_request", f"{key} 须为 YYYY-MM-DD 日期", f"{key} must be a YYYY-MM-DD date")


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
        raise ApiError(
            400, "invalid_request", "须说明理由（不超过2000字）", "a reason of at most 2000 characters"
        )
    return reason.strip()


def _with_history(session: Any, item: Any) -> dict[str, Any]:
    data = publicity_views.item_to_dict(item)
    data["history"] = [
        {
            "action": h.action,
            "from_state": h.from_state,
            "to_state": h.to_state,
            "actor": h.actor,
            "at": h.at.isoformat(),
            "reason": h.reason,
        }
        for h in publicity_views.history_of(session, item)
    ]
    data["withdrawal_orders"] = [
        publicity_views.order_to_dict(o) for o in publicity_views.withdrawal_orders_of(session, item)
    ]
    return data


@bp.get("/items")
@api_view(
    "publicity.list_items",
    "公示事项列表（可按状态、逾期筛选）/ list publication items (filter by state, overdue) — GS-22",
    query={
        "state": {
            "enum": ["draft", "in_review", "published", "corrected", "withdrawn", "expired", "excluded"]
        },
        "overdue": {"enum": ["true", "false"]},
    },
    response=_LIST_SCHEMA,
)
def list_items() -> ResponseReturnValue:
    """Items of the caller's agency (all agencies for supervisors), newest first."""
    overdue = request.args.get("overdue", "").lower() == "true"
    with session_scope() as session:
        items = publicity_views.list_items(
            session,
            caller(),
            state=request.args.get("state") or None,
            overdue_on=schedules.today_in_china() if overdue else None,
        )
        return jsonify(items=[publicity_views.item_to_dict(item) for item in items])


@bp.get("/deadlines")
@api_view(
    "publicity.deadlines",
    "期限看板：逾期、3个工作日内到期、临时期限 / deadline board: overdue, due within 3 working days, "
    "provisional — GS-22, GS-23",
    response={"type": "object", "properties": {"agencies": {"type": "array", "items": {"type": "object"}}}},
)
def deadlines() -> ResponseReturnValue:
    """Per agency (every agency for supervisors), the unpublished items by deadline."""
    with session_scope() as session:
        return jsonify(agencies=publicity_views.deadline_board(session, caller()))


@bp.get("/alerts")
@api_view(
    "publicity.alerts",
    "期限告警：公示、撤回、归档即将到期或已逾期（本机关；监督机关看全部）/ open deadline alerts: "
    "publication, withdrawal and archive deadlines due soon or overdue (own agency; every agency for "
    "supervisors) — GS-12, GS-23, JL-18",
    response={
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "agency_id": {"type": "integer"},
                        "item_id": {"type": ["integer", "null"]},
                        "case_id": {"type": ["integer", "null"]},
                        "kind": {"enum": list(deadline_alerts.ALERT_KINDS)},
                        "severity": {"enum": ["warning", "critical"]},
                        "message": {"type": "string"},
                        "message_en": {"type": "string"},
                        "detail": {"type": "object"},
                        "raised_at": {"type": "string", "format": "date-time"},
                        "last_seen_at": {"type": "string", "format": "date-time"},
                        "cleared_at": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
            }
        },
    },
)
def alerts() -> ResponseReturnValue:
    """The open deadline alerts the caller may see, critical first (raised by the publicity worker)."""
    with session_scope() as session:
        rows = deadline_alerts.open_deadline_alerts(session, caller())
        return jsonify(items=[deadline_alerts.deadline_alert_to_dict(row) for row in rows])


@bp.post("/items")
@api_view(
    "publicity.collect_item",
    "采集公示事项（草稿，按 GS-11 计算期限）/ collect a publication item (a draft with its GS-11 deadline)",
    request={
        "type": "object",
        "required": ["act_kind", "decided_on"],
        "properties": {
            "act_kind": {"enum": [act.value for act in EnforcementAct]},
            "decided_on": {"type": "string", "format": "date"},
            "agency_id": {"type": "integer"},
            "title": {"type": "string", "maxLength": 300},
            "content": _CONTENT_PROPERTY,
            "replaces_item_id": {"type": "integer", "description": "GS-12 重新作出的决定所替代的已撤回事项"},
        },
    },
    response=ITEM_SCHEMA,
    responses={201: "已采集 / collected"},
)
def collect_item() -> ResponseReturnValue:
    """Open a draft item; its deadline is counted in Chinese working days from the decision date."""
    body = json_body(("act_kind", "decided_on"))
    who = caller()
    try:
        act = EnforcementAct(body["act_kind"])
    except ValueError:
        raise ApiError(400, "invalid_request", "act_kind 无效", "act_kind is not a kind of act") from None
    decided_on = _date(body["decided_on"], "decided_on")
    agency_id = body.get("agency_id", who.agency_id)
    if not isinstance(agency_id, int) or isinstance(agency_id, bool):
        raise ApiError(400, "invalid_request", "须指定 agency_id", "agency_id is required")
    title = body.get("title") or ""
    replaces = body.get("replaces_item_id")
    if not isinstance(title, str) or (replaces is not None and not isinstance(replaces, int)):
        raise ApiError(
            400, "invalid_request", "title 或 replaces_item_id 类型错误", "bad title or replaces_item_id"
        )
    content = service.parse_content(body.get("content") or {})
    with session_scope() as session:
        item = service.collect(
            session,
            who,
            service.CollectInput(
                agency_id=agency_id,
                act=act,
                decided_on=decided_on or schedules.today_in_china(),
                title=title,
                content=content,
                replaces_item_id=replaces,
            ),
        )
        return jsonify(publicity_views.item_to_dict(item)), 201


@bp.get("/items/<int:item_id>")
@api_view("publicity.get_item", "公示事项详情及流转记录 / one item with its history", response=ITEM_SCHEMA)
def get_item(item_id: int) -> ResponseReturnValue:
    """One item and its append-only history."""
    with session_scope() as session:
        item = service.get_item(session, caller(), item_id)
        return jsonify(_with_history(session, item))


@bp.put("/items/<int:item_id>")
@api_view(
    "publicity.update_item",
    "修改草稿内容 / edit a draft's content",
    request={
        "type": "object",
        "required": ["content"],
        "properties": {"content": _CONTENT_PROPERTY, "title": {"type": "string", "maxLength": 300}},
    },
    response=ITEM_SCHEMA,
)
def update_item(item_id: int) -> ResponseReturnValue:
    """Replace a draft's content (a published item is corrected instead)."""
    body = json_body(("content",))
    content = service.parse_content(body["content"])
    title = body.get("title")
    if title is not None and not isinstance(title, str):
        raise ApiError(400, "invalid_request", "title 须为文本", "title must be text")
    with session_scope() as session:
        item = service.update_draft(session, caller(), item_id, content, title=title)
        return jsonify(publicity_views.item_to_dict(item))


@bp.get("/items/<int:item_id>/review")
@api_view(
    "publicity.review_item",
    "审核视图：拟隐去内容高亮及公开副本预览 / review view: proposed redactions highlighted, preview (GS-14)",
    response={"type": "object"},
)
def review_item(item_id: int) -> ResponseReturnValue:
    """Every proposed redaction of each text field, the decisions so far, and the public preview."""
    with session_scope() as session:
        return jsonify(publicity_views.review_view(session, caller(), item_id))


@bp.put("/items/<int:item_id>/redactions")
@api_view(
    "publicity.set_redactions",
    "撤销或增加隐去（须说明理由）/ undo proposed redactions or add some with a reason (GS-14)",
    request={
        "type": "object",
        "description": '{"facts": {"undone": ["mobile:12-23"], '
        '"added": [{"start": 0, "end": 4, "reason": "…"}]}}',
    },
    response=ITEM_SCHEMA,
)
def set_redactions(item_id: int) -> ResponseReturnValue:
    """Record the reviewer's redaction decisions; the source text is never changed."""
    body = json_body()
    with session_scope() as session:
        item = service.set_redactions(session, caller(), item_id, redactions_from_mapping(body))
        return jsonify(publicity_views.item_to_dict(item))


def _transition(item_id: int, action: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with session_scope() as session:
        item = action(session, caller(), item_id, *args, **kwargs)
        return _with_history(session, item)


@bp.post("/items/<int:item_id>/submit")
@api_view(
    "publicity.submit_item",
    "提交审核（校验国家双公示字段）/ submit for review (the national fields are checked) — GS-7",
    response=ITEM_SCHEMA,
)
def submit_item(item_id: int) -> ResponseReturnValue:
    """Draft → in review."""
    return jsonify(_transition(item_id, service.submit))


@bp.post("/items/<int:item_id>/return")
@api_view(
    "publicity.return_item",
    "退回修改 / return to draft with a reason",
    request=_REASON_BODY,
    response=ITEM_SCHEMA,
)
def return_item(item_id: int) -> ResponseReturnValue:
    """In review → draft."""
    reason = _reason(json_body(("reason",)))
    return jsonify(_transition(item_id, service.return_to_draft, reason))


@bp.post("/items/<int:item_id>/publish")
@api_view(
    "publicity.publish_item",
    "审核发布（审核人不得为撰写人）/ approve and publish; the reviewer is not the author — GS-7",
    response=ITEM_SCHEMA,
    responses={409: "涉及未成年人，已整体不予公示 / a minor is involved: excluded whole (GS-15(3))"},
)
def publish_item(item_id: int) -> ResponseReturnValue:
    """In review → published, with its redacted copy and its disclosure window."""
    data = _transition(item_id, service.publish)
    if data["state"] == "excluded":
        # The exclusion is committed; the publication did not happen, which the caller must see.
        raise ApiError(
            409,
            "excluded",
            "案件涉及未成年人，依 GS-15(3) 整体不予公示",
            "the case involves a minor and is excluded from publication (GS-15(3))",
        )
    return jsonify(data)


@bp.post("/items/<int:item_id>/exclude")
@api_view(
    "publicity.exclude_item",
    "不予公示（国家秘密、商业秘密等，须说明理由）/ exclude on a GS-15 ground, with a reason",
    request={
        "type": "object",
        "required": ["ground", "reason"],
        "properties": {
            "ground": {"enum": [g.value for g in ExclusionGround if g is not ExclusionGround.MINOR]},
            "reason": {"type": "string", "maxLength": 2000},
        },
    },
    response=ITEM_SCHEMA,
)
def exclude_item(item_id: int) -> ResponseReturnValue:
    """Draft or in review → excluded; the reason stays visible to supervisors."""
    body = json_body(("ground", "reason"))
    try:
        ground = ExclusionGround(body["ground"])
    except ValueError:
        raise ApiError(400, "invalid_request", "ground 无效", "unknown exclusion ground") from None
    claim = ExclusionClaim(ground=ground, reviewer=caller().user_id, reason=_reason(body))
    return jsonify(_transition(item_id, service.exclude, claim))


# The limits are checked by ``WithdrawalOrderInput`` alone (no enum or maxLength here), so the API and the
# workspace's form refuse a bad field with the same words.
_ORDER_SOURCE: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "body", "document_number", "decided_on"],
    "description": "撤回令出自的复议决定或裁判文书 / the reconsideration decision or judgment the order "
    "comes from",
    "properties": {
        "kind": {
            "type": "string",
            "description": "reconsideration（行政复议决定）或 litigation（人民法院裁判）",
        },
        "body": {"type": "string", "description": "复议机关或人民法院，不超过200字"},
        "document_number": {"type": "string", "description": "复议决定书或裁判文书文号，不超过128字"},
        "decided_on": {"type": "string", "format": "date", "description": "作出之日（不晚于今天）"},
    },
}
_ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "reason": {"type": "string"},
        "revoked_on": {"type": "string", "format": "date"},
        "due_on": {"type": "string", "format": "date", "description": "GS-12 撤回期限（3个工作日）"},
        "deadline_provisional": {"type": "boolean"},
        "source": {
            "type": ["object", "null"],
            "description": "复议决定或裁判文书 / the record it comes from",
        },
        "ordered_by": {"type": "string"},
        "ordered_at": {"type": "string", "format": "date-time"},
    },
}


@bp.post("/items/<int:item_id>/withdrawal-order")
@api_view(
    "publicity.order_withdrawal",
    "登记须撤回的决定（被撤销、确认违法或重作；3个工作日内撤回，到期前告警）/ record that a published "
    "decision must be withdrawn within 3 working days; alerted until it is — GS-12, GS-23",
    request={
        "type": "object",
        "required": ["reason"],
        "properties": {
            "reason": {"type": "string", "description": "不超过2000字"},
            "revoked_on": {"type": "string", "format": "date", "description": "决定被撤销、确认违法之日"},
            "source": _ORDER_SOURCE,
        },
    },
    response={
        **ITEM_SCHEMA,
        "properties": {
            **ITEM_SCHEMA["properties"],
            "withdrawal_orders": {"type": "array", "items": _ORDER_SCHEMA},
        },
    },
)
def order_withdrawal(item_id: int) -> ResponseReturnValue:
    """The item stays published with its GS-12 withdrawal deadline, counted from ``revoked_on``; the order
    names the reconsideration decision or judgment it comes from (``source``), when there is one."""
    order = WithdrawalOrderInput.from_json(json_body(("reason",)), today=schedules.today_in_china())
    with session_scope() as session:
        item = service.order_withdrawal(
            session, caller(), item_id, order.reason, revoked_on=order.revoked_on, source=order.source
        )
        return jsonify(_with_history(session, item))


@bp.post("/items/<int:item_id>/withdraw")
@api_view(
    "publicity.withdraw_item",
    "撤回（3个工作日内，理由公开）/ withdraw within 3 working days; the reason is public — GS-12",
    request={
        "type": "object",
        "required": ["reason"],
        "properties": {
            "reason": {"type": "string", "maxLength": 2000},
            "revoked_on": {"type": "string", "format": "date", "description": "决定被撤销、确认违法之日"},
        },
    },
    response=ITEM_SCHEMA,
)
def withdraw_item(item_id: int) -> ResponseReturnValue:
    """Published → withdrawn; the GS-12 deadline runs from ``revoked_on``."""
    body = json_body(("reason",))
    reason = _reason(body)
    revoked_on = plausible_date(
        body.get("revoked_on"), "revoked_on", "决定被撤销之日", "the day it was revoked"
    )
    return jsonify(_transition(item_id, service.withdraw, reason, revoked_on=revoked_on))


@bp.post("/items/<int:item_id>/correct")
@api_view(
    "publicity.correct_item",
    "更正已公示信息 / correct a published item — GS-19",
    request={
        "type": "object",
        "required": ["content", "reason"],
        "properties": {"content": _CONTENT_PROPERTY, "reason": {"type": "string", "maxLength": 2000}},
    },
    response=ITEM_SCHEMA,
)
def correct_item(item_id: int) -> ResponseReturnValue:
    """Published → corrected; the portal shows that and when."""
    body = json_body(("content", "reason"))
    data = service.CorrectionInput(content=service.parse_content(body["content"]), reason=_reason(body))
    return jsonify(_transition(item_id, service.correct, data))


@bp.post("/items/<int:item_id>/terminate")
@api_view(
    "publicity.terminate_item",
    "信用修复后提前终止公示（须满最短公示期）/ end disclosure early after a credit repair — GS-13",
    request={
        "type": "object",
        "required": ["reason"],
        "properties": {
            "reason": {"type": "string", "maxLength": 2000},
            "on": {"type": "string", "format": "date"},
        },
    },
    response=ITEM_SCHEMA,
)
def terminate_item(item_id: int) -> ResponseReturnValue:
    """Published → expired early, never before the minimum period."""
    body = json_body(("reason",))
    return jsonify(
        _transition(item_id, service.terminate_early, _reason(body), on=_date(body.get("on"), "on"))
    )


@bp.post("/corrections/<int:request_id>/decide")
@api_view(
    "publicity.decide_correction",
    "处理公众更正请求 / decide a correction request from the public — GS-19",
    request={
        "type": "object",
        "required": ["accepted", "outcome"],
        "properties": {"accepted": {"type": "boolean"}, "outcome": {"type": "string", "maxLength": 2000}},
    },
    response={"type": "object"},
)
def decide_correction(request_id: int) -> ResponseReturnValue:
    """Accept or reject a request, with the outcome kept beside it."""
    body = json_body(("outcome",))
    accepted, outcome = body.get("accepted"), body.get("outcome")
    if not isinstance(accepted, bool) or not isinstance(outcome, str):
        raise ApiError(
            400, "invalid_request", "accepted 须为布尔值，outcome 须为文本", "accepted bool, outcome text"
        )
    with session_scope() as session:
        decided = portal_service.decide_correction_request(
            session, caller(), request_id, accepted=accepted, outcome=outcome
        )
        return jsonify(id=decided.id, item_id=decided.item_id, status=decided.status, outcome=decided.outcome)


@bp.post("/calendar")
@api_view(
    "publicity.load_calendar",
    "载入某年法定节假日安排并重算临时期限 / load a year's official holiday schedule and recount "
    "provisional deadlines",
    request={
        "type": "object",
        "required": ["year", "source", "holidays"],
        "properties": {
            "year": {"type": "integer"},
            "source": {"type": "string", "maxLength": 300},
            "holidays": {"type": "array", "description": '["2027-01-01", ["2027-02-06", "2027-02-12"]]'},
            "workdays": {"type": "array", "description": "调休上班的周末日期"},
        },
    },
    response={"type": "object"},
)
def load_calendar() -> ResponseReturnValue:
    """Store the schedule (it overrides the shipped one of the same year) and recount what it changes."""
    body = json_body(("year", "source", "holidays"))
    schedule = schedules.parse_schedule(body)
    with session_scope() as session:
        loaded = schedules.load_schedule(session, caller(), schedule)
        return jsonify(
            year=loaded.year,
            version=loaded.version,
            recounted=loaded.recounted,
            updates_recounted=loaded.updates_recounted,
            withdrawals_recounted=loaded.withdrawals_recounted,
        )


@bp.get("/export")
@api_view(
    "publicity.export",
    "导出双公示数据（CF 行政处罚 / XK 行政许可，CSV 或 JSON，金额万元）/ export 双公示 records (CSV or JSON)",
    query={"table": {"enum": ["CF", "XK"]}, "format": {"enum": ["csv", "json"]}},
    response={"type": "array", "items": {"type": "object"}},
    alternatives={"text/csv": {"type": "string"}},
)
def export() -> ResponseReturnValue:
    """The public records of the caller's agency's published items (all agencies for supervisors)."""
    table = request.args.get("table", "CF").upper()
    if table not in ("CF", "XK"):
        raise ApiError(400, "invalid_request", "table 须为 CF 或 XK", "table must be CF or XK")
    who = caller()
    with session_scope() as session:
        records = portal_service.export_records(
            session, table, agency_id=None if who.reads_all else who.agency_id or -1
        )
    if request.args.get("format", "json").lower() == "csv":
        fields = CF_FIELDS if table == "CF" else XK_FIELDS
        return Response(
            "\ufeff" + to_csv(records, fields),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{table}.csv"'},
        )
    return Response(to_json(records), mimetype="application/json")
