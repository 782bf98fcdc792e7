"""One device's page: identity, presence, 24 h health charts, assignments, alerts, commands, configuration,
its forms, and the revocation and credential rotation that change its broker access."""

from __future__ import annotations

from flask import redirect, request, url_for
from flask.typing import ResponseReturnValue

from server.domain.base import utcnow
from server.domain.errors import ServiceError
from server.domain.fleet import alerts as alert_service
from server.domain.fleet import assignments as assignment_service
from server.domain.fleet import commands as command_service
from server.domain.fleet import config as config_service
from server.domain.fleet import overview as overview_service
from server.domain.fleet import queries
from server.domain.fleet import service as fleet_service
from server.domain.fleet.broker_accounts import sync_broker
from server.domain.fleet.devices import device_to_dict, get_device
from server.http.pages.admin.base import (
    actor,
    audit,
    bp,
    console_view,
    error_page,
    flash,
    last_seen,
    may,
    message_of,
    redirect_back,
    render,
    settings,
    texts,
)
from server.http.pages.admin.charts import CHART_WINDOW, health_charts
from server.http.pages.admin.forms import ACTION_ENDPOINT, CONFIG_INPUTS, DEVICE_COMMANDS, apply_action
from server.infra.db import session_scope

__all__ = ["device", "device_action", "revoke", "revoke_form", "rotate_credentials"]

# The device page lists the latest assignments and alerts only; the API has the full history.
_ASSIGNMENTS_SHOWN = 20
_ALERTS_SHOWN = 30


@bp.get("/devices/<device_id>")
@console_view()
def device(device_id: str) -> ResponseReturnValue:
    """Identity, presence, 24 h health charts, assignments, alerts, commands, configuration, actions."""
    now = utcnow()
    start = now - CHART_WINDOW
    with session_scope() as session:
        row = get_device(session, device_id)
        identity = device_to_dict(row)
        overview = overview_service.device_overview(session, row)
        overview["last_seen"] = last_seen(overview)
        charts = health_charts(queries.health_since(session, device_id, start), texts(), start=start, end=now)
        assignments = assignment_service.assignment_history(session, device_id)[:_ASSIGNMENTS_SHOWN]
        history = [assignment_service.assignment_to_dict(a) for a in assignments]
        alerts = [
            alert_service.alert_to_dict(a)
            for a in queries.device_alerts(session, device_id, limit=_ALERTS_SHOWN)
        ]
        commands = [
            command_service.command_to_dict(c) for c in command_service.list_commands(session, device_id)
        ]
        shadow = config_service.shadow(session, device_id)
        labels = queries.user_labels(session, {a["user_id"] for a in history})
        officers = queries.checkout_candidates(session) if may("fleet.check_out") else []
        audit(session, "device.view", device_id, {})
    return render(
        "device.html",
        identity=identity,
        d=overview,
        charts=charts,
        history=history,
        alerts=alerts,
        commands=commands,
        shadow=shadow,
        labels=labels,
        officers=officers,
        device_commands=DEVICE_COMMANDS,
        config_fields=CONFIG_INPUTS,
        here=url_for("admin_console.device", device_id=device_id),
        can={
            e: may(f"fleet.{e}")
            for e in ("check_out", "check_in", "set_config", "create_command", "revoke", "rotate_credentials")
        },
    )


@bp.post("/devices/<device_id>/action")
@console_view()
def device_action(device_id: str) -> ResponseReturnValue:
    """Check out, check in, set configuration or send a command (the device page's forms)."""
    t = texts()
    action = request.form.get("action", "")
    endpoint = ACTION_ENDPOINT.get(action)
    if endpoint is None:
        return error_page(400, "unknown action")
    if not may(endpoint):
        return error_page(403, t["forbidden_action"])
    back = url_for("admin_console.device", device_id=device_id)
    try:
        apply_action(device_id, action, request.form)
    except ServiceError as exc:
        return redirect_back(back, "error", message_of(exc))
    return redirect_back(back, "ok", t["done"].format(ok=1, n=1))


def _sync_broker() -> None:
    """Regenerate the broker's password and ACL files after a committed registry change (as the API)."""
    with session_scope() as session:
        sync_broker(session, settings())


@bp.get("/devices/<device_id>/revoke")
@console_view("fleet.revoke")
def revoke_form(device_id: str) -> ResponseReturnValue:
    """The confirm step before a revocation."""
    with session_scope() as session:
        identity = device_to_dict(get_device(session, device_id))
    return render("revoke.html", identity=identity)


@bp.post("/devices/<device_id>/revoke")
@console_view("fleet.revoke")
def revoke(device_id: str) -> ResponseReturnValue:
    """Revoke (lost/retired) once confirmed; the device's stored evidence stays verifiable (JL-19)."""
    t = texts()
    if request.form.get("confirm") != "yes":
        return redirect(url_for("admin_console.revoke_form", device_id=device_id), 303)
    back = url_for("admin_console.device", device_id=device_id)
    try:
        with session_scope() as session:
            fleet_service.revoke_device(
                session,
                device_id,
                status=request.form.get("status", "lost"),
                reason=request.form.get("reason", "")[:255],
                actor=actor(),
            )
    except ServiceError as exc:
        return flash(redirect(back, 303), "error", message_of(exc))
    _sync_broker()
    return flash(redirect(back, 303), "ok", t["done"].format(ok=1, n=1))


@bp.post("/devices/<device_id>/credentials")
@console_view("fleet.rotate_credentials")
def rotate_credentials(device_id: str) -> ResponseReturnValue:
    """A new MQTT password, shown on this response only (never stored in clear, never flashed)."""
    with session_scope() as session:
        issued = fleet_service.issue_credential(session, device_id, actor=actor(), reason="rotated")
    _sync_broker()
    return render("credential.html", issued=issued)
