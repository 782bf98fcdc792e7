"""The before-enforcement catalogue (GS-9 (1) entrusted bodies, (3) – (7)): its kinds and their content.

Pure rules, no database: each kind of entry is a frozen dataclass whose fields say what the Anhui
measures (art. 9) require; ``content_from_mapping`` decodes a JSON object into one of them once, at the
edge, and refuses an unknown key, a missing field or a bad value with the field's name in the message.
What the catalogue publishes is ``public_fields`` of the content, in the declared order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, ClassVar

from server.domain.publicity.errors import CatalogueError

__all__ = [
    "CHANGE_CAUSES",
    "KIND_CLASSES",
    "CatalogueContent",
    "CatalogueKind",
    "ChangeCause",
    "ComplaintChannel",
    "EntrustedBody",
    "FormField",
    "InspectionListEntry",
    "LegalBasis",
    "PartyRight",
    "PowerListEntry",
    "Procedure",
    "content_from_mapping",
    "content_to_mapping",
    "field_label",
    "form_fields",
    "public_fields",
]


class CatalogueKind(StrEnum):
    """What a catalogue entry is, with the paragraph of GS-9 (art. 9) that asks for it."""

    LEGAL_BASIS = "legal_basis"  # (3) laws, regulations, rules, discretion rules and benchmarks
    PROCEDURE = "procedure"  # (4) service guide, flowchart, matter, bodies, conditions, time limit
    POWER_LIST = "power_list"  # (5) 权责清单
    INSPECTION_LIST = "inspection_list"  # (5) 随机抽查事项清单
    PARTY_RIGHT = "party_right"  # (6) statement, defence, hearing, reconsideration, litigation
    COMPLAINT_CHANNEL = "complaint_channel"  # (7) conditions, phone, address, postcode, e-mail
    ENTRUSTED_BODY = "entrusted_body"  # (1) an entrusted body: basis, matters, authority, term

    @property
    def paragraph(self) -> str:
        return _PARAGRAPH[self]

    def label(self, lang: str = "zh") -> str:
        zh, en = _KIND_LABELS[self]
        return en if lang == "en" else zh


_PARAGRAPH = {
    CatalogueKind.LEGAL_BASIS: "GS-9(3)",
    CatalogueKind.PROCEDURE: "GS-9(4)",
    CatalogueKind.POWER_LIST: "GS-9(5)",
    CatalogueKind.INSPECTION_LIST: "GS-9(5)",
    CatalogueKind.PARTY_RIGHT: "GS-9(6)",
    CatalogueKind.COMPLAINT_CHANNEL: "GS-9(7)",
    CatalogueKind.ENTRUSTED_BODY: "GS-9(1)",
}
_KIND_LABELS = {
    CatalogueKind.LEGAL_BASIS: ("执法依据", "Legal basis"),
    CatalogueKind.PROCEDURE: ("执法程序", "Procedures"),
    CatalogueKind.POWER_LIST: ("权责清单", "Powers and duties list"),
    CatalogueKind.INSPECTION_LIST: ("随机抽查事项清单", "Random inspection list"),
    CatalogueKind.PARTY_RIGHT: ("行政相对人的权利", "Rights of the party"),
    CatalogueKind.COMPLAINT_CHANNEL: ("投诉举报渠道", "Complaints and reports"),
    CatalogueKind.ENTRUSTED_BODY: ("受委托组织", "Entrusted bodies"),
}


class ChangeCause(StrEnum):
    """Why an entry changes. A change in law or duties starts the 20-working-day update rule (GS-9)."""

    LAW = "law"  # a law, regulation, rule or normative document made, amended, repealed
    DUTIES = "duties"  # the agency's duties were adjusted
    OTHER = "other"  # a correction or an improvement: no deadline of its own


CHANGE_CAUSES: frozenset[ChangeCause] = frozenset({ChangeCause.LAW, ChangeCause.DUTIES})


# -- field specifications -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    zh: str
    en: str
    kind: str = "text"  # text | date | days | percent | choice | list | postcode | phone | email
    limit: int = 2000
    required: bool = True  # set from the dataclass field: no default means required
    choices: tuple[str, ...] = ()


def _s(zh: str, en: str, **spec: Any) -> dict[str, _Spec]:
    """A field's labels and checks, kept in the dataclass field's metadata."""
    return {"spec": _Spec(zh, en, **spec)}


def _specs(cls: type[CatalogueContent]) -> dict[str, _Spec]:
    """Each field's spec in the declared order; a field without a default is required."""
    return {
        f.name: replace(f.metadata["spec"], required=f.default is MISSING)
        for f in fields(cls)  # type: ignore[arg-type]
    }


class CatalogueContent:
    """Base of the kinds' content; ``check`` holds the rules across fields."""

    KIND: ClassVar[CatalogueKind]

    def check(self) -> None:
        """Rules across fields; none by default."""

    @property
    def title(self) -> str:
        """The entry's heading on the portal."""
        return str(getattr(self, fields(self)[0].name))  # type: ignore[arg-type]


LEVELS = ("law", "administrative_regulation", "local_regulation", "rule", "normative_document")
RIGHTS = ("statement", "defence", "hearing", "reconsideration", "litigation", "compensation", "other")
POWER_KINDS = ("penalty", "licensing", "coercion", "inspection", "levy", "other")


@dataclass(frozen=True, kw_only=True)
class LegalBasis(CatalogueContent):
    """GS-9(3): a law or document the agency enforces, with its discretion rules and benchmarks."""

    KIND = CatalogueKind.LEGAL_BASIS
    name: str = field(metadata=_s("名称", "Name", limit=300))
    level: str = field(metadata=_s("效力层级", "Level", kind="choice", choices=LEVELS))
    issuer: str = field(metadata=_s("制定机关", "Issued by", limit=300))
    effective_on: date = field(metadata=_s("施行日期", "In force from", kind="date"))
    provisions: str = field(metadata=_s("适用条款", "Provisions applied"))
    discretion_rules: str = field(default="", metadata=_s("裁量权适用规则", "Discretion rules"))
    discretion_benchmarks: str = field(
        default="", metadata=_s("裁量基准", "Discretion benchmarks", limit=10000)
    )


@dataclass(frozen=True, kw_only=True)
class Procedure(CatalogueContent):
    """GS-9(4): a service guide and flowchart of one matter, with bodies, conditions and time limit."""

    KIND = CatalogueKind.PROCEDURE
    matter: str = field(metadata=_s("执法事项名称", "Matter", limit=300))
    accepting_body: str = field(metadata=_s("受理机构", "Accepting body", limit=300))
    approving_body: str = field(metadata=_s("审批机构", "Approving body", limit=300))
    conditions: str = field(metadata=_s("受理条件", "Conditions"))
    time_limit_days: int = field(metadata=_s("办理时限（工作日）", "Time limit (working days)", kind="days"))
    flow_steps: tuple[str, ...] = field(metadata=_s("流程步骤", "Flowchart steps", kind="list", limit=300))
    service_guide: str = field(metadata=_s("服务指南", "Service guide", limit=10000))
    basis: str = field(default="", metadata=_s("依据", "Basis"))


@dataclass(frozen=True, kw_only=True)
class PowerListEntry(CatalogueContent):
    """GS-9(5): one power of the agency's 权责清单 with its basis and who answers for it."""

    KIND = CatalogueKind.POWER_LIST
    matter: str = field(metadata=_s("事项名称", "Matter", limit=300))
    power_kind: str = field(metadata=_s("职权类别", "Kind of power", kind="choice", choices=POWER_KINDS))
    basis: str = field(metadata=_s("设定依据", "Basis"))
    responsible_body: str = field(metadata=_s("实施主体", "Exercised by", limit=300))
    accountability: str = field(default="", metadata=_s("追责情形", "Accountability"))


@dataclass(frozen=True, kw_only=True)
class InspectionListEntry(CatalogueContent):
    """GS-9(5): one line of the 随机抽查事项清单: 主体, 依据, 对象, 内容, 比例, 方式, 频次."""

    KIND = CatalogueKind.INSPECTION_LIST
    matter: str = field(metadata=_s("抽查事项", "Matter", limit=300))
    subject: str = field(metadata=_s("抽查主体", "Inspecting body", limit=300))
    basis: str = field(metadata=_s("抽查依据", "Basis"))
    target: str = field(metadata=_s("抽查对象", "Inspected parties", limit=300))
    content: str = field(metadata=_s("抽查内容", "What is checked"))
    ratio_percent: str = field(metadata=_s("抽查比例（%）", "Share inspected (%)", kind="percent"))
    method: str = field(metadata=_s("抽查方式", "Method", limit=300))
    frequency: str = field(metadata=_s("抽查频次", "Frequency", limit=100))


@dataclass(frozen=True, kw_only=True)
class PartyRight(CatalogueContent):
    """GS-9(6): one right of the party and how to exercise it."""

    KIND = CatalogueKind.PARTY_RIGHT
    right: str = field(metadata=_s("权利", "Right", kind="choice", choices=RIGHTS))
    description: str = field(metadata=_s("内容", "What it is"))
    how_to_exercise: str = field(metadata=_s("行使方式与期限", "How and when to exercise it"))

    @property
    def title(self) -> str:
        return _RIGHT_LABELS[self.right][0]


@dataclass(frozen=True, kw_only=True)
class ComplaintChannel(CatalogueContent):
    """GS-9(7): where and on what conditions complaints and reports are received; one way at least."""

    KIND = CatalogueKind.COMPLAINT_CHANNEL
    name: str = field(metadata=_s("渠道名称", "Channel", limit=300))
    conditions: str = field(metadata=_s("受理条件", "Conditions"))
    phone: str = field(default="", metadata=_s("电话", "Phone", kind="phone", limit=40))
    address: str = field(default="", metadata=_s("地址", "Address", limit=300))
    postcode: str = field(default="", metadata=_s("邮编", "Postcode", kind="postcode", limit=6))
    email: str = field(default="", metadata=_s("邮箱", "E-mail", kind="email", limit=200))

    def check(self) -> None:
        if not (self.phone or self.address or self.email):
            raise CatalogueError(
                "投诉举报渠道须至少提供电话、地址或邮箱之一",
                "a complaint channel needs a phone, an address or an e-mail",
                field="content.phone",
            )
        if self.postcode and not self.address:
            raise CatalogueError(
                "填写邮编时须同时填写地址", "a postcode needs an address", field="content.address"
            )


@dataclass(frozen=True, kw_only=True)
class EntrustedBody(CatalogueContent):
    """GS-9(1): a body the agency entrusts: basis, matters, authority, term, rights, duties, liability."""

    KIND = CatalogueKind.ENTRUSTED_BODY
    name: str = field(metadata=_s("受委托组织名称", "Entrusted body", limit=300))
    basis: str = field(metadata=_s("委托依据", "Basis"))
    matters: str = field(metadata=_s("委托事项", "Matters"))
    authority: str = field(metadata=_s("委托权限", "Authority"))
    term_from: date = field(metadata=_s("委托期限自", "Term from", kind="date"))
    term_to: date = field(metadata=_s("委托期限至", "Term to", kind="date"))
    rights_and_duties: str = field(default="", metadata=_s("双方权利和义务", "Rights and duties"))
    liability: str = field(default="", metadata=_s("法律责任", "Liability"))

    def check(self) -> None:
        if self.term_to < self.term_from:
            raise CatalogueError(
                f"委托期限至（{self.term_to}）早于委托期限自（{self.term_from}）",
                f"term_to ({self.term_to}) is before term_from ({self.term_from})",
                field="content.term_to",
            )


KIND_CLASSES: dict[CatalogueKind, type[CatalogueContent]] = {
    cls.KIND: cls
    for cls in (
        LegalBasis,
        Procedure,
        PowerListEntry,
        InspectionListEntry,
        PartyRight,
        ComplaintChannel,
        EntrustedBody,
    )
}
_RIGHT_LABELS = {
    "statement": ("陈述权", "Right to state one's case"),
    "defence": ("申辩权", "Right of defence"),
    "hearing": ("听证权", "Right to a hearing"),
    "reconsideration": ("申请行政复议权", "Right to administrative reconsideration"),
    "litigation": ("提起行政诉讼权", "Right to bring an administrative lawsuit"),
    "compensation": ("申请国家赔偿权", "Right to state compensation"),
    "other": ("其他权利", "Other rights"),
}
_CHOICE_LABELS: dict[str, tuple[str, str]] = {
    "law": ("法律", "Law"),
    "administrative_regulation": ("行政法规", "Administrative regulation"),
    "local_regulation": ("地方性法规", "Local regulation"),
    "rule": ("规章", "Rule"),
    "normative_document": ("规范性文件", "Normative document"),
    "penalty": ("行政处罚", "Penalty"),
    "licensing": ("行政许可", "Licensing"),
    "coercion": ("行政强制", "Coercive measure"),
    "inspection": ("行政检查", "Inspection"),
    "levy": ("行政征收征用", "Levy or requisition"),
    **_RIGHT_LABELS,
}
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]{2,38}$")
_POSTCODE = re.compile(r"^[0-9]{6}$")
# Deliberately loose: one @, a dot in the domain, no spaces; the mail server decides the rest.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# -- decoding ---------------------------------------------------------------------------------------


def _bad(name: str, zh: str, en: str) -> CatalogueError:
    return CatalogueError(f"content.{name}：{zh}", f"content.{name}: {en}", field=f"content.{name}")


def _value(name: str, spec: _Spec, raw: Any) -> Any:
    """One field's value, checked against its spec; a bad one says which field and why."""
    if spec.kind == "days":
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 < raw <= 365:
            raise _bad(name, "须为 1 至 365 之间的整数", "must be a whole number of days from 1 to 365")
        return raw
    if spec.kind == "list":
        if not isinstance(raw, list) or not raw or len(raw) > 50:
            raise _bad(name, "须为 1 至 50 项的文本列表", "must be a list of 1 to 50 texts")
        steps = []
        for index, step in enumerate(raw):
            if not isinstance(step, str) or not step.strip() or len(step.strip()) > spec.limit:
                raise _bad(
                    f"{name}[{index}]",
                    f"须为不超过 {spec.limit} 字的非空文本",
                    f"must be non-empty text of at most {spec.limit} characters",
                )
            steps.append(step.strip())
        return tuple(steps)
    if not isinstance(raw, str):
        raise _bad(name, "须为文本", "must be text")
    text = raw.strip()
    if len(text) > spec.limit:
        raise _bad(name, f"不得超过 {spec.limit} 字", f"must be at most {spec.limit} characters")
    if not text:
        if spec.required:
            raise _bad(name, "不得为空", "must not be empty")
        return ""
    if spec.kind == "date":
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise _bad(
                name,
                f"须为 YYYY-MM-DD 日期，收到 '{text[:20]}'",
                f"must be a YYYY-MM-DD date, got '{text[:20]}'",
            ) from None
    if spec.kind == "choice" and text not in spec.choices:
        raise _bad(name, f"只能是 {'/'.join(spec.choices)}", f"must be one of {', '.join(spec.choices)}")
    if spec.kind == "percent":
        try:
            share = Decimal(text)
        except InvalidOperation:
            share = Decimal("NaN")
        if not share.is_finite() or not Decimal(0) < share <= Decimal(100):
            raise _bad(
                name,
                "须为大于 0、不超过 100 的数（字符串）",
                "must be a number above 0 and at most 100, as a string",
            )
        return text
    if spec.kind == "phone" and not _PHONE.match(text):
        raise _bad(name, f"'{text[:40]}' 不是电话号码", f"'{text[:40]}' is not a phone number")
    if spec.kind == "postcode" and not _POSTCODE.match(text):
        raise _bad(name, "须为 6 位数字", "must be 6 digits")
    if spec.kind == "email" and not _EMAIL.match(text):
        raise _bad(name, f"'{text[:40]}' 不是邮箱地址", f"'{text[:40]}' is not an e-mail address")
    return text


def content_from_mapping(kind: CatalogueKind, data: Mapping[str, Any]) -> CatalogueContent:
    """The typed content of ``kind`` from a JSON object: unknown keys, missing or bad fields refused."""
    cls = KIND_CLASSES[kind]
    specs = _specs(cls)
    unknown = sorted(set(data) - set(specs))
    if unknown:
        raise CatalogueError(
            f"{kind.label()}没有字段：{', '.join(unknown)}",
            f"a {kind.value} entry has no field {', '.join(unknown)}; its fields: {', '.join(specs)}",
            field=f"content.{unknown[0]}",
        )
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if data.get(name) is None:
            if spec.required:
                raise _bad(name, f"缺少必填字段（{spec.zh}）", f"is required ({spec.en})")
            continue
        values[name] = _value(name, spec, data[name])
    content = cls(**values)
    content.check()
    return content


def content_to_mapping(content: CatalogueContent) -> dict[str, Any]:
    """The JSON form of the content (dates ISO, lists as lists), the inverse of ``content_from_mapping``."""
    out: dict[str, Any] = {}
    for f in fields(content):  # type: ignore[arg-type]
        value = getattr(content, f.name)
        out[f.name] = (
            value.isoformat()
            if isinstance(value, date)
            else list(value)
            if isinstance(value, tuple)
            else value
        )
    return out


def field_label(kind: CatalogueKind, name: str, lang: str = "zh") -> str:
    """The heading of one field on the portal."""
    spec = _specs(KIND_CLASSES[kind])[name]
    return spec.en if lang == "en" else spec.zh


def public_fields(kind: CatalogueKind, data: Mapping[str, Any], lang: str = "zh") -> list[tuple[str, str]]:
    """(label, text) of each filled field of stored content, in the declared order, for the portal."""
    rows = []
    for name, spec in _specs(KIND_CLASSES[kind]).items():
        value = data.get(name)
        if value in (None, "", []):
            continue
        if spec.kind == "choice":
            zh, en = _CHOICE_LABELS.get(str(value), (str(value), str(value)))
            text = en if lang == "en" else zh
        elif spec.kind == "list":
            text = " → ".join(str(step) for step in value)
        else:
            text = str(value)
        rows.append((spec.en if lang == "en" else spec.zh, text))
    return rows


@dataclass(frozen=True)
class FormField:
    """One field of a kind as an entry form shows it (the workspace's catalogue page, GS-9)."""

    name: str
    label: str
    kind: str  # text | date | days | percent | choice | list | postcode | phone | email
    required: bool
    limit: int
    choices: tuple[tuple[str, str], ...]  # (value, label) of a choice field


def form_fields(kind: CatalogueKind, lang: str = "zh") -> list[FormField]:
    """The fields of ``kind`` in the declared order, labelled in ``lang``, for a form to render."""
    out = []
    for name, spec in _specs(KIND_CLASSES[kind]).items():
        choices = tuple(
            (value, _CHOICE_LABELS.get(value, (value, value))[1 if lang == "en" else 0])
            for value in spec.choices
        )
        label = spec.en if lang == "en" else spec.zh
        out.append(FormField(name, label, spec.kind, spec.required, spec.limit, choices))
    return out
