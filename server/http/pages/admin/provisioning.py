"""Provisioning: pending requests (approve / refuse) and the serial allow-list (add, remove)."""

from __future__ import annotations

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.errors import ServiceError
from server.domain.fleet import queries
from server.domain.fleet import service as fleet_service
from server.http.pages.admin.base import (
    actor,
    audit,
    bp,
    console_view,
    error_page,
    may,
    message_of,
    redirect_back,
    render,
    texts,
)
from server.infra.db import session_scope

__all__ = ["allowlist_add", "allowlist_remove", "decide_request", "provisioning"]

_ALLOWLIST_SHOWN = 500


@bp.get("/provisioning")
@console_view("fleet.pending_requests")
def provisioning() -> ResponseReturnValue:
    """Pending provisioning requests (approve / refuse) and the serial allow-list."""
    with session_scope() as session:
        requests = [
            {
                "request_id": r.id,
                "device_id": r.device_id,
                "serial": r.serial,
                "model": r.model,
                "created_at": r.created_at,
            }
            for r in fleet_service.pending_requests(session)
        ]
        allowlist = [
            {"serial": e.serial, "model": e.model, "added_at": e.added_at, "used_by": e.used_by_device}
            for e in queries.allowlist_entries(session, limit=_ALLOWLIST_SHOWN)
        ]
        audit(session, "device.provisioning_view", None, {"pending": len(requests)})
    return render(
        "provisioning.html",
        requests=requests,
        allowlist=allowlist,
        may_decide=may("fleet.decide_request"),
        may_allow=may("fleet.allowlist_add"),
        may_remove=may("fleet.allowlist_remove"),
    )


@bp.post("/provisioning/<int:request_id>/<decision>")
@console_view("fleet.decide_request")
def decide_request(request_id: int, decision: str) -> ResponseReturnValue:
    """Approve or refuse one pending request (the same service calls as the API)."""
    back = url_for("admin_console.provisioning")
    by = actor()
    try:
        with session_scope() as session:
            if decision == "approve":
                req = fleet_service.approve_request(session, request_id, actor=by)
                # reject_request audits itself; approval is recorded here, with the request it decided.
                audit(session, "device.provision_approve", req.device_id, {"request_id": request_id})
            elif decision == "reject":
                fleet_service.reject_request(session, request_id, actor=by)
            else:
                return error_page(404, "unknown decision")
    except ServiceError as exc:
        return redirect_back(back, "error", message_of(exc))
    return redirect_back(back, "ok", texts()["done"].format(ok=1, n=1))


@bp.post("/allowlist")
@console_view("fleet.allowlist_add")
def allowlist_add() -> ResponseReturnValue:
    """Add serials (one per line or comma separated) to the allow-list."""
    back = url_for("admin_console.provisioning")
    serials = [part for part in request.form.get("serials", "").replace(",", "\n").split() if part]
    if not serials:
        return redirect_back(back, "error", texts()["no_settings"])
    try:
        with session_scope() as session:
            added = fleet_service.add_allowed_serials(
                session,
                serials,
                model=request.form.get("model", "").strip()[:128],
                actor=actor(),
            )
    except ServiceError as exc:
        return redirect_back(back, "error", message_of(exc))
    return redirect_back(back, "ok", texts()["allowlist_added"].format(n=added))


@bp.post("/allowlist/remove")
@console_view("fleet.allowlist_remove")
def allowlist_remove() -> ResponseReturnValue:
    """Take one unused serial off the allow-list (a used one stays as its device's record)."""
    back = url_for("admin_console.provisioning")
    try:
        with session_scope() as session:
            entry = fleet_service.remove_allowed_serial(
                session, request.form.get("serial", ""), actor=actor()
            )
    except ServiceError as exc:
        return redirect_back(back, "error", message_of(exc))
    return redirect_back(back, "ok", texts()["allowlist_removed"].format(serial=entry.serial))
