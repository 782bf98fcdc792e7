"""Recordings and devices for reviewers: stored segments, chain status, backlog and the 24-hour rule.

JL-17 asks that recordings reach the agency's storage within 24 hours. Two facts show it here: the
backlog the device itself reports (its oldest pending segment's age, warned from 20 h) and, for what is
already stored, segments whose arrival came more than 24 hours after their end.
"""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from server.domain.evidence import queries as recording_service
from server.domain.evidence.queries import UPLOAD_LIMIT
from server.domain.fleet import alerts as alert_service
from server.domain.fleet import overview as fleet_service
from server.domain.fleet import queries as fleet_queries
from server.http.context import caller
from server.http.pages.workspace.core import audit_view, bp, render, workspace_view
from server.infra.db import session_scope

__all__ = ["UPLOAD_LIMIT", "devices"]

_SHOWN = 100


@bp.get("/devices")
@workspace_view("devices.chain")
def devices() -> ResponseReturnValue:
    """Devices in the caller's scope with their chain, backlog and late uploads; the same per officer."""
    who = caller()
    with session_scope() as session:
        visible = fleet_queries.visible_device_ids(session, who)
        overview = [row for row in fleet_service.list_overview(session) if row["device_id"] in visible][
            :_SHOWN
        ]
        per_device, per_officer = recording_service.upload_tallies(
            session, who, (row["device_id"] for row in overview)
        )
        chains = {}
        for row in overview:
            report = recording_service.chain_report(session, row["device_id"])
            chains[row["device_id"]] = report
            audit_view(
                session, "device.chain_report", "device", row["device_id"], verified=report["verified"]
            )
        holders = fleet_queries.user_labels(
            session, {r["assigned_to"] for r in overview if r["assigned_to"] is not None}
        )
    return render(
        "devices.html",
        overview=overview,
        per_device=per_device,
        per_officer=sorted(per_officer.items()),
        chains=chains,
        holders=holders,
        warn_s=alert_service.BACKLOG_ALERT_S,
        limit_s=UPLOAD_LIMIT.total_seconds(),
    )
