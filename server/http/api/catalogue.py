"""The before-enforcement catalogue for staff (GS-9): entries per agency and kind, their review, update items.

Thin views over :mod:`server.domain.publicity.catalogue_service`; bodies become typed inputs
(``server.domain.publicity.inputs``) before the service sees them. Who may call what is in ENDPOINT_ROLES;
which transition each publicity duty may do is the publication workflow's table.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.publicity import catalogue_service
from server.domain.publicity.catalogue import CatalogueKind, ChangeCause
from server.domain.publicity.inputs import EntryRevision, NewCatalogueEntry
from server.http.context import caller, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.db import session_scope

__all__ = ["bp"]

bp = Blueprint("catalogue", __name__)

_STATES = ["draft", "in_review", "published", "corrected", "withdrawn", "expired", "excluded"]
_CHANGE: dict[str, Any] = {
    "type": "object",
    "required": ["cause", "effective_on", "reference"],
    "description": "变更原因；law/duties 时开启 20 个工作日的更新事项 (GS-9) / why; law or duties opens "
    "an update item due in 20 working days",
    "properties": {
        "cause": {"enum": [c.value for c in ChangeCause]},
        "effective_on": {"type": "string", "format": "date", "description": "法律生效、废止或职责调整之日"},
        "reference": {"type": "string", "maxLength": 300},
    },
}
_CONTENT: dict[str, Any] = {
    "type": "object",
    "description": "按类别的字段，见 docs/publicity.md / the kind's fields, see docs/publicity.md",
}
_UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "entry_id": {"type": "integer"},
        "cause": {"enum": ["law", "duties"]},
        "effective_on": {"type": "string", "format": "date"},
        "due_on": {"type": "string", "format": "date", "description": "GS-9 期限（20个工作日）"},
        "deadline_provisional": {"type": "boolean"},
        "closed_on_time": {"type": ["boolean", "null"]},
        "overdue": {"type": "boolean"},
    },
}
_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "kind": {"enum": [k.value for k in CatalogueKind]},
        "state": {"enum": _STATES},
        "content": {"type": "object"},
        "pending": {"type": ["object", "null"], "description": "待审核的修订 / a revision awaiting review"},
        "published": {"type": ["object", "null"]},
        "updates": {"type": "array", "items": _UPDATE_SCHEMA},
    },
}
_REASON_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "maxLength": 2000}},
}


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
        raise ApiError(
            400, "invalid_request", "须说明理由（不超过2000字）", "a reason of at most 2000 characters"
        )
    return reason.strip()


@bp.get("/entries")
@api_view(
    "catalogue.list_entries",
    "执法前公示目录条目 / before-enforcement catalogue entries — GS-9",
    query={"kind": {"enum": [k.value for k in CatalogueKind]}, "state": {"enum": _STATES}},
    response={"type": "object", "properties": {"entries": {"type": "array", "items": _ENTRY_SCHEMA}}},
)
def list_entries() -> ResponseReturnValue:
    """Entries of the caller's agency (every agency for supervisors)."""
    with session_scope() as session:
        entries = catalogue_service.list_entries(
            session, caller(), kind=request.args.get("kind") or None, state=request.args.get("state") or None
        )
        return jsonify(entries=[catalogue_service.entry_to_dict(session, e) for e in entries])


@bp.post("/entries")
@api_view(
    "catalogue.create_entry",
    "新建目录条目（草稿）/ create a catalogue entry (a draft) — GS-9",
    request={
        "type": "object",
        "required": ["kind", "content"],
        "properties": {
            "kind": {"enum": [k.value for k in CatalogueKind]},
            "agency_id": {"type": "integer"},
            "content": _CONTENT,
            "change": _CHANGE,
        },
    },
    response=_ENTRY_SCHEMA,
    responses={201: "已创建 / created"},
)
def create_entry() -> ResponseReturnValue:
    """A draft entry; a ``change`` of law or duties opens its 20-working-day update item."""
    body = json_body(("kind", "content"))
    who = caller()
    data = NewCatalogueEntry.from_json(body, default_agency=who.agency_id)
    with session_scope() as session:
        entry = catalogue_service.create_entry(session, who, data)
        return jsonify(catalogue_service.entry_to_dict(session, entry, history=True)), 201


@bp.get("/entries/<int:entry_id>")
@api_view(
    "catalogue.get_entry", "目录条目详情及流转记录 / one entry with its history", response=_ENTRY_SCHEMA
)
def get_entry(entry_id: int) -> ResponseReturnValue:
    """One entry, its update items and its append-only history."""
    with session_scope() as session:
        entry = catalogue_service.get_entry(session, caller(), entry_id)
        return jsonify(catalogue_service.entry_to_dict(session, entry, history=True))


@bp.put("/entries/<int:entry_id>")
@api_view(
    "catalogue.revise_entry",
    "修改草稿，或提交已公示条目的修订 / edit a draft, or revise a published entry — GS-9",
    request={
        "type": "object",
        "required": ["content"],
        "properties": {"content": _CONTENT, "change": _CHANGE},
    },
    response=_ENTRY_SCHEMA,
)
def revise_entry(entry_id: int) -> ResponseReturnValue:
    """A draft takes the content; a published entry keeps its public copy until the revision is applied."""
    data = EntryRevision.from_json(json_body(("content",)))
    with session_scope() as session:
        entry = catalogue_service.revise_entry(session, caller(), entry_id, data)
        return jsonify(catalogue_service.entry_to_dict(session, entry, history=True))


def _transition(entry_id: int, action: Any, *args: Any) -> dict[str, Any]:
    with session_scope() as session:
        entry = action(session, caller(), entry_id, *args)
        data: dict[str, Any] = catalogue_service.entry_to_dict(session, entry, history=True)
        return data


@bp.post("/entries/<int:entry_id>/submit")
@api_view("catalogue.submit_entry", "提交审核 / submit for review — GS-7", response=_ENTRY_SCHEMA)
def submit_entry(entry_id: int) -> ResponseReturnValue:
    """Draft → in review."""
    return jsonify(_transition(entry_id, catalogue_service.submit_entry))


@bp.post("/entries/<int:entry_id>/return")
@api_view(
    "catalogue.return_entry", "退回修改 / return to draft", request=_REASON_BODY, response=_ENTRY_SCHEMA
)
def return_entry(entry_id: int) -> ResponseReturnValue:
    """In review → draft, with a reason."""
    return jsonify(_transition(entry_id, catalogue_service.return_entry, _reason(json_body(("reason",)))))


@bp.post("/entries/<int:entry_id>/publish")
@api_view(
    "catalogue.publish_entry",
    "审核发布（审核人不得为撰写人）/ approve and publish; not by the author — GS-7, GS-9",
    response=_ENTRY_SCHEMA,
)
def publish_entry(entry_id: int) -> ResponseReturnValue:
    """In review → published; its open update items are closed."""
    return jsonify(_transition(entry_id, catalogue_service.publish_entry))


@bp.post("/entries/<int:entry_id>/correct")
@api_view(
    "catalogue.apply_revision",
    "审核发布修订（审核人不得为修订人）/ apply a revision; not by the reviser — GS-9, GS-19",
    request=_REASON_BODY,
    response=_ENTRY_SCHEMA,
)
def apply_revision(entry_id: int) -> ResponseReturnValue:
    """Published → corrected with the pending revision; its open update items are closed."""
    return jsonify(_transition(entry_id, catalogue_service.apply_revision, _reason(json_body(("reason",)))))


@bp.post("/entries/<int:entry_id>/withdraw")
@api_view(
    "catalogue.withdraw_entry",
    "撤回条目（如依据被废止）/ withdraw an entry (a repealed basis, a power no longer held) — GS-9",
    request=_REASON_BODY,
    response=_ENTRY_SCHEMA,
)
def withdraw_entry(entry_id: int) -> ResponseReturnValue:
    """Published → withdrawn; leaves the portal."""
    return jsonify(_transition(entry_id, catalogue_service.withdraw_entry, _reason(json_body(("reason",)))))


@bp.get("/updates")
@api_view(
    "catalogue.list_updates",
    "更新事项（法律或职责变化后20个工作日内更新）/ update items: due 20 working days after a change — GS-9",
    query={"open": {"enum": ["true", "false"]}},
    response={"type": "object", "properties": {"updates": {"type": "array", "items": _UPDATE_SCHEMA}}},
)
def list_updates() -> ResponseReturnValue:
    """Update items of the caller's agency (every agency for supervisors), earliest deadline first."""
    open_only = request.args.get("open", "").lower() == "true"
    with session_scope() as session:
        updates = catalogue_service.list_updates(session, caller(), open_only=open_only)
        return jsonify(updates=[catalogue_service.update_to_dict(u) for u in updates])
