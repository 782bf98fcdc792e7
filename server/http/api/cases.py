"""Cases, their append-only event log, attachments and the whole-process record (JL-2, JL-7 – JL-11)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.cases import attachments as case_attachments
from server.domain.cases import catalogue as case_catalogue
from server.domain.cases import record as case_record_service
from server.domain.cases import service as case_service
from server.domain.cases.inputs import MAX_REASON_CHARS, CaseEventInput, NewCase, StatusChange
from server.domain.governance import retention
from server.http.api.people import upload_checked
from server.http.context import caller, get_store, json_body
from server.http.openapi import api_view
from server.infra.db import session_scope

__all__ = ["bp"]

bp = Blueprint("cases", __name__)

CASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "number": {"type": "string"},
        "title": {"type": "string"},
        "act_kind": {"enum": ["penalty", "coercion", "inspection", "levy", "licensing"]},
        "origin": {"enum": ["ex_officio", "on_application"]},
        "party": {"type": "string"},
        "major": {"type": "boolean", "description": "重大执法决定 (JL-9(3))"},
        "status": {"enum": list(case_service.CASE_STATUSES)},
        "officer_ids": {"type": "array", "items": {"type": "integer"}},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "case_id": {"type": ["integer", "null"]},
        "event_type": {"type": "string"},
        "stage": {"enum": ["initiation", "investigation", "decision", "execution", "remedy", "case"]},
        "article": {"type": "string"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "place": {"type": "string"},
        "text": {"type": "string"},
        "officer_ids": {"type": "array", "items": {"type": "integer"}},
        "recording_ids": {"type": "array", "items": {"type": "integer"}},
        "source": {"enum": ["api", "mobile", "device"]},
        "data": {"type": "object"},
        "corrects_event_id": {"type": ["integer", "null"]},
    },
}


@bp.get("/event-types")
@api_view(
    "cases.event_types",
    "事件类型目录 / the event type catalogue (JL-7 – JL-10)",
    response={"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}}}},
)
def event_types() -> ResponseReturnValue:
    """Every event type with its stage and article."""
    return jsonify(items=case_catalogue.event_type_dicts())


@bp.get("")
@api_view(
    "cases.list_cases",
    "案件列表 / list cases",
    response={"type": "object", "properties": {"items": {"type": "array", "items": CASE_SCHEMA}}},
)
def list_cases() -> ResponseReturnValue:
    """Cases the caller may see."""
    with session_scope() as session:
        cases = case_service.list_cases(session, caller())
        return jsonify(
            items=[case_service.case_to_dict(c, case_service.case_officer_ids(session, c.id)) for c in cases]
        )


@bp.post("")
@api_view(
    "cases.create_case",
    "立案 / open a case",
    request={
        "type": "object",
        "required": ["number", "act_kind", "origin"],
        "properties": {
            k: v for k, v in CASE_SCHEMA["properties"].items() if k not in ("id", "status", "created_at")
        },
    },
    response=CASE_SCHEMA,
    responses={201: "已立案 / opened", 409: "案号已存在 / number taken"},
)
def create_case() -> ResponseReturnValue:
    """Open a case in the caller's agency."""
    new = NewCase.from_json(json_body(("number", "act_kind", "origin")))
    with session_scope() as session:
        case = case_service.create_case(session, caller(), new)
        return jsonify(case_service.case_to_dict(case, case_service.case_officer_ids(session, case.id))), 201


@bp.get("/<int:case_id>")
@api_view("cases.get_case", "案件详情 / one case", response=CASE_SCHEMA)
def get_case(case_id: int) -> ResponseReturnValue:
    """One case."""
    with session_scope() as session:
        case = case_service.get_case(session, caller(), case_id)
        return jsonify(case_service.case_to_dict(case, case_service.case_officer_ids(session, case.id)))


@bp.post("/<int:case_id>/events")
@api_view(
    "cases.add_event",
    "追加案件事件（只增不改，更正为新事件）/ append an event (corrections are new events)",
    request={
        "type": "object",
        "required": ["event_type"],
        "properties": {
            "event_type": {"type": "string"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "place": {"type": "string"},
            "text": {"type": "string"},
            "officer_ids": {"type": "array", "items": {"type": "integer"}},
            "recording_ids": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "object"},
            "corrects_event_id": {"type": "integer"},
        },
    },
    response=EVENT_SCHEMA,
    responses={201: "已记录 / recorded"},
)
def add_event(case_id: int) -> ResponseReturnValue:
    """Append one event to the case's record; linked recordings get the store's legal hold (JL-19)."""
    event_input = CaseEventInput.from_json(json_body(("event_type",)))
    with session_scope() as session:
        event = case_service.record_event(session, caller(), case_id, event_input)
        # The case service sits below governance: the edge applies the link's side effect on the store,
        # in the same transaction (an S3 failure fails the event, so no link exists without its hold).
        retention.protect_linked(session, retention.lock_store(get_store()), list(event.recording_ids or []))
        return jsonify(case_service.event_to_dict(event)), 201


@bp.post("/<int:case_id>/events/<int:event_id>/attachments")
@api_view(
    "cases.add_attachment",
    "上传附件（文书、照片、当事人签字页）/ attach a document, photo or signed page (JL-11); body = the file",
    query={
        "name": {"type": "string"},
        "kind": {"enum": list(case_attachments.ATTACHMENT_KINDS)},
        "signed_by_party": {"type": "boolean"},
    },
    response={"type": "object"},
    responses={
        201: "已保存 / stored",
        400: "内容与声明的类型不符 / the bytes are not the declared type (content_mismatch)",
        415: "类型不在允许列表（PDF、JPEG、PNG、MP4、纯文本）/ type not accepted: PDF, JPEG, PNG, MP4, "
        "plain text (unsupported_media_type)",
    },
)
def add_attachment(case_id: int, event_id: int) -> ResponseReturnValue:
    """Store the request body write-once (sha256) and attach it to the event, if its bytes really are
    its declared type from the allow-list (sniff.ATTACHMENT_TYPES)."""
    with upload_checked(), session_scope() as session:
        attachment = case_attachments.add_attachment(
            session,
            get_store(),
            caller(),
            case_id,
            event_id,
            request.get_data(),
            name=request.args.get("name", ""),
            content_type=request.content_type or "application/octet-stream",
            kind=request.args.get("kind", "document"),
            signed_by_party=request.args.get("signed_by_party", "").lower() in ("1", "true", "yes"),
        )
        return jsonify(case_service.attachment_to_dict(attachment, case_id)), 201


@bp.get("/<int:case_id>/attachments/<int:attachment_id>")
@api_view(
    "cases.get_attachment",
    "下载附件 / download an attachment",
    response_content_type="application/octet-stream",
)
def get_attachment(case_id: int, attachment_id: int) -> ResponseReturnValue:
    """The attachment's bytes."""
    with session_scope() as session:
        attachment = case_attachments.get_attachment(session, caller(), case_id, attachment_id)
    store = get_store()
    data = b"".join(store.open_range(attachment.object_key, 0, attachment.size - 1))
    # Always a download, never rendered: a type outside the allow-list (rows stored before uploads
    # were checked) goes out as octet-stream, and the sandbox CSP disarms anything opened anyway.
    mimetype = case_attachments.served_type(attachment.content_type)
    return Response(
        data,
        mimetype=mimetype,
        headers={
            "X-Content-SHA256": attachment.sha256,
            "Content-Disposition": content_disposition(attachment.name),
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback name and the UTF-8 name (RFC 6266 §4.3, RFC 8187)."""
    fallback = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in name)
    fallback = fallback or "attachment"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@bp.get("/<int:case_id>/record")
@api_view(
    "cases.get_record",
    "全过程记录及完整性检查 / the whole-process record with its completeness check",
    response={
        "type": "object",
        "properties": {
            "case": CASE_SCHEMA,
            "stages": {"type": "array", "items": {"type": "object"}},
            "completeness": {
                "type": "object",
                "properties": {"complete": {"type": "boolean"}, "missing": {"type": "array"}},
            },
        },
    },
)
def get_record(case_id: int) -> ResponseReturnValue:
    """Events in stage order with attachments and covering recordings, plus what is missing."""
    with session_scope() as session:
        return jsonify(case_record_service.case_record(session, caller(), case_id))


@bp.post("/<int:case_id>/status")
@api_view(
    "cases.change_status",
    "变更案件状态（记入全过程记录）/ change the case status (recorded as a case event, JL-2)",
    request={
        "type": "object",
        "required": ["status", "reason"],
        "properties": {
            "status": {"enum": list(case_service.CASE_STATUSES)},
            "reason": {"type": "string", "maxLength": MAX_REASON_CHARS},
            "force": {
                "type": "boolean",
                "description": "强制结案（仅机关负责人）/ close an incomplete record (heads only)",
            },
        },
    },
    response={"type": "object", "properties": {"case": CASE_SCHEMA, "event": EVENT_SCHEMA}},
    responses={
        201: "已变更 / changed",
        409: "不允许的状态变更，或记录不完整（error.missing）/ illegal transition, or incomplete record",
    },
)
def change_status(case_id: int) -> ResponseReturnValue:
    """Move the case to ``status`` if the transition table allows it (docs/api-people.md)."""
    change = StatusChange.from_json(json_body(("status", "reason")))
    try:
        with session_scope() as session:
            event = case_service.change_status(session, caller(), case_id, change)
            case = case_service.get_case(session, caller(), case_id)
            return jsonify(
                case=case_service.case_to_dict(case, case_service.case_officer_ids(session, case.id)),
                event=case_service.event_to_dict(event),
            ), 201
    except case_service.RecordIncomplete as exc:
        response = jsonify(
            error={
                "code": exc.code,
                "message": exc.message,
                "message_en": exc.message_en,
                "missing": exc.missing,
            }
        )
        response.status_code = 409
        return response
