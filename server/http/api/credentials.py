"""The officer's own electronic credential with its rotating QR token, and showing it (GS-10(1), JL-8(1))."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.cases import service as case_service
from server.domain.errors import NotFound
from server.domain.people import credentials as credential_service
from server.domain.people.models import Officer
from server.http.context import caller, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.http.parsing import check_body
from server.infra.db import session_scope

__all__ = ["bp", "signing_key", "verify_url"]

bp = Blueprint("credentials", __name__)
_KEY_EXT = "zfjl.credential_key"

CREDENTIAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "officer_id": {"type": "integer"},
        "kind": {"enum": ["officer", "auxiliary"]},
        "name": {"type": "string"},
        "unit": {"type": "string"},
        "enforcement_category": {"type": "string"},
        "certificate_number": {"type": ["string", "null"]},
        "valid_from": {"type": ["string", "null"], "format": "date"},
        "valid_to": {"type": ["string", "null"], "format": "date"},
        "status": {"type": "string"},
        "validity": {
            "type": "string",
            "description": "valid | expired | not_yet_valid | suspended | revoked",
        },
        "photo_url": {"type": ["string", "null"]},
        "token": {"type": "string", "description": "Ed25519-signed, valid for 60 s"},
        "token_expires_at": {"type": "string", "format": "date-time"},
        "qr_payload": {"type": "string", "description": "the /verify/<token> URL encoded in the QR code"},
        "qr_svg": {"type": "string", "description": "the QR code as inline SVG"},
    },
}


def signing_key() -> Ed25519PrivateKey:
    """The app's credential signing key, created once in data_dir (cached per app)."""
    key: Ed25519PrivateKey | None = current_app.extensions.get(_KEY_EXT)
    if key is None:
        key = credential_service.load_or_create_key(current_app.extensions["zfjl.settings"].data_dir)
        current_app.extensions[_KEY_EXT] = key
    return key


def verify_url(token: str) -> str:
    """The public verification URL of a token (public_url when set, else this request's host)."""
    base = current_app.extensions["zfjl.settings"].public_url or request.host_url
    return f"{base.rstrip('/')}/verify/{token}"


def _my_officer(session: Any) -> Officer:
    return credential_service.officer_for_user(session, int(caller().user_id))


@bp.get("/me/credential")
@api_view(
    "credentials.my_credential",
    "我的电子执法证（含 60 秒动态二维码）/ my electronic credential with a 60 s QR token",
    response=CREDENTIAL_SCHEMA,
)
def my_credential() -> ResponseReturnValue:
    """The caller's credential and a fresh signed QR token."""
    now = datetime.now(UTC)
    with session_scope() as session:
        officer = _my_officer(session)
        data = credential_service.credential_of(session, officer)
        data["validity"] = credential_service.status_outcome(officer, now.date())
        has_photo = officer.photo_type is not None
    token, _jti = credential_service.issue_token(signing_key(), data["officer_id"], now=now)
    url = verify_url(token)
    data.update(
        photo_url="/api/v1/me/credential/photo" if has_photo else None,
        token=token,
        token_expires_at=(now + credential_service.TOKEN_TTL).isoformat(),
        qr_payload=url,
        qr_svg=segno.make(url, error="m").svg_inline(border=4, omitsize=True, dark="#000", light="#fff"),
    )
    return jsonify(data)


BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "credential": CREDENTIAL_SCHEMA,
        "tokens": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "valid_from": {"type": "string", "format": "date-time"},
                    "valid_to": {"type": "string", "format": "date-time"},
                    "token": {"type": "string"},
                    "qr_payload": {
                        "type": "string",
                        "description": "the /verify/<token> URL; the page encodes it as a QR code itself",
                    },
                },
            },
        },
    },
}


@bp.post("/me/credential/batch")
@api_view(
    "credentials.credential_batch",
    "离线出示：预先签发的每分钟二维码（最多 12 小时）/ offline batch: one signed QR token per minute, "
    "up to 12 h ahead — GS-10(1)",
    request={
        "type": "object",
        "required": ["minutes"],
        "properties": {
            "minutes": {"type": "integer", "minimum": 1, "maximum": credential_service.MAX_BATCH_MINUTES},
            "officer_id": {"type": "integer", "description": "if given, must be the caller's own officer"},
        },
    },
    response=BATCH_SCHEMA,
    responses={403: "other_officer"},
)
def credential_batch() -> ResponseReturnValue:
    """The caller's credential and one token per minute from now on, each valid only in its minute."""
    body = json_body(("minutes",))
    minutes = body["minutes"]
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise ApiError(400, "invalid_request", "minutes 必须是整数", "minutes must be an integer")
    if not 1 <= minutes <= credential_service.MAX_BATCH_MINUTES:
        raise ApiError(
            400,
            "invalid_request",
            f"minutes 必须在 1 到 {credential_service.MAX_BATCH_MINUTES} 之间",
            f"minutes must be between 1 and {credential_service.MAX_BATCH_MINUTES}",
        )
    wanted = body.get("officer_id")
    now = datetime.now(UTC)
    with session_scope() as session:
        officer = _my_officer(session)
        if wanted is not None and wanted != officer.id:
            # Only the holder's own codes: an officer never carries codes that show someone else.
            raise ApiError(
                403,
                "other_officer",
                "只能签发本人的离线二维码",
                "an offline batch is issued for your own credential only",
            )
        data = credential_service.credential_of(session, officer)
        data["validity"] = credential_service.status_outcome(officer, now.date())
        data["photo_url"] = "/api/v1/me/credential/photo" if officer.photo_type is not None else None
        tokens = credential_service.issue_batch(
            session, signing_key(), officer, minutes=minutes, actor=caller().user_id, now=now
        )
    items = []
    for minute in tokens:
        url = verify_url(minute.token)
        items.append(
            {
                "valid_from": minute.valid_from.isoformat(),
                "valid_to": minute.valid_to.isoformat(),
                "token": minute.token,
                "qr_payload": url,
            }
        )
    response = jsonify(credential=data, tokens=items)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/me/credential/photo")
@api_view("credentials.my_photo", "我的证件照片 / my credential photo", response_content_type="image/*")
def my_photo() -> ResponseReturnValue:
    """The caller's photo."""
    with session_scope() as session:
        officer = _my_officer(session)
        if officer.photo is None or officer.photo_type is None:
            raise NotFound("没有照片", "no photo")
        return Response(
            officer.photo, mimetype=officer.photo_type, headers={"Cache-Control": "private, max-age=60"}
        )


@bp.post("/me/credential/shown")
@api_view(
    "credentials.show_credential",
    "出示证件：记录“出示执法证件”案件事件 / record that I showed my credential (JL-8(1))",
    request={
        "type": "object",
        "properties": {"case_id": {"type": ["integer", "null"]}, "place": {"type": "string"}},
    },
    response={
        "type": "object",
        "properties": {
            "event": {"type": "object"},
            "recorder_bookmark": {
                "type": ["object", "null"],
                "description": "the bookmark command queued for the officer's paired recorder (JL-15)",
                "properties": {
                    "device_id": {"type": "string"},
                    "command_id": {"type": "string"},
                    "state": {"type": "string"},
                },
            },
            "recorder_bookmark_reason": {
                "type": ["string", "null"],
                "description": "why there is no bookmark: no_device_assigned | device_unavailable",
            },
        },
    },
    responses={201: "已记录 / recorded"},
)
def show_credential() -> ResponseReturnValue:
    """Record ``investigation.credential_shown`` and have the paired recorder bookmark it (JL-8(1), JL-15)."""
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "请求体必须是 JSON 对象", "request body must be a JSON object")
    check_body(body)
    case_id = body.get("case_id")
    if case_id is not None and (isinstance(case_id, bool) or not isinstance(case_id, int)):
        raise ApiError(400, "invalid_request", "case_id 必须是整数", "case_id must be an integer")
    me = caller()
    with session_scope() as session:
        officer = _my_officer(session)
        # JL-8(1), JL-15: the recorder checked out to this account bookmarks the moment in its video.
        event, bookmark, reason = credential_service.record_shown(
            session, me, officer, case_id=case_id, place=body.get("place", "")
        )
        return (
            jsonify(
                event=case_service.event_to_dict(event),
                recorder_bookmark=bookmark,
                recorder_bookmark_reason=reason,
            ),
            201,
        )


@bp.get("/me/cases")
@api_view(
    "credentials.my_cases",
    "我承办的未结案件 / my open cases (for the credential page)",
    response={"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}}}},
)
def my_cases() -> ResponseReturnValue:
    """Unfinished cases (not closed, withdrawn or revoked) the caller's officer is assigned to."""
    with session_scope() as session:
        officer = _my_officer(session)
        cases = case_service.list_cases(session, caller(), officer_id=officer.id)
        return jsonify(
            items=[
                {"id": c.id, "number": c.number, "title": c.title, "status": c.status}
                for c in cases
                if c.status not in case_service.FINAL_STATUSES
            ]
        )


@bp.get("/credential-scans")
@api_view(
    "credentials.list_scans",
    "证件核验记录 / credential verification log (GS-10(1))",
    query={"officer_id": {"type": "integer"}},
    response={"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}}}},
)
def list_scans() -> ResponseReturnValue:
    """The latest 500 scans of credentials the caller may see."""
    officer_id = request.args.get("officer_id", type=int)
    with session_scope() as session:
        scans = credential_service.list_scans(session, caller(), officer_id=officer_id)
        items = [credential_service.scan_to_dict(s) for s in scans]
    return jsonify(items=items)
