"""双公示 code lists and the CF_*/XK_* records (GS-6, GS-8, GS-11, GS-14)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from server.domain.publicity.codes import (
    EnforcementAct,
    IdDocumentType,
    LicensingCategory,
    PartyCategory,
    PenaltyKind,
    heaviest_penalty,
)
from server.domain.publicity.errors import ExportError, IdentifierError
from server.domain.publicity.export import (
    CF_FIELDS,
    XK_FIELDS,
    Audience,
    LicensingDecision,
    Party,
    PenaltyDecision,
    licensing_record,
    penalty_record,
    to_csv,
    to_json,
    yuan_to_wanyuan,
)
from server.domain.publicity.identifiers import uscc_check_character


def uscc(first17: str) -> str:
    """A code with the right check character, for fixtures."""
    return first17 + uscc_check_character(first17)


AGENCY = uscc("11340100003000001")
COMPANY = uscc("91340100MA2N0A0Q0")

COMPANY_PARTY = Party(
    name="合肥某某餐饮有限公司",
    category=PartyCategory.ORGANISATION,
    uscc=COMPANY,
    legal_representative="王小明",
    legal_rep_id_type=IdDocumentType.RESIDENT_ID,
    legal_rep_id_number="11010519491231002X",
)
PERSON_PARTY = Party(
    name="张三",
    category=PartyCategory.NATURAL_PERSON,
    id_type=IdDocumentType.RESIDENT_ID,
    id_number="11010519491231002X",
)


def penalty(**changes: object) -> PenaltyDecision:
    base = PenaltyDecision(
        party=COMPANY_PARTY,
        document_number="合市监罚〔2026〕12号",
        violation_type="违反食品安全法",
        facts="经查，当事人经营超过保质期的食品。",
        basis="《中华人民共和国食品安全法》第一百二十四条",
        kinds=(PenaltyKind.WARNING, PenaltyKind.FINE),
        content="警告，罚款2000元",
        decided_on=date(2026, 3, 2),
        valid_until=date(2027, 3, 2),
        disclosure_until=date(2029, 3, 2),
        agency_name="合肥市市场监督管理局",
        agency_uscc=AGENCY,
        source_name="合肥市市场监督管理局",
        source_uscc=AGENCY,
        fine_yuan=Decimal("2000"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_penalty_kinds_are_the_14_of_the_administrative_penalty_law() -> None:
    labels = [kind.label for kind in PenaltyKind]
    assert len(labels) == 14
    assert labels[:3] == ["警告", "通报批评", "罚款"]
    assert "行政拘留" in labels and labels[-1] == "其他"
    assert PenaltyKind.from_label("吊销许可证件") is PenaltyKind.REVOKE_LICENCE


def test_code_lists_carry_the_national_labels() -> None:
    assert [c.label for c in LicensingCategory] == ["普通", "特许", "认可", "核准", "登记", "其他"]
    assert [c.label for c in PartyCategory] == ["法人及非法人组织", "自然人", "个体工商户"]
    assert IdDocumentType.RESIDENT_ID.label == "身份证"
    assert len(IdDocumentType) == 6
    assert EnforcementAct.PENALTY.label == "行政处罚"
    with pytest.raises(ValueError):
        PenaltyKind.from_label("罚金")


@pytest.mark.parametrize(
    ("kinds", "counted"),
    [
        ((PenaltyKind.WARNING, PenaltyKind.FINE), PenaltyKind.FINE),
        ((PenaltyKind.REVOKE_LICENCE, PenaltyKind.FINE), PenaltyKind.REVOKE_LICENCE),
        ((PenaltyKind.OTHER, PenaltyKind.WARNING), PenaltyKind.WARNING),
        ((PenaltyKind.OTHER,), PenaltyKind.OTHER),
    ],
)
def test_gs17_decision_with_several_kinds_counts_under_the_heaviest(
    kinds: tuple[PenaltyKind, ...], counted: PenaltyKind
) -> None:
    assert heaviest_penalty(kinds) is counted


@pytest.mark.parametrize(
    ("yuan", "wan"),
    [
        ("2000", "0.2"),
        ("50000", "5"),
        ("123.45", "0.012345"),
        ("0.01", "0.000001"),
        ("1234567.89", "123.456789"),
    ],
)
def test_amounts_export_in_wanyuan_exactly(yuan: str, wan: str) -> None:
    assert yuan_to_wanyuan(Decimal(yuan)) == wan


def test_gs11_penalty_record_has_every_cf_field_in_order() -> None:
    record = penalty_record(penalty(), Audience.SHARING)
    assert list(record) == [code for code, _ in CF_FIELDS]
    assert record["CF_XDR_LB"] == "法人及非法人组织"
    assert record["CF_XDR_SHXYM"] == COMPANY
    assert record["CF_CFLB"] == "警告;罚款"
    assert record["CF_NR_FK"] == "0.2"
    assert record["CF_NR_WFFF"] == ""
    assert record["CF_JDRQ"] == "2026-03-02"
    assert record["CF_GSJZQ"] == "2029-03-02"
    assert record["CF_FR_ZJHM"] == "11010519491231002X"


def test_gs14_public_record_never_carries_a_natural_persons_id_number() -> None:
    company = penalty_record(penalty(), Audience.PUBLIC)
    assert company["CF_FR_ZJHM"] == ""
    assert company["CF_FRDB"] == "王小明"
    person = penalty_record(penalty(party=PERSON_PARTY), Audience.PUBLIC)
    assert person["CF_XDR_ZJHM"] == ""
    assert person["CF_XDR_ZJLX"] == "身份证"
    assert "11010519491231002X" not in to_json([company, person])
    assert (
        penalty_record(penalty(party=PERSON_PARTY), Audience.SHARING)["CF_XDR_ZJHM"] == "11010519491231002X"
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fine_yuan": None}, "fine_yuan"),
        ({"kinds": (PenaltyKind.WARNING,)}, "kinds"),
        ({"kinds": ()}, "kinds"),
        ({"kinds": (PenaltyKind.FINE, PenaltyKind.FINE)}, "kinds"),
        ({"fine_yuan": 2000.0}, "fine_yuan"),
        ({"fine_yuan": Decimal("-5")}, "fine_yuan"),
        ({"fine_yuan": Decimal("10.001")}, "fine_yuan"),
        ({"fine_yuan": Decimal("NaN")}, "fine_yuan"),
        ({"kinds": (PenaltyKind.CONFISCATE_ILLEGAL_GAINS,), "fine_yuan": None}, "confiscated_yuan"),
        ({"kinds": (PenaltyKind.REVOKE_LICENCE,), "fine_yuan": None}, "licence_affected"),
        ({"document_number": "  "}, "document_number"),
        ({"disclosure_until": date(2026, 3, 1)}, "disclosure_until"),
    ],
)
def test_bad_penalty_decision_is_refused_with_the_field_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ExportError) as info:
        penalty(**changes)
    assert info.value.field == field
    assert info.value.message and info.value.message_en


def test_gs11_wrong_check_character_of_the_agency_code_is_refused_at_input() -> None:
    with pytest.raises(IdentifierError) as info:
        penalty(agency_uscc=AGENCY[:-1] + ("0" if AGENCY[-1] != "0" else "1"))
    assert info.value.field == "agency_uscc"


def test_gs11_party_id_number_is_checked_at_input() -> None:
    with pytest.raises(IdentifierError) as info:
        replace(PERSON_PARTY, id_number="110105194912310021")
    assert info.value.field == "party.id_number"
    with pytest.raises(ExportError):
        Party(name="李四", category=PartyCategory.NATURAL_PERSON)
    with pytest.raises(ExportError):
        Party(name="某公司", category=PartyCategory.ORGANISATION)


def licensing(**changes: object) -> LicensingDecision:
    base = LicensingDecision(
        party=COMPANY_PARTY,
        document_name="食品经营许可决定书",
        document_number="合市监许〔2026〕8号",
        category=LicensingCategory.ORDINARY,
        certificate_name="食品经营许可证",
        licence_number="JY13401000012345",
        content="准予食品经营许可",
        decided_on=date(2026, 3, 2),
        valid_from=date(2026, 3, 2),
        valid_to=date(2031, 3, 1),
        agency_name="合肥市市场监督管理局",
        agency_uscc=AGENCY,
        source_name="合肥市市场监督管理局",
        source_uscc=AGENCY,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_gs11_licensing_record_has_every_xk_field_in_order() -> None:
    record = licensing_record(licensing())
    assert list(record) == [code for code, _ in XK_FIELDS]
    assert record["XK_XKLB"] == "普通"
    assert record["XK_ZT"] == "有效"
    assert record["XK_YXQZI"] == "2031-03-01"
    assert record["XK_FR_ZJHM"] == ""


def test_licensing_without_document_number_uses_the_licence_number() -> None:
    assert licensing_record(licensing(document_number=""))["XK_WSH"] == "JY13401000012345"
    with pytest.raises(ExportError):
        licensing(document_number="", licence_number="")


def test_licensing_category_other_must_say_what_it_is() -> None:
    with pytest.raises(ExportError) as info:
        licensing(category=LicensingCategory.OTHER)
    assert info.value.field == "category_note"
    assert (
        licensing_record(licensing(category=LicensingCategory.OTHER, category_note="备案"))["XK_XKLB"]
        == "其他-备案"
    )


def test_csv_and_json_exports_read_back_to_the_same_records() -> None:
    records = [penalty_record(penalty()), penalty_record(penalty(document_number="合市监罚〔2026〕13号"))]
    text = to_csv(records, CF_FIELDS)
    assert text.splitlines()[0].startswith("CF_XDR_MC,CF_XDR_LB,")
    assert list(csv.DictReader(io.StringIO(text))) == records
    assert json.loads(to_json(records)) == records


def test_csv_refuses_a_record_of_the_other_table() -> None:
    with pytest.raises(ExportError):
        to_csv([licensing_record(licensing())], CF_FIELDS)
