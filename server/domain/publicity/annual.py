"""The annual report (GS-17): per agency and calendar year, the counted figures, their review and publication.

A draft is counted from what the system holds — officers, publication items (every decision recorded,
whatever its publication state), case events and public correction requests — for the decisions made
in the year by their Beijing decision date. Lines the system has no data for yet (posts, refused
licences, reconsideration, litigation, complaints, transfers to criminal justice) are present with no
value and ``fed = False``; the report says so rather than printing a zero nobody counted.

The report goes through the workflow table of ``workflow.py`` (submit, return, publish; GS-7: the
reviewer is neither the one who generated the draft nor the one who submitted it), due by 31 January
of the next year. The job ``generate_due`` drafts last year's report of every agency from 1 January.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.models import Case, CaseEvent
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.domain.publicity.codes import EnforcementAct, PenaltyKind, heaviest_penalty
from server.domain.publicity.errors import TransitionForbidden
from server.domain.publicity.export import yuan_to_wanyuan
from server.domain.publicity.models import (
    AnnualReport,
    AnnualReportHistory,
    CorrectionRequest,
    PublicationItem,
)
from server.domain.publicity.schedules import CHINA, today_in_china
from server.domain.publicity.service import actor_of
from server.domain.publicity.workflow import Action, ItemState, Role, apply_action

__all__ = [
    "SECTIONS",
    "Line",
    "agency_name",
    "count_lines",
    "due_on",
    "generate",
    "generate_due",
    "get_report",
    "history_of",
    "lines_to_mapping",
    "list_reports",
    "public_report",
    "publish",
    "published_reports",
    "report_to_dict",
    "return_to_draft",
    "submit",
    "to_csv",
]

# The system generates drafts; no person answers for them until one submits the draft.
SYSTEM_AUTHOR = "system"
# The first year a report may be asked for: the measures date from 2020.
FIRST_YEAR = 2020

SECTIONS: dict[str, tuple[str, str]] = {
    "staff": ("执法岗位和人员", "posts and officers on duty"),
    "penalty": ("行政处罚", "administrative penalties"),
    "licensing": ("行政许可", "administrative licensing"),
    "other_acts": ("其他行政执法行为", "other enforcement acts"),
    "review": ("行政复议和行政诉讼", "reconsideration and litigation"),
    "complaints": ("投诉举报", "complaints"),
    "transfers": ("移送司法机关", "transfers to criminal justice"),
    "publicity": ("执法公示工作", "publicity work"),
}


@dataclass(frozen=True, kw_only=True)
class Line:
    """One figure of the report: a count, an amount in 万元 (a decimal string), or ``None`` if not fed."""

    key: str
    section: str
    zh: str
    en: str
    value: int | str | None
    fed: bool = True
    unit: str = ""


def due_on(year: int) -> date:
    """GS-17: the report of ``year`` is published by 31 January of the next year."""
    return date(year + 1, 1, 31)


def _bounds(year: int) -> tuple[datetime, datetime]:
    """The year as an instant range: from Beijing midnight of 1 January to that of the next year."""
    return datetime(year, 1, 1, tzinfo=CHINA), datetime(year + 1, 1, 1, tzinfo=CHINA)


def _not_fed(key: str, section: str, zh: str, en: str) -> Line:
    return Line(key=key, section=section, zh=zh, en=en, value=None, fed=False)


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _staff(session: Session, agency_id: int, year: int) -> list[Line]:
    """Officers and auxiliary staff entered by the end of the year and active now (no status history)."""
    last_day = date(year, 12, 31)
    _, end = _bounds(year)
    base = (
        Officer.agency_id == agency_id,
        Officer.status == "active",
        Officer.created_at < end,
    )
    officers = session.scalar(
        select(func.count())
        .select_from(Officer)
        .where(
            *base,
            Officer.kind == "officer",
            (Officer.valid_from.is_(None)) | (Officer.valid_from <= last_day),
            (Officer.valid_to.is_(None)) | (Officer.valid_to >= last_day),
        )
    )
    auxiliary = session.scalar(
        select(func.count()).select_from(Officer).where(*base, Officer.kind == "auxiliary")
    )
    return [
        _not_fed("staff.posts", "staff", "执法岗位数", "enforcement posts"),
        Line(
            key="staff.officers",
            section="staff",
            zh="在岗持证执法人员（12月31日证件有效）",
            en="certified officers on duty (certificate valid on 31 December)",
            value=int(officers or 0),
        ),
        Line(
            key="staff.auxiliary",
            section="staff",
            zh="执法辅助人员",
            en="auxiliary staff",
            value=int(auxiliary or 0),
        ),
    ]


def _decisions(session: Session, agency_id: int, year: int) -> list[PublicationItem]:
    """Every decision made in the year (Beijing decision date), once: a withdrawn decision that another
    item replaces (GS-12, redone) counts through its replacement only."""
    items = list(
        session.scalars(
            select(PublicationItem).where(
                PublicationItem.agency_id == agency_id,
                PublicationItem.decided_on >= date(year, 1, 1),
                PublicationItem.decided_on <= date(year, 12, 31),
            )
        )
    )
    replaced = {item.replaces_item_id for item in items if item.replaces_item_id is not None}
    return [item for item in items if item.id not in replaced]


def _penalty(items: Iterable[PublicationItem]) -> list[Line]:
    """GS-17: penalty decisions per kind, a decision with several kinds once under the heaviest."""
    by_kind: Counter[PenaltyKind] = Counter()
    unrecorded = 0
    fines = confiscated = Decimal(0)
    total = 0
    known = {kind.value: kind for kind in PenaltyKind}
    for item in items:
        total += 1
        content = item.content or {}
        kinds = tuple(known[v] for v in content.get("penalty_kinds") or () if v in known)
        if kinds:
            by_kind[heaviest_penalty(kinds)] += 1
        else:
            unrecorded += 1
        fines += _amount(content.get("fine_yuan"))
        confiscated += _amount(content.get("confiscated_yuan"))
    lines = [Line(key="penalty.decisions", section="penalty", zh="处罚决定", en="decisions", value=total)]
    lines += [
        Line(
            key=f"penalty.kind.{kind.value}",
            section="penalty",
            zh=kind.label,
            en=_KIND_EN[kind],
            value=by_kind[kind],
        )
        for kind in PenaltyKind
    ]
    lines += [
        Line(
            key="penalty.kind_unrecorded",
            section="penalty",
            zh="未填写处罚种类",
            en="kind not yet entered",
            value=unrecorded,
        ),
        Line(
            key="penalty.fines",
            section="penalty",
            zh="罚款金额",
            en="fines",
            value=yuan_to_wanyuan(fines),
            unit="万元",
        ),
        Line(
            key="penalty.confiscations",
            section="penalty",
            zh="没收违法所得、没收非法财物金额",
            en="confiscated gains and property",
            value=yuan_to_wanyuan(confiscated),
            unit="万元",
        ),
    ]
    return lines


def _licensing(session: Session, agency_id: int, year: int, granted: int) -> list[Line]:
    """申请 and 受理 from the licensing cases' initiation events; 许可 from the licensing decisions; 撤销
    from licensing cases revoked in the year. A refusal (不予许可) has no record of its own yet."""
    start, end = _bounds(year)
    events = session.execute(
        select(CaseEvent.event_type, CaseEvent.data)
        .join(Case, Case.id == CaseEvent.case_id)
        .where(
            Case.agency_id == agency_id,
            Case.act_kind == EnforcementAct.LICENSING.value,
            CaseEvent.corrects_event_id.is_(None),
            CaseEvent.occurred_at >= start,
            CaseEvent.occurred_at < end,
            CaseEvent.event_type.in_(
                ("initiation.application_received", "initiation.application_accepted", "case.status_changed")
            ),
        )
    ).all()
    counts: Counter[str] = Counter()
    for event_type, data in events:
        if event_type == "case.status_changed":
            if (data or {}).get("to") == "revoked":
                counts["revoked"] += 1
        else:
            counts[event_type] += 1
    return [
        Line(
            key="licensing.applications",
            section="licensing",
            zh="申请",
            en="applications",
            value=counts["initiation.application_received"],
        ),
        Line(
            key="licensing.accepted",
            section="licensing",
            zh="受理",
            en="accepted",
            value=counts["initiation.application_accepted"],
        ),
        Line(key="licensing.granted", section="licensing", zh="许可", en="granted", value=granted),
        _not_fed("licensing.refused", "licensing", "不予许可", "refused"),
        Line(key="licensing.revoked", section="licensing", zh="撤销", en="revoked", value=counts["revoked"]),
    ]


def _publicity(session: Session, agency_id: int, year: int) -> list[Line]:
    """The publicity work of the year: items published (and how many after their deadline), withdrawn,
    and correction requests from the public (GS-12, GS-19)."""
    start, end = _bounds(year)
    published = session.execute(
        select(PublicationItem.published_at, PublicationItem.due_on).where(
            PublicationItem.agency_id == agency_id,
            PublicationItem.published_at >= start,
            PublicationItem.published_at < end,
        )
    ).all()
    late = sum(1 for at, due in published if at is not None and at.astimezone(CHINA).date() > due)
    withdrawn = session.scalar(
        select(func.count())
        .select_from(PublicationItem)
        .where(
            PublicationItem.agency_id == agency_id,
            PublicationItem.withdrawn_at >= start,
            PublicationItem.withdrawn_at < end,
        )
    )
    requests = session.scalar(
        select(func.count())
        .select_from(CorrectionRequest)
        .join(PublicationItem, PublicationItem.id == CorrectionRequest.item_id)
        .where(
            PublicationItem.agency_id == agency_id,
            CorrectionRequest.received_at >= start,
            CorrectionRequest.received_at < end,
        )
    )
    return [
        Line(
            key="publicity.published",
            section="publicity",
            zh="公示信息",
            en="items published",
            value=len(published),
        ),
        Line(
            key="publicity.published_late",
            section="publicity",
            zh="其中超过公示期限",
            en="of which after their deadline",
            value=late,
        ),
        Line(
            key="publicity.withdrawn",
            section="publicity",
            zh="撤回公示",
            en="items withdrawn",
            value=int(withdrawn or 0),
        ),
        Line(
            key="publicity.correction_requests",
            section="publicity",
            zh="公众更正申请",
            en="correction requests from the public",
            value=int(requests or 0),
        ),
    ]


def count_lines(session: Session, agency_id: int, year: int) -> list[Line]:
    """Every line of the report of ``agency_id`` for ``year``, in the order it is printed (GS-17)."""
    decisions = _decisions(session, agency_id, year)
    by_act: dict[str, list[PublicationItem]] = {}
    for item in decisions:
        by_act.setdefault(item.act_kind, []).append(item)
    lines = _staff(session, agency_id, year)
    lines += _penalty(by_act.get(EnforcementAct.PENALTY.value, []))
    lines += _licensing(session, agency_id, year, len(by_act.get(EnforcementAct.LICENSING.value, [])))
    lines += [
        Line(
            key=f"other_acts.{act.value}",
            section="other_acts",
            zh=act.label,
            en=_ACT_EN[act],
            value=len(by_act.get(act.value, [])),
        )
        for act in (
            EnforcementAct.COERCION,
            EnforcementAct.INSPECTION,
            EnforcementAct.LEVY,
            EnforcementAct.OTHER,
        )
    ]
    lines += [
        _not_fed("review.reconsideration", "review", "行政复议案件", "reconsideration cases"),
        _not_fed("review.reconsideration_corrected", "review", "其中被纠错", "of which corrected"),
        _not_fed("review.litigation", "review", "行政诉讼案件", "litigation cases"),
        _not_fed("review.litigation_lost", "review", "其中败诉", "of which lost"),
        _not_fed("complaints.received", "complaints", "投诉举报", "complaints received"),
        _not_fed(
            "transfers.criminal", "transfers", "移送司法机关案件", "cases transferred to criminal justice"
        ),
    ]
    lines += _publicity(session, agency_id, year)
    return lines


def lines_to_mapping(lines: Iterable[Line]) -> list[dict[str, Any]]:
    """The lines as stored in ``annual_reports.figures`` and served by the API."""
    return [
        {
            "key": line.key,
            "section": line.section,
            "zh": line.zh,
            "en": line.en,
            "value": line.value,
            "fed": line.fed,
            "unit": line.unit,
        }
        for line in lines
    ]


# -- the report in the database ------------------------------------------------------------------------


def _history(
    session: Session,
    report: AnnualReport,
    action: str,
    from_state: str | None,
    actor: str,
    reason: str | None = None,
) -> None:
    now = utcnow()
    session.add(
        AnnualReportHistory(
            report_id=report.id,
            action=action,
            from_state=from_state,
            to_state=report.state,
            actor=actor,
            at=now,
            reason=reason,
        )
    )
    report.updated_at = now
    session.flush()
    write_audit(
        session,
        actor=actor,
        action=f"annual_report.{action}",
        target_type="annual_report",
        target_id=report.id,
        detail={"year": report.year, "to": report.state},
    )


def _count_into(session: Session, report: AnnualReport) -> None:
    report.figures = lines_to_mapping(count_lines(session, report.agency_id, report.year))
    report.generated_at = utcnow()


def _check_year(year: int, today: date) -> None:
    if not FIRST_YEAR <= year < today.year:
        raise Invalid(
            f"年度报告只能为 {FIRST_YEAR} 年至上一年度生成",
            f"a report can be generated for a year from {FIRST_YEAR} to last year only",
        )


def generate(
    session: Session, caller: Caller, agency_id: int, year: int, *, today: date | None = None
) -> AnnualReport:
    """Generate (or recount) the draft report of ``agency_id`` for ``year``; a report in review or
    published is not recounted (return it to draft first, or it stands as published)."""
    if not caller.may_write(agency_id) or session.get(Agency, agency_id) is None:
        raise NotFound("机关不存在", "agency not found")
    if Role.COLLECTOR not in actor_of(caller).roles:
        raise TransitionForbidden("没有生成年度报告的权限", "your role may not generate an annual report")
    _check_year(year, today or today_in_china())
    report = session.scalar(
        select(AnnualReport).where(AnnualReport.agency_id == agency_id, AnnualReport.year == year)
    )
    if report is None:
        return _create(session, agency_id, year, caller.user_id)
    if report.state != ItemState.DRAFT.value:
        raise Conflict("只有草稿可以重新生成", "only a draft report can be generated again")
    _count_into(session, report)
    _history(session, report, "generate", report.state, caller.user_id)
    return report


def _create(session: Session, agency_id: int, year: int, author: str) -> AnnualReport:
    now = utcnow()
    report = AnnualReport(
        agency_id=agency_id,
        year=year,
        state=ItemState.DRAFT.value,
        author=author,
        submitted_by=None,
        figures=[],
        due_on=due_on(year),
        generated_at=now,
        updated_at=now,
    )
    _count_into(session, report)
    session.add(report)
    session.flush()
    _history(session, report, "generate", None, author)
    return report


def generate_due(session: Session, today: date | None = None) -> list[int]:
    """The job (from 1 January): draft last year's report of every agency that existed then and has none."""
    day = today or today_in_china()
    year = day.year - 1
    _, end = _bounds(year)
    have = set(session.scalars(select(AnnualReport.agency_id).where(AnnualReport.year == year)))
    created = []
    for agency_id in session.scalars(select(Agency.id).where(Agency.created_at < end).order_by(Agency.id)):
        if agency_id not in have:
            created.append(_create(session, agency_id, year, SYSTEM_AUTHOR).id)
    return created


def get_report(session: Session, caller: Caller, report_id: int) -> AnnualReport:
    """A report the caller may read; another agency's reads like a missing one."""
    report = session.get(AnnualReport, report_id)
    if report is None or not caller.may_read(report.agency_id):
        raise NotFound("年度报告不存在", "annual report not found")
    return report


def list_reports(session: Session, caller: Caller, *, year: int | None = None) -> list[AnnualReport]:
    """Reports of the caller's agency (every agency for supervisors), newest year first."""
    query = select(AnnualReport).order_by(AnnualReport.year.desc(), AnnualReport.agency_id)
    if not caller.reads_all:
        query = query.where(AnnualReport.agency_id == (caller.agency_id or -1))
    if year is not None:
        query = query.where(AnnualReport.year == year)
    return list(session.scalars(query.limit(500)))


def history_of(session: Session, report: AnnualReport) -> list[AnnualReportHistory]:
    """A report's history, oldest first."""
    return list(
        session.scalars(
            select(AnnualReportHistory)
            .where(AnnualReportHistory.report_id == report.id)
            .order_by(AnnualReportHistory.id)
        )
    )


def _writable(session: Session, caller: Caller, report_id: int) -> AnnualReport:
    report = get_report(session, caller, report_id)
    if not caller.may_write(report.agency_id):
        raise NotFound("年度报告不存在", "annual report not found")
    return report


def _transition(
    session: Session, caller: Caller, report: AnnualReport, action: Action, reason: str | None = None
) -> AnnualReport:
    actor = actor_of(caller)
    # GS-7: whoever generated the draft or submitted it answers for it; another person reviews it.
    answerable = {report.author, report.submitted_by} - {None, SYSTEM_AUTHOR}
    entry = apply_action(
        ItemState(report.state),
        action,
        author=report.submitted_by or report.author,
        actor=actor,
        at=utcnow(),
        reason=reason,
    )
    if action in (Action.RETURN, Action.PUBLISH) and caller.user_id in answerable:
        raise TransitionForbidden(
            "年度报告须由生成人、提交人以外的人员审核",
            "an annual report must be reviewed by someone other than who generated or submitted it",
        )
    from_state = report.state
    report.state = entry.to_state.value
    _history(session, report, action.value, from_state, caller.user_id, entry.reason)
    return report


def submit(session: Session, caller: Caller, report_id: int) -> AnnualReport:
    """Send the draft for review; the submitter answers for its figures from now on."""
    report = _writable(session, caller, report_id)
    _transition(session, caller, report, Action.SUBMIT)
    report.submitted_by = caller.user_id
    return report


def return_to_draft(session: Session, caller: Caller, report_id: int, reason: str) -> AnnualReport:
    """The reviewer sends the report back with a reason (it may then be generated again)."""
    report = _writable(session, caller, report_id)
    return _transition(session, caller, report, Action.RETURN, reason)


def publish(session: Session, caller: Caller, report_id: int) -> AnnualReport:
    """Review and publish (GS-7, GS-17): the portal lists it from now on; its figures stay as they are."""
    report = _writable(session, caller, report_id)
    if report.state == ItemState.IN_REVIEW.value and not report.figures:
        raise Conflict("年度报告没有数据", "the annual report has no figures")
    _transition(session, caller, report, Action.PUBLISH)
    report.published_at = report.updated_at
    return report


def published_reports(session: Session) -> list[tuple[AnnualReport, str]]:
    """Every published report with its agency's name, newest year first (the public portal, GS-5)."""
    rows = session.execute(
        select(AnnualReport, Agency.name)
        .join(Agency, Agency.id == AnnualReport.agency_id)
        .where(AnnualReport.state == ItemState.PUBLISHED.value)
        .order_by(AnnualReport.year.desc(), Agency.name, AnnualReport.id)
        .limit(1000)
    ).all()
    return [(report, name) for report, name in rows]


def public_report(session: Session, report_id: int) -> AnnualReport:
    """A published report; a draft or one in review is as missing to the public."""
    report = session.get(AnnualReport, report_id)
    if report is None or report.state != ItemState.PUBLISHED.value:
        raise NotFound("年度报告不存在", "annual report not found")
    return report


def agency_name(session: Session, report: AnnualReport) -> str:
    agency = session.get(Agency, report.agency_id)
    return agency.name if agency else ""


def report_to_dict(session: Session, report: AnnualReport, *, today: date | None = None) -> dict[str, Any]:
    """A report as the API shows it (the same for staff and public: it holds counts only)."""
    day = today or today_in_china()
    return {
        "id": report.id,
        "agency_id": report.agency_id,
        "agency_name": agency_name(session, report),
        "year": report.year,
        "state": report.state,
        "author": report.author,
        "submitted_by": report.submitted_by,
        "due_on": report.due_on.isoformat(),
        "overdue": report.state != ItemState.PUBLISHED.value and report.due_on < day,
        "generated_at": report.generated_at.isoformat(),
        "published_at": report.published_at.isoformat() if report.published_at else None,
        "sections": [{"key": key, "zh": zh, "en": en} for key, (zh, en) in SECTIONS.items()],
        "lines": list(report.figures or []),
    }


def to_csv(report: dict[str, Any]) -> str:
    """The report as CSV, one line per figure (UTF-8 with a BOM, like the statistics export); a line not
    yet fed has an empty value and ``fed`` = 0."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["agency", "year", "section", "key", "item", "item_en", "value", "unit", "fed"])
    sections = {section["key"]: section["zh"] for section in report["sections"]}
    for line in report["lines"]:
        writer.writerow(
            [
                report["agency_name"],
                report["year"],
                sections.get(line["section"], line["section"]),
                line["key"],
                line["zh"],
                line["en"],
                "" if line["value"] is None else line["value"],
                line["unit"],
                1 if line["fed"] else 0,
            ]
        )
    return out.getvalue()


_KIND_EN: dict[PenaltyKind, str] = {
    PenaltyKind.WARNING: "warning",
    PenaltyKind.CIRCULATED_CRITICISM: "circulated criticism",
    PenaltyKind.FINE: "fine",
    PenaltyKind.CONFISCATE_ILLEGAL_GAINS: "confiscation of illegal gains",
    PenaltyKind.CONFISCATE_ILLEGAL_PROPERTY: "confiscation of illegal property",
    PenaltyKind.SUSPEND_LICENCE: "licence suspended",
    PenaltyKind.LOWER_QUALIFICATION: "qualification lowered",
    PenaltyKind.REVOKE_LICENCE: "licence revoked",
    PenaltyKind.RESTRICT_BUSINESS: "business restricted",
    PenaltyKind.SUSPEND_BUSINESS: "production or business suspended",
    PenaltyKind.ORDER_CLOSURE: "closure ordered",
    PenaltyKind.RESTRICT_PRACTICE: "practice restricted",
    PenaltyKind.DETENTION: "administrative detention",
    PenaltyKind.OTHER: "other",
}
_ACT_EN: dict[EnforcementAct, str] = {
    EnforcementAct.COERCION: "coercive measures",
    EnforcementAct.INSPECTION: "inspections",
    EnforcementAct.LEVY: "levies and requisitions",
    EnforcementAct.OTHER: "other acts",
}
