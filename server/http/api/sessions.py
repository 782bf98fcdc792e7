"""Enforcement sessions (JL-12, JL-15, JL-16): list, detail, timeline with verdict, written explanations."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from server.domain.sessions import explanations as explanation_service
from server.domain.sessions import service as session_service
from server.http.context import actor, audit_request, client_ip, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.http.scope import audit_refusal, caller
from server.infra.db import session_scope

__all__ = ["bp"]

bp = Blueprint("sessions", __name__)

_SUMMARY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "device_id": {"type": "string"},
        "session_id": {"type": "string"},
        "officer_id": {"type": "string"},
        "case_id": {"type": "string"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "ended_at": {"type": ["string", "null"], "format": "date-time"},
        "state": {"enum": ["unknown", "incomplete", "idle", "recording", "interrupted", "ended"]},
        "verdict": {"enum": list(session_service.VERDICTS)},
        "gap_count": {"type": "integer"},
        "unexplained_gap_count": {"type": "integer"},
        "marker_count": {"type": "integer"},
    },
}
_EXPLANATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "marker_id": {"type": ["string", "null"]},
        "text": {"type": "string"},
        "text_sha256": {"type": "string"},
        "gaps": {"type": "array", "items": {"type": "object"}},
        "filed_by": {"type": "integer"},
        "filed_at": {"type": "string", "format": "date-time"},
        "signatures": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "user_id": {"type": "integer"},
                    "username": {"type": "string"},
                    "role": {"type": "string"},
                    "officer_id": {"type": ["integer", "null"]},
                    "officer_name": {"type": ["string", "null"]},
                    "certificate_number": {"type": ["string", "null"]},
                    "signed_at": {"type": "string", "format": "date-time"},
                },
            },
        },
        "signature_count": {"type": "integer"},
        "complete": {
            "type": "boolean",
            "description": "≥ 2 名不同执法人员签名 / two distinct officers (JL-16)",
        },
    },
}
_TIMELINE: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_SUMMARY["properties"],
        "spans": {"type": "array", "items": {"type": "object"}},
        "gaps": {"type": "array", "items": {"type": "object"}},
        "unexplained_gaps": {"type": "array", "items": {"type": "object"}},
        "markers": {"type": "array", "items": {"type": "object"}},
        "written_explanations": {"type": "array", "items": _EXPLANATION},
        "bookmarks": {"type": "array", "items": {"type": "object"}},
        "missing_seqs": {"type": "array", "items": {"type": "integer"}},
        "violations": {"type": "array", "items": {"type": "object"}},
        "rejected_events": {"type": "array", "items": {"type": "object"}},
    },
}


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_request", f"参数 {name} 必须是整数", f"{name} must be an integer"
        ) from None


def _user_id() -> int:
    try:
        return int(actor())
    except ValueError:
        raise ApiError(403, "forbidden", "需要用户令牌", "a user token is required") from None


def _media_url(recording_id: int) -> str:
    return url_for("recordings.get_media", recording_id=recording_id)


@bp.get("")
@api_view(
    "sessions.list_sessions",
    "执法过程列表（可按结论筛选）/ list enforcement sessions, filter by verdict (JL-16)",
    query={
        "verdict": {"enum": list(session_service.VERDICTS)},
        "device_id": {"type": "string"},
        "officer_id": {"type": "string"},
        "date_from": {"type": "string", "format": "date"},
        "date_to": {"type": "string", "format": "date"},
        "limit": {"type": "integer", "default": 50, "maximum": session_service.MAX_PAGE},
        "before": {"type": "integer", "description": "上一页返回的 next / cursor from the previous page"},
    },
    response={
        "type": "object",
        "properties": {"items": {"type": "array", "items": _SUMMARY}, "next": {"type": ["integer", "null"]}},
    },
)
def list_sessions() -> ResponseReturnValue:
    """A page of sessions, newest first (audited)."""
    filters = {
        name: request.args.get(name) or None
        for name in ("verdict", "device_id", "officer_id", "date_from", "date_to")
    }
    limit = _int_arg("limit") or 50
    before = _int_arg("before")
    with session_scope() as session:
        items, next_cursor = session_service.list_sessions(
            session, limit=limit, before=before, scope=caller(), **filters
        )
        audit_request(
            session,
            "session.list",
            "session",
            None,
            detail={**filters, "limit": limit, "before": before, "count": len(items)},
        )
    return jsonify(items=items, next=next_cursor)


@bp.get("/<int:session_id>")
@api_view(
    "sessions.get_session",
    "执法过程详情（含签名事件）/ a session with its signed events",
    response=_SUMMARY,
)
def get_session(session_id: int) -> ResponseReturnValue:
    """One session with its events, missing sequence numbers and violations (audited)."""
    with audit_refusal("session.view", "session", session_id), session_scope() as session:
        record = session_service.get_session(session, session_id, scope=caller())
        audit_request(session, "session.view", "session", session_id)
        return jsonify(session_service.session_detail(session, record))


@bp.get("/<int:session_id>/timeline")
@api_view(
    "sessions.get_timeline",
    "执法过程时间线与连续性结论 / timeline, gaps, markers and continuity verdict (JL-16)",
    response=_TIMELINE,
)
def get_timeline(session_id: int) -> ResponseReturnValue:
    """Recorded spans, gaps, markers with clips, written explanations, bookmarks, verdict (audited)."""
    with audit_refusal("session.timeline", "session", session_id), session_scope() as session:
        record = session_service.get_session(session, session_id, scope=caller())
        audit_request(session, "session.timeline", "session", session_id)
        # JL-20: segments the caller may not view are withheld, as on the workspace's session page.
        return jsonify(session_service.timeline(session, record, _media_url, viewer=caller()))


@bp.post("/<int:session_id>/explanations")
@api_view(
    "sessions.file_explanation",
    "提交书面说明（JL-16，须两名以上执法人员签名）/ file a written explanation",
    request={
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "maxLength": explanation_service.MAX_EXPLANATION_CHARS},
            "marker_id": {
                "type": "string",
                "description": "省略则针对当前未说明的中断 / omit: unexplained gaps",
            },
        },
    },
    response=_EXPLANATION,
    responses={
        201: "已提交并由提交人签名 / filed and signed by the filer",
        403: "not_an_officer / officer_not_active / certificate_expired / officer_other_agency",
    },
)
def file_explanation(session_id: int) -> ResponseReturnValue:
    """File a written explanation; the filer's signature is the first of the two required."""
    with audit_refusal("session.explanation_file", "session", session_id), session_scope() as session:
        record = session_service.get_session(session, session_id, scope=caller())
        body = json_body(("text",))
        marker_id = body.get("marker_id")
        if marker_id is not None and not isinstance(marker_id, str):
            raise ApiError(400, "invalid_request", "marker_id 必须是字符串", "marker_id must be a string")
        result = explanation_service.file_explanation(
            session,
            record,
            user_id=_user_id(),
            text=body["text"],
            marker_id=marker_id or None,
            client_ip=client_ip(),
        )
    return jsonify(result), 201


@bp.post("/<int:session_id>/explanations/<int:explanation_id>/signatures")
@api_view(
    "sessions.sign_explanation",
    "会签书面说明（同一人不得重复签名）/ co-sign a written explanation",
    response=_EXPLANATION,
    responses={
        201: "已签名 / signed",
        403: "not_an_officer / officer_not_active / certificate_expired / officer_other_agency",
        409: "已签过 / already_signed, same_officer",
    },
)
def sign_explanation(session_id: int, explanation_id: int) -> ResponseReturnValue:
    """Co-sign an explanation as the calling officer."""
    with audit_refusal("session.explanation_sign", "session", session_id), session_scope() as session:
        record = session_service.get_session(session, session_id, scope=caller())
        result = explanation_service.sign_explanation(
            session, record, explanation_id, user_id=_user_id(), client_ip=client_ip()
        )
    return jsonify(result), 201
