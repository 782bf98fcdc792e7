"""Statistics for supervisors and agency heads (JL-21): the API's numbers as a table, a bar chart and CSV.

The page takes the roles of ``statistics.get_statistics`` and the same query (period, grouping, agency);
the chart is SVG drawn by the server (no script, the workspace CSP allows none inline). The CSV link is
the page's own route, so the workspace cookie (never valid for ``/api/``) can download it. Every view is
audited like the API's, ``statistics.read`` with ``via: workspace``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.typing import ResponseReturnValue

from server.domain.errors import ServiceError
from server.domain.governance.statistics import GROUPS, StatsQuery, statistics, to_csv
from server.http.context import caller
from server.http.pages.workspace.core import (
    audit_view,
    bp,
    error_page,
    lang,
    message_of,
    render,
    workspace_view,
)
from server.infra.db import session_scope

__all__ = ["statistics_csv", "statistics_page"]

_ARGS = ("from", "to", "group", "agency_id")
_BAR_WIDTH = 360  # px of the longest bar

# The page's own words (the columns are the API's field names, explained in docs/archives.md).
WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "heading": "执法音像与案卷统计",
        "from": "起",
        "to": "止",
        "group": "分组",
        "agency": "按机关",
        "officer": "按执法人员",
        "show": "统计",
        "csv": "导出 CSV",
        "chart": "记录时长（小时）",
        "who": "机关 / 人员",
        "recordings": "录像段数",
        "hours": "时长（小时）",
        "late_uploads": "超 24 小时存储",
        "sessions": "执法过程",
        "unexplained_gaps": "未说明中断",
        "cases_opened": "立案",
        "cases_complete": "记录完整",
        "cases_ended": "办结",
        "archived_on_time": "按期归档",
        "archive_overdue": "逾期未归档",
        "reviews": "评查",
        "access_requests": "调阅申请",
        "access_approved": "批准",
        "access_rejected": "驳回",
        "access_revoked": "撤销",
        "publications_due": "应公示",
        "published_on_time": "按期公示",
        "publication_overdue": "逾期未公示",
        "total": "合计",
        "none": "该期间没有数据",
    },
    "en": {
        "heading": "Recording and case-file statistics",
        "from": "From",
        "to": "To",
        "group": "Group by",
        "agency": "Agency",
        "officer": "Officer",
        "show": "Show",
        "csv": "Export CSV",
        "chart": "Hours recorded",
        "who": "Agency / officer",
        "recordings": "Segments",
        "hours": "Hours",
        "late_uploads": "Stored > 24 h",
        "sessions": "Sessions",
        "unexplained_gaps": "Unexplained gaps",
        "cases_opened": "Cases opened",
        "cases_complete": "Complete records",
        "cases_ended": "Cases ended",
        "archived_on_time": "Archived on time",
        "archive_overdue": "Archive overdue",
        "reviews": "Reviews",
        "access_requests": "Access requests",
        "access_approved": "Approved",
        "access_rejected": "Rejected",
        "access_revoked": "Revoked",
        "publications_due": "Publications due",
        "published_on_time": "Published on time",
        "publication_overdue": "Publication overdue",
        "total": "Total",
        "none": "No data in this period",
    },
}
COLUMNS = (
    "recordings", "hours", "late_uploads", "sessions", "unexplained_gaps", "cases_opened", "cases_complete",
    "cases_ended", "archived_on_time", "archive_overdue", "reviews",
    "access_requests", "access_approved", "access_rejected", "access_revoked",
    "publications_due", "published_on_time", "publication_overdue",
)  # fmt: skip


def _report() -> dict[str, Any]:
    query = StatsQuery.from_args({k: request.args[k] for k in _ARGS if request.args.get(k)})
    with session_scope() as session:
        report = statistics(session, caller(), query)
        audit_view(
            session,
            "statistics.read",
            "statistics",
            None,
            group=query.group,
            period=f"{query.start}/{query.end}",
        )
        return report


def _bars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One bar per row, scaled to the longest (the SVG the template draws)."""
    top = max((r["hours"] for r in rows), default=0) or 1
    return [
        {"label": r["officer_name"] or r["officer"] or r["agency"] or "—", "hours": r["hours"],
         "width": round(_BAR_WIDTH * r["hours"] / top), "y": 24 * i}
        for i, r in enumerate(rows)
    ]  # fmt: skip


@bp.get("/statistics")
@workspace_view("statistics.get_statistics")
def statistics_page() -> ResponseReturnValue:
    """The statistics of the chosen period as a table and a chart."""
    try:
        report = _report()
    except ServiceError as exc:
        return error_page(400 if exc.code != "not_found" else 404, message_of(exc))
    return render(
        "statistics.html",
        report=report,
        words=WORDS[lang()],
        columns=COLUMNS,
        groups=GROUPS,
        bars=_bars(report["rows"]),
        chart_height=24 * max(len(report["rows"]), 1),
        query={k: request.args.get(k, "") for k in _ARGS},
    )


@bp.get("/statistics.csv")
@workspace_view("statistics.export_csv")
def statistics_csv() -> ResponseReturnValue:
    """The same statistics as CSV."""
    try:
        report = _report()
    except ServiceError as exc:
        return error_page(400 if exc.code != "not_found" else 404, message_of(exc))
    name = f"zfjl-statistics-{report['group']}-{report['from']}-{report['to']}.csv"
    return Response(
        to_csv(report),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )
