"""The publication deadline board of the workspace (GS-22, GS-23): per agency, the unpublished items that
are overdue, due soon or counted on a provisional calendar, and the open deadline alerts.

An agency's staff see their own agency; supervisors and auditors (cross-agency readers) see every agency.
The page takes the roles of ``publicity.deadlines``; the alerts are those the publicity worker raised
(``server/workers/loops.py``), so the page shows what the API's ``/publicity/alerts`` shows.
"""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from server.domain.publicity import views as publicity_views
from server.http.context import caller
from server.http.pages.workspace.core import audit_view, bp, lang, render, workspace_view
from server.infra.db import session_scope

__all__ = ["TEXTS", "publication_deadlines"]

TEXTS: dict[str, dict[str, str]] = {
    "zh": {
        "note": "依据《行政执法公示办法》：行政处罚、行政许可决定自作出之日起7个工作日内公示（GS-11）。"
        "本页按机关列出已逾期、{days}个工作日内到期及按临时日历计算期限的未公示事项（GS-22、GS-23）；"
        "到期前系统自动告警；告警还包括须撤回决定的3个工作日撤回期限（GS-12）和办结案件30日内归档的期限（JL-18）。",
        "today": "今天",
        "alerts": "期限告警",
        "no_alerts": "没有未关闭的期限告警。",
        "severity": "级别",
        "severity.critical": "严重",
        "severity.warning": "提醒",
        "message": "内容",
        "raised_at": "告警时间",
        "agency": "机关",
        "overdue": "已逾期",
        "due_soon": "即将到期",
        "provisional": "临时期限",
        "none": "无",
        "nothing": "没有未公示的事项。",
        "item": "事项",
        "case": "案件",
        "due_on": "公示期限",
    },
    "en": {
        "note": "Under the publicity measures, penalty and licensing decisions are published within 7 "
        "working days of the decision (GS-11). Per agency, this board lists the unpublished items that are "
        "overdue, due within {days} working days, or counted on a provisional calendar (GS-22, GS-23); an "
        "alert is raised before a deadline passes. The alerts also cover the 3-working-day withdrawal of a "
        "decision ordered withdrawn (GS-12) and the 30-day archive deadline of ended cases (JL-18).",
        "today": "Today",
        "alerts": "Deadline alerts",
        "no_alerts": "No open deadline alerts.",
        "severity": "Severity",
        "severity.critical": "critical",
        "severity.warning": "warning",
        "message": "Message",
        "raised_at": "Raised",
        "agency": "Agency",
        "overdue": "Overdue",
        "due_soon": "Due soon",
        "provisional": "Provisional deadline",
        "none": "none",
        "nothing": "No unpublished items.",
        "item": "Item",
        "case": "Case",
        "due_on": "Due",
    },
}


@bp.get("/publication-deadlines")
@workspace_view("publicity.deadlines")
def publication_deadlines() -> ResponseReturnValue:
    """The board of the caller's agency (every agency for supervisors) with its open alerts."""
    with session_scope() as session:
        board = publicity_views.deadline_dashboard(session, caller())
        audit_view(
            session,
            "publicity.deadlines",
            "publication_item",
            None,
            agencies=len(board["agencies"]),
            alerts=len(board["alerts"]),
        )
    texts = dict(TEXTS["en" if lang() == "en" else "zh"])
    texts["note"] = texts["note"].format(days=board["due_soon_working_days"])
    return render("publication_deadlines.html", q=texts, board=board, english=lang() == "en")
