"""Evidence integrity: start a scrub of stored evidence on demand (JL-6); results go to the chain report."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.evidence import scrub as scrub_service
from server.domain.fleet.devices import get_device
from server.http.context import audit_request, get_store
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.db import session_scope
from server.workers.loops import raise_alerts

bp = Blueprint("integrity", __name__)

_FINDING = {
    "type": "object",
    "properties": {
        "recording_id": {"type": ["integer", "null"]},
        "sequence": {"type": ["integer", "null"]},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "source": {"type": "string"},
        "at": {"type": ["string", "null"]},
    },
}


@bp.post("/scrub")
@api_view(
    "integrity.scrub",
    "立即校验存储的证据（对象字节与签名清单）/ scrub stored evidence now against the signed manifests",
    request={"type": "object", "properties": {"device_id": {"type": "string"}}},
    response={
        "type": "object",
        "properties": {
            "devices": {"type": "integer"},
            "recordings": {"type": "integer"},
            "bytes_read": {"type": "integer"},
            "new_findings": {"type": "integer"},
            "findings": {"type": "array", "items": _FINDING},
            "stopped": {"type": "boolean"},
        },
    },
)
def scrub() -> ResponseReturnValue:
    """Check every stored object's size and SHA-256 and every evidence column (one device or all; audited)."""
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else {}
    device_id = body.get("device_id")
    if device_id is not None and not isinstance(device_id, str):
        raise ApiError(400, "invalid_request", "device_id 必须是字符串", "device_id must be a string")
    with session_scope() as session:
        if device_id:
            get_device(session, device_id)  # 404 for an unknown device
        audit_request(session, "integrity.scrub", "device", device_id or None)
        session.commit()
        report = scrub_service.scrub(
            session, get_store(), device_id=device_id or None, source="api", checkpoint=session.commit
        )
        result = report.to_dict()
    if report.new_findings:
        raise_alerts(current_app._get_current_object())  # type: ignore[attr-defined]
    return jsonify(result)
