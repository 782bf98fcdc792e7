"""Recordings and devices for reviewers: stored segments, chain status, backlog and the 24-hour rule.

JL-17 asks that recordings reach the agency's storage within 24 hours. Two facts show it here: the
backlog the device itself reports (its oldest pending segment's age, warned from 20 h) and, for what is
already stored, segments whose arrival came more than 24 hours after their end.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask.typing import ResponseReturnValue
from sqlalchemy import select

from server.domain.accounts.models import User
from server.domain.evidence import queries as recording_service
from server.domain.evidence.models import Recording
from server.domain.fleet import alerts as alert_service
from server.domain.fleet import overview as fleet_service
from server.domain.fleet.models import Device
from server.domain.people.models import Officer
from server.domain.scope import device_in_scope, recording_in_scope
from server.http.context import caller
from server.http.pages.workspace.core import audit_view, bp, render, workspace_view
from server.infra.db import session_scope

__all__ = ["UPLOAD_LIMIT", "devices"]

# JL-17: stored within 24 hours of being recorded.
UPLOAD_LIMIT = timedelta(hours=24)
_SHOWN = 100


def _late(stored_at: datetime, ended_at: datetime) -> bool:
    return stored_at - ended_at > UPLOAD_LIMIT


def _holders(session: Any, user_ids: set[int]) -> dict[int, str]:
    labels = {
        uid: name
        for uid, name in session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
    }
    for uid, name in session.execute(
        select(Officer.user_id, Officer.name).where(Officer.user_id.in_(user_ids))
    ):
        if uid is not None:
            labels[uid] = f"{name}（{labels.get(uid, uid)}）"
    return labels


@bp.get("/devices")
@workspace_view("devices.chain")
def devices() -> ResponseReturnValue:
    """Devices in the caller's scope with their chain, backlog and late uploads; the same per officer."""
    who = caller()
    with session_scope() as session:
        # The scope clause correlates on whatever names the device: here the column, one query for all.
        clause = device_in_scope(who, Device.id)  # type: ignore[arg-type]
        visible = set(session.scalars(select(Device.id).where(clause)))
        overview = [row for row in fleet_service.list_overview(session) if row["device_id"] in visible][
            :_SHOWN
        ]
        per_device: dict[str, dict[str, Any]] = {
            row["device_id"]: {"segments": 0, "late": 0, "last": None} for row in overview
        }
        per_officer: dict[str, dict[str, Any]] = {}
        rows = session.execute(
            select(
                Recording.device_id,
                Recording.officer_id,
                Recording.started_at,
                Recording.ended_at,
                Recording.stored_at,
            ).where(recording_in_scope(who), Recording.device_id.in_(list(per_device)))
        )
        for device_id, officer_id, started_at, ended_at, stored_at in rows:
            late = _late(stored_at, ended_at)
            for bucket in (
                per_device[device_id],
                per_officer.setdefault(officer_id or "—", {"segments": 0, "late": 0, "last": None}),
            ):
                bucket["segments"] += 1
                bucket["late"] += int(late)
                bucket["last"] = started_at if bucket["last"] is None else max(bucket["last"], started_at)
        chains = {}
        for row in overview:
            report = recording_service.chain_report(session, row["device_id"])
            chains[row["device_id"]] = report
            audit_view(
                session, "device.chain_report", "device", row["device_id"], verified=report["verified"]
            )
        holders = _holders(session, {r["assigned_to"] for r in overview if r["assigned_to"] is not None})
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
