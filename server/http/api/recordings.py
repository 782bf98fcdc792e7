"""Recording metadata and media (HTTP Range); every access is written to the audit log first."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.evidence import queries as recording_service
from server.domain.evidence.models import Recording
from server.domain.evidence.serving import ServingProblem, check_before_serving
from server.domain.governance import access
from server.http.context import audit_request, get_store
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.http.scope import audit_refusal, caller
from server.infra.db import session_scope
from server.workers.loops import raise_alerts

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

bp = Blueprint("recordings", __name__)
_LOG = logging.getLogger(__name__)

_SUMMARY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "device_id": {"type": "string"},
        "sequence": {"type": "integer"},
        "started_at": {"type": "string", "format": "date-time"},
        "ended_at": {"type": "string", "format": "date-time"},
        "size": {"type": "integer"},
        "sha256": {"type": "string"},
        "verified": {"type": "boolean"},
        "media_type": {"type": "string"},
        "officer_id": {"type": "string"},
        "kind": {"type": "string"},
    },
}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _int_arg(name: str, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_request", f"参数 {name} 必须是整数", f"{name} must be an integer"
        ) from None


@bp.get("")
@api_view(
    "recordings.list_recordings",
    "录像列表（新到旧）/ list recordings, newest first",
    query={
        "device_id": {"type": "string"},
        "limit": {"type": "integer", "default": 50, "maximum": 200},
        "before": {"type": "integer", "description": "上一页返回的 next / cursor from the previous page"},
    },
    response={
        "type": "object",
        "properties": {"items": {"type": "array", "items": _SUMMARY}, "next": {"type": ["integer", "null"]}},
    },
)
def list_recordings() -> ResponseReturnValue:
    """A page of recordings (audited)."""
    device_id = request.args.get("device_id") or None
    requested = _int_arg("limit", None)
    limit = 50 if requested is None else requested
    before = _int_arg("before", None)
    with session_scope() as session:
        rows, next_cursor = recording_service.list_recordings(
            session, device_id=device_id, limit=limit, before=before, scope=caller()
        )
        # JL-20: restricted and confidential recordings beyond the caller's duty are not listed (a page
        # may then be shorter than ``limit``; ``next`` still continues after the last row read).
        rows = access.listable(session, caller(), rows)
        audit_request(
            session,
            "recording.list",
            "recording",
            None,
            detail={"device_id": device_id, "limit": limit, "before": before, "count": len(rows)},
        )
        items = [recording_service.recording_summary(r) for r in rows]
    return jsonify(items=items, next=next_cursor)


@bp.get("/<int:recording_id>")
@api_view(
    "recordings.get_recording",
    "录像详情（含签名清单）/ recording details with the signed manifest",
    response=_SUMMARY,
)
def get_recording(recording_id: int) -> ResponseReturnValue:
    """One recording with its manifest, signature and chain links (audited)."""
    with audit_refusal("recording.view", "recording", recording_id), session_scope() as session:
        rec = recording_service.get_recording(session, recording_id, scope=caller())
        # JL-20: the access class, the caller's duty or the head's approval (docs/governance.md).
        granted = access.authorize(session, caller(), rec, "view", metadata_only=True)
        audit_request(session, "recording.view", "recording", recording_id, detail=granted.audit_detail())
        return jsonify(recording_service.recording_detail(rec))


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single satisfiable range; None to serve everything; ApiError 416."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        # Multiple or malformed ranges: RFC 9110 lets us ignore Range and send the whole representation.
        return None
    first, last = match.groups()
    # Positions past 18 digits exceed any object (and 4300 digits exceed int()): clamp, never parse them.
    if len(first) > 18:
        raise _unsatisfiable(size)
    last = str(size) if len(last) > 18 else last
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _serving_problem(session: Session, rec: Recording, *, full_read: bool) -> ServingProblem | None:
    """Missing or corrupt evidence is answered 410 with a clear code and an alert, never a 500 (JL-6)."""
    try:
        return check_before_serving(session, get_store(), rec, full_read=full_read)
    except Exception:
        _LOG.exception("object store unavailable while checking recording %d", rec.id)
        raise ApiError(
            503,
            "storage_unavailable",
            "证据存储暂时不可用，请稍后重试",
            "the evidence store is unavailable; retry later",
        ) from None


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        "请求的字节范围无效",
        "requested range not satisfiable",
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
    )


@bp.get("/<int:recording_id>/media")
@api_view(
    "recordings.get_media",
    "录像媒体（支持 Range）/ recording media with HTTP Range",
    response={"type": "string", "format": "binary"},
    response_content_type="video/mp4",
    responses={
        206: "部分内容 / partial content",
        410: "证据缺失或损坏，已告警 / evidence_missing or evidence_corrupt, alerted",
        416: "范围无效 / range not satisfiable",
        503: "证据存储不可用 / evidence store unavailable",
    },
)
def get_media(recording_id: int) -> ResponseReturnValue:
    """Stream the segment from the object store; the access is audited before any byte is sent."""
    header = request.headers.get("Range")
    with audit_refusal("recording.media", "recording", recording_id), session_scope() as session:
        rec = recording_service.get_recording(session, recording_id, scope=caller())
        granted = access.authorize(session, caller(), rec, "view")  # JL-19 disposed, JL-20 duty or approval
        size, key, media_type, sha256 = rec.size, rec.object_key, rec.media_type, rec.sha256
        detail = {"range": header, **granted.audit_detail()}
        audit_request(session, "recording.media", "recording", recording_id, detail=detail)
        problem = _serving_problem(session, rec, full_read=not header)
    if problem is not None:
        raise_alerts(current_app._get_current_object())  # type: ignore[attr-defined]
        raise ApiError(
            410, problem.code, problem.message, problem.message_en, headers={"Cache-Control": "no-store"}
        )
    span = _parse_range(header, size)
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{sha256}"', "Cache-Control": "private, no-store"}
    if span is None:
        start, end, status = 0, size - 1, 200
    else:
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1 if size else 0
    body = get_store().open_range(key, start, end) if length else iter(())
    headers["Content-Length"] = str(length)
    return Response(body, status=status, headers=headers, mimetype=media_type, direct_passthrough=True)
