"""Request context helpers shared by every view: the object store, the caller, audit, the JSON body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app, request

from server.domain.audit import write_audit
from server.domain.people.service import Caller
from server.http.errors import ApiError
from server.infra.storage import STORE_KEY, ObjectStore

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["actor", "audit_request", "caller", "client_ip", "get_store", "json_body"]



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
    """The client address: the socket's, or behind ``ZFJL_TRUSTED_PROXY_HOPS`` proxies the one they passed."""
    return request.remote_addr


def json_body(required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object, required keys present, declared fields of their declared type.

    Parsing is strict (server.http.parsing): depth, lone surrogates and 64-bit numbers are refused with
    a precise ApiError 400 before any field is read; the types come from the view's ``api_view(request=…)``.
    """
    from server.http.parsing import check_body

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


def caller() -> Caller:
    """The authenticated caller (user id, role, agency) from the access token."""
    from flask_jwt_extended import get_jwt, get_jwt_identity

    claims = get_jwt()
    agency_id = claims.get("agency_id")
    return Caller(
        str(get_jwt_identity()), str(claims.get("role")), agency_id if isinstance(agency_id, int) else None
    )
