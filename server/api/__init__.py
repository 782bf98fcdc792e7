"""HTTP API: one blueprint per resource, thin views over the service layer."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request
from sqlalchemy.orm import Session

from server.errors import ApiError
from server.services import write_audit
from server.storage import ObjectStore

__all__ = ["actor", "audit_request", "client_ip", "get_store", "json_body", "register_blueprints"]

STORE_KEY = "zfjl.store"


def get_store() -> ObjectStore:
    """The current app's object store."""
    store: ObjectStore = current_app.extensions[STORE_KEY]
    return store


def actor() -> str:
    """The authenticated user's id as the audit actor."""
    from flask_jwt_extended import get_jwt_identity

    return str(get_jwt_identity())


def audit_request(
    session: Session,
    action: str,
    target_type: str,
    target_id: str | int | None,
    *,
    detail: dict[str, Any] | None = None,
) -> None:
    """Audit an access by the current caller from the current client (every access to evidence is)."""
    write_audit(
        session,
        actor=actor(),
        action=action,
        target_type=target_type,
        target_id=target_id,
        detail=detail,
        client_ip=client_ip(),
    )


def client_ip() -> str | None:
    """The client address (the reverse proxy is expected to set it via ProxyFix when used)."""
    return request.remote_addr


def json_body(required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object, required keys present, declared fields of their declared type.

    Parsing is strict (server.api.parsing): depth, lone surrogates and 64-bit numbers are refused with
    a precise ApiError 400 before any field is read; the types come from the view's ``api_view(request=…)``.
    """
    from server.api.parsing import check_body

    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "请求体必须是 JSON 对象", "request body must be a JSON object")
    missing = [k for k in required if body.get(k) in (None, "")]
    if missing:
        raise ApiError(
            400, "invalid_request", f"缺少字段：{', '.join(missing)}", f"missing fields: {', '.join(missing)}"
        )
    check_body(body)
    return body


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint."""
    from server.api import auth, devices, fleet, health, openapi, recordings

    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(auth.bp, url_prefix="/api/v1/auth")
    app.register_blueprint(devices.bp, url_prefix="/api/v1/devices")
    app.register_blueprint(recordings.bp, url_prefix="/api/v1/recordings")
    from server.api import integrity  # JL-6: on-demand evidence scrub

    app.register_blueprint(integrity.bp, url_prefix="/api/v1/integrity")
    from server.http.api import ledger  # JL-6, JL-23: the evidence ledger (docs/ledger.md)

    app.register_blueprint(ledger.bp, url_prefix="/api/v1/ledger")
    app.register_blueprint(ledger.public_bp, url_prefix="/ledger/v1")
    # People, credentials and cases (GS-9, GS-10, JL-7 – JL-11).
    from server.api import cases, credentials, mobile, people, verify

    app.register_blueprint(people.bp, url_prefix="/api/v1")
    app.register_blueprint(credentials.bp, url_prefix="/api/v1")
    app.register_blueprint(cases.bp, url_prefix="/api/v1/cases")
    app.register_blueprint(verify.bp)
    app.register_blueprint(mobile.bp)
    app.register_blueprint(fleet.bp, url_prefix="/api/v1/fleet")
    app.register_blueprint(fleet.device_bp, url_prefix="/provisioning/v1")
    # Enforcement sessions and continuity (JL-12, JL-15, JL-16).
    from server.api import sessions

    app.register_blueprint(sessions.bp, url_prefix="/api/v1/sessions")
    # Signed updates and staged rollouts (issue #5, docs/fleet.md).
    from server.api import rollouts

    app.register_blueprint(rollouts.bp, url_prefix="/api/v1/fleet")
    app.register_blueprint(rollouts.device_bp, url_prefix="/updates/v1")
    # Device admin console (server-rendered pages over the fleet services, issue #5).
    from server.api import admin_console

    app.register_blueprint(admin_console.bp)
