"""The case-file review form of the workspace (JL-22, 案卷评查): the checklist of the case's kind of act,
a result and a note per item, rectification requests with deadlines, the verdict and remarks.

A page over ``server/domain/governance/review.py`` with the roles of the API's ``reviews.create_review``
(legal reviewers and heads of the case's agency, supervisors of any agency). The form is decoded into the
same JSON shape the API takes and checked by the same ``ReviewInput`` and ``record_review``, so the rules
(one finding per checklist item, ``pass`` only without deficient items, rectifications with deadlines)
and their error codes are the API's. The score is computed by the service from the findings.
"""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.errors import ServiceError
from server.domain.governance import review as review_service
from server.http.context import caller
from server.http.pages.workspace.core import back, bp, lang, message_of, render, workspace_view
from server.infra.db import session_scope

__all__ = ["TEXTS", "review_form", "submit_review"]

TEXTS: dict[str, dict[str, str]] = {
    "zh": {
        "heading": "案卷评查",
        "case": "案件",
        "item": "评查项",
        "article": "依据",
        "suggested": "系统提示",
        "result": "结论",
        "note": "说明",
        "rectify_request": "整改要求（不合格项）",
        "deadline": "整改期限",
        "verdict": "评查结论",
        "summary": "评查意见",
        "follows": "跟进的评查记录",
        "none": "—",
        "submit": "提交评查",
        "saved": "评查已记录",
        "result.ok": "合格",
        "result.deficient": "不合格",
        "result.not_applicable": "不适用",
        "verdict.pass": "合格",
        "verdict.rectify": "需整改",
        "verdict.fail": "不合格",
        "unknown": "无法判断",
        "note_text": "依据《安徽省行政执法全过程记录办法》第二十二条：逐项评查，得分为合格项占适用项的比例；"
        "评查记录只增不改，记入证据账本。",
    },
    "en": {
        "heading": "Case-file review",
        "case": "Case",
        "item": "Item",
        "article": "Rule",
        "suggested": "The record suggests",
        "result": "Finding",
        "note": "Note",
        "rectify_request": "Rectification (deficient items)",
        "deadline": "Deadline",
        "verdict": "Verdict",
        "summary": "Remarks",
        "follows": "Follows up review",
        "none": "—",
        "submit": "Record the review",
        "saved": "Review recorded",
        "result.ok": "OK",
        "result.deficient": "Deficient",
        "result.not_applicable": "Not applicable",
        "verdict.pass": "Pass",
        "verdict.rectify": "Rectify",
        "verdict.fail": "Fail",
        "unknown": "unknown",
        "note_text": "Anhui Recording Measures art. 22: each item is judged; the score is the share of "
        "applicable items found OK. Reviews are append-only and ledger leaves.",
    },
}


def _texts() -> dict[str, str]:
    return TEXTS["en" if lang() == "en" else "zh"]


@bp.get("/cases/<int:case_id>/review")
@workspace_view("reviews.create_review")
def review_form(case_id: int) -> ResponseReturnValue:
    """The checklist of the case, each item preset to what the record suggests; the reviewer decides."""
    with session_scope() as session:
        case, earlier = review_service.list_reviews(session, caller(), case_id)
        items = review_service.checklist(session, case)
        number, act_kind = case.number, case.act_kind
        earlier_ids = [r.id for r in earlier]
    return render(
        "review.html",
        q=_texts(),
        case_id=case_id,
        number=number,
        act_kind=act_kind,
        items=items,
        earlier=earlier_ids,
        results=review_service.FINDING_RESULTS,
        verdicts=review_service.REVIEW_VERDICTS,
    )


def _body(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The form as the API's JSON body: one finding per checklist item, rectifications where asked."""
    form = request.form
    findings = []
    rectifications = []
    for item in items:
        code = item["item"]
        findings.append(
            {"item": code, "result": form.get(f"result.{code}", ""), "note": form.get(f"note.{code}", "")}
        )
        asked = form.get(f"rectify.{code}", "").strip()
        if asked:
            rectifications.append(
                {"item": code, "request": asked, "deadline": form.get(f"deadline.{code}", "")}
            )
    follows = form.get("follows_review_id", "").strip()
    return {
        "verdict": form.get("verdict", ""),
        "findings": findings,
        "rectifications": rectifications,
        "summary": form.get("summary", ""),
        "follows_review_id": int(follows) if follows.isdigit() and len(follows) < 12 else None,
    }


@bp.post("/cases/<int:case_id>/review")
@workspace_view("reviews.create_review")
def submit_review(case_id: int) -> ResponseReturnValue:
    """Record the review through the service; back to the case file, where it is listed."""
    form_url = url_for("workspace.review_form", case_id=case_id)
    who = caller()
    with session_scope() as session:
        # The case first: another agency's case reads as missing (404) before any field is judged.
        case, _earlier = review_service.list_reviews(session, who, case_id)
        items = review_service.checklist(session, case)
    try:
        review = review_service.ReviewInput.from_json(_body(items))
        with session_scope() as session:
            row = review_service.record_review(session, who, case_id, review)
            score = row.score
    except ServiceError as exc:
        if exc.kind == "not_found":
            raise
        return back(form_url, "error", message_of(exc))
    target = url_for("workspace.case_file", case_id=case_id)
    return back(target, "ok", f"{_texts()['saved']} · {score}")
