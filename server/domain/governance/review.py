"""Case-file review, 案卷评查 (JL-22): a supervisor or legal reviewer judges a case file item by item.

The checklist of a case is drawn from the rules that already exist: every requirement the completeness
check of its kind of act knows (JL-7 – JL-10), plus the recording rules (continuity JL-16, upload within
24 hours JL-17) and the archive deadline (JL-18). The reviewer records a finding for every item (ok,
deficient, not applicable, with a note), a verdict, and for a deficient item a rectification request
with a deadline. Reviews are append-only rows (a later review may name the one it follows up) and
ledger leaves, so the history of what a reviewer found cannot be rewritten.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.cases.completeness import completeness
from server.domain.cases.models import Case, CaseEvent
from server.domain.cases.service import get_case
from server.domain.errors import Invalid, NotFound
from server.domain.governance.archives_models import ArchivePackage, CaseReview
from server.domain.governance.inputs import FINDING_RESULTS, REVIEW_VERDICTS, ReviewInput
from server.domain.people.service import Caller

__all__ = [
    "FINDING_RESULTS",
    "MAX_RECTIFY_DAYS",
    "REVIEW_ROLES",
    "REVIEW_VERDICTS",
    "ReviewInput",
    "checklist",
    "list_reviews",
    "record_review",
    "review_to_dict",
]

REVIEW_ROLES: tuple[str, ...] = ("legal_reviewer", "agency_head", "supervisor", "system_admin")
MAX_RECTIFY_DAYS = 365

# Items every case file is reviewed on, whatever its kind (code, article, Chinese, English).
_COMMON_ITEMS: tuple[tuple[str, str, str, str], ...] = (
    (
        "recordings.continuity",
        "JL-16",
        "音像记录连续，中断均有说明",
        "recordings continuous, every gap explained",
    ),
    ("recordings.uploaded_on_time", "JL-17", "音像记录 24 小时内存储", "recordings stored within 24 hours"),
    ("archive.on_time", "JL-18", "办结后 30 日内归档", "archived within 30 days of ending"),
)


def _record_items(case: Case) -> list[tuple[str, str, str, str]]:
    """The completeness requirements that apply to this case: those an empty record would lack, and
    — past a decision — those a decided record is checked on (found by asking the rule itself)."""
    empty = completeness(case, [])
    decided = CaseEvent(id=-1, event_type="decision.decided", occurred_at=utcnow(), corrects_event_id=None)
    after = completeness(case, [decided])
    seen: dict[str, tuple[str, str, str, str]] = {}
    for item in (*empty, *after):
        seen.setdefault(
            item["requirement"], (item["requirement"], item["article"], item["message"], item["message_en"])
        )
    return list(seen.values())


def checklist(session: Session, case: Case) -> list[dict[str, Any]]:
    """The review items of a case, each with what the stored record suggests (the reviewer decides)."""
    events = list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
    missing = {m["requirement"] for m in completeness(case, events)}
    archived = session.scalar(
        select(ArchivePackage.on_time)
        .where(ArchivePackage.case_id == case.id)
        .order_by(ArchivePackage.id)
        .limit(1)
    )
    items = []
    for code, article, zh, en in (*_record_items(case), *_COMMON_ITEMS):
        suggested: str | None = None
        if code.startswith(("initiation.", "investigation.", "decision.", "execution.")):
            suggested = "deficient" if code in missing else "ok"
        elif code == "archive.on_time" and archived is not None:
            suggested = "ok" if archived else "deficient"
        items.append({"item": code, "article": article, "label": zh, "label_en": en, "suggested": suggested})
    return items


def record_review(
    session: Session, caller: Caller, case_id: int, review: ReviewInput, *, now: datetime | None = None
) -> CaseReview:
    """Append a review of a case file (flushed, audited); the rules of JL-22 refuse an inconsistent one."""
    now = now or utcnow()
    case = get_case(session, caller, case_id)  # another agency's case looks missing (JL-20)
    items = {i["item"] for i in checklist(session, case)}
    given = [f["item"] for f in review.findings]
    unknown = sorted(set(given) - items)
    if unknown:
        raise Invalid(
            f"评查项不在本案清单中：{', '.join(unknown)}",
            f"items not on this case's checklist: {', '.join(unknown)}",
        )
    if len(set(given)) != len(given):
        raise Invalid("同一评查项不能有两条结论", "an item has two findings")
    absent = sorted(items - set(given))
    if absent:
        raise Invalid(
            f"以下评查项缺少结论：{', '.join(absent)}", f"these items have no finding: {', '.join(absent)}"
        )
    deficient = {f["item"] for f in review.findings if f["result"] == "deficient"}
    for r in review.rectifications:
        if r["item"] not in deficient:
            raise Invalid(
                f"只能对不合格项 {r['item']} 提出整改",
                f"a rectification must concern a deficient item, not {r['item']}",
            )
        deadline = date.fromisoformat(r["deadline"])
        if not now.date() < deadline <= now.date() + timedelta(days=MAX_RECTIFY_DAYS):
            raise Invalid(
                f"整改期限须在今天之后 {MAX_RECTIFY_DAYS} 日内",
                f"a deadline must be after today and within {MAX_RECTIFY_DAYS} days",
            )
    if review.verdict == "pass" and (deficient or review.rectifications):
        raise Invalid("有不合格项或整改要求时不能评为合格", "a review with deficient items cannot pass")
    if review.verdict == "rectify" and not review.rectifications:
        raise Invalid(
            "需整改的结论必须至少提出一项整改要求（含期限）",
            "a rectify verdict needs at least one rectification with a deadline",
        )
    if review.follows_review_id is not None:
        earlier = session.get(CaseReview, review.follows_review_id)
        if earlier is None or earlier.case_id != case.id:
            raise NotFound("被跟进的评查记录不存在", "the review followed up does not exist for this case")
    applicable = [f for f in review.findings if f["result"] != "not_applicable"]
    score = (
        round(100 * sum(1 for f in applicable if f["result"] == "ok") / len(applicable))
        if applicable
        else 100
    )
    deadlines = [date.fromisoformat(r["deadline"]) for r in review.rectifications]
    row = CaseReview(
        case_id=case.id,
        agency_id=case.agency_id,
        verdict=review.verdict,
        score=score,
        findings=list(review.findings),
        rectifications=list(review.rectifications),
        rectify_by=min(deadlines) if deadlines else None,
        summary=review.summary,
        follows_review_id=review.follows_review_id,
        reviewer=caller.user_id,
        reviewer_role=caller.role,
        created_at=now,
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=caller.user_id,
        action="case.review",
        target_type="case",
        target_id=case.id,
        detail={"review_id": row.id, "verdict": row.verdict},
    )
    return row


def review_to_dict(row: CaseReview, *, today: date | None = None) -> dict[str, Any]:
    """A review as JSON; each rectification says whether its deadline has passed."""
    today = today or utcnow().date()
    return {
        "id": row.id,
        "case_id": row.case_id,
        "agency_id": row.agency_id,
        "verdict": row.verdict,
        "score": row.score,
        "findings": row.findings,
        "rectifications": [
            {**r, "overdue": date.fromisoformat(r["deadline"]) < today} for r in row.rectifications
        ],
        "rectify_by": row.rectify_by.isoformat() if row.rectify_by else None,
        "summary": row.summary,
        "follows_review_id": row.follows_review_id,
        "reviewer": row.reviewer,
        "reviewer_role": row.reviewer_role,
        "created_at": row.created_at.isoformat(),
    }


def list_reviews(session: Session, caller: Caller, case_id: int) -> tuple[Case, list[CaseReview]]:
    """The case and its reviews, oldest first (the append-only history)."""
    case = get_case(session, caller, case_id)
    rows = list(
        session.scalars(select(CaseReview).where(CaseReview.case_id == case.id).order_by(CaseReview.id))
    )
    return case, rows
