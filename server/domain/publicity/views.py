"""How publication items read: the list, the deadline board, the history, one item, the review (GS-7)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.errors import Invalid
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity.alerts import DUE_SOON_WORKING_DAYS, deadline_alert_to_dict, open_deadline_alerts
from server.domain.publicity.content import FieldRedactions, findings_for
from server.domain.publicity.errors import PublicityError
from server.domain.publicity.models import AnnualReport, PublicationHistory, PublicationItem, WithdrawalOrder
from server.domain.publicity.schedules import calendar_of, today_in_china
from server.domain.publicity.service import content_of, get_item, published_copy, redactions_of
from server.domain.publicity.workflow import ItemState

__all__ = [
    "deadline_board",
    "deadline_dashboard",
    "history_of",
    "item_to_dict",
    "list_items",
    "order_to_dict",
    "review_view",
    "withdrawal_orders_of",
]


def list_items(
    session: Session, caller: Caller, *, state: str | None = None, overdue_on: date | None = None
) -> list[PublicationItem]:
    """Items the caller may see, newest first; ``overdue_on`` keeps unpublished items past their deadline."""
    query = select(PublicationItem).order_by(PublicationItem.id.desc())
    if not caller.reads_all:
        query = query.where(PublicationItem.agency_id == (caller.agency_id or -1))
    if state is not None:
        if state not in {s.value for s in ItemState}:
            raise Invalid(f"未知的状态 {state}", f"unknown state {state}")
        query = query.where(PublicationItem.state == state)
    if overdue_on is not None:
        query = query.where(
            PublicationItem.state.in_([ItemState.DRAFT.value, ItemState.IN_REVIEW.value]),
            PublicationItem.due_on < overdue_on,
        )
    return list(session.scalars(query.limit(500)))


def deadline_board(session: Session, caller: Caller, *, today: date | None = None) -> list[dict[str, Any]]:
    """GS-22, GS-23: per agency, the unpublished items overdue, due within 3 working days, and provisional;
    and the annual reports (GS-17) not published by 31 January."""
    day = today or today_in_china()
    soon = calendar_of(session).deadline(day, DUE_SOON_WORKING_DAYS).due
    query = select(PublicationItem).where(
        PublicationItem.state.in_([ItemState.DRAFT.value, ItemState.IN_REVIEW.value])
    )
    if not caller.reads_all:
        query = query.where(PublicationItem.agency_id == (caller.agency_id or -1))
    board: dict[int, dict[str, Any]] = {}
    for item in session.scalars(query):
        row = board.setdefault(item.agency_id, _board_row(item.agency_id))
        if item.due_on < day:
            row["overdue"].append(item.id)
        elif item.due_on <= soon:
            row["due_soon"].append(item.id)
        if item.deadline_provisional:
            row["provisional"].append(item.id)
    reports = select(AnnualReport).where(
        # Unpublished and past 31 January; a correction is not late (the year's report was published).
        AnnualReport.state.in_((ItemState.DRAFT.value, ItemState.IN_REVIEW.value)),
        AnnualReport.revision == 1,
        AnnualReport.due_on < day,
    )
    if not caller.reads_all:
        reports = reports.where(AnnualReport.agency_id == (caller.agency_id or -1))
    for report in session.scalars(reports):
        board.setdefault(report.agency_id, _board_row(report.agency_id))["annual_reports_overdue"].append(
            report.id
        )
    return [board[agency_id] for agency_id in sorted(board)]


def _board_row(agency_id: int) -> dict[str, Any]:
    return {
        "agency_id": agency_id,
        "overdue": [],
        "due_soon": [],
        "provisional": [],
        "annual_reports_overdue": [],
    }


def deadline_dashboard(session: Session, caller: Caller, *, today: date | None = None) -> dict[str, Any]:
    """GS-22, GS-23: the deadline board with each item's title and due date, the agency names, and the
    open deadline alerts — the caller's agency only, every agency for cross-agency readers."""
    day = today or today_in_china()
    board = deadline_board(session, caller, today=day)
    wanted = {i for row in board for column in ("overdue", "due_soon", "provisional") for i in row[column]}
    items = (
        {i.id: i for i in session.scalars(select(PublicationItem).where(PublicationItem.id.in_(wanted)))}
        if wanted
        else {}
    )
    names: dict[int, str] = {
        agency_id: name
        for agency_id, name in session.execute(
            select(Agency.id, Agency.name).where(Agency.id.in_([r["agency_id"] for r in board]))
        )
    }

    def summary(item_id: int) -> dict[str, Any]:
        item = items[item_id]
        return {
            "id": item.id,
            "title": item.title,
            "document_number": item.document_number,
            "state": item.state,
            "due_on": item.due_on.isoformat(),
            "deadline_provisional": item.deadline_provisional,
        }

    agencies = [
        {
            "agency_id": row["agency_id"],
            "agency_name": names.get(row["agency_id"], ""),
            **{
                column: sorted((summary(i) for i in row[column]), key=lambda s: (s["due_on"], s["id"]))
                for column in ("overdue", "due_soon", "provisional")
            },
        }
        for row in board
    ]
    alerts = [deadline_alert_to_dict(a) for a in open_deadline_alerts(session, caller)]
    return {
        "today": day.isoformat(),
        "due_soon_working_days": DUE_SOON_WORKING_DAYS,
        "agencies": agencies,
        "alerts": alerts,
    }


def history_of(session: Session, item: PublicationItem) -> list[PublicationHistory]:
    """An item's history, oldest first."""
    return list(
        session.scalars(
            select(PublicationHistory)
            .where(PublicationHistory.item_id == item.id)
            .order_by(PublicationHistory.id)
        )
    )


def withdrawal_orders_of(session: Session, item: PublicationItem) -> list[WithdrawalOrder]:
    """The item's GS-12 withdrawal orders, oldest first (the latest sets ``withdrawal_due_on``)."""
    return list(
        session.scalars(
            select(WithdrawalOrder).where(WithdrawalOrder.item_id == item.id).order_by(WithdrawalOrder.id)
        )
    )


def order_to_dict(order: WithdrawalOrder) -> dict[str, Any]:
    """A withdrawal order as the staff API shows it, with the record it comes from (or ``source: null``)."""
    source = None
    if order.source_kind is not None:
        source = {
            "kind": order.source_kind,
            "body": order.source_body,
            "document_number": order.source_document,
            "decided_on": _iso(order.source_decided_on),
        }
    return {
        "id": order.id,
        "reason": order.reason,
        "revoked_on": order.revoked_on.isoformat(),
        "due_on": order.due_on.isoformat(),
        "deadline_provisional": order.deadline_provisional,
        "calendar_version": order.calendar_version,
        "source": source,
        "ordered_by": order.ordered_by,
        "ordered_at": order.ordered_at.isoformat(),
    }


def item_to_dict(item: PublicationItem, *, today: date | None = None) -> dict[str, Any]:
    """An item as the staff API shows it (the source content included: staff only)."""
    day = today or today_in_china()
    return {
        "id": item.id,
        "agency_id": item.agency_id,
        "case_id": item.case_id,
        "source_event_id": item.source_event_id,
        "act_kind": item.act_kind,
        "title": item.title,
        "party_name": item.party_name,
        "document_number": item.document_number,
        "decided_on": item.decided_on.isoformat() if item.decided_on else None,
        "state": item.state,
        "author": item.author,
        "due_on": item.due_on.isoformat(),
        "deadline_rule": item.deadline_rule,
        "deadline_provisional": item.deadline_provisional,
        "calendar_version": item.calendar_version,
        "overdue": item.state in (ItemState.DRAFT.value, ItemState.IN_REVIEW.value) and item.due_on < day,
        "disclosure_earliest_end": _iso(item.disclosure_earliest_end),
        "disclosure_ends": _iso(item.disclosure_ends),
        "excluded_grounds": list(item.excluded_grounds or []),
        "excluded_reason": item.excluded_reason,
        "withdrawal_reason": item.withdrawal_reason,
        "withdrawal_due_on": _iso(item.withdrawal_due_on),
        "replaces_item_id": item.replaces_item_id,
        "published_at": _iso(item.published_at),
        "corrected_at": _iso(item.corrected_at),
        "withdrawn_at": _iso(item.withdrawn_at),
        "content": dict(item.content or {}),
        "redactions": dict(item.redactions or {}),
        "published": item.published,
    }


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def review_view(session: Session, caller: Caller, item_id: int) -> dict[str, Any]:
    """What the reviewer sees: every proposed redaction highlighted, the decisions, and the result."""
    item = get_item(session, caller, item_id)
    content = content_of(item)
    decisions = redactions_of(item)
    fields: dict[str, Any] = {}
    for name, findings in findings_for(content).items():
        decided = decisions.get(name, FieldRedactions())
        fields[name] = {
            "source": getattr(content, name),
            "findings": [
                {
                    "key": f.key,
                    "kind": f.kind.value,
                    "label": f.kind.label,
                    "start": f.start,
                    "end": f.end,
                    "original": f.original,
                    "replacement": f.replacement,
                    "undone": f.key in decided.undone,
                }
                for f in findings
            ],
            "added": [{"start": m.start, "end": m.end, "reason": m.reason} for m in decided.added],
        }
    return {"item": item_to_dict(item), "fields": fields, "preview": _preview(session, item)}


def _preview(session: Session, item: PublicationItem) -> dict[str, Any] | None:
    try:
        return published_copy(session, item)
    except PublicityError:
        return None
