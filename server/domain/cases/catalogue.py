"""The catalogue of case events in stage order (JL-7 – JL-11): each event type and its article."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EVENT_TYPES", "STAGES", "STATUS_EVENT", "EventType", "event_type_dicts"]


# ``remedy`` holds what follows a decision outside the agency: reconsideration, litigation and the
# transfer of a suspected crime to the judicial organs (GS-17 (3) and (5)).
STAGES: tuple[str, ...] = ("initiation", "investigation", "decision", "execution", "remedy")


@dataclass(frozen=True)
class EventType:
    """One kind of step in the record: its stage, the article item it records, and its names."""

    code: str
    article: str
    zh: str
    en: str

    @property
    def stage(self) -> str:
        """The stage (JL-2) this step belongs to."""
        return self.code.split(".")[0]


# The catalogue covers every item of JL-7, JL-8 (1)–(11), JL-9 (1)–(5) and JL-10 (1)–(5).
_CATALOGUE: tuple[EventType, ...] = (
    EventType(
        "initiation.ex_officio_source",
        "JL-7",
        "依职权启动：案件来源及立案理由",
        "ex officio: source and reason",
    ),
    EventType(
        "initiation.application_received", "JL-7", "依申请：接收申请", "on application: application received"
    ),
    EventType(
        "initiation.application_correction",
        "JL-7",
        "依申请：通知补正",
        "on application: correction requested",
    ),
    EventType("initiation.application_accepted", "JL-7", "依申请：受理", "on application: accepted"),
    EventType("initiation.application_rejected", "JL-7", "依申请：不予受理", "on application: not accepted"),
    EventType(
        "investigation.credential_shown",
        "JL-8(1)",
        "执法人员出示执法证件",
        "officers showed their credentials",
    ),
    EventType("investigation.inquiry", "JL-8(2)", "询问", "inquiry"),
    EventType("investigation.on_site_inspection", "JL-8(3)", "现场检查（勘验）", "on-site inspection"),
    EventType(
        "investigation.evidence_collected",
        "JL-8(4)",
        "查阅、调取、复制书证物证",
        "documentary/physical evidence",
    ),
    EventType("investigation.sampling", "JL-8(5)", "抽样取证", "sampling"),
    EventType("investigation.testing_appraisal", "JL-8(6)", "检测、检验、鉴定", "testing and appraisal"),
    EventType("investigation.evidence_preservation", "JL-8(7)", "证据保全", "evidence preservation"),
    EventType("investigation.coercive_measure", "JL-8(8)", "实施行政强制措施", "coercive measure"),
    EventType(
        "investigation.rights_notified", "JL-8(9)", "告知陈述、申辩、回避、听证等权利", "rights notified"
    ),
    EventType("investigation.party_response", "JL-8(9)", "当事人陈述、申辩", "party's statement and defence"),
    EventType("investigation.hearing", "JL-8(10)", "听证", "hearing"),
    EventType("investigation.other", "JL-8(11)", "其他调查取证", "other investigation"),
    EventType(
        "decision.recommendation", "JL-9(1)", "调查终结报告（事实、证据、依据、裁量）", "recommendation"
    ),
    EventType("decision.proposed", "JL-9(2)", "拟作出的决定", "proposed decision"),
    EventType("decision.legal_review", "JL-9(3)", "法制审核", "legal review"),
    EventType("decision.collective_discussion", "JL-9(3)", "集体讨论", "collective discussion"),
    EventType("decision.head_approval", "JL-9(4)", "机关负责人审批", "head's approval"),
    EventType("decision.decided", "JL-9, JL-11", "作出决定（决定书）", "decision issued"),
    EventType(
        "decision.licence_refused",
        "JL-9, GS-17(2)",
        "作出不予行政许可决定（行政许可法第三十八条）",
        "licence refused (Administrative Licensing Law art. 38)",
    ),
    EventType("decision.other", "JL-9(5)", "其他审查决定", "other review or decision"),
    EventType("execution.served", "JL-10(1)", "送达", "service"),
    EventType("execution.performed", "JL-10(2)", "当事人履行", "performance by the party"),
    EventType("execution.compulsory", "JL-10(3)", "强制执行", "compulsory execution"),
    EventType("execution.property_disposed", "JL-10(4)", "罚没财物处置", "disposal of confiscated property"),
    EventType("execution.other", "JL-10(5)", "其他送达执行", "other service or execution"),
    # GS-17 (3): the agency as respondent in reconsideration and as defendant in litigation; the
    # outcome (``data.outcome``) is one of ``outcomes.ReviewOutcome``.
    EventType(
        "remedy.reconsideration_filed",
        "GS-17(3)",
        "行政复议：本机关被申请复议",
        "reconsideration filed against the decision",
    ),
    EventType("remedy.reconsideration_decided", "GS-17(3)", "行政复议决定", "reconsideration decided"),
    EventType("remedy.litigation_filed", "GS-17(3)", "行政诉讼：本机关应诉", "litigation filed"),
    EventType("remedy.litigation_judged", "GS-17(3)", "行政诉讼裁判", "litigation judged"),
    # GS-17 (5): a suspected crime transferred to the judicial organs (``data.receiving_body``), and
    # what they did with it (``data.outcome``, one of ``outcomes.TransferOutcome``).
    EventType(
        "remedy.criminal_transfer",
        "GS-17(5)",
        "涉嫌犯罪案件移送司法机关",
        "transferred to the judicial organs as a suspected crime",
    ),
    EventType(
        "remedy.criminal_transfer_result",
        "GS-17(5)",
        "移送案件办理结果",
        "outcome of the transfer",
    ),
)

# A status change is recorded as an event too (JL-2: the record shows the whole process); only
# change_status() writes it, never POST /events nor a recorder.
STATUS_EVENT = EventType("case.status_changed", "JL-2", "案件状态变更", "case status changed")

EVENT_TYPES: dict[str, EventType] = {t.code: t for t in (*_CATALOGUE, STATUS_EVENT)}

# Kinds of act done on site, where showing the certificate is required (GS-10(1), JL-8(1)).
_ON_SITE_KINDS = ("penalty", "coercion", "inspection", "levy")

# Decisions adverse to the party need a prior notice of rights (JL-8(9)).
_RIGHTS_NOTICE_KINDS = ("penalty", "coercion", "levy")


def event_type_dicts() -> list[dict[str, str]]:
    """The catalogue as JSON."""
    return [
        {"code": t.code, "stage": t.stage, "article": t.article, "zh": t.zh, "en": t.en} for t in _CATALOGUE
    ]
