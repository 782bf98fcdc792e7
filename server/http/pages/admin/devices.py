"""The fleet pages: the device list (filtered, paginated) with its bulk actions, and the open alerts."""

from __future__ import annotations

from typing import Any, cast

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.errors import ServiceError
from server.domain.fleet import alerts as alert_service
from server.domain.fleet import overview as overview_service
from server.domain.fleet import queries
from server.domain.fleet.models import DEVICE_STATUSES
from server.http.pages.admin.base import (
    audit,
    bp,
    console_view,
    error_page,
    last_seen,
    may,
    message_of,
    redirect_back,
    render,
    texts,
)
from server.http.pages.admin.forms import ACTION_ENDPOINT, BULK_COMMANDS, CONFIG_INPUTS, apply_action
from server.infra.db import session_scope

__all__ = ["PAGE_SIZE", "alerts", "bulk", "devices"]

PAGE_SIZE = 50


def _list_filters() -> dict[str, Any]:
    """The list's filters from the query string (malformed numbers are ignored)."""
    presence = request.args.get("presence") or None
    return {
        "status": request.args.get("status") or None,
        "group": request.args.get("group") or None,
        "presence": presence if presence in ("online", "offline") else None,
        "min_backlog_age_h": request.args.get("min_backlog_age_h", type=float),
        "max_battery_pct": request.args.get("max_battery_pct", type=int),
    }


@bp.get("/devices")
@console_view()
def devices() -> ResponseReturnValue:
    """The fleet, filtered and paginated, with bulk actions for device admins."""
    filters = _list_filters()
    page = max(request.args.get("page", 1, type=int), 1)
    with session_scope() as session:
        rows = overview_service.list_overview(session, **filters)
        pages = max((len(rows) + PAGE_SIZE - 1) // PAGE_SIZE, 1)
        page = min(page, pages)
        shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        for row in shown:
            row["last_seen"] = last_seen(row)
        labels = queries.user_labels(
            session, {r["assigned_to"] for r in shown if r["assigned_to"] is not None}
        )
        groups = queries.group_names(session)
        officers = queries.checkout_candidates(session) if may("fleet.check_out") else []
        audit(
            session,
            "device.list",
            None,
            {
                "filters": {k: v for k, v in filters.items() if v is not None},
                "page": page,
                "count": len(rows),
            },
        )
    query = {k: v for k, v in request.args.items() if k not in ("page", "lang") and v}
    return render(
        "devices.html",
        rows=shown,
        total=len(rows),
        page=page,
        pages=pages,
        filters=filters,
        groups=groups,
        labels=labels,
        officers=officers,
        statuses=DEVICE_STATUSES,
        bulk_commands=BULK_COMMANDS,
        config_fields=CONFIG_INPUTS,
        page_url=lambda p: url_for("admin_console.devices", **cast(dict[str, Any], query | {"page": p})),
        here=request.full_path,
        can_bulk=may("fleet.check_out") or may("fleet.set_config") or may("fleet.create_command"),
        can={e: may(f"fleet.{e}") for e in ("check_out", "set_config", "create_command")},
    )


@bp.post("/devices/bulk")
@console_view()
def bulk() -> ResponseReturnValue:
    """Assign, configure or command the selected devices; each device succeeds or fails on its own."""
    t = texts()
    action = request.form.get("action", "")
    endpoint = ACTION_ENDPOINT.get(action)
    if endpoint is None:
        return error_page(400, "unknown action")
    if not may(endpoint):
        return error_page(403, t["forbidden_action"])
    selected = list(dict.fromkeys(request.form.getlist("device")))
    fallback = url_for("admin_console.devices")
    if not selected:
        return redirect_back(fallback, "error", t["nothing_selected"])
    failures: list[str] = []
    for device_id in selected:
        try:
            apply_action(device_id, action, request.form)
        except ServiceError as exc:
            failures.append(f"{device_id}：{message_of(exc)}")
    message = t["done"].format(ok=len(selected) - len(failures), n=len(selected))
    if failures:
        message += "；" + "；".join(failures[:10]) + ("…" if len(failures) > 10 else "")
    return redirect_back(fallback, "error" if failures else "ok", message)


@bp.get("/alerts")
@console_view("fleet.alerts")
def alerts() -> ResponseReturnValue:
    """Open alerts across the fleet, critical first."""
    with session_scope() as session:
        rows = [alert_service.alert_to_dict(a) for a in alert_service.open_alerts(session)]
        audit(session, "device.alerts", None, {"count": len(rows)})
    return render("alerts.html", rows=rows)
