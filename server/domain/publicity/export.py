"""Typed penalty and licensing decisions and their 双公示 records (CF_* and XK_* field codes), CSV and JSON.

The same record is what the portal's open data serves and what the agency reports to the credit
platform (GS-3, GS-6, GS-8). Amounts are entered in 元 and exported in 万元 as exact decimals.
The public audience never receives a natural person's ID number (GS-14).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum

from server.domain.publicity.codes import IdDocumentType, LicensingCategory, PartyCategory, PenaltyKind
from server.domain.publicity.errors import ExportError
from server.domain.publicity.identifiers import parse_resident_id, validate_unified_social_credit_code

__all__ = [
    "CF_FIELDS",
    "XK_FIELDS",
    "Audience",
    "LicenceStatus",
    "LicensingDecision",
    "Party",
    "PenaltyDecision",
    "licensing_record",
    "penalty_record",
    "to_csv",
    "to_json",
    "yuan_to_wanyuan",
]

# Field codes in the order of the national penalty table, with their Chinese names.
CF_FIELDS: tuple[tuple[str, str], ...] = (
    ("CF_XDR_MC", "行政相对人名称"),
    ("CF_XDR_LB", "行政相对人类别"),
    ("CF_XDR_SHXYM", "统一社会信用代码"),
    ("CF_XDR_GSZC", "工商注册号"),
    ("CF_XDR_ZZJG", "组织机构代码"),
    ("CF_XDR_SWDJ", "税务登记号"),
    ("CF_XDR_SYDW", "事业单位证书号"),
    ("CF_XDR_SHZZ", "社会组织登记证号"),
    ("CF_FRDB", "法定代表人"),
    ("CF_FR_ZJLX", "法定代表人证件类型"),
    ("CF_FR_ZJHM", "法定代表人证件号码"),
    ("CF_XDR_ZJLX", "证件类型"),
    ("CF_XDR_ZJHM", "证件号码"),
    ("CF_WSH", "行政处罚决定书文号"),
    ("CF_WFXW", "违法行为类型"),
    ("CF_SY", "违法事实"),
    ("CF_YJ", "处罚依据"),
    ("CF_CFLB", "处罚类别"),
    ("CF_NR", "处罚内容"),
    ("CF_NR_FK", "罚款金额（万元）"),
    ("CF_NR_WFFF", "没收违法所得、没收非法财物的金额（万元）"),
    ("CF_NR_ZKDX", "暂扣或吊销证照名称及编号"),
    ("CF_JDRQ", "处罚决定日期"),
    ("CF_YXQ", "处罚有效期"),
    ("CF_GSJZQ", "公示截止期"),
    ("CF_CFJG", "处罚机关"),
    ("CF_CFJGDM", "处罚机关统一社会信用代码"),
    ("CF_SJLY", "数据来源单位"),
    ("CF_SJLYDM", "数据来源单位统一社会信用代码"),
    ("BZ", "备注"),
)

XK_FIELDS: tuple[tuple[str, str], ...] = (
    ("XK_XDR_MC", "行政相对人名称"),
    ("XK_XDR_LB", "行政相对人类别"),
    ("XK_XDR_SHXYM", "统一社会信用代码"),
    ("XK_XDR_GSZC", "工商注册号"),
    ("XK_XDR_ZZJG", "组织机构代码"),
    ("XK_XDR_SWDJ", "税务登记号"),
    ("XK_XDR_SYDW", "事业单位证书号"),
    ("XK_XDR_SHZZ", "社会组织登记证号"),
    ("XK_FRDB", "法定代表人"),
    ("XK_FR_ZJLX", "法定代表人证件类型"),
    ("XK_FR_ZJHM", "法定代表人证件号码"),
    ("XK_XDR_ZJLX", "证件类型"),
    ("XK_XDR_ZJHM", "证件号码"),
    ("XK_XKWS", "行政许可决定文书名称"),
    ("XK_WSH", "行政许可决定文书号"),
    ("XK_XKLB", "许可类别"),
    ("XK_XKZS", "许可证书名称"),
    ("XK_XKBH", "许可编号"),
    ("XK_NR", "许可内容"),
    ("XK_JDRQ", "许可决定日期"),
    ("XK_YXQZ", "有效期自"),
    ("XK_YXQZI", "有效期至"),
    ("XK_XKJG", "许可机关"),
    ("XK_XKJGDM", "许可机关统一社会信用代码"),
    ("XK_ZT", "当前状态"),
    ("XK_LYDW", "数据来源单位"),
    ("XK_LYDWDM", "数据来源单位统一社会信用代码"),
    ("BZ", "备注"),
)


class Audience(StrEnum):
    """Who receives the record: the public portal, or the credit platform the agency reports to."""

    PUBLIC = "public"
    SHARING = "sharing"


class LicenceStatus(StrEnum):
    """XK_ZT 当前状态."""

    VALID = "valid"
    INVALID = "invalid"

    @property
    def label(self) -> str:
        """The Chinese label of the status."""
        return "有效" if self is LicenceStatus.VALID else "无效"


def _required(value: str, field: str, name_zh: str) -> None:
    if not value.strip():
        raise ExportError(f"{name_zh}不能为空", f"{field} is required", field=field)


def _check_amount(value: Decimal | None, field: str, name_zh: str) -> None:
    if value is None:
        return
    # A float would carry binary rounding into a public figure; amounts are exact decimals.
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ExportError(f"{name_zh}须为精确的十进制数", f"{field} must be an exact decimal", field=field)
    if value <= 0:
        raise ExportError(f"{name_zh}须大于零", f"{field} must be greater than zero", field=field)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ExportError(
            f"{name_zh}最多精确到分", f"{field} has more than two decimal places (fen)", field=field
        )


def yuan_to_wanyuan(amount: Decimal) -> str:
    """An amount in 元 as the national tables write it, in 万元 without trailing zeros (2000 → "0.2")."""
    wan = (amount / Decimal(10000)).quantize(Decimal("0.000001"))
    text = format(wan.normalize(), "f")
    return text


@dataclass(frozen=True, kw_only=True)
class Party:
    """行政相对人: who the decision is about, with the codes the national tables carry."""

    name: str
    category: PartyCategory
    uscc: str | None = None
    business_registration_no: str | None = None
    organisation_code: str | None = None
    tax_registration_no: str | None = None
    public_institution_no: str | None = None
    social_organisation_no: str | None = None
    legal_representative: str | None = None
    legal_rep_id_type: IdDocumentType | None = None
    legal_rep_id_number: str | None = None
    id_type: IdDocumentType | None = None
    id_number: str | None = None

    def __post_init__(self) -> None:
        _required(self.name, "party.name", "行政相对人名称")
        if self.uscc is not None:
            object.__setattr__(
                self, "uscc", validate_unified_social_credit_code(self.uscc, field="party.uscc")
            )
        if self.category is PartyCategory.NATURAL_PERSON:
            if self.id_type is None or not (self.id_number or "").strip():
                raise ExportError(
                    "行政相对人为自然人时，证件类型和证件号码必填",
                    "a natural person's document type and number are required",
                    field="party.id_number",
                )
        else:
            codes = (
                self.uscc,
                self.business_registration_no,
                self.organisation_code,
                self.tax_registration_no,
                self.public_institution_no,
                self.social_organisation_no,
            )
            if not any(code and code.strip() for code in codes):
                raise ExportError(
                    "法人及非法人组织、个体工商户须至少填写统一社会信用代码或一种登记代码",
                    "an organisation or individual business needs its unified social credit code or another "
                    "registration code",
                    field="party.uscc",
                )
        if self.id_type is IdDocumentType.RESIDENT_ID and self.id_number:
            object.__setattr__(
                self, "id_number", parse_resident_id(self.id_number, field="party.id_number").number
            )
        if self.legal_rep_id_type is IdDocumentType.RESIDENT_ID and self.legal_rep_id_number:
            number = parse_resident_id(self.legal_rep_id_number, field="party.legal_rep_id_number").number
            object.__setattr__(self, "legal_rep_id_number", number)

    def columns(self, prefix: str, audience: Audience) -> dict[str, str]:
        """The party's columns of a record under ``prefix`` (CF or XK)."""
        # GS-14: a natural person's ID number (the party's or the legal representative's) is never public.
        public = audience is Audience.PUBLIC
        return {
            f"{prefix}_XDR_MC": self.name,
            f"{prefix}_XDR_LB": self.category.label,
            f"{prefix}_XDR_SHXYM": self.uscc or "",
            f"{prefix}_XDR_GSZC": self.business_registration_no or "",
            f"{prefix}_XDR_ZZJG": self.organisation_code or "",
            f"{prefix}_XDR_SWDJ": self.tax_registration_no or "",
            f"{prefix}_XDR_SYDW": self.public_institution_no or "",
            f"{prefix}_XDR_SHZZ": self.social_organisation_no or "",
            f"{prefix}_FRDB": self.legal_representative or "",
            f"{prefix}_FR_ZJLX": self.legal_rep_id_type.label if self.legal_rep_id_type else "",
            f"{prefix}_FR_ZJHM": "" if public else (self.legal_rep_id_number or ""),
            f"{prefix}_XDR_ZJLX": self.id_type.label if self.id_type else "",
            f"{prefix}_XDR_ZJHM": "" if public else (self.id_number or ""),
        }


@dataclass(frozen=True, kw_only=True)
class PenaltyDecision:
    """A penalty decision as the national CF table needs it."""

    party: Party
    document_number: str
    violation_type: str
    facts: str
    basis: str
    kinds: tuple[PenaltyKind, ...]
    content: str
    decided_on: date
    valid_until: date
    disclosure_until: date
    agency_name: str
    agency_uscc: str
    source_name: str
    source_uscc: str
    fine_yuan: Decimal | None = None
    confiscated_yuan: Decimal | None = None
    licence_affected: str | None = None
    remark: str = ""

    def __post_init__(self) -> None:
        for field, name_zh in (
            ("document_number", "行政处罚决定书文号"),
            ("violation_type", "违法行为类型"),
            ("facts", "违法事实"),
            ("basis", "处罚依据"),
            ("content", "处罚内容"),
            ("agency_name", "处罚机关"),
            ("source_name", "数据来源单位"),
        ):
            _required(getattr(self, field), field, name_zh)
        if not self.kinds:
            raise ExportError("处罚类别至少一项", "at least one penalty kind is required", field="kinds")
        if len(set(self.kinds)) != len(self.kinds):
            raise ExportError("处罚类别重复", "a penalty kind is listed twice", field="kinds")
        _check_amount(self.fine_yuan, "fine_yuan", "罚款金额")
        _check_amount(self.confiscated_yuan, "confiscated_yuan", "没收金额")
        if PenaltyKind.FINE in self.kinds and self.fine_yuan is None:
            raise ExportError("处罚类别含罚款时须填写罚款金额", "a fine needs its amount", field="fine_yuan")
        if PenaltyKind.FINE not in self.kinds and self.fine_yuan is not None:
            raise ExportError(
                "填写了罚款金额，但处罚类别不含罚款", "a fine amount without the kind fine", field="kinds"
            )
        confiscation = {PenaltyKind.CONFISCATE_ILLEGAL_GAINS, PenaltyKind.CONFISCATE_ILLEGAL_PROPERTY}
        if confiscation & set(self.kinds) and self.confiscated_yuan is None:
            raise ExportError(
                "处罚类别含没收时须填写没收金额", "a confiscation needs its amount", field="confiscated_yuan"
            )
        licence = {PenaltyKind.SUSPEND_LICENCE, PenaltyKind.REVOKE_LICENCE}
        if licence & set(self.kinds) and not (self.licence_affected or "").strip():
            raise ExportError(
                "暂扣或吊销许可证件时须填写证照名称及编号",
                "a suspended or revoked licence needs its name and number",
                field="licence_affected",
            )
        for field in ("valid_until", "disclosure_until"):
            if getattr(self, field) < self.decided_on:
                raise ExportError(
                    f"{field} 不能早于处罚决定日期", f"{field} cannot precede the decision date", field=field
                )
        object.__setattr__(
            self, "agency_uscc", validate_unified_social_credit_code(self.agency_uscc, field="agency_uscc")
        )
        object.__setattr__(
            self, "source_uscc", validate_unified_social_credit_code(self.source_uscc, field="source_uscc")
        )


@dataclass(frozen=True, kw_only=True)
class LicensingDecision:
    """A licensing decision as the national XK table needs it."""

    party: Party
    document_name: str
    category: LicensingCategory
    content: str
    decided_on: date
    valid_from: date
    valid_to: date
    agency_name: str
    agency_uscc: str
    source_name: str
    source_uscc: str
    document_number: str = ""
    category_note: str = ""
    certificate_name: str = ""
    licence_number: str = ""
    status: LicenceStatus = LicenceStatus.VALID
    remark: str = ""

    def __post_init__(self) -> None:
        for field, name_zh in (
            ("document_name", "行政许可决定文书名称"),
            ("content", "许可内容"),
            ("agency_name", "许可机关"),
            ("source_name", "数据来源单位"),
        ):
            _required(getattr(self, field), field, name_zh)
        # The national note: without a document number, the licence number stands in for it.
        if not self.document_number.strip() and not self.licence_number.strip():
            raise ExportError(
                "行政许可决定文书号与许可编号至少填写一项",
                "a licensing decision needs its document number or its licence number",
                field="document_number",
            )
        if self.category is LicensingCategory.OTHER and not self.category_note.strip():
            raise ExportError(
                "许可类别为“其他”时须注明具体类别",
                "the category 'other' must say what it is",
                field="category_note",
            )
        if self.valid_to < self.valid_from:
            raise ExportError(
                "有效期至不能早于有效期自", "valid_to cannot precede valid_from", field="valid_to"
            )
        object.__setattr__(
            self, "agency_uscc", validate_unified_social_credit_code(self.agency_uscc, field="agency_uscc")
        )
        object.__setattr__(
            self, "source_uscc", validate_unified_social_credit_code(self.source_uscc, field="source_uscc")
        )


def penalty_record(decision: PenaltyDecision, audience: Audience = Audience.PUBLIC) -> dict[str, str]:
    """The CF_* record of a penalty decision, every field a string, in the national order."""
    values = decision.party.columns("CF", audience)
    values.update(
        {
            "CF_WSH": decision.document_number,
            "CF_WFXW": decision.violation_type,
            "CF_SY": decision.facts,
            "CF_YJ": decision.basis,
            "CF_CFLB": ";".join(kind.label for kind in decision.kinds),
            "CF_NR": decision.content,
            "CF_NR_FK": yuan_to_wanyuan(decision.fine_yuan) if decision.fine_yuan is not None else "",
            "CF_NR_WFFF": yuan_to_wanyuan(decision.confiscated_yuan)
            if decision.confiscated_yuan is not None
            else "",
            "CF_NR_ZKDX": decision.licence_affected or "",
            "CF_JDRQ": decision.decided_on.isoformat(),
            "CF_YXQ": decision.valid_until.isoformat(),
            "CF_GSJZQ": decision.disclosure_until.isoformat(),
            "CF_CFJG": decision.agency_name,
            "CF_CFJGDM": decision.agency_uscc,
            "CF_SJLY": decision.source_name,
            "CF_SJLYDM": decision.source_uscc,
            "BZ": decision.remark,
        }
    )
    return {code: values[code] for code, _ in CF_FIELDS}


def licensing_record(decision: LicensingDecision, audience: Audience = Audience.PUBLIC) -> dict[str, str]:
    """The XK_* record of a licensing decision, every field a string, in the national order."""
    values = decision.party.columns("XK", audience)
    category = decision.category.label
    if decision.category is LicensingCategory.OTHER:
        category = f"其他-{decision.category_note.strip()}"
    values.update(
        {
            "XK_XKWS": decision.document_name,
            "XK_WSH": decision.document_number or decision.licence_number,
            "XK_XKLB": category,
            "XK_XKZS": decision.certificate_name,
            "XK_XKBH": decision.licence_number,
            "XK_NR": decision.content,
            "XK_JDRQ": decision.decided_on.isoformat(),
            "XK_YXQZ": decision.valid_from.isoformat(),
            "XK_YXQZI": decision.valid_to.isoformat(),
            "XK_XKJG": decision.agency_name,
            "XK_XKJGDM": decision.agency_uscc,
            "XK_ZT": decision.status.label,
            "XK_LYDW": decision.source_name,
            "XK_LYDWDM": decision.source_uscc,
            "BZ": decision.remark,
        }
    )
    return {code: values[code] for code, _ in XK_FIELDS}


def to_csv(records: Iterable[Mapping[str, str]], fields: tuple[tuple[str, str], ...]) -> str:
    """CSV with the field codes as header; a record's unknown or missing field is an error, not a shift."""
    codes = [code for code, _ in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=codes, extrasaction="raise", lineterminator="\r\n")
    writer.writeheader()
    for record in records:
        extra = [code for code in record if code not in codes]
        if extra:
            raise ExportError(
                f"记录含未知字段 {extra[0]}", f"a record has the unknown field {extra[0]}", field=extra[0]
            )
        missing = [code for code in codes if code not in record]
        if missing:
            raise ExportError(
                f"记录缺少字段 {missing[0]}", f"a record lacks the field {missing[0]}", field=missing[0]
            )
        writer.writerow(dict(record))
    return buffer.getvalue()


def to_json(records: Iterable[Mapping[str, str]]) -> str:
    """A JSON array of records, Chinese kept readable (UTF-8)."""
    return json.dumps([dict(record) for record in records], ensure_ascii=False, indent=1)
