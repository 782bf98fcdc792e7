"""Signed update endpoints: upload a bundle, devices download it, staged rollouts to a device group."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.fleet import rollouts as rollout_service
from server.http.context import actor, get_store, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.config import Settings
from server.infra.db import session_scope
from server.infra.fsmode import private_dir

__all__ = ["bp", "device_bp"]

bp = Blueprint("rollouts", __name__)
# Devices hold no user token: their download lives outside /api/ (where every route needs one), like
# provisioning, and is authorised by the per-command token instead.
device_bp = Blueprint("device_updates", __name__)

_OBJ: dict[str, object] = {"type": "object"}
_COPY_CHUNK = 1024 * 1024


def _settings() -> Settings:
    settings: Settings = current_app.extensions["zfjl.settings"]
    return settings


def _int(body: dict[str, object], name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_request", f"{name} 必须是整数", f"{name} must be an integer")
    return value


@bp.post("/updates")
@api_view(
    "rollouts.upload_bundle",
    "上传签名升级包（raw 或 multipart 字段 bundle）/ upload a signed update bundle",
    request={"type": "string", "format": "binary"},
    response=_OBJ,
    responses={201: "已接受 / accepted", 422: "签名或哈希不符 / signature or hash refused"},
)
def upload_bundle() -> ResponseReturnValue:
    """Stream the bundle to staging, verify it against the trusted update keys, store it."""
    # Bundles are far larger than the 1 MiB API default; the limit applies to this view only.
    request.max_content_length = rollout_service.MAX_BUNDLE_BYTES
    settings = _settings()
    private_dir(settings.staging_dir)
    upload = request.files.get("bundle") if request.mimetype == "multipart/form-data" else None
    source = upload.stream if upload is not None else request.stream
    fd, name = tempfile.mkstemp(prefix="bundle-", suffix=".tmp", dir=settings.staging_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            while chunk := source.read(_COPY_CHUNK):
                sink.write(chunk)
        if path.stat().st_size == 0:
            raise ApiError(400, "invalid_request", "请求体为空", "empty body: send the bundle file")
        with session_scope() as session:
            row = rollout_service.register_bundle(
                session,
                get_store(),
                path,
                keys=rollout_service.trusted_update_keys(settings),
                actor=actor(),
            )
            answer = rollout_service.bundle_to_dict(row)
    finally:
        path.unlink(missing_ok=True)
    return jsonify(answer), 201


@bp.get("/updates")
@api_view("rollouts.list_bundles", "已登记的升级包 / registered update bundles", response=_OBJ)
def list_bundles() -> ResponseReturnValue:
    """Every registered bundle, newest first."""
    with session_scope() as session:
        items = [rollout_service.bundle_to_dict(row) for row in rollout_service.list_bundles(session)]
    return jsonify(items=items)


@device_bp.get("/bundles/<bundle_id>")
@api_view(
    "device_updates.download_bundle",
    "设备下载升级包（命令中的一次性下载凭证）/ a device downloads its bundle with the command's token",
    auth="public",
    query={"token": {"type": "string"}},
    responses={403: "凭证无效 / token refused"},
    response_content_type="application/octet-stream",
)
def download_bundle(bundle_id: str) -> ResponseReturnValue:
    """The bundle bytes, streamed from the object store, for the device whose command holds the token."""
    with session_scope() as session:
        row = rollout_service.bundle_for_download(session, bundle_id, request.args.get("token", ""))
        key, size, sha256 = row.object_key, row.size, row.sha256
    body = get_store().open_range(key, 0, size - 1)
    headers = {"Content-Length": str(size), "ETag": f'"{sha256}"', "Cache-Control": "no-store"}
    return Response(body, headers=headers, mimetype="application/octet-stream", direct_passthrough=True)


@bp.post("/rollouts")
@api_view(
    "rollouts.create_rollout",
    "分批升级一个设备分组 / staged rollout of a bundle to a device group",
    request={
        "type": "object",
        "required": ["bundle_id", "group"],
        "properties": {
            "bundle_id": {"type": "string"},
            "group": {"type": "string"},
            "batch_size": {"type": "integer", "minimum": 1},
            "batch_percent": {"type": "integer", "minimum": 1, "maximum": 100},
            "success_threshold_pct": {"type": "integer", "minimum": 0, "maximum": 100},
            # Bounded like every command's TTL (services.commands.MAX_TTL); checked at the edge.
            "ttl_s": {"type": "integer", "minimum": 10, "maximum": 30 * 86400},
        },
    },
    response=_OBJ,
)
def create_rollout() -> ResponseReturnValue:
    """Plan the batches and send the first one its apply_update commands."""
    body = json_body(("bundle_id", "group"))
    ttl = _int(body, "ttl_s", int(rollout_service.DEFAULT_COMMAND_TTL.total_seconds()))
    assert ttl is not None
    # Devices must reach the download URL: the configured public URL, else the one this call came in on.
    base_url = _settings().public_url or request.host_url
    with session_scope() as session:
        rollout = rollout_service.create_rollout(
            session,
            bundle_id=str(body["bundle_id"]),
            group=str(body["group"]),
            base_url=base_url,
            actor=actor(),
            batch_size=_int(body, "batch_size", None),
            batch_percent=_int(body, "batch_percent", None),
            success_threshold_pct=_int(body, "success_threshold_pct", 100) or 0,
            command_ttl=timedelta(seconds=ttl),
        )
        answer = rollout_service.rollout_to_dict(session, rollout)
    return jsonify(answer), 201


@bp.get("/rollouts/<int:rollout_id>")
@api_view("rollouts.get_rollout", "升级任务与各设备结果 / a rollout with per-device results", response=_OBJ)
def get_rollout(rollout_id: int) -> ResponseReturnValue:
    """The rollout, advanced to the latest command states first."""
    with session_scope() as session:
        rollout = rollout_service.get_rollout(session, rollout_id)
        rollout_service.advance(session, rollout)
        answer = rollout_service.rollout_to_dict(session, rollout)
    return jsonify(answer)
