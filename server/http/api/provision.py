"""External provision by expiring link (JL-20): build the sealed export package, then serve it by link.

``POST /api/v1/governance/requests/{id}/export`` (the requester or the agency head, once the request is
approved) seals the export package and answers the link; ``GET /provision/v1/{token}`` serves the zip to
whoever holds the link, without login, until the grant expires. The rules are
``server/domain/governance/provision.py``; docs/governance.md explains it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.governance import ledger, provision
from server.http.context import caller, client_ip, get_store
from server.http.openapi import api_view
from server.infra.agency_keys import AgencyKeyring
from server.infra.db import session_scope

__all__ = ["bp", "public_bp"]

bp = Blueprint("provision", __name__)
public_bp = Blueprint("provision_public", __name__)

_EXPORT = {
    "type": "object",
    "properties": {
        "export_id": {"type": "integer"},
        "request_id": {"type": "integer"},
        "bag_name": {"type": "string"},
        "zip_sha256": {"type": "string"},
        "zip_size": {"type": "integer"},
        "recording_count": {"type": "integer"},
        "expires_at": {"type": "string", "format": "date-time"},
        "url": {"type": "string", "description": "the expiring link to hand to the recipient (no login)"},
    },
}


@bp.post("/requests/<int:request_id>/export")
@api_view(
    "provision.create_export",
    "生成对外提供的封存导出包及限时链接 / seal the export package of an approved external provision and "
    "answer its expiring link (JL-20)",
    response=_EXPORT,
    responses={
        201: "已生成 / sealed",
        403: "未获批准或已过期 / approval_required (audited); not the requester or head",
        409: "不是对外提供申请 / not_external_provision",
    },
)
def create_export(request_id: int) -> ResponseReturnValue:
    """Seal the grant's export package; the answer's ``url`` is what the recipient gets."""
    settings = current_app.extensions["zfjl.settings"]
    with tempfile.TemporaryDirectory(prefix="zfjl-export-") as work, session_scope() as session:
        built = provision.create_export(
            session, caller(), request_id, store=get_store(),
            signer=ledger.LedgerSigner.from_ingest_key(settings.ingest_key),
            keyring=AgencyKeyring.from_settings(settings), link_secret=settings.jwt_secret,
            work_dir=Path(work),
        )  # fmt: skip
        row = built.row
        base = (settings.public_url or request.host_url).rstrip("/")
        return jsonify(
            export_id=row.id,
            request_id=row.request_id,
            bag_name=row.bag_name,
            zip_sha256=row.zip_sha256,
            zip_size=row.zip_size,
            recording_count=row.recording_count,
            expires_at=row.expires_at.isoformat(),
            url=f"{base}/provision/v1/{built.token}",
        ), 201


@public_bp.get("/<string:token>")
@api_view(
    "provision_public.download",
    "凭限时链接下载对外提供的封存导出包（无需登录，每次下载留痕）/ download a sealed export package by "
    "its expiring link (no login; every download audited)",
    auth="public",
    response={"type": "string", "format": "binary"},
    response_content_type="application/zip",
    responses={403: "链接无效或已过期 / link_invalid, link_expired (audited)"},
)
def download(token: str) -> ResponseReturnValue:
    """The export's zip, if the link is ours and its grant has not expired."""
    settings = current_app.extensions["zfjl.settings"]
    with session_scope() as session:
        row = provision.open_link(session, settings.jwt_secret, token, client_ip=client_ip())
        key, size, name, digest = row.object_key, row.zip_size, row.bag_name, row.zip_sha256
    body = get_store().open_range(key, 0, size - 1)
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{name}.zip"',
        "ETag": f'"{digest}"',
        "Cache-Control": "private, no-store",
        "Referrer-Policy": "no-referrer",
    }
    return Response(body, headers=headers, mimetype="application/zip", direct_passthrough=True)
