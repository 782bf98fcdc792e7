"""Liveness and readiness: database and object store reachable."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from server.http.context import get_store
from server.http.openapi import api_view
from server.infra.db import db_ping, get_engine

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@api_view(
    "health.healthz",
    "健康检查 / health check",
    auth="public",
    response={
        "type": "object",
        "properties": {"status": {"type": "string"}, "db": {"type": "string"}, "store": {"type": "string"}},
    },
    responses={503: "数据库或存储不可用 / database or store unavailable"},
)
def healthz() -> ResponseReturnValue:
    """Ping the database and the object store; 503 if either fails."""
    db_ok = db_ping(get_engine(current_app))
    store_ok = get_store().ping()
    body = {
        "status": "ok" if db_ok and store_ok else "degraded",
        "db": "ok" if db_ok else "error",
        "store": "ok" if store_ok else "error",
    }
    return jsonify(body), 200 if db_ok and store_ok else 503
