"""Segment bytes for the workspace player: HTTP Range, agency scope and an audit row per request.

The JSON API serves the same bytes at ``/api/v1/recordings/<id>/media`` to bearer tokens only; a
browser's ``<video>`` element cannot send a bearer header, so the workspace serves them again behind its
cookie session, with the API's rules: the roles of ``recordings.get_media``, the agency scope (another
agency's recording answers like a missing one) and an audit row written before any byte is sent (JL-20).
"""

from __future__ import annotations

from flask import Response, current_app, request
from flask.typing import ResponseReturnValue

from server.domain.evidence import queries as recording_service
from server.domain.governance import access
from server.http.api.recordings import _parse_range, _serving_problem
from server.http.context import caller, get_store
from server.http.errors import ApiError
from server.http.pages.workspace.core import audit_view, bp, workspace_view
from server.http.scope import audit_refusal
from server.infra.db import session_scope
from server.workers.loops import raise_alerts

__all__ = ["media"]


def _attachment_name(device_id: str, sequence: int, media_type: str) -> str:
    extension = "mp4" if "mp4" in media_type else "bin"
    return f"{device_id}-{sequence}.{extension}"


@bp.get("/recordings/<int:recording_id>/media")
@workspace_view("recordings.get_media")
def media(recording_id: int) -> ResponseReturnValue:
    """Stream a segment (Range) after auditing the access; ``?download=1`` saves it as a file."""
    header = request.headers.get("Range")
    download = request.args.get("download") == "1"
    with audit_refusal("recording.media", "recording", recording_id), session_scope() as session:
        rec = recording_service.get_recording(session, recording_id, scope=caller())
        # JL-20: a download is a copy; beyond one's duty either needs the head's approval (JL-19: disposed).
        granted = access.authorize(session, caller(), rec, "copy" if download else "view")
        size, key, media_type, sha256 = rec.size, rec.object_key, rec.media_type, rec.sha256
        device_id, sequence = rec.device_id, rec.sequence
        audit_view(
            session,
            "recording.media",
            "recording",
            recording_id,
            range=header,
            download=download,
            **granted.audit_detail(),
        )
        problem = _serving_problem(session, rec, full_read=not header)
    if problem is not None:
        raise_alerts(current_app._get_current_object())  # type: ignore[attr-defined]
        raise ApiError(
            410, problem.code, problem.message, problem.message_en, headers={"Cache-Control": "no-store"}
        )
    span = _parse_range(header, size)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{sha256}"',
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    if download:
        headers["Content-Disposition"] = (
            f'attachment; filename="{_attachment_name(device_id, sequence, media_type)}"'
        )
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
