"""Fleet endpoints: provisioning, allow-list, credentials, status, profile, assignment, alerts."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.fleet import alerts as alert_service
from server.domain.fleet import assignments as assignment_service
from server.domain.fleet import commands as command_service
from server.domain.fleet import config as config_service
from server.domain.fleet import overview as overview_service
from server.domain.fleet import service as fleet_service
from server.domain.fleet.broker_accounts import sync_broker
from server.domain.fleet.devices import device_to_dict, get_device
from server.domain.fleet.models import DeviceStatus
from server.http.context import actor, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.config import Settings
from server.infra.db import session_scope
from server.infra.ingest_key import provisioning_trust

__all__ = ["bp", "device_bp"]

bp = Blueprint("fleet", __name__)
# Device-facing, unauthenticated provisioning lives outside /api/ (where every route needs a token), so a
# reverse proxy can expose and rate-limit it separately.
device_bp = Blueprint("provisioning", __name__)

_OBJ: dict[str, Any] = {"type": "object"}
_CREDENTIALS = {
    "type": "object",
    "properties": {
        "device_id": {"type": "string"},
        "mqtt_username": {"type": "string"},
        "mqtt_password": {"type": "string", "description": "只返回一次 / returned once only"},
        "ingest_public_keys": {
            "type": "array",
            "items": {"type": "string"},
            "description": "设备须固定信任的应答公钥 / ingest public keys the device pins (base64)",
        },
        "mqtt_urls": {
            "type": "array",
            "items": {"type": "string"},
            "description": "设备应连接的代理地址 / broker URL(s) the device must use",
        },
        "mqtt_url": {"type": "string"},
    },
}


def _settings() -> Settings:
    settings: Settings = current_app.extensions["zfjl.settings"]
    return settings


def _sync_broker() -> None:
    """Regenerate the broker's password and ACL files after a committed registry change."""
    with session_scope() as session:
        sync_broker(session, _settings())


def _public_key(body: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(str(body["public_key"]), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, "invalid_request", "public_key 不是有效的 base64", "public_key is not base64"
        ) from None


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, "invalid_request", f"{name} 必须是字符串", f"{name} must be a string")
    return value


def _credentials(issued: fleet_service.IssuedCredential | None) -> dict[str, Any]:
    if issued is None:
        return {}
    # With the credentials, what the recorder must trust (the ingest public keys it pins) and the
    # broker it must use (the embedded broker's actual port when it runs) — finding 1, README step 2.
    trust = provisioning_trust(current_app, urlsplit("//" + request.host).hostname or "")
    return {"mqtt_username": issued.username, "mqtt_password": issued.password} | trust


@bp.post("/provision")
@api_view(
    "fleet.provision",
    "以管理员令牌注册设备并签发 MQTT 凭据 / provision with an admin token",
    request={"type": "object", "required": ["device_id", "public_key"]},
    response=_CREDENTIALS,
)
def provision() -> ResponseReturnValue:
    """Register the device key (idempotent) and return new MQTT credentials, once."""
    body = json_body(("device_id", "public_key"))
    key = _public_key(body)
    with session_scope() as session:
        issued = fleet_service.provision_with_token(
            session,
            str(body["device_id"]),
            key,
            serial=_text(body, "serial"),
            model=_text(body, "model"),
            actor=actor(),
        )
        device = device_to_dict(get_device(session, issued.device_id))
    _sync_broker()
    return jsonify(device | _credentials(issued)), 201


@device_bp.post("/requests")
@api_view(
    "provisioning.request",
    "设备申请注册（序列号白名单或待审批）/ a device asks to join",
    auth="public",
    request={"type": "object", "required": ["device_id", "public_key", "serial"]},
    response=_OBJ,
    responses={201: "已批准并签发凭据 / approved", 202: "待管理员审批 / pending"},
)
def request_provisioning() -> ResponseReturnValue:
    """Approved at once for an allow-listed serial (credentials returned), else pending with a claim."""
    body = json_body(("device_id", "public_key", "serial"))
    key = _public_key(body)
    with session_scope() as session:
        req, claim, issued = fleet_service.request_provisioning(
            session, str(body["device_id"]), key, serial=str(body["serial"]), model=_text(body, "model") or ""
        )
        answer = {"request_id": req.id, "device_id": req.device_id, "state": req.state, "claim": claim}
    if issued is not None:
        _sync_broker()
    return jsonify(answer | _credentials(issued)), 201 if issued else 202


@device_bp.post("/claim")
@api_view(
    "provisioning.claim",
    "设备领取凭据 / a device collects its credentials",
    auth="public",
    request={"type": "object", "required": ["claim"]},
    response=_OBJ,
    responses={202: "仍待审批 / still pending", 403: "无效或已领取 / refused"},
)
def claim() -> ResponseReturnValue:
    """Credentials once the request is approved (exactly once); 202 while pending."""
    body = json_body(("claim",))
    with session_scope() as session:
        req, issued = fleet_service.collect_credentials(session, str(body["claim"]))
        answer = {"request_id": req.id, "device_id": req.device_id, "state": req.state}
    if issued is not None:
        _sync_broker()
    return jsonify(answer | _credentials(issued)), 200 if issued else 202


@bp.get("/provisioning-requests")
@api_view("fleet.pending_requests", "待审批的注册申请 / pending requests", response=_OBJ)
def pending_requests() -> ResponseReturnValue:
    """Requests waiting for a decision."""
    with session_scope() as session:
        items = [
            {
                "request_id": r.id,
                "device_id": r.device_id,
                "serial": r.serial,
                "model": r.model,
                "created_at": r.created_at.isoformat(),
            }
            for r in fleet_service.pending_requests(session)
        ]
    return jsonify(items=items)


@bp.post("/provisioning-requests/<int:request_id>/<decision>")
@api_view("fleet.decide_request", "批准或拒绝注册申请 / approve or reject", response=_OBJ)
def decide_request(request_id: int, decision: str) -> ResponseReturnValue:
    """``approve`` or ``reject`` a pending request."""
    with session_scope() as session:
        if decision == "approve":
            req = fleet_service.approve_request(session, request_id, actor=actor())
        elif decision == "reject":
            req = fleet_service.reject_request(session, request_id, actor=actor())
        else:
            raise ApiError(404, "not_found", "未知操作", "unknown decision")
        return jsonify(request_id=req.id, device_id=req.device_id, state=req.state)


@bp.post("/allowlist")
@api_view(
    "fleet.allowlist_add",
    "添加序列号白名单 / add serials to the allow-list",
    request={"type": "object", "required": ["serials"]},
    response=_OBJ,
)
def allowlist_add() -> ResponseReturnValue:
    """Add serial numbers devices may join with, without a token or an approval."""
    body = json_body(("serials",))
    if not isinstance(body["serials"], list):
        raise ApiError(400, "invalid_request", "serials 必须是数组", "serials must be a list")
    with session_scope() as session:
        added = fleet_service.add_allowed_serials(
            session, body["serials"], model=_text(body, "model") or "", actor=actor()
        )
    return jsonify(added=added)


@bp.delete("/allowlist/<serial>")
@api_view(
    "fleet.allowlist_remove",
    "从白名单移除未使用的序列号 / remove an unused serial from the allow-list",
    response=_OBJ,
    responses={404: "不在白名单 / not listed", 409: "已被设备使用 / already used by a device"},
)
def allowlist_remove(serial: str) -> ResponseReturnValue:
    """An unused serial no longer lets a device join; a used one stays as that device's record (409)."""
    with session_scope() as session:
        entry = fleet_service.remove_allowed_serial(session, serial, actor=actor())
        return jsonify(removed=entry.serial)


@bp.get("/devices")
@api_view(
    "fleet.list_devices",
    "设备总览（状态、积压、电量筛选）/ fleet overview with filters",
    query={
        "status": {"type": "string"},
        "min_backlog_age_h": {"type": "number"},
        "max_battery_pct": {"type": "integer"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200},
        "after": {"type": "string", "description": "the `next` of the previous page"},
    },
    response=_OBJ,
)
def list_devices() -> ResponseReturnValue:
    """Devices with presence, health, assignment and open alerts, a page at a time."""
    backlog = request.args.get("min_backlog_age_h", type=float)
    battery = request.args.get("max_battery_pct", type=int)
    limit = request.args.get("limit", default=200, type=int)
    if (
        ("min_backlog_age_h" in request.args and backlog is None)
        or ("max_battery_pct" in request.args and battery is None)
        or limit is None
        or not 1 <= limit <= 1000
    ):
        raise ApiError(400, "invalid_request", "筛选或分页参数无效", "bad filter or paging parameter")
    with session_scope() as session:
        items = overview_service.list_overview(
            session,
            status=request.args.get("status") or None,
            min_backlog_age_h=backlog,
            max_battery_pct=battery,
            limit=limit,
            after=request.args.get("after") or None,
        )
    next_after = items[-1]["device_id"] if len(items) == limit else None
    return jsonify(items=items, next=next_after)


@bp.post("/devices/<device_id>/revoke")
@api_view(
    "fleet.revoke",
    "吊销设备（丢失/报废），立即断开代理访问 / revoke a device",
    request={
        "type": "object",
        "properties": {"status": {"enum": list(DeviceStatus.OUT_OF_SERVICE)}, "reason": {}},
    },
    response=_OBJ,
)
def revoke(device_id: str) -> ResponseReturnValue:
    """Status lost/retired and credentials revoked; its stored evidence stays verifiable."""
    body = json_body()
    with session_scope() as session:
        device = fleet_service.revoke_device(
            session,
            device_id,
            status=_text(body, "status") or "lost",
            reason=_text(body, "reason") or "",
            actor=actor(),
        )
        answer = device_to_dict(device)
    _sync_broker()
    return jsonify(answer)


@bp.post("/devices/<device_id>/credentials")
@api_view("fleet.rotate_credentials", "轮换设备 MQTT 凭据 / rotate MQTT credentials", response=_CREDENTIALS)
def rotate_credentials(device_id: str) -> ResponseReturnValue:
    """A new MQTT password (returned once); the old one stops working at the broker's next reload."""
    with session_scope() as session:
        issued = fleet_service.issue_credential(session, device_id, actor=actor(), reason="rotated")
    _sync_broker()
    return jsonify({"device_id": device_id} | _credentials(issued))


@bp.put("/devices/<device_id>/profile")
@api_view(
    "fleet.set_profile",
    "设置设备能力（定位、夜视等，JL-13）/ set capabilities",
    request=_OBJ,
    response=_OBJ,
)
def set_profile(device_id: str) -> ResponseReturnValue:
    """Capabilities (JL-13), agent version, group."""
    body = json_body()
    caps = body.get("capabilities")
    if caps is not None and not isinstance(caps, dict):
        raise ApiError(400, "invalid_request", "capabilities 必须是对象", "capabilities must be an object")
    with session_scope() as session:
        fleet_service.set_profile(
            session,
            device_id,
            capabilities=caps,
            agent_version=_text(body, "agent_version"),
            group_name=_text(body, "group"),
            actor=actor(),
        )
        return jsonify(overview_service.device_overview(session, get_device(session, device_id)))


@bp.post("/devices/<device_id>/check-out")
@api_view(
    "fleet.check_out",
    "领用设备 / check a device out to an officer",
    request={"type": "object", "required": ["user_id"]},
    response=_OBJ,
    responses={409: "电量不足或已领用 / battery too low or already out"},
)
def check_out(device_id: str) -> ResponseReturnValue:
    """Hand the device to an officer (a user id) if charged enough."""
    body = json_body(("user_id",))
    if isinstance(body["user_id"], bool) or not isinstance(body["user_id"], int):
        raise ApiError(400, "invalid_request", "user_id 必须是整数", "user_id must be an integer")
    with session_scope() as session:
        row = assignment_service.check_out(
            session,
            device_id,
            body["user_id"],
            min_battery_pct=_settings().fleet_min_checkout_battery_pct,
            actor=actor(),
        )
        return jsonify(assignment_service.assignment_to_dict(row)), 201


@bp.post("/devices/<device_id>/check-in")
@api_view("fleet.check_in", "归还设备 / check a device in", response=_OBJ)
def check_in(device_id: str) -> ResponseReturnValue:
    """Take the device back."""
    with session_scope() as session:
        row = assignment_service.check_in(session, device_id, actor=actor())
        return jsonify(assignment_service.assignment_to_dict(row))


@bp.get("/devices/<device_id>/assignments")
@api_view("fleet.assignments", "领用记录 / assignment history", response=_OBJ)
def assignments(device_id: str) -> ResponseReturnValue:
    """Every check-out of the device, newest first."""
    with session_scope() as session:
        get_device(session, device_id)
        rows = assignment_service.assignment_history(session, device_id)
        return jsonify(items=[assignment_service.assignment_to_dict(r) for r in rows])


@bp.get("/alerts")
@api_view(
    "fleet.alerts", "未关闭的设备告警 / open alerts", query={"device_id": {"type": "string"}}, response=_OBJ
)
def alerts() -> ResponseReturnValue:
    """Open alerts, critical first (evaluated by the runner's housekeeping)."""
    with session_scope() as session:
        rows = alert_service.open_alerts(session, request.args.get("device_id") or None)
        return jsonify(items=[alert_service.alert_to_dict(r) for r in rows])


@bp.post("/alerts/evaluate")
@api_view("fleet.evaluate_alerts", "立即评估告警 / evaluate alerts now", response=_OBJ)
def evaluate_alerts() -> ResponseReturnValue:
    """Run the alert rules now (they also run in the runner's housekeeping)."""
    offline = timedelta(minutes=_settings().fleet_offline_alert_minutes)
    with session_scope() as session:
        counts = alert_service.evaluate_alerts(session, offline_after=offline)
    return jsonify(counts)


@bp.put("/config/<scope>/<target>")
@api_view(
    "fleet.set_config",
    "设置期望配置（设备或分组）/ set desired configuration for a device or group",
    request={"type": "object", "required": ["settings"]},
    response=_OBJ,
)
def set_config(scope: str, target: str) -> ResponseReturnValue:
    """A new config version; the dispatcher publishes it (retained) to the devices concerned."""
    body = json_body(("settings",))
    if not isinstance(body["settings"], dict):
        raise ApiError(400, "invalid_request", "settings 必须是对象", "settings must be an object")
    with session_scope() as session:
        row = config_service.set_desired(
            session, scope=scope, target=target, settings=body["settings"], actor=actor()
        )
        return jsonify(version=row.id, scope=row.scope, target=row.target, settings=row.settings), 201


@bp.get("/devices/<device_id>/shadow")
@api_view("fleet.shadow", "设备配置影子（期望/上报）/ desired vs reported configuration", response=_OBJ)
def shadow(device_id: str) -> ResponseReturnValue:
    """Desired and reported configuration of a device."""
    with session_scope() as session:
        return jsonify(config_service.shadow(session, device_id))


def _ttl(body: dict[str, Any]) -> timedelta:
    value = body.get("ttl_s", int(command_service.DEFAULT_TTL.total_seconds()))
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_request", "ttl_s 必须是整数", "ttl_s must be an integer")
    return timedelta(seconds=value)


@bp.post("/devices/<device_id>/commands")
@api_view(
    "fleet.create_command",
    "向设备下发命令 / send a command to a device",
    request={
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string"},
            "params": {"type": ["object", "null"]},
            # services.commands: 10 s .. MAX_TTL (30 days); checked at the edge before any timedelta.
            "ttl_s": {"type": "integer", "minimum": 10, "maximum": 30 * 86400},
        },
    },
    response=_OBJ,
)
def create_command(device_id: str) -> ResponseReturnValue:
    """Queue a command; it is delivered now if the device is online, else when it comes online."""
    body = json_body(("kind",))
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise ApiError(400, "invalid_request", "params 必须是对象", "params must be an object")
    with session_scope() as session:
        row = command_service.create_command(
            session, device_id, str(body["kind"]), params=params, ttl=_ttl(body), actor=actor()
        )
        return jsonify(command_service.command_to_dict(row)), 201


@bp.get("/devices/<device_id>/commands")
@api_view("fleet.list_commands", "设备命令记录 / a device's commands", response=_OBJ)
def list_commands(device_id: str) -> ResponseReturnValue:
    """Newest first."""
    with session_scope() as session:
        rows = command_service.list_commands(session, device_id)
        return jsonify(items=[command_service.command_to_dict(r) for r in rows])
