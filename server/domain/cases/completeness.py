"""What a case record still lacks for its kind of act (JL-2, JL-7 – JL-10); pure."""

from __future__ import annotations

from datetime import datetime

from server.domain.cases.catalogue import _ON_SITE_KINDS, _RIGHTS_NOTICE_KINDS
from server.domain.cases.models import Case, CaseEvent

__all__ = ["completeness"]


def completeness(case: Case, events: list[CaseEvent]) -> list[dict[str, str]]:
    """What the record still lacks for this kind of act (JL-7 – JL-10); corrected events do not count."""
    corrected = {e.corrects_event_id for e in events if e.corrects_event_id}
    live = [e for e in events if e.id not in corrected]

    def first(code: str) -> datetime | None:
        times = [e.occurred_at for e in live if e.event_type == code]
        return min(times) if times else None

    missing: list[dict[str, str]] = []

    def need(code: str, article: str, zh: str, en: str) -> None:
        missing.append({"requirement": code, "article": article, "message": zh, "message_en": en})

    if case.origin == "ex_officio" and not first("initiation.ex_officio_source"):
        need(
            "initiation.ex_officio_source",
            "JL-7",
            "缺少案件来源及立案理由记录",
            "no record of the case's source and reason",
        )
    if case.origin == "on_application":
        if not first("initiation.application_received"):
            need(
                "initiation.application_received", "JL-7", "缺少申请接收记录", "no record of the application"
            )
        if not first("initiation.application_accepted") and not first("initiation.application_rejected"):
            need(
                "initiation.application_accepted",
                "JL-7",
                "缺少受理（或不予受理）记录",
                "no record of acceptance",
            )
    if case.act_kind in _ON_SITE_KINDS and not first("investigation.credential_shown"):
        need(
            "investigation.credential_shown",
            "JL-8(1)",
            "缺少出示执法证件记录",
            "no record of showing credentials",
        )
    if case.act_kind == "inspection" and not first("investigation.on_site_inspection"):
        need(
            "investigation.on_site_inspection", "JL-8(3)", "缺少现场检查记录", "no on-site inspection record"
        )
    decided = first("decision.decided")
    if case.act_kind == "inspection":
        return missing
    if decided is None:
        need("decision.decided", "JL-9", "尚未作出决定", "no decision yet")
        return missing
    if case.act_kind in _RIGHTS_NOTICE_KINDS:
        notice = first("investigation.rights_notified")
        if notice is None or notice > decided:
            need(
                "investigation.rights_notified",
                "JL-8(9)",
                "决定作出前未告知当事人陈述、申辩等权利",
                "decision without a prior notice of the party's rights",
            )
    if case.major:
        for code, article, zh, en in (
            (
                "decision.legal_review",
                "JL-9(3)",
                "重大执法决定缺少法制审核",
                "major decision without legal review",
            ),
            (
                "decision.collective_discussion",
                "JL-9(3)",
                "重大执法决定缺少集体讨论",
                "major decision without collective discussion",
            ),
            (
                "decision.head_approval",
                "JL-9(4)",
                "重大执法决定缺少机关负责人审批",
                "major decision without the head's approval",
            ),
        ):
            at = first(code)
            if at is None or at > decided:
                need(code, article, zh, en)
    served = first("execution.served")
    if served is None or served < decided:
        need("execution.served", "JL-10(1)", "缺少决定书送达记录", "no record of serving the decision")
    return missing
