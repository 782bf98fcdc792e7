"""Statistics per agency or officer and period (JL-21): JSON and a CSV export.

``GET /api/v1/statistics?from=2026-03-01&to=2026-03-31&group=agency|officer&agency_id=…``. An
agency-bound role sees its own agency; supervisors, auditors and system admins read across (JL-20).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.governance.statistics import COLUMNS, GROUPS, StatsQuery, statistics, to_csv
from server.http.context import audit_request, caller
from server.http.openapi import api_view
from server.infra.db import session_scope

__all__ = ["bp"]

bp = Blueprint("statistics", __name__)

_QUERY: dict[str, dict[str, Any]] = {
    "from": {"type": "string", "format": "date"},
    "to": {"type": "string", "format": "date"},
    "group": {"enum": list(GROUPS)},
    "agency_id": {"type": "integer", "minimum": 1},
}
_ROW = {"type": "object", "properties": {c: {"type": ["number", "string", "null"]} for c in COLUMNS}}


def _report() -> dict[str, Any]:
    query = StatsQuery.from_args({k: v for k, v in request.args.items() if k in _QUERY})
    with session_scope() as session:
        report = statistics(session, caller(), query)
        audit_request(
            session,
            "statistics.read",
            "statistics",
            None,
            detail={k: str(v) for k, v in request.args.items()},
        )
        return report


@bp.get("")
@api_view(
    "statistics.get_statistics",
    "执法音像与案卷统计 / recording and case-file statistics (JL-21)",
    query=_QUERY,
    response={
        "type": "object",
        "properties": {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "group": {"enum": list(GROUPS)},
            "rows": {"type": "array", "items": _ROW},
            "totals": {"type": "object"},
        },
    },
)
def get_statistics() -> ResponseReturnValue:
    """One row per agency (or officer) with its counts, and the totals."""
    return jsonify(_report())


@bp.get("/export.csv")
@api_view(
    "statistics.export_csv",
    "统计导出 CSV / the same statistics as CSV",
    query=_QUERY,
    response={"type": "string"},
    response_content_type="text/csv",
)
def export_csv() -> ResponseReturnValue:
    """The rows as CSV (UTF-8 with BOM), named after the period."""
    report = _report()
    name = f"zfjl-statistics-{report['group']}-{report['from']}-{report['to']}.csv"
    return Response(
        to_csv(report),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )
