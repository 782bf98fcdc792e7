"""The annual report (GS-17): per agency and calendar year, the counted figures, their review and publication.

A draft is counted from what the system holds — officers, publication items (every decision recorded,
whatever its publication state), case events (licence refusals, reconsideration, litigation, transfers
to the judicial organs; ``cases.outcomes``) and public correction requests — for the year by Beijing
time, and from the figures the agency enters itself (posts, complaints: ``enter_figure``). A figure not
entered is present with no value and ``fed = False``; the report says so rather than printing a zero
nobody counted.

The report goes through the workflow table of ``workflow.py`` (submit, return, publish; GS-7: the
reviewer is neither the one who generated the draft nor the one who submitted it), due by 31 January
of the next year. The job ``generate_due`` drafts last year's report of every agency from 1 January.
A published report is corrected by a new revision (``correct``, GS-19); once that is published the
earlier one is ``superseded``: kept as published, never changed or deleted.
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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.models import Case, CaseEvent
from server.domain.cases.outcomes import (
    CORRECTIVE_OUTCOMES,
    EVENT_RULES,
    ReviewOutcome,
    TransferOutcome,
)
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.domain.publicity.codes import EnforcementAct, PenaltyKind, heaviest_penalty
from server.domain.publicity.errors import TransitionForbidden
from server.domain.publicity.export import yuan_to_wanyuan
from server.domain.publicity.models import (
    AnnualFigureEntry,
    AnnualReport,
    AnnualReportHistory,
    CorrectionRequest,
    PublicationItem,
)
from server.domain.publicity.schedules import CHINA, today_in_china
from server.domain.publicity.service import actor_of
from server.domain.publicity.workflow import Action, ItemState, Role, apply_action

__all__ = [
    "AGENCY_FIGURES",
    "SECTIONS",
    "SUPERSEDED",
    "FigureEntry",
    "Line",
    "agency_name",
    "correct",
    "count_lines",
    "due_on",
    "enter_figure",
    "entered_figures",
    "figure_entries",
    "figure_entry_to_dict",
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
    "revisions_of",
    "submit",
    "to_csv",
]

# The system generates drafts; no person answers for them until one submits the draft.
SYSTEM_AUTHOR = "system"
# The first year a report may be asked for: the measures date from 2020.
FIRST_YEAR = 2020
# A published report whose correction was published: on record, no longer current (GS-19). Not a state of
# the item workflow: no transition leaves it.
SUPERSEDED = "superseded"
_ON_RECORD = (ItemState.PUBLISHED.value, SUPERSEDED)
_UNPUBLISHED = (ItemState.DRAFT.value, ItemState.IN_REVIEW.value)

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
    # "system": counted from the system's records; "agency": entered by the agency (``enter_figure``).
    source: str = "system"


def due_on(year: int) -> date:
    """GS-17: the report of ``year`` is published by 31 January of the next year."""
    return date(year + 1, 1, 31)


def _bounds(year: int) -> tuple[datetime, datetime]:
    """The year as an instant range: from Beijing midnight of 1 January to that of the next year."""
    return datetime(year, 1, 1, tzinfo=CHINA), datetime(year + 1, 1, 1, tzinfo=CHINA)


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _staff(session: Session, agency_id: int, year: int, entered: dict[str, int]) -> list[Line]:
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
        _entered("staff.posts", entered),
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


def _licensing(session: Session, agency_id: int, year: int, granted: int, refused: int) -> list[Line]:
    """申请 and 受理 from the licensing cases' initiation events; 许可 from the licensing decisions; 不予许可
    from the ``decision.licence_refused`` events; 撤销 from licensing cases revoked in the year."""
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
        Line(key="licensing.refused", section="licensing", zh="不予许可", en="refused", value=refused),
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


# -- figures the agency keeps and enters itself (GS-17 (1) posts, (4) complaints) -----------------------

# key → (section, zh, en). The system holds no register of posts or of complaints: the agency enters
# them, each entry audited and kept (``annual_figure_entries`` is append-only); the latest one counts.
AGENCY_FIGURES: dict[str, tuple[str, str, str]] = {
    "staff.posts": ("staff", "执法岗位数", "enforcement posts"),
    "complaints.received": ("complaints", "受理投诉举报", "complaints and reports received"),
    "complaints.concluded": ("complaints", "办结投诉举报", "complaints and reports concluded"),
}
MAX_FIGURE = 1_000_000
MAX_NOTE_CHARS = 2000


@dataclass(frozen=True, kw_only=True)
class FigureEntry:
    """One figure the agency enters for a year: checked when built, whoever builds it."""

    agency_id: int
    year: int
    key: str
    value: int
    note: str = ""

    def __post_init__(self) -> None:
        if self.key not in AGENCY_FIGURES:
            raise Invalid(
                f"key 只能是 {'/'.join(AGENCY_FIGURES)}", f"key must be one of {', '.join(AGENCY_FIGURES)}"
            )
        if (
            isinstance(self.value, bool)
            or not isinstance(self.value, int)
            or not 0 <= self.value <= MAX_FIGURE
        ):
            raise Invalid(
                f"value 须为 0 至 {MAX_FIGURE} 的整数", f"value must be an integer from 0 to {MAX_FIGURE}"
            )
        if not isinstance(self.note, str) or len(self.note) > MAX_NOTE_CHARS:
            raise Invalid(
                f"note 须为不超过 {MAX_NOTE_CHARS} 字的文本",
                f"note must be text of at most {MAX_NOTE_CHARS} characters",
            )


def _entered(key: str, entered: dict[str, int]) -> Line:
    section, zh, en = AGENCY_FIGURES[key]
    value = entered.get(key)
    return Line(key=key, section=section, zh=zh, en=en, value=value, fed=value is not None, source="agency")


def entered_figures(session: Session, agency_id: int, year: int) -> dict[str, AnnualFigureEntry]:
    """The latest entry of each figure of ``agency_id`` for ``year``."""
    latest: dict[str, AnnualFigureEntry] = {}
    for row in session.scalars(
        select(AnnualFigureEntry)
        .where(AnnualFigureEntry.agency_id == agency_id, AnnualFigureEntry.year == year)
        .order_by(AnnualFigureEntry.id)
    ):
        latest[row.key] = row
    return latest


def figure_entries(session: Session, caller: Caller, agency_id: int, year: int) -> list[AnnualFigureEntry]:
    """Every entry of the agency's figures for the year, oldest first (another agency's: not found)."""
    if not caller.may_read(agency_id) or session.get(Agency, agency_id) is None:
        raise NotFound("机关不存在", "agency not found")
    return list(
        session.scalars(
            select(AnnualFigureEntry)
            .where(AnnualFigureEntry.agency_id == agency_id, AnnualFigureEntry.year == year)
            .order_by(AnnualFigureEntry.id)
        )
    )


def enter_figure(
    session: Session, caller: Caller, entry: FigureEntry, *, today: date | None = None
) -> AnnualFigureEntry:
    """Record a figure the agency keeps (a collector of the agency); the next count of a draft uses it.

    A published report keeps the figures it was published with: a changed figure reaches the public
    through a correction (``correct``).
    """
    if not caller.may_write(entry.agency_id) or session.get(Agency, entry.agency_id) is None:
        raise NotFound("机关不存在", "agency not found")
    if Role.COLLECTOR not in actor_of(caller).roles:
        raise TransitionForbidden(
            "没有填报年度报告数据的权限", "your role may not enter annual report figures"
        )
    day = today or today_in_china()
    if not FIRST_YEAR <= entry.year <= day.year:
        raise Invalid(
            f"年度须在 {FIRST_YEAR} 年至今年之间", f"the year must be from {FIRST_YEAR} to this year"
        )
    row = AnnualFigureEntry(
        agency_id=entry.agency_id,
        year=entry.year,
        key=entry.key,
        value=entry.value,
        note=entry.note.strip(),
        entered_by=caller.user_id,
        entered_at=utcnow(),
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="annual_report.enter_figure",
        target_type="annual_figure_entry",
        target_id=row.id,
        detail={"agency_id": row.agency_id, "year": row.year, "key": row.key, "value": row.value},
    )
    return row


def figure_entry_to_dict(row: AnnualFigureEntry) -> dict[str, Any]:
    """An entered figure as the API shows it."""
    section, zh, en = AGENCY_FIGURES.get(row.key, ("", row.key, row.key))
    return {
        "id": row.id,
        "agency_id": row.agency_id,
        "year": row.year,
        "key": row.key,
        "section": section,
        "zh": zh,
        "en": en,
        "value": row.value,
        "note": row.note,
        "entered_by": row.entered_by,
        "entered_at": row.entered_at.isoformat(),
    }


# -- refusals, reconsideration, litigation and transfers from the case record (GS-17 (2), (3), (5)) ----

_REMEDY_EVENTS = tuple(EVENT_RULES)


def _remedy_counts(session: Session, agency_id: int, year: int) -> Counter[str]:
    """Per event type (and ``type:outcome``), the events of the agency's cases that occurred in the year.

    A corrected event counts through its correction only (JL-2: a correction is a new event naming the
    one it corrects), so a wrongly recorded outcome is counted as corrected.
    """
    start, end = _bounds(year)
    corrected = set(
        session.scalars(
            select(CaseEvent.corrects_event_id).where(
                CaseEvent.agency_id == agency_id, CaseEvent.corrects_event_id.is_not(None)
            )
        )
    )
    rows = session.execute(
        select(CaseEvent.id, CaseEvent.event_type, CaseEvent.data)
        .join(Case, Case.id == CaseEvent.case_id)
        .where(
            Case.agency_id == agency_id,
            CaseEvent.event_type.in_(_REMEDY_EVENTS),
            CaseEvent.occurred_at >= start,
            CaseEvent.occurred_at < end,
        )
    ).all()
    counts: Counter[str] = Counter()
    for event_id, event_type, data in rows:
        if event_id in corrected:
            continue
        counts[event_type] += 1
        outcome = (data or {}).get("outcome")
        if isinstance(outcome, str):
            counts[f"{event_type}:{outcome}"] += 1
    return counts


_OUTCOME_LABELS: dict[ReviewOutcome, tuple[str, str]] = {
    ReviewOutcome.UPHELD: ("维持（驳回诉讼请求）", "upheld"),
    ReviewOutcome.ALTERED: ("变更", "altered"),
    ReviewOutcome.REVOKED: ("撤销", "revoked"),
    ReviewOutcome.CONFIRMED_ILLEGAL: ("确认违法或无效", "confirmed illegal or void"),
    ReviewOutcome.ORDERED_TO_PERFORM: ("责令履行", "ordered to perform"),
    ReviewOutcome.DISMISSED: ("驳回申请或起诉", "application or suit dismissed"),
    ReviewOutcome.WITHDRAWN: ("撤回申请或撤诉", "withdrawn"),
    ReviewOutcome.SETTLED: ("调解、和解", "mediated or settled"),
    ReviewOutcome.TERMINATED: ("终止", "terminated"),
}


def _review(counts: Counter[str]) -> list[Line]:
    """GS-17 (3): reconsideration (the agency as respondent) and litigation, filed and concluded in the
    year, concluded ones by outcome; 纠错 and 败诉 are the outcomes that find the decision wrong."""
    lines: list[Line] = []
    for name, filed, concluded, zh, en, wrong_zh, wrong_en in (
        (
            "reconsideration",
            "remedy.reconsideration_filed",
            "remedy.reconsideration_decided",
            "行政复议",
            "reconsideration",
            "其中被纠错（变更、撤销、确认违法、责令履行）",
            "of which corrected (altered, revoked, confirmed illegal, ordered to perform)",
        ),
        (
            "litigation",
            "remedy.litigation_filed",
            "remedy.litigation_judged",
            "行政诉讼",
            "litigation",
            "其中败诉（变更、撤销、确认违法、责令履行）",
            "of which lost (altered, revoked, confirmed illegal, ordered to perform)",
        ),
    ):
        lines += [
            Line(
                key=f"review.{name}",
                section="review",
                zh=f"{zh}案件（收到）",
                en=f"{en} cases filed",
                value=counts[filed],
            ),
            Line(
                key=f"review.{name}_concluded",
                section="review",
                zh=f"{zh}案件（审结）",
                en=f"{en} cases concluded",
                value=counts[concluded],
            ),
            Line(
                key=f"review.{name}_{'corrected' if name == 'reconsideration' else 'lost'}",
                section="review",
                zh=wrong_zh,
                en=wrong_en,
                value=sum(counts[f"{concluded}:{o.value}"] for o in CORRECTIVE_OUTCOMES),
            ),
        ]
        lines += [
            Line(
                key=f"review.{name}.{outcome.value}",
                section="review",
                zh=f"{zh}审结：{_OUTCOME_LABELS[outcome][0]}",
                en=f"{en} concluded: {_OUTCOME_LABELS[outcome][1]}",
                value=counts[f"{concluded}:{outcome.value}"],
            )
            for outcome in ReviewOutcome
        ]
    return lines


def _transfers(counts: Counter[str]) -> list[Line]:
    """GS-17 (5): suspected crimes transferred to the judicial organs, and what became of them."""
    result = "remedy.criminal_transfer_result"
    return [
        Line(
            key="transfers.criminal",
            section="transfers",
            zh="移送司法机关案件",
            en="cases transferred to the judicial organs",
            value=counts["remedy.criminal_transfer"],
        ),
        Line(
            key="transfers.filed",
            section="transfers",
            zh="司法机关已立案",
            en="filed as criminal cases",
            value=counts[f"{result}:{TransferOutcome.FILED.value}"],
        ),
        Line(
            key="transfers.not_filed",
            section="transfers",
            zh="司法机关不予立案",
            en="not filed",
            value=counts[f"{result}:{TransferOutcome.NOT_FILED.value}"],
        ),
        Line(
            key="transfers.returned",
            section="transfers",
            zh="退回移送机关",
            en="returned to the agency",
            value=counts[f"{result}:{TransferOutcome.RETURNED.value}"],
        ),
    ]


def count_lines(session: Session, agency_id: int, year: int) -> list[Line]:
    """Every line of the report of ``agency_id`` for ``year``, in the order it is printed (GS-17)."""
    decisions = _decisions(session, agency_id, year)
    by_act: dict[str, list[PublicationItem]] = {}
    for item in decisions:
        by_act.setdefault(item.act_kind, []).append(item)
    entered = {key: row.value for key, row in entered_figures(session, agency_id, year).items()}
    remedies = _remedy_counts(session, agency_id, year)
    lines = _staff(session, agency_id, year, entered)
    lines += _penalty(by_act.get(EnforcementAct.PENALTY.value, []))
    lines += _licensing(
        session,
        agency_id,
        year,
        len(by_act.get(EnforcementAct.LICENSING.value, [])),
        remedies["decision.licence_refused"],
    )
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
    lines += _review(remedies)
    lines += [_entered("complaints.received", entered), _entered("complaints.concluded", entered)]
    lines += _transfers(remedies)
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
            "source": line.source,
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
    report = _latest(session, agency_id, year)
    if report is None:
        return _create(session, agency_id, year, caller.user_id)
    if report.state == ItemState.PUBLISHED.value:
        raise Conflict(
            f"{year} 年度报告已公布，只能更正（报告 #{report.id}）",
            f"the {year} report is published; correct it instead (report #{report.id})",
        )
    if report.state != ItemState.DRAFT.value:
        raise Conflict("只有草稿可以重新生成", "only a draft report can be generated again")
    _count_into(session, report)
    _history(session, report, "generate", report.state, caller.user_id)
    return report


def _latest(session: Session, agency_id: int, year: int) -> AnnualReport | None:
    """The newest revision of the agency's report for the year (the draft of a correction, if any)."""
    return session.scalar(
        select(AnnualReport)
        .where(AnnualReport.agency_id == agency_id, AnnualReport.year == year)
        .order_by(AnnualReport.revision.desc())
        .limit(1)
    )


def _create(
    session: Session,
    agency_id: int,
    year: int,
    author: str,
    *,
    corrects: AnnualReport | None = None,
    reason: str | None = None,
) -> AnnualReport:
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
        revision=corrects.revision + 1 if corrects is not None else 1,
        corrects_report_id=corrects.id if corrects is not None else None,
        correction_reason=reason,
    )
    _count_into(session, report)
    session.add(report)
    try:
        # Two corrections at once: the unique (agency, year, revision) lets one through.
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "该年度报告正被他人同时生成或更正，请刷新",
            "the report was generated or corrected meanwhile; reload",
        ) from exc
    _history(session, report, "correct" if corrects is not None else "generate", None, author, reason)
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
    query = select(AnnualReport).order_by(
        AnnualReport.year.desc(), AnnualReport.agency_id, AnnualReport.revision.desc()
    )
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
    if report.state == SUPERSEDED:
        raise Conflict(
            f"该年度报告已被更正版本 #{report.superseded_by_id} 取代",
            f"this report was superseded by its correction #{report.superseded_by_id}",
        )
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
    earlier = session.get(AnnualReport, report.corrects_report_id) if report.corrects_report_id else None
    if earlier is not None and earlier.state != ItemState.PUBLISHED.value:
        raise Conflict(
            f"被更正的报告 #{earlier.id} 已不是现行版本",
            f"the corrected report #{earlier.id} is no longer the current one",
        )
    _transition(session, caller, report, Action.PUBLISH)
    report.published_at = report.updated_at
    if earlier is not None:
        # GS-19: the earlier report stays as published, on record and on the portal, marked superseded.
        earlier.state = SUPERSEDED
        earlier.superseded_by_id = report.id
        earlier.superseded_at = report.published_at
        _history(
            session, earlier, "supersede", ItemState.PUBLISHED.value, caller.user_id, report.correction_reason
        )
    return report


def correct(session: Session, caller: Caller, report_id: int, reason: str) -> AnnualReport:
    """Open the correction of a published report (GS-17, GS-19): a new draft of the same agency and
    year, counted afresh, with the reason. The published report stays current until the correction is
    reviewed and published by someone other than who opened or submitted it (GS-7); then it is
    superseded, never changed or deleted."""
    report = _writable(session, caller, report_id)
    if Role.REVIEWER not in actor_of(caller).roles:
        raise TransitionForbidden(
            "更正已公布的年度报告需要审核发布职责", "correcting a published report needs the reviewer duty"
        )
    cleaned = reason.strip()
    if not cleaned or len(cleaned) > MAX_NOTE_CHARS:
        raise Invalid(
            f"更正须说明理由（不超过 {MAX_NOTE_CHARS} 字）",
            f"a correction needs a reason of at most {MAX_NOTE_CHARS} characters",
        )
    if report.state == SUPERSEDED:
        raise Conflict(
            f"该报告已被 #{report.superseded_by_id} 取代，请更正现行版本",
            f"this report was superseded by #{report.superseded_by_id}; correct the current one",
        )
    if report.state != ItemState.PUBLISHED.value:
        raise Conflict(
            "只有已公布的年度报告可以更正；草稿或待审核的报告可重新生成或退回",
            f"only a published report can be corrected; this one is {report.state} "
            "(generate a draft again, or return it)",
        )
    latest = _latest(session, report.agency_id, report.year)
    if latest is not None and latest.id != report.id:
        raise Conflict(
            f"该年度已有未公布的更正稿 #{latest.id}",
            f"a correction of this report is already open (report #{latest.id})",
        )
    return _create(session, report.agency_id, report.year, caller.user_id, corrects=report, reason=cleaned)


def published_reports(session: Session) -> list[tuple[AnnualReport, str]]:
    """Every current published report with its agency's name, newest year first (the public portal,
    GS-5); a superseded one is reached from its correction."""
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
    if report is None or report.state not in _ON_RECORD:
        raise NotFound("年度报告不存在", "annual report not found")
    return report


def revisions_of(session: Session, report: AnnualReport) -> list[AnnualReport]:
    """Every published revision of the report's agency and year (current and superseded), newest first."""
    return list(
        session.scalars(
            select(AnnualReport)
            .where(
                AnnualReport.agency_id == report.agency_id,
                AnnualReport.year == report.year,
                AnnualReport.state.in_(_ON_RECORD),
            )
            .order_by(AnnualReport.revision.desc())
        )
    )


def agency_name(session: Session, report: AnnualReport) -> str:
    agency = session.get(Agency, report.agency_id)
    return agency.name if agency else ""


def report_to_dict(session: Session, report: AnnualReport, *, today: date | None = None) -> dict[str, Any]:
    """A report as the API shows it (the same for staff and public: it holds counts only)."""
    day = today or today_in_china()
    superseded_reason = None
    if report.superseded_by_id is not None:
        newer = session.get(AnnualReport, report.superseded_by_id)
        superseded_reason = newer.correction_reason if newer is not None else None
    return {
        "id": report.id,
        "agency_id": report.agency_id,
        "agency_name": agency_name(session, report),
        "year": report.year,
        "state": report.state,
        "author": report.author,
        "submitted_by": report.submitted_by,
        "due_on": report.due_on.isoformat(),
        # A correction is never late: the year's report was published.
        "overdue": report.state in _UNPUBLISHED and report.revision == 1 and report.due_on < day,
        "generated_at": report.generated_at.isoformat(),
        "published_at": report.published_at.isoformat() if report.published_at else None,
        "revision": report.revision,
        "current": report.state == ItemState.PUBLISHED.value,
        "corrects_report_id": report.corrects_report_id,
        "correction_reason": report.correction_reason,
        "superseded_by_id": report.superseded_by_id,
        "superseded_at": report.superseded_at.isoformat() if report.superseded_at else None,
        "superseded_reason": superseded_reason,
        "sections": [{"key": key, "zh": zh, "en": en} for key, (zh, en) in SECTIONS.items()],
        "lines": list(report.figures or []),
    }


def to_csv(report: dict[str, Any]) -> str:
    """The report as CSV, one line per figure (UTF-8 with a BOM, like the statistics export); a line without
    a value has an empty value and ``fed`` = 0; ``source`` says whether the system counted it or the
    agency entered it."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["agency", "year", "section", "key", "item", "item_en", "value", "unit", "fed", "source"])
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
                # Reports published before the source was recorded were counted by the system.
                line.get("source", "system"),
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
