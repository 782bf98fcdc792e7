"""Agencies (tenants), accounts and the officer registry (GS-9(1)(2)); thin views over services.people."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from server.domain.accounts.service import create_user
from server.domain.errors import Invalid, NotFound
from server.domain.people import service as people_service
from server.domain.people.inputs import AgencyFields, OfficerFields
from server.domain.people.service import ImportRejected
from server.domain.sniff import PHOTO_TYPES, ContentMismatch, UnsupportedMediaType, sniff
from server.http.context import caller, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.db import session_scope

__all__ = ["bp"]

bp = Blueprint("people", __name__)

AGENCY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "head": {"type": "string"},
        "duties": {"type": "string"},
        "address": {"type": "string"},
        "contacts": {"type": "string"},
    },
}
USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "role": {"type": "string"},
        "agency_id": {"type": ["integer", "null"]},
        "active": {"type": "boolean"},
    },
}
OFFICER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "kind": {"enum": ["officer", "auxiliary"]},
        "name": {"type": "string"},
        "enforcement_category": {"type": "string"},
        "certificate_number": {"type": ["string", "null"]},
        "issuing_body": {"type": "string"},
        "valid_from": {"type": ["string", "null"], "format": "date"},
        "valid_to": {"type": ["string", "null"], "format": "date"},
        "status": {"enum": ["active", "suspended", "revoked"]},
        "duties": {"type": "string"},
        "authority": {"type": "string"},
        "user_id": {"type": ["integer", "null"]},
        "has_photo": {"type": "boolean"},
        "photo_url": {"type": ["string", "null"]},
    },
}


def _items(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": schema}}}


def _officer_json(officer: Any) -> dict[str, Any]:
    photo = url_for("people.get_officer_photo", officer_id=officer.id) if officer.photo_type else None
    return people_service.officer_to_dict(officer, photo_url=photo)


@bp.get("/agencies")
@api_view("people.list_agencies", "机关列表 / list agencies (GS-9(1))", response=_items(AGENCY_SCHEMA))
def list_agencies() -> ResponseReturnValue:
    """Agencies the caller may see."""
    with session_scope() as session:
        return jsonify(
            items=[people_service.agency_to_dict(a) for a in people_service.list_agencies(session, caller())]
        )


@bp.post("/agencies")
@api_view(
    "people.create_agency",
    "新建机关 / create an agency (tenant)",
    request={"type": "object", "required": ["name"], "properties": AGENCY_SCHEMA["properties"]},
    response=AGENCY_SCHEMA,
    responses={201: "已创建 / created", 409: "名称已存在 / name taken"},
)
def create_agency() -> ResponseReturnValue:
    """Create an agency."""
    fields = AgencyFields.from_json(json_body(("name",)), creating=True)
    with session_scope() as session:
        agency = people_service.create_agency(session, fields, actor=caller().user_id)
        return jsonify(people_service.agency_to_dict(agency)), 201


@bp.get("/agencies/<int:agency_id>")
@api_view("people.get_agency", "机关详情 / one agency", response=AGENCY_SCHEMA)
def get_agency(agency_id: int) -> ResponseReturnValue:
    """One agency."""
    with session_scope() as session:
        return jsonify(people_service.agency_to_dict(people_service.get_agency(session, caller(), agency_id)))


@bp.patch("/agencies/<int:agency_id>")
@api_view(
    "people.update_agency",
    "修改机关公示信息 / update an agency's particulars",
    request={"type": "object", "properties": AGENCY_SCHEMA["properties"]},
    response=AGENCY_SCHEMA,
)
def update_agency(agency_id: int) -> ResponseReturnValue:
    """Change name, head, duties, address or contacts."""
    fields = AgencyFields.from_json(json_body(), creating=False)
    with session_scope() as session:
        agency = people_service.update_agency(session, caller(), agency_id, fields)
        return jsonify(people_service.agency_to_dict(agency))


@bp.get("/users")
@api_view("people.list_users", "账户列表 / list accounts", response=_items(USER_SCHEMA))
def list_users() -> ResponseReturnValue:
    """Accounts the caller may see."""
    with session_scope() as session:
        return jsonify(
            items=[people_service.user_to_dict(u) for u in people_service.list_users(session, caller())]
        )


@bp.post("/users", endpoint="create_user")
@api_view(
    "people.create_user",
    "新建账户 / create an account",
    request={
        "type": "object",
        "required": ["username", "password", "role"],
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string"},
            "role": {"type": "string"},
            "agency_id": {"type": ["integer", "null"]},
        },
    },
    response=USER_SCHEMA,
    responses={201: "已创建 / created", 409: "用户名已存在 / username taken"},
)
def create_user_view() -> ResponseReturnValue:
    """Create an account in an agency."""
    body = json_body(("username", "password", "role"))
    agency_id = body.get("agency_id")
    if not all(isinstance(body[k], str) for k in ("username", "password", "role")) or not (
        agency_id is None or (isinstance(agency_id, int) and not isinstance(agency_id, bool))
    ):
        raise Invalid("字段类型错误", "wrong field types")
    with session_scope() as session:
        if agency_id is not None:
            people_service.get_agency(session, caller(), agency_id)
        user = create_user(
            session,
            body["username"],
            body["password"],
            body["role"],
            agency_id=agency_id,
            actor=caller().user_id,
        )
        return jsonify(people_service.user_to_dict(user)), 201


def _set_active(user_id: int, active: bool) -> Response:
    with session_scope() as session:
        user = people_service.set_user_active(session, caller(), user_id, active)
        return jsonify(people_service.user_to_dict(user))


@bp.post("/users/<int:user_id>/suspend")
@api_view("people.suspend_user", "停用账户（已签发令牌立即失效）/ suspend an account", response=USER_SCHEMA)
def suspend_user(user_id: int) -> ResponseReturnValue:
    """Suspend an account: its existing tokens are refused from now on."""
    return _set_active(user_id, False)


@bp.post("/users/<int:user_id>/reinstate")
@api_view("people.reinstate_user", "恢复账户 / reinstate an account", response=USER_SCHEMA)
def reinstate_user(user_id: int) -> ResponseReturnValue:
    """Reinstate a suspended account."""
    return _set_active(user_id, True)


@bp.get("/officers")
@api_view(
    "people.list_officers",
    "执法人员及辅助人员 / list officers and auxiliary staff (GS-9(2))",
    query={"agency_id": {"type": "integer"}},
    response=_items(OFFICER_SCHEMA),
)
def list_officers() -> ResponseReturnValue:
    """Officers the caller may see."""
    agency_id = request.args.get("agency_id", type=int)
    with session_scope() as session:
        officers = people_service.list_officers(session, caller(), agency_id=agency_id)
        return jsonify(items=[_officer_json(o) for o in officers])


_OFFICER_REQUEST = {
    "type": "object",
    "properties": {
        k: v for k, v in OFFICER_SCHEMA["properties"].items() if k not in ("id", "has_photo", "photo_url")
    },
}


@bp.post("/officers")
@api_view(
    "people.create_officer",
    "登记执法人员 / register an officer or auxiliary staff member",
    request={**_OFFICER_REQUEST, "required": ["name"]},
    response=OFFICER_SCHEMA,
    responses={201: "已登记 / registered", 409: "执法证号已存在 / certificate number taken"},
)
def create_officer() -> ResponseReturnValue:
    """Register an officer in the caller's agency (system_admin: ``agency_id`` in the body)."""
    body = json_body(("name",))
    me = caller()
    agency_id = body.pop("agency_id", me.agency_id)
    if not isinstance(agency_id, int):
        raise Invalid("必须指定机关 agency_id", "agency_id is required")
    fields = OfficerFields.from_json(body, creating=True)
    with session_scope() as session:
        officer = people_service.create_officer(session, me, agency_id, fields)
        return jsonify(_officer_json(officer)), 201


@bp.post("/officers/import")
@api_view(
    "people.import_officers",
    "批量导入执法人员（CSV，UTF-8，含表头）/ import officers from CSV",
    query={"agency_id": {"type": "integer"}},
    response=_items(OFFICER_SCHEMA),
    responses={
        201: "已全部导入 / all imported",
        422: "有错误行，未导入任何记录 / rows refused, none imported",
    },
)
def import_officers() -> ResponseReturnValue:
    """Import a CSV (columns: see docs/api-people.md); all rows or none."""
    me = caller()
    agency_id = request.args.get("agency_id", type=int) or me.agency_id
    if agency_id is None:
        raise Invalid("必须指定机关 agency_id", "agency_id is required")
    try:
        text = request.get_data().decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_request", "CSV 必须是 UTF-8 编码", "CSV must be UTF-8") from None
    try:
        with session_scope() as session:
            officers = people_service.import_officers_csv(session, me, agency_id, text)
            return jsonify(items=[_officer_json(o) for o in officers]), 201
    except ImportRejected as exc:
        response = jsonify(
            error={"code": exc.code, "message": exc.message, "message_en": exc.message_en, "rows": exc.rows}
        )
        response.status_code = 422
        return response


@bp.get("/officers/<int:officer_id>")
@api_view("people.get_officer", "执法人员详情 / one officer", response=OFFICER_SCHEMA)
def get_officer(officer_id: int) -> ResponseReturnValue:
    """One officer."""
    with session_scope() as session:
        return jsonify(_officer_json(people_service.get_officer(session, caller(), officer_id)))


@bp.patch("/officers/<int:officer_id>")
@api_view(
    "people.update_officer",
    "修改执法人员信息（含暂扣、吊销）/ update an officer (incl. suspend/revoke the certificate)",
    request=_OFFICER_REQUEST,
    response=OFFICER_SCHEMA,
)
def update_officer(officer_id: int) -> ResponseReturnValue:
    """Change an officer's entry."""
    fields = OfficerFields.from_json(json_body(), creating=False)
    with session_scope() as session:
        return jsonify(_officer_json(people_service.update_officer(session, caller(), officer_id, fields)))


@contextlib.contextmanager
def upload_checked() -> Iterator[None]:
    """Turn the content-sniffing refusals into 415 (type not accepted) and 400 (bytes not that type)."""
    try:
        yield
    except (UnsupportedMediaType, ContentMismatch) as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.message_en) from None


@bp.put("/officers/<int:officer_id>/photo")
@api_view(
    "people.put_officer_photo",
    "上传执法人员照片（请求体为 JPEG 或 PNG 图片，按内容校验）/ upload the officer's photo "
    "(body: a JPEG or PNG image, checked by its content)",
    response=OFFICER_SCHEMA,
    responses={
        400: "内容不是所声明的图片 / the bytes are not the declared image (content_mismatch)",
        415: "只接受 image/jpeg、image/png / only image/jpeg and image/png (unsupported_media_type)",
    },
)
def put_officer_photo(officer_id: int) -> ResponseReturnValue:
    """Store the photo sent as the request body."""
    with upload_checked(), session_scope() as session:
        officer = people_service.set_photo(
            session, caller(), officer_id, request.get_data(), request.content_type or ""
        )
        return jsonify(_officer_json(officer))


@bp.get("/officers/<int:officer_id>/photo")
@api_view("people.get_officer_photo", "执法人员照片 / the officer's photo", response_content_type="image/*")
def get_officer_photo(officer_id: int) -> ResponseReturnValue:
    """The photo bytes."""
    with session_scope() as session:
        officer = people_service.get_officer(session, caller(), officer_id)
        if officer.photo is None or officer.photo_type is None:
            raise NotFound("没有照片", "no photo")
        # Served as what the bytes are (photos stored before content checks may be anything).
        sniffed = sniff(officer.photo)
        mimetype = sniffed if sniffed in PHOTO_TYPES else "application/octet-stream"
        return Response(officer.photo, mimetype=mimetype, headers={"Cache-Control": "private, max-age=60"})
