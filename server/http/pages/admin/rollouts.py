"""Updates: registered bundles, recent rollouts with per-device results, and starting a staged rollout."""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.errors import ServiceError
from server.domain.fleet import queries
from server.domain.fleet import rollouts as rollout_service
from server.http.pages.admin.base import (
    actor,
    audit,
    bp,
    console_view,
    may,
    message_of,
    redirect_back,
    render,
    settings,
    texts,
)
from server.http.pages.admin.forms import optional_int
from server.infra.db import session_scope

__all__ = ["rollouts", "start_rollout"]

_ROLLOUTS_SHOWN = 50


@bp.get("/rollouts")
@console_view("rollouts.list_bundles")
def rollouts() -> ResponseReturnValue:
    """Registered bundles, recent rollouts with per-device results, and the form to start one."""
    may_see_rollouts = may("rollouts.get_rollout")
    with session_scope() as session:
        bundles = [rollout_service.bundle_to_dict(row) for row in rollout_service.list_bundles(session)]
        rows: list[dict[str, Any]] = []
        if may_see_rollouts:
            for rollout in queries.recent_rollouts(session, limit=_ROLLOUTS_SHOWN):
                rollout_service.advance(session, rollout)  # as GET /api/v1/fleet/rollouts/{id} does
                rows.append(rollout_service.rollout_to_dict(session, rollout))
        groups = queries.group_names(session)
        audit(session, "device.rollouts_view", None, {"bundles": len(bundles), "rollouts": len(rows)})
    return render(
        "rollouts.html",
        bundles=bundles,
        rollouts=rows,
        groups=groups,
        may_start=may("rollouts.create_rollout"),
    )


@bp.post("/rollouts")
@console_view("rollouts.create_rollout")
def start_rollout() -> ResponseReturnValue:
    """Start a staged rollout of a bundle to a group (rollout_service.create_rollout's rules)."""
    back = url_for("admin_console.rollouts")
    form = request.form
    try:
        threshold = optional_int(form, "success_threshold_pct")  # the API's default: 100 %
        with session_scope() as session:
            rollout = rollout_service.create_rollout(
                session,
                bundle_id=form.get("bundle_id", ""),
                group=form.get("group", ""),
                base_url=settings().public_url or request.host_url,
                actor=actor(),
                batch_size=optional_int(form, "batch_size"),
                batch_percent=optional_int(form, "batch_percent"),
                success_threshold_pct=100 if threshold is None else threshold,
            )
            rollout_id = rollout.id
    except ServiceError as exc:
        return redirect_back(back, "error", message_of(exc))
    return redirect_back(back, "ok", texts()["rollout_started"].format(id=rollout_id))
