"""Typed inputs of the governance area: a case-file review as submitted (JL-22).

A view turns the decoded JSON body into one of these with ``from_json``, which answers bad shapes with a
precise ``Invalid``; what needs the database (is the item on this case's checklist, does the followed-up
review exist) stays in ``review.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from server.domain.errors import Invalid

__all__ = ["FINDING_RESULTS", "MAX_NOTE_CHARS", "REVIEW_VERDICTS", "ReviewInput"]

REVIEW_VERDICTS: tuple[str, ...] = ("pass", "rectify", "fail")  # 合格 / 需整改 / 不合格
FINDING_RESULTS: tuple[str, ...] = ("ok", "deficient", "not_applicable")
MAX_NOTE_CHARS = 2000


def _text(value: Any, name: str, *, limit: int = MAX_NOTE_CHARS, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise Invalid(
            f"{name} 必须是不超过 {limit} 字的文本", f"{name} must be text of at most {limit} characters"
        )
    return value.strip()


@dataclass(frozen=True, kw_only=True)
class ReviewInput:
    """A review as submitted: verdict, one finding per checklist item, rectification requests."""

    verdict: str
    findings: tuple[dict[str, str], ...]
    rectifications: tuple[dict[str, str], ...]
    summary: str
    follows_review_id: int | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ReviewInput:
        """Check the shape of a review body; Invalid with a precise message otherwise."""
        verdict = body.get("verdict")
        if verdict not in REVIEW_VERDICTS:
            raise Invalid(
                f"verdict 必须是 {', '.join(REVIEW_VERDICTS)} 之一",
                f"verdict must be one of {', '.join(REVIEW_VERDICTS)}",
            )
        raw_findings = body.get("findings")
        if not isinstance(raw_findings, list) or not raw_findings:
            raise Invalid("findings 必须是非空列表", "findings must be a non-empty list")
        findings = []
        for f in raw_findings:
            if (
                not isinstance(f, dict)
                or not isinstance(f.get("item"), str)
                or f.get("result") not in FINDING_RESULTS
            ):
                raise Invalid(
                    f"每项评查结论需有 item 和 result（{', '.join(FINDING_RESULTS)}）",
                    f"each finding needs an item and a result ({', '.join(FINDING_RESULTS)})",
                )
            findings.append({"item": f["item"], "result": f["result"], "note": _text(f.get("note"), "note")})
        raw_rect = body.get("rectifications", [])
        if not isinstance(raw_rect, list):
            raise Invalid("rectifications 必须是列表", "rectifications must be a list")
        rectifications = []
        for r in raw_rect:
            if not isinstance(r, dict) or not isinstance(r.get("item"), str):
                raise Invalid("每项整改要求需有 item", "each rectification needs an item")
            try:
                deadline = date.fromisoformat(r.get("deadline", ""))
            except (TypeError, ValueError):
                raise Invalid(
                    "整改期限必须是日期（YYYY-MM-DD）", "a rectification deadline must be a date (YYYY-MM-DD)"
                ) from None
            rectifications.append(
                {
                    "item": r["item"],
                    "request": _text(r.get("request"), "request", required=True),
                    "deadline": deadline.isoformat(),
                }
            )
        follows = body.get("follows_review_id")
        if follows is not None and (not isinstance(follows, int) or isinstance(follows, bool)):
            raise Invalid("follows_review_id 必须是整数", "follows_review_id must be an integer")
        return cls(
            verdict=verdict,
            findings=tuple(findings),
            rectifications=tuple(rectifications),
            summary=_text(body.get("summary"), "summary"),
            follows_review_id=follows,
        )
