"""Device groups: member counts and desired configuration, and the form to set a group's."""

from __future__ import annotations

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.errors import ServiceError
from server.domain.fleet import config as config_service
from server.http.pages.admin.base import (
    actor,
    audit,
    bp,
    console_view,
    may,
    message_of,
    redirect_back,
    render,
    texts,
)
from server.http.pages.admin.forms import CONFIG_INPUTS, config_settings
from server.infra.db import session_scope

__all__ = ["group_config", "groups"]


@bp.get("/groups")
@console_view()
def groups() -> ResponseReturnValue:
    """Device groups with member counts and desired configuration; the form to set a group's."""
    with session_scope() as session:
        rows = config_service.group_overview(session)
        audit(session, "device.groups_view", None, {"groups": len(rows)})
    return render("groups.html", rows=rows, config_fields=CONFIG_INPUTS, may_set=may("fleet.set_config"))


@bp.post("/groups/config")
@console_view("fleet.set_config")
def group_config() -> ResponseReturnValue:
    """A new desired config version for a group (the same service call as PUT /config/group/{name})."""
    back = url_for("admin_console.groups")
    try:
        with session_scope() as session:
            row = config_service.set_desired(
                session,
                scope="group",
                target=request.form.get("group", "").strip(),
                settings=config_settings(request.form),
                actor=actor(),
            )
            message = texts()["group_config_set"].format(group=row.target, version=row.id)
    except ServiceError as exc:
        return redirect_back(back, "error", message_of(exc))
    return redirect_back(back, "ok", message)
