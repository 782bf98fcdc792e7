"""The content of a decision item, parsed once at the edge, and its redacted public copy (GS-11, GS-14).

``DecisionContent`` is what a collector types (it may be incomplete while the item is a draft);
``require_complete`` checks it against the national fields before review; ``public_copy`` builds what the
portal shows: free text redacted as the reviewer decided, GS-14 fields left out, the 双公示 record made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from server.domain.publicity.codes import (
    EnforcementAct,
    IdDocumentType,
    LicensingCategory,
    PartyCategory,
    PenaltyKind,
)
from server.domain.publicity.disclosure import RegulatedField
from server.domain.publicity.errors import ExportError, PublicityError
from server.domain.publicity.export import (
    Audience,
    LicensingDecision,
    Party,
    PenaltyDecision,
    licensing_record,
    penalty_record,
    yuan_to_wanyuan,
)
from server.domain.publicity.redaction import Finding, ManualRedaction, Person, render, scan

__all__ = [
    "TEXT_FIELDS",
    "DecisionContent",
    "FieldRedactions",
    "PersonEntry",
    "content_from_mapping",
    "content_to_mapping",
    "findings_for",
    "people_of",
    "public_copy",
    "redactions_from_mapping",
    "redactions_to_mapping",
    "require_complete",
]

# Free-text fields scanned for personal data before review (issue #10 point 6).
TEXT_FIELDS: tuple[str, ...] = ("facts", "basis", "conclusion", "violation_type")
_MAX_TEXT = 20000


@dataclass(frozen=True, kw_only=True)
class PersonEntry:
    """A person named in the case: the party or another (a witness, an employee, a relative)."""

    name: str
    is_party: bool = False
    natural_person: bool = True
    birth_date: date | None = None
    id_number: str | None = None

    def to_person(self) -> Person:
        """The redaction rules' view of the person."""
        return Person(
            name=self.name,
            is_party=self.is_party,
            natural_person=self.natural_person,
            birth_date=self.birth_date,
            id_number=self.id_number,
        )


@dataclass(frozen=True, kw_only=True)
class DecisionContent:
    """A decision as the collector typed it; empty strings and ``None`` mean "not filled in yet"."""

    party_name: str = ""
    party_category: PartyCategory | None = None
    party_uscc: str | None = None
    party_id_type: IdDocumentType | None = None
    party_id_number: str | None = None
    legal_representative: str | None = None
    legal_rep_id_type: IdDocumentType | None = None
    legal_rep_id_number: str | None = None
    document_number: str = ""
    violation_type: str = ""
    facts: str = ""
    basis: str = ""
    conclusion: str = ""
    penalty_kinds: tuple[PenaltyKind, ...] = ()
    fine_yuan: Decimal | None = None
    confiscated_yuan: Decimal | None = None
    licence_affected: str | None = None
    valid_until: date | None = None
    document_name: str = ""
    licensing_category: LicensingCategory | None = None
    category_note: str = ""
    certificate_name: str = ""
    licence_number: str = ""
    valid_from: date | None = None
    valid_to: date | None = None
    agency_uscc: str | None = None
    regulated_fields: tuple[RegulatedField, ...] = ()
    persons: tuple[PersonEntry, ...] = field(default=())
    remark: str = ""


def _bad(key: str, zh: str, en: str) -> PublicityError:
    return PublicityError(f"{key}：{zh}", f"{key}: {en}", field=key)


def _text(data: Mapping[str, Any], key: str, limit: int = _MAX_TEXT) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise _bad(key, f"须为不超过{limit}字的文本", f"must be text of at most {limit} characters")
    return value


def _optional_text(data: Mapping[str, Any], key: str, limit: int = 300) -> str | None:
    text = _text(data, key, limit).strip()
    return text or None


def _date(data: Mapping[str, Any], key: str) -> date | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _bad(key, "须为 YYYY-MM-DD 日期", "must be a YYYY-MM-DD date")


def _amount(data: Mapping[str, Any], key: str) -> Decimal | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    # A JSON number arrives as float and would carry binary rounding: amounts are sent as strings.
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _bad(key, "金额须为字符串形式的十进制数（单位：元）", "an amount is a decimal string in yuan")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _bad(key, "金额须为十进制数（单位：元）", "an amount is a decimal number in yuan") from None
    if not amount.is_finite():
        raise _bad(key, "金额须为有限的十进制数", "an amount must be finite")
    return amount


def _enum(data: Mapping[str, Any], key: str, kind: Any) -> Any:
    value = data.get(key)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise _bad(key, f"须为以下之一：{choices}", f"must be one of: {choices}") from None


def _enum_list(data: Mapping[str, Any], key: str, kind: Any) -> tuple[Any, ...]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise _bad(key, "须为数组", "must be a list")
    return tuple(_enum({key: item}, key, kind) for item in value)


def _persons(data: Mapping[str, Any]) -> tuple[PersonEntry, ...]:
    value = data.get("persons") or []
    if not isinstance(value, list) or len(value) > 200:
        raise _bad("persons", "须为不超过200项的数组", "must be a list of at most 200 entries")
    entries = []
    for index, raw in enumerate(value):
        key = f"persons[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].strip():
            raise _bad(key, "须为含 name 的对象", "must be an object with a name")
        for flag in ("is_party", "natural_person"):
            if flag in raw and not isinstance(raw[flag], bool):
                raise _bad(f"{key}.{flag}", "须为布尔值", "must be a boolean")
        entries.append(
            PersonEntry(
                name=raw["name"].strip()[:100],
                is_party=bool(raw.get("is_party", False)),
                natural_person=bool(raw.get("natural_person", True)),
                birth_date=_date(raw, "birth_date"),
                id_number=_optional_text(raw, "id_number", 32),
            )
        )
    return tuple(entries)


_KNOWN_KEYS = frozenset(DecisionContent.__dataclass_fields__)


def content_from_mapping(data: Mapping[str, Any]) -> DecisionContent:
    """Parse the JSON form of a decision's content; unknown keys and wrong types are precise errors."""
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise _bad(unknown[0], "未知字段", "unknown field")
    return DecisionContent(
        party_name=_text(data, "party_name", 300).strip(),
        party_category=_enum(data, "party_category", PartyCategory),
        party_uscc=_optional_text(data, "party_uscc", 32),
        party_id_type=_enum(data, "party_id_type", IdDocumentType),
        party_id_number=_optional_text(data, "party_id_number", 64),
        legal_representative=_optional_text(data, "legal_representative", 100),
        legal_rep_id_type=_enum(data, "legal_rep_id_type", IdDocumentType),
        legal_rep_id_number=_optional_text(data, "legal_rep_id_number", 64),
        document_number=_text(data, "document_number", 128).strip(),
        violation_type=_text(data, "violation_type", 500),
        facts=_text(data, "facts"),
        basis=_text(data, "basis"),
        conclusion=_text(data, "conclusion"),
        penalty_kinds=_enum_list(data, "penalty_kinds", PenaltyKind),
        fine_yuan=_amount(data, "fine_yuan"),
        confiscated_yuan=_amount(data, "confiscated_yuan"),
        licence_affected=_optional_text(data, "licence_affected", 300),
        valid_until=_date(data, "valid_until"),
        document_name=_text(data, "document_name", 200).strip(),
        licensing_category=_enum(data, "licensing_category", LicensingCategory),
        category_note=_text(data, "category_note", 100).strip(),
        certificate_name=_text(data, "certificate_name", 200).strip(),
        licence_number=_text(data, "licence_number", 128).strip(),
        valid_from=_date(data, "valid_from"),
        valid_to=_date(data, "valid_to"),
        agency_uscc=_optional_text(data, "agency_uscc", 32),
        regulated_fields=_enum_list(data, "regulated_fields", RegulatedField),
        persons=_persons(data),
        remark=_text(data, "remark", 1000),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, PersonEntry):
        return {k: _jsonable(getattr(value, k)) for k in PersonEntry.__dataclass_fields__}
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def content_to_mapping(content: DecisionContent) -> dict[str, Any]:
    """The JSON form ``content_from_mapping`` reads back to an equal value."""
    return {key: _jsonable(getattr(content, key)) for key in DecisionContent.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class FieldRedactions:
    """The reviewer's decisions on one text field: proposals undone, spans added by hand."""

    undone: tuple[str, ...] = ()
    added: tuple[ManualRedaction, ...] = ()


def redactions_from_mapping(data: Mapping[str, Any]) -> dict[str, FieldRedactions]:
    """Parse ``{field: {"undone": [key…], "added": [{start, end, reason}…]}}``."""
    result: dict[str, FieldRedactions] = {}
    for name, raw in data.items():
        if name not in TEXT_FIELDS:
            raise _bad(
                name, f"只有 {', '.join(TEXT_FIELDS)} 可以隐去", f"only {', '.join(TEXT_FIELDS)} are redacted"
            )
        if not isinstance(raw, dict):
            raise _bad(name, "须为对象", "must be an object")
        undone = raw.get("undone") or []
        added = raw.get("added") or []
        if not isinstance(undone, list) or not all(isinstance(key, str) for key in undone):
            raise _bad(f"{name}.undone", "须为字符串数组", "must be a list of strings")
        if not isinstance(added, list):
            raise _bad(f"{name}.added", "须为数组", "must be a list")
        manual = []
        for index, span in enumerate(added):
            where = f"{name}.added[{index}]"
            if not isinstance(span, dict):
                raise _bad(where, "须为对象", "must be an object")
            start, end, reason = span.get("start"), span.get("end"), span.get("reason")
            if (
                not isinstance(start, int)
                or not isinstance(end, int)
                or isinstance(start, bool)
                or isinstance(end, bool)
            ):
                raise _bad(where, "start 与 end 须为整数", "start and end must be integers")
            if not isinstance(reason, str) or not reason.strip():
                raise _bad(where, "须说明理由", "needs a reason")
            manual.append(ManualRedaction(start=start, end=end, reason=reason.strip()))
        result[name] = FieldRedactions(undone=tuple(undone), added=tuple(manual))
    return result


def redactions_to_mapping(redactions: Mapping[str, FieldRedactions]) -> dict[str, Any]:
    """The JSON form ``redactions_from_mapping`` reads back to equal values."""
    return {
        name: {
            "undone": list(field.undone),
            "added": [{"start": m.start, "end": m.end, "reason": m.reason} for m in field.added],
        }
        for name, field in redactions.items()
    }


def _people(content: DecisionContent) -> list[Person]:
    people = [entry.to_person() for entry in content.persons]
    if content.party_name and not any(p.is_party and p.name == content.party_name for p in people):
        people.append(
            Person(
                name=content.party_name,
                is_party=True,
                natural_person=content.party_category is PartyCategory.NATURAL_PERSON,
                id_number=content.party_id_number
                if content.party_id_type is IdDocumentType.RESIDENT_ID
                else None,
            )
        )
    # The legal representative is named in the national field itself, so not masked in free text.
    if content.legal_representative:
        people.append(Person(name=content.legal_representative, is_party=True))
    return people


def findings_for(content: DecisionContent) -> dict[str, tuple[Finding, ...]]:
    """Proposed redactions of each text field, for the reviewer to see highlighted."""
    people = _people(content)
    return {name: scan(getattr(content, name), people) for name in TEXT_FIELDS}


def _party(content: DecisionContent) -> Party:
    if content.party_category is None:
        raise ExportError("行政相对人类别必填", "party_category is required", field="party_category")
    return Party(
        name=content.party_name,
        category=content.party_category,
        uscc=content.party_uscc,
        legal_representative=content.legal_representative,
        legal_rep_id_type=content.legal_rep_id_type,
        legal_rep_id_number=content.legal_rep_id_number,
        id_type=content.party_id_type,
        id_number=content.party_id_number,
    )


def _need_date(value: date | None, key: str, zh: str) -> date:
    if value is None:
        raise ExportError(f"{zh}必填", f"{key} is required", field=key)
    return value


def _penalty(
    content: DecisionContent,
    texts: Mapping[str, str],
    *,
    agency_name: str,
    decided_on: date,
    disclosure_until: date,
) -> PenaltyDecision:
    return PenaltyDecision(
        party=_party(content),
        document_number=content.document_number,
        violation_type=texts["violation_type"],
        facts=texts["facts"],
        basis=texts["basis"],
        kinds=content.penalty_kinds,
        content=texts["conclusion"],
        decided_on=decided_on,
        valid_until=_need_date(content.valid_until, "valid_until", "处罚有效期"),
        disclosure_until=disclosure_until,
        agency_name=agency_name,
        agency_uscc=content.agency_uscc or "",
        source_name=agency_name,
        source_uscc=content.agency_uscc or "",
        fine_yuan=content.fine_yuan,
        confiscated_yuan=content.confiscated_yuan,
        licence_affected=content.licence_affected,
        remark=content.remark,
    )


def _licensing(
    content: DecisionContent, texts: Mapping[str, str], *, agency_name: str, decided_on: date
) -> LicensingDecision:
    if content.licensing_category is None:
        raise ExportError("许可类别必填", "licensing_category is required", field="licensing_category")
    return LicensingDecision(
        party=_party(content),
        document_name=content.document_name,
        document_number=content.document_number,
        category=content.licensing_category,
        category_note=content.category_note,
        certificate_name=content.certificate_name,
        licence_number=content.licence_number,
        content=texts["conclusion"],
        decided_on=decided_on,
        valid_from=_need_date(content.valid_from, "valid_from", "有效期自"),
        valid_to=_need_date(content.valid_to, "valid_to", "有效期至"),
        agency_name=agency_name,
        agency_uscc=content.agency_uscc or "",
        source_name=agency_name,
        source_uscc=content.agency_uscc or "",
        remark=content.remark,
    )


def require_complete(
    content: DecisionContent,
    act: EnforcementAct,
    *,
    agency_name: str,
    decided_on: date,
    disclosure_until: date,
) -> None:
    """GS-11: everything the publication needs is there (the national fields for penalties and licences)."""
    texts = {name: getattr(content, name) for name in TEXT_FIELDS}
    if act is EnforcementAct.PENALTY:
        _penalty(
            content, texts, agency_name=agency_name, decided_on=decided_on, disclosure_until=disclosure_until
        )
    elif act is EnforcementAct.LICENSING:
        _licensing(content, texts, agency_name=agency_name, decided_on=decided_on)
    else:
        # GS-11: agency, target, category and conclusion.
        if not content.party_name:
            raise ExportError("执法对象必填", "party_name is required", field="party_name")
        if not content.conclusion.strip():
            raise ExportError("执法结论必填", "conclusion is required", field="conclusion")


def public_copy(
    content: DecisionContent,
    act: EnforcementAct,
    redactions: Mapping[str, FieldRedactions],
    *,
    agency_name: str,
    decided_on: date,
    disclosure_until: date,
) -> dict[str, Any]:
    """What the portal shows: redacted texts, no GS-14 field, and the public 双公示 record."""
    found = findings_for(content)
    texts = {
        name: render(
            getattr(content, name),
            found[name],
            undone=redactions.get(name, FieldRedactions()).undone,
            added=redactions.get(name, FieldRedactions()).added,
        )
        for name in TEXT_FIELDS
    }
    copy: dict[str, Any] = {
        "agency_name": agency_name,
        "act_kind": act.value,
        "act_label": act.label,
        "party_name": content.party_name,
        "party_category": content.party_category.label if content.party_category else "",
        "party_uscc": content.party_uscc or "",
        "document_number": content.document_number,
        "decided_on": decided_on.isoformat(),
        "disclosure_until": disclosure_until.isoformat(),
        **texts,
        "penalty_kinds": [kind.label for kind in content.penalty_kinds],
        "fine_wanyuan": yuan_to_wanyuan(content.fine_yuan) if content.fine_yuan is not None else "",
        "confiscated_wanyuan": yuan_to_wanyuan(content.confiscated_yuan) if content.confiscated_yuan else "",
        "record": None,
        "record_table": None,
    }
    if act is EnforcementAct.PENALTY:
        decision = _penalty(
            content, texts, agency_name=agency_name, decided_on=decided_on, disclosure_until=disclosure_until
        )
        copy["record"], copy["record_table"] = penalty_record(decision, Audience.PUBLIC), "CF"
    elif act is EnforcementAct.LICENSING:
        licence = _licensing(content, texts, agency_name=agency_name, decided_on=decided_on)
        copy["record"], copy["record_table"] = licensing_record(licence, Audience.PUBLIC), "XK"
        copy["licensing_category"] = licence.category.label
        copy["licence_number"] = licence.licence_number
        copy["valid_from"] = licence.valid_from.isoformat()
        copy["valid_to"] = licence.valid_to.isoformat()
    return copy


def people_of(content: DecisionContent) -> Sequence[Person]:
    """Every person of the case, for the GS-15 exclusion verdict."""
    return _people(content)
