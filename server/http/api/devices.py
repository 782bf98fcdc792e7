"""Device registry endpoints and the per-device chain report."""

from __future__ import annotations

import base64
import binascii

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from server.domain import scope as scope_service
from server.domain.evidence import queries as recording_service
from server.domain.fleet import devices as device_service
from server.domain.fleet.models import DEVICE_STATUSES, Device
from server.http.context import actor, audit_request, client_ip, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.http.scope import audit_refusal, caller
from server.infra.db import session_scope

bp = Blueprint("devices", __name__)

DEVICE_SCHEMA = {
    "type": "object",
    "properties": {
        "device_id": {"type": "string"},
        "public_key": {"type": "string", "description": "base64 raw 32-byte Ed25519"},
        "key_fingerprint": {"type": "string"},
        "status": {"enum": list(DEVICE_STATUSES)},
        "serial": {"type": ["string", "null"]},
        "model": {"type": ["string", "null"]},
        "registered_at": {"type": "string", "format": "date-time"},
        "registered_by": {"type": "string"},
    },
}


@bp.get("")
@api_view(
    "devices.list_devices",
    "设备列表 / list devices",
    response={"type": "object", "properties": {"items": {"type": "array", "items": DEVICE_SCHEMA}}},
)
def list_devices() -> ResponseReturnValue:
    """All registered devices."""
    with session_scope() as session:
        return jsonify(items=[device_service.device_to_dict(d) for d in device_service.list_devices(session)])


@bp.post("")
@api_view(
    "devices.register_device",
    "注册设备公钥 / register a device key (provisioning)",
    request={
        "type": "object",
        "required": ["device_id", "public_key"],
        "properties": {
            "device_id": {"type": "string"},
            "public_key": {"type": "string"},
            "serial": {"type": "string"},
            "model": {"type": "string"},
        },
    },
    response=DEVICE_SCHEMA,
    responses={201: "已注册 / registered", 409: "设备已用其他公钥注册 / registered with another key"},
)
def register_device() -> ResponseReturnValue:
    """Register a device (idempotent for the same key: 200; new: 201)."""
    body = json_body(("device_id", "public_key"))
    try:
        key = base64.b64decode(str(body["public_key"]), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, "invalid_request", "public_key 不是有效的 base64", "public_key is not base64"
        ) from None
    for name in ("device_id", "serial", "model"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ApiError(400, "invalid_request", f"{name} 必须是字符串", f"{name} must be a string")
    with session_scope() as session:
        existed = session.get(Device, body["device_id"]) is not None
        device = device_service.register_device(
            session,
            body["device_id"],
            key,
            body.get("serial"),
            body.get("model"),
            actor=actor(),
            client_ip=client_ip(),
        )
        return jsonify(device_service.device_to_dict(device)), 200 if existed else 201


@bp.get("/<device_id>")
@api_view("devices.get_device", "设备详情 / device details", response=DEVICE_SCHEMA)
def get_device(device_id: str) -> ResponseReturnValue:
    """One device."""
    with session_scope() as session:
        return jsonify(device_service.device_to_dict(device_service.get_device(session, device_id)))


@bp.get("/<device_id>/chain")
@api_view(
    "devices.chain",
    "设备哈希链校验报告 / hash-chain verification report",
    response={
        "type": "object",
        "properties": {
            "device_id": {"type": "string"},
            "segments": {"type": "integer"},
            "verified": {"type": "boolean"},
            "gaps": {"type": "array"},
            "breaks": {"type": "array"},
            "unverified": {"type": "array", "items": {"type": "integer"}},
            "integrity": {
                "type": "array",
                "description": "与签名清单不符的发现 / findings against the signed manifests",
            },
            "head": {"type": ["string", "null"]},
            "rejected_uploads": {
                "type": "object",
                "description": "被拒绝的上传，不影响 verified / refused uploads, apart from the chain",
                "properties": {
                    "count": {"type": "integer"},
                    "by_code": {"type": "object"},
                    "items": {"type": "array"},
                },
            },
        },
    },
)
def chain(device_id: str) -> ResponseReturnValue:
    """Gaps, breaks and integrity findings in the device's chain; refused uploads apart (audited)."""
    with audit_refusal("device.chain_report", "device", device_id), session_scope() as session:
        scope_service.require_device(session, caller(), device_id)
        report = recording_service.chain_report(session, device_id)
        audit_request(
            session, "device.chain_report", "device", device_id, detail={"verified": report["verified"]}
        )
    return jsonify(report)
