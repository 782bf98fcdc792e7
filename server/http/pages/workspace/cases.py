"""Cases: the list with filters and the case file (events in stage order, completeness, recordings)."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Response, request
from flask.typing import ResponseReturnValue

from server.domain.cases import attachments as case_attachments
from server.domain.cases import catalogue as case_catalogue
from server.domain.cases import queries as case_queries
from server.domain.cases import record as case_record_service
from server.domain.cases import service as case_service
from server.domain.cases.models import ACT_KINDS
from server.domain.errors import Invalid
from server.domain.governance import archive_listing
from server.domain.governance import review as review_service
from server.http.api.cases import content_disposition
from server.http.context import caller, get_store
from server.http.pages.workspace.core import audit_view, bp, may, render, workspace_view
from server.http.scope import audit_refusal
from server.infra.db import session_scope

__all__ = ["attachment", "case_file", "cases"]

_SHOWN = 200


def _date_arg(name: str) -> date | None:
    raw = request.args.get(name) or ""
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise Invalid(f"{name} 必须是 YYYY-MM-DD 日期", f"{name} must be a YYYY-MM-DD date") from None


@bp.get("/cases")
@workspace_view("cases.list_cases")
def cases() -> ResponseReturnValue:
    """Cases of the caller's agency, filtered by kind, status, officer, date and completeness."""
    filters: dict[str, Any] = {
        "act_kind": request.args.get("act_kind") or None,
        "status": request.args.get("status") or None,
        "officer_id": request.args.get("officer_id", type=int),
        "date_from": request.args.get("date_from") or None,
        "date_to": request.args.get("date_to") or None,
        "completeness": request.args.get("completeness") or None,
    }
    first, last = _date_arg("date_from"), _date_arg("date_to")
    who = caller()
    with session_scope() as session:
        rows = case_service.list_cases(session, who, officer_id=filters["officer_id"])
        rows = [
            c
            for c in rows
            if (filters["act_kind"] in (None, c.act_kind))
            and (filters["status"] in (None, c.status))
            and (first is None or c.created_at.date() >= first)
            and (last is None or c.created_at.date() <= last)
        ]
        missing = case_queries.missing_by_case(session, rows)
        if filters["completeness"] in ("complete", "incomplete"):
            want = filters["completeness"] == "complete"
            rows = [c for c in rows if (not missing[c.id]) == want]
        audit_view(
            session, "case.list", "case", None, count=len(rows), **{k: v for k, v in filters.items() if v}
        )
        shown = [(case_service.case_to_dict(c, []), missing[c.id]) for c in rows[:_SHOWN]]
        officers = [
            (o.id, f"{o.name}（{o.certificate_number or '—'}）")
            for o in case_queries.officers_in_scope(session, who)
        ]
    return render(
        "cases.html",
        cases=shown,
        total=len(rows),
        filters=filters,
        officers=officers,
        act_kinds=ACT_KINDS,
        statuses=case_service.CASE_STATUSES,
    )


def _linked_ids(record: dict[str, Any]) -> set[int]:
    """Recordings the events link or that were running at them (JL-2)."""
    ids: set[int] = set()
    for stage in record["stages"]:
        for event in stage["events"]:
            ids.update(event["recording_ids"])
            ids.update(event["covering_recording_ids"])
    return ids


@bp.get("/cases/<int:case_id>")
@workspace_view("cases.get_record")
def case_file(case_id: int) -> ResponseReturnValue:
    """The whole-process record: stages, completeness with what is missing, recordings, status changes."""
    who = caller()
    with audit_refusal("case.record", "case", case_id), session_scope() as session:
        record = case_record_service.case_record(session, who, case_id)
        recordings = case_queries.linked_recordings(session, who, _linked_ids(record))
        # JL-22: the case file shows its review history; JL-18: its archive packages, to those who read them.
        reviews = [
            review_service.review_to_dict(r) for r in review_service.list_reviews(session, who, case_id)[1]
        ]
        packages = (
            [archive_listing.archive_to_dict(a) for a in archive_listing.list_archives(session, who, case_id)]
            if may("archives.list_archives")
            else None
        )
        audit_view(
            session,
            "case.record",
            "case",
            case_id,
            complete=record["completeness"]["complete"],
            recordings=len(recordings),
        )
    stages = [s for s in record["stages"] if s["stage"] in case_catalogue.STAGES]
    status_changes = [e for s in record["stages"] if s["stage"] == "case" for e in s["events"]]
    return render(
        "case.html",
        case=record["case"],
        stages=stages,
        completeness=record["completeness"],
        recordings=recordings,
        status_changes=status_changes,
        reviews=reviews,
        packages=packages,
    )


@bp.get("/cases/<int:case_id>/attachments/<int:attachment_id>")
@workspace_view("cases.get_attachment")
def attachment(case_id: int, attachment_id: int) -> ResponseReturnValue:
    """An attachment of the case file, always as a download (the API's headers; audited)."""
    with audit_refusal("case.attachment", "case", case_id), session_scope() as session:
        item = case_attachments.get_attachment(session, caller(), case_id, attachment_id)
        audit_view(session, "case.attachment", "case", case_id, attachment_id=attachment_id)
        key, size, name, sha256, content_type = (
            item.object_key,
            item.size,
            item.name,
            item.sha256,
            item.content_type,
        )
    data = b"".join(get_store().open_range(key, 0, size - 1)) if size else b""
    return Response(
        data,
        mimetype=case_attachments.served_type(content_type),
        headers={
            "X-Content-SHA256": sha256,
            "Content-Disposition": content_disposition(name),
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )
