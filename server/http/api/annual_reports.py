"""Annual reports for staff (GS-17): generate a draft, read it, export it as CSV, submit, return, publish,
correct a published one (GS-19), and the figures the agency enters itself (posts, complaints).

Thin views over :mod:`server.domain.publicity.annual`; the roles are the publicity ones in ENDPOINT_ROLES
(collectors generate and submit, reviewers return and publish, supervisors and auditors read every
agency), and the workflow table says who may do which transition (GS-7: never the one who answers for
the draft).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.errors import Invalid
from server.domain.publicity import annual
from server.http.context import caller, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.db import session_scope

__all__ = ["REPORT_SCHEMA", "bp"]

bp = Blueprint("annual_reports", __name__)

REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "agency_name": {"type": "string"},
        "year": {"type": "integer"},
        "state": {"enum": ["draft", "in_review", "published", "superseded"]},
        "revision": {"type": "integer", "description": "1, then one more per correction"},
        "current": {"type": "boolean", "description": "the published report the portal shows for the year"},
        "corrects_report_id": {"type": ["integer", "null"]},
        "correction_reason": {"type": ["string", "null"]},
        "superseded_by_id": {"type": ["integer", "null"]},
        "superseded_reason": {"type": ["string", "null"]},
        "due_on": {"type": "string", "format": "date", "description": "GS-17: 次年1月31日前公布"},
        "overdue": {"type": "boolean"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "key": {"type": "string"},
                    "section": {"type": "string"},
                    "value": {
                        "type": ["integer", "string", "null"],
                        "description": "万元 amounts are strings",
                    },
                    "fed": {"type": "boolean", "description": "false: no value (not entered yet)"},
                    "source": {
                        "enum": ["system", "agency"],
                        "description": "counted from the records, or entered by the agency",
                    },
                },
            },
        },
    },
}
_YEAR = {"type": "integer", "minimum": annual.FIRST_YEAR, "maximum": 9999}


def _year(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) == 4:
        return int(value)
    raise ApiError(400, "invalid_request", "year 须为四位年份", "year must be a four-digit year")


def _with_history(session: Any, report: Any) -> dict[str, Any]:
    data = annual.report_to_dict(session, report)
    data["history"] = [
        {
            "action": h.action,
            "from_state": h.from_state,
            "to_state": h.to_state,
            "actor": h.actor,
            "at": h.at.isoformat(),
            "reason": h.reason,
        }
        for h in annual.history_of(session, report)
    ]
    return data


@bp.get("")
@api_view(
    "annual_reports.list_reports",
    "年度报告列表 / annual reports of the caller's agency (every agency for supervisors) — GS-17",
    query={"year": _YEAR},
    response={"type": "object", "properties": {"reports": {"type": "array", "items": REPORT_SCHEMA}}},
)
def list_reports() -> ResponseReturnValue:
    """Newest year first; each with its deadline and whether it is overdue."""
    year = _year(request.args["year"]) if request.args.get("year") else None
    with session_scope() as session:
        reports = annual.list_reports(session, caller(), year=year)
        return jsonify(reports=[annual.report_to_dict(session, report) for report in reports])


@bp.post("")
@api_view(
    "annual_reports.generate_report",
    "生成（或重新统计）年度报告草稿 / generate or recount an annual report draft — GS-17",
    request={
        "type": "object",
        "required": ["agency_id", "year"],
        "properties": {"agency_id": {"type": "integer", "minimum": 1}, "year": _YEAR},
    },
    response=REPORT_SCHEMA,
    responses={201: "created or recounted", 409: "the report is in review or published"},
)
def generate_report() -> ResponseReturnValue:
    """Count the year's figures into the agency's draft report."""
    body = json_body(("agency_id", "year"))
    agency_id = body["agency_id"]
    if not isinstance(agency_id, int) or isinstance(agency_id, bool) or agency_id < 1:
        raise ApiError(400, "invalid_request", "agency_id 须为正整数", "agency_id must be a positive integer")
    year = _year(body["year"])
    with session_scope() as session:
        report = annual.generate(session, caller(), agency_id, year)
        return jsonify(_with_history(session, report)), 201


@bp.get("/<int:report_id>")
@api_view(
    "annual_reports.get_report",
    "年度报告及其记录 / one annual report with its history",
    response=REPORT_SCHEMA,
)
def get_report(report_id: int) -> ResponseReturnValue:
    """The report, its lines (those not yet fed say so) and its history."""
    with session_scope() as session:
        return jsonify(_with_history(session, annual.get_report(session, caller(), report_id)))


@bp.get("/<int:report_id>/export.csv")
@api_view(
    "annual_reports.export_csv",
    "年度报告 CSV（UTF-8 BOM）/ the annual report as CSV",
    response={"type": "string"},
    response_content_type="text/csv",
)
def export_csv(report_id: int) -> ResponseReturnValue:
    """One line per figure, named after the agency's report and year."""
    with session_scope() as session:
        data = annual.report_to_dict(session, annual.get_report(session, caller(), report_id))
    name = f"zfjl-annual-report-{data['agency_id']}-{data['year']}.csv"
    return Response(
        annual.to_csv(data),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 2000:
        raise ApiError(
            400, "invalid_request", "须说明理由（不超过2000字）", "a reason of at most 2000 characters"
        )
    return reason.strip()


@bp.post("/<int:report_id>/submit")
@api_view(
    "annual_reports.submit_report", "提交年度报告审核 / submit the draft for review", response=REPORT_SCHEMA
)
def submit_report(report_id: int) -> ResponseReturnValue:
    """The submitter answers for the figures; someone else reviews them (GS-7)."""
    with session_scope() as session:
        return jsonify(_with_history(session, annual.submit(session, caller(), report_id)))


@bp.post("/<int:report_id>/return")
@api_view(
    "annual_reports.return_report",
    "退回年度报告 / return the report to draft with a reason",
    request={"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}},
    response=REPORT_SCHEMA,
)
def return_report(report_id: int) -> ResponseReturnValue:
    """Back to draft, where it may be generated again."""
    reason = _reason(json_body(("reason",)))
    with session_scope() as session:
        return jsonify(_with_history(session, annual.return_to_draft(session, caller(), report_id, reason)))


@bp.post("/<int:report_id>/publish")
@api_view(
    "annual_reports.publish_report",
    "审核发布年度报告 / review and publish the report (the portal lists it) — GS-7, GS-17",
    response=REPORT_SCHEMA,
)
def publish_report(report_id: int) -> ResponseReturnValue:
    """Published by someone other than who generated or submitted it."""
    with session_scope() as session:
        return jsonify(_with_history(session, annual.publish(session, caller(), report_id)))


@bp.post("/<int:report_id>/correct")
@api_view(
    "annual_reports.correct_report",
    "更正已公布的年度报告（新版本，须说明理由）/ correct a published report: a new revision with a reason "
    "— GS-17, GS-19",
    request={"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}},
    response=REPORT_SCHEMA,
    responses={
        201: "the correction's draft, counted afresh",
        409: "not published, superseded, or a correction is already open",
    },
)
def correct_report(report_id: int) -> ResponseReturnValue:
    """The published report stays current until the correction is published by another reviewer."""
    reason = _reason(json_body(("reason",)))
    with session_scope() as session:
        return jsonify(_with_history(session, annual.correct(session, caller(), report_id, reason))), 201


_FIGURE = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "agency_id": {"type": "integer"},
        "year": {"type": "integer"},
        "key": {"enum": list(annual.AGENCY_FIGURES)},
        "value": {"type": "integer"},
        "note": {"type": "string"},
        "entered_by": {"type": "string"},
        "entered_at": {"type": "string", "format": "date-time"},
    },
}


@bp.get("/figures")
@api_view(
    "annual_reports.list_figures",
    "机关填报的年度数据及其记录 / the figures the agency entered for a year, every entry — GS-17",
    query={"agency_id": {"type": "integer", "minimum": 1}, "year": _YEAR},
    response={
        "type": "object",
        "properties": {
            "current": {"type": "object", "additionalProperties": _FIGURE},
            "entries": {"type": "array", "items": _FIGURE},
        },
    },
)
def list_figures() -> ResponseReturnValue:
    """Every entry oldest first, and the one that counts per key (the latest)."""
    who = caller()
    raw_agency = request.args.get("agency_id") or (str(who.agency_id) if who.agency_id else "")
    if not (raw_agency.isascii() and raw_agency.isdigit() and len(raw_agency) <= 9):
        raise ApiError(400, "invalid_request", "须指定 agency_id", "agency_id is required")
    if not request.args.get("year"):
        raise ApiError(400, "invalid_request", "year 须为四位年份", "year must be a four-digit year")
    year = _year(request.args["year"])
    with session_scope() as session:
        entries = annual.figure_entries(session, who, int(raw_agency), year)
        current = {row.key: row for row in entries}
        return jsonify(
            current={key: annual.figure_entry_to_dict(row) for key, row in current.items()},
            entries=[annual.figure_entry_to_dict(row) for row in entries],
        )


@bp.post("/figures")
@api_view(
    "annual_reports.enter_figure",
    "填报机关自行掌握的年度数据（执法岗位、投诉举报）/ enter a figure the agency keeps (posts, complaints) "
    "— GS-17",
    request={
        "type": "object",
        "required": ["year", "key", "value"],
        "properties": {
            "agency_id": {"type": "integer", "minimum": 1},
            "year": _YEAR,
            "key": {"enum": list(annual.AGENCY_FIGURES)},
            "value": {"type": "integer", "minimum": 0, "maximum": annual.MAX_FIGURE},
            "note": {"type": "string", "maxLength": annual.MAX_NOTE_CHARS},
        },
    },
    response=_FIGURE,
    responses={201: "entered; the next count of a draft uses it"},
)
def enter_figure() -> ResponseReturnValue:
    """Appended, never overwritten; a published report keeps its figures until corrected."""
    who = caller()
    body = json_body(("year", "key", "value"))
    agency_id = body.get("agency_id", who.agency_id)
    if not isinstance(agency_id, int) or isinstance(agency_id, bool) or agency_id < 1:
        raise ApiError(400, "invalid_request", "agency_id 须为正整数", "agency_id must be a positive integer")
    try:
        entry = annual.FigureEntry(
            agency_id=agency_id,
            year=_year(body["year"]),
            key=body["key"] if isinstance(body["key"], str) else "",
            value=body["value"],
            note=body.get("note", ""),
        )
    except Invalid as exc:
        raise ApiError(400, "invalid_request", exc.message, exc.message_en) from exc
    with session_scope() as session:
        return jsonify(annual.figure_entry_to_dict(annual.enter_figure(session, who, entry))), 201
