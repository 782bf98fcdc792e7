"""Annual reports in the workspace (GS-17, GS-7, GS-19): the agency's reports by year, a printable report
page, and the forms that generate, submit, return, publish and correct, and enter the figures the agency
keeps itself — the API's roles and the domain's rules.

The list takes the roles of ``annual_reports.list_reports``, the report page those of
``annual_reports.get_report``, and each form those of the API endpoint it stands for; the domain's
refusals (the one who answers for the draft never publishes it, GS-7) are shown with their codes.
"""

from __future__ import annotations

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.errors import NotFound
from server.domain.publicity import annual
from server.errors import ZfjlError
from server.http.context import caller
from server.http.pages.workspace.core import audit_view, back, bp, lang, render, workspace_view
from server.http.scope import audit_refusal
from server.infra.db import session_scope

__all__ = [
    "TEXTS",
    "annual_report",
    "annual_reports",
    "correct_report",
    "enter_figure",
    "generate_report",
    "publish_report",
    "return_report",
    "submit_report",
]

TEXTS: dict[str, dict[str, str]] = {
    "zh": {
        "note": "依据《安徽省行政执法公示办法》：每年1月31日前公布上一年度行政执法数据（GS-17）。"
        "系统于1月1日起自动生成草稿；审核发布人不得为生成或提交人（GS-7）。",
        "year": "年度",
        "agency": "机关",
        "state": "状态",
        "due_on": "公布期限",
        "overdue": "已逾期",
        "open": "查看",
        "none": "尚无年度报告。",
        "generate": "生成（或重新统计）草稿",
        "submit": "提交审核",
        "publish": "审核发布",
        "return": "退回",
        "reason": "理由",
        "print": "打印本页",
        "csv": "下载 CSV",
        "history": "记录",
        "item_name": "项目",
        "value": "数量",
        "not_fed": "本系统尚未采集",
        "not_fed_note": "标注“机关填报”的项目（执法岗位、投诉举报）由本机关据其台账填报；尚未填报的不予统计，"
        "不以零代替。",
        "not_entered": "机关尚未填报",
        "entered": "（机关填报）",
        "state.superseded": "已被更正",
        "correct": "更正（生成新版本）",
        "correct_note": "更正后原报告仍保留并在门户标注为已被更正；"
        "更正稿须经更正人、提交人以外的人员审核发布（GS-7、GS-19）。",
        "corrected": "已生成更正稿，请提交审核。",
        "superseded_by": "本报告已被更正版本取代：",
        "correction_of": "本报告为第 {revision} 版，更正理由：{reason}",
        "figures": "机关填报数据",
        "figures_note": "填报后重新生成草稿即计入；已公布的报告不变，须更正。每次填报均留存并记入审计日志。",
        "figure_key": "项目",
        "figure_value": "数值",
        "note_field": "说明（可选）",
        "enter": "填报",
        "figure_entered": "已填报。",
        "bad_figure": "数值须为 0 至 1000000 的整数 (invalid_request)",
        "revision": "版本",
        "title": "{agency}{year}年度行政执法数据统计报告",
        "state.draft": "草稿",
        "state.in_review": "待审核",
        "state.published": "已公布",
        "generated": "草稿已生成。",
        "submitted": "已提交审核。",
        "published": "已公布。",
        "returned": "已退回。",
        "bad_year": "年度须为四位年份 (invalid_request)",
        "bad_reason": "须说明理由（不超过2000字）(invalid_request)",
    },
    "en": {
        "note": "Anhui Publicity Measures: last year's enforcement figures are published by 31 January "
        "(GS-17). A draft is generated from 1 January; whoever generated or submitted it never "
        "publishes it (GS-7).",
        "year": "Year",
        "agency": "Agency",
        "state": "State",
        "due_on": "Due",
        "overdue": "overdue",
        "open": "Open",
        "none": "No annual report yet.",
        "generate": "Generate (or recount) the draft",
        "submit": "Submit for review",
        "publish": "Publish",
        "return": "Return",
        "reason": "Reason",
        "print": "Print this page",
        "csv": "Download CSV",
        "history": "History",
        "item_name": "Item",
        "value": "Figure",
        "not_fed": "not yet recorded by this system",
        "not_fed_note": "Items marked 'entered by the agency' (posts, complaints) come from the agency's own "
        "registers; until entered they are not counted, and no zero stands in for them.",
        "not_entered": "not yet entered by the agency",
        "entered": "(entered by the agency)",
        "state.superseded": "Superseded",
        "correct": "Correct (a new revision)",
        "correct_note": "The corrected report stays on record and the portal marks it superseded; the "
        "correction is published by someone other than who opened or submitted it (GS-7, GS-19).",
        "corrected": "Correction drafted; submit it for review.",
        "superseded_by": "This report was superseded by its correction:",
        "correction_of": "Revision {revision}; reason for the correction: {reason}",
        "figures": "Figures the agency enters",
        "figures_note": "A draft generated after an entry counts it; a published report stays as it is until "
        "corrected. Every entry is kept and audited.",
        "figure_key": "Item",
        "figure_value": "Figure",
        "note_field": "Note (optional)",
        "enter": "Enter",
        "figure_entered": "Entered.",
        "bad_figure": "the figure must be an integer from 0 to 1000000 (invalid_request)",
        "revision": "Revision",
        "title": "{agency}: enforcement statistics report {year}",
        "state.draft": "Draft",
        "state.in_review": "In review",
        "state.published": "Published",
        "generated": "Draft generated.",
        "submitted": "Submitted for review.",
        "published": "Published.",
        "returned": "Returned.",
        "bad_year": "the year must be a four-digit year (invalid_request)",
        "bad_reason": "a reason of at most 2000 characters (invalid_request)",
    },
}


def _texts() -> dict[str, str]:
    return TEXTS["en" if lang() == "en" else "zh"]


def _refusal(exc: ZfjlError) -> str:
    return f"{exc.message_en if lang() == 'en' else exc.message} ({exc.code})"


@bp.get("/annual-reports")
@workspace_view("annual_reports.list_reports")
def annual_reports() -> ResponseReturnValue:
    """The reports of the caller's agency (every agency for supervisors), newest year first."""
    who = caller()
    with session_scope() as session:
        reports = [annual.report_to_dict(session, r) for r in annual.list_reports(session, who)]
        audit_view(session, "annual_report.list", "annual_report", None, count=len(reports))
    return render("annual_reports.html", q=_texts(), reports=reports, agency_id=who.agency_id)


@bp.get("/annual-reports/<int:report_id>")
@workspace_view("annual_reports.get_report")
def annual_report(report_id: int) -> ResponseReturnValue:
    """One report, printable, with its history and the forms its state allows."""
    who = caller()
    with audit_refusal("annual_report.read", "annual_report", report_id), session_scope() as session:
        found = annual.get_report(session, who, report_id)
        report = annual.report_to_dict(session, found)
        history = [
            {"action": h.action, "actor": h.actor, "at": h.at, "reason": h.reason}
            for h in annual.history_of(session, found)
        ]
        entries = (
            [
                annual.figure_entry_to_dict(e)
                for e in annual.figure_entries(session, who, found.agency_id, found.year)
            ]
            if who.may_write(found.agency_id)
            else []
        )
        audit_view(session, "annual_report.read", "annual_report", report_id, state=found.state)
    figures = [(key, zh, en) for key, (_section, zh, en) in annual.AGENCY_FIGURES.items()]
    return render(
        "annual_report.html", q=_texts(), report=report, history=history, figures=figures, entries=entries
    )


def _back(report_id: int | None, category: str, message: str) -> ResponseReturnValue:
    target = (
        url_for("workspace.annual_report", report_id=report_id)
        if report_id is not None
        else url_for("workspace.annual_reports")
    )
    return back(target, category, message)


@bp.post("/annual-reports")
@workspace_view("annual_reports.generate_report")
def generate_report() -> ResponseReturnValue:
    """Generate or recount the draft of the caller's agency for the year of the form."""
    who = caller()
    year = request.form.get("year", "").strip()
    if not (year.isdigit() and len(year) == 4) or who.agency_id is None:
        return _back(None, "error", _texts()["bad_year"])
    try:
        with session_scope() as session:
            report_id = annual.generate(session, who, who.agency_id, int(year)).id
    except ZfjlError as exc:
        return _back(None, "error", _refusal(exc))
    return _back(report_id, "ok", _texts()["generated"])


def _transition(report_id: int, action: object, done: str, *args: object) -> ResponseReturnValue:
    try:
        with session_scope() as session:
            action(session, caller(), report_id, *args)  # type: ignore[operator]
    except NotFound:
        raise
    except ZfjlError as exc:
        return _back(report_id, "error", _refusal(exc))
    return _back(report_id, "ok", _texts()[done])


@bp.post("/annual-reports/<int:report_id>/submit")
@workspace_view("annual_reports.submit_report")
def submit_report(report_id: int) -> ResponseReturnValue:
    """Draft → in review; the submitter answers for the figures."""
    return _transition(report_id, annual.submit, "submitted")


@bp.post("/annual-reports/<int:report_id>/return")
@workspace_view("annual_reports.return_report")
def return_report(report_id: int) -> ResponseReturnValue:
    """In review → draft, with a reason."""
    reason = request.form.get("reason", "").strip()
    if not reason or len(reason) > 2000:
        with session_scope() as session:
            annual.get_report(session, caller(), report_id)  # another agency's reads as missing first
        return _back(report_id, "error", _texts()["bad_reason"])
    return _transition(report_id, annual.return_to_draft, "returned", reason)


@bp.post("/annual-reports/<int:report_id>/publish")
@workspace_view("annual_reports.publish_report")
def publish_report(report_id: int) -> ResponseReturnValue:
    """In review → published by someone other than who generated or submitted it (GS-7)."""
    return _transition(report_id, annual.publish, "published")


@bp.post("/annual-reports/<int:report_id>/correct")
@workspace_view("annual_reports.correct_report")
def correct_report(report_id: int) -> ResponseReturnValue:
    """A published report → a new draft revision with the reason (GS-19); the page of the correction."""
    reason = request.form.get("reason", "").strip()
    who = caller()
    if not reason or len(reason) > 2000:
        with session_scope() as session:
            annual.get_report(session, who, report_id)  # another agency's reads as missing first
        return _back(report_id, "error", _texts()["bad_reason"])
    try:
        with session_scope() as session:
            correction_id = annual.correct(session, who, report_id, reason).id
    except NotFound:
        raise
    except ZfjlError as exc:
        return _back(report_id, "error", _refusal(exc))
    return _back(correction_id, "ok", _texts()["corrected"])


@bp.post("/annual-reports/<int:report_id>/figures")
@workspace_view("annual_reports.enter_figure")
def enter_figure(report_id: int) -> ResponseReturnValue:
    """Enter a figure the agency keeps, for the year of this report (the API's checks and messages)."""
    who = caller()
    with session_scope() as session:
        found = annual.get_report(session, who, report_id)  # another agency's reads as missing
        agency_id, year = found.agency_id, found.year
    raw = request.form.get("value", "").strip()
    # ASCII digits only ("²" is a digit to str.isdigit but not to int), and no longer than the bound.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7):
        return _back(report_id, "error", _texts()["bad_figure"])
    try:
        entry = annual.FigureEntry(
            agency_id=agency_id,
            year=year,
            key=request.form.get("key", ""),
            value=int(raw),
            note=request.form.get("note", ""),
        )
        with session_scope() as session:
            annual.enter_figure(session, who, entry)
    except NotFound:
        raise
    except ZfjlError as exc:
        return _back(report_id, "error", _refusal(exc))
    return _back(report_id, "ok", _texts()["figure_entered"])
