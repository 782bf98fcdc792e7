"""Redaction of free text (GS-14) and exclusions (GS-15), with true and false positives for each kind."""

from __future__ import annotations

from datetime import date

import pytest

from server.domain.publicity.errors import RedactionError
from server.domain.publicity.identifiers import resident_id_check_digit
from server.domain.publicity.redaction import (
    ExclusionClaim,
    ExclusionGround,
    FindingKind,
    ManualRedaction,
    Person,
    exclusion_verdict,
    luhn_valid,
    mask_name,
    render,
    scan,
    strip_forbidden_fields,
)

VALID_ID = "11010519491231002X"
WRONG_CHECK_ID = "110105194912310021"
CARD = "6222020200112233446"  # 19 digits, Luhn-valid
NOT_A_CARD = "6222020200112233445"  # same digits, Luhn fails
CERT = "皖(2020)合肥市不动产权第0123456号"


def kinds(text: str, people: tuple[Person, ...] = ()) -> list[tuple[FindingKind, str]]:
    return [(f.kind, f.original) for f in scan(text, people)]


# (text, expected findings) — each PII kind found, and its look-alikes left alone.
CASES = [
    (f"身份证号{VALID_ID}。", [(FindingKind.ID_NUMBER, VALID_ID)]),
    (f"身份证号{VALID_ID.lower()}。", [(FindingKind.ID_NUMBER, VALID_ID.lower())]),
    (f"编号{WRONG_CHECK_ID}。", []),  # 18 digits with a wrong check digit is not an ID
    ("订单号123456789012345678。", []),
    ("手机13812345678。", [(FindingKind.MOBILE, "13812345678")]),
    ("手机138-1234-5678。", [(FindingKind.MOBILE, "138-1234-5678")]),
    ("编号213812345678。", []),  # a mobile number inside a longer digit run
    ("罚款12345678901元", []),  # 11 digits not starting 13-19
    ("电话0551-62345678。", [(FindingKind.LANDLINE, "0551-62345678")]),
    ("电话（0551）62345678。", [(FindingKind.LANDLINE, "（0551）62345678")]),
    ("文号2026-0551。", []),
    (f"卡号{CARD}。", [(FindingKind.BANK_ACCOUNT, CARD)]),
    ("转入6222 0202 0011 2233 446。", [(FindingKind.BANK_ACCOUNT, "6222 0202 0011 2233 446")]),
    (f"编号{NOT_A_CARD}。", []),  # 19 digits failing Luhn, no account cue
    ("开户账号1302010109000123456。", [(FindingKind.BANK_ACCOUNT, "1302010109000123456")]),
    (f"房屋登记于{CERT}。", [(FindingKind.PROPERTY_CERTIFICATE, CERT)]),
    ("房产证号：A123456。", [(FindingKind.PROPERTY_CERTIFICATE, "A123456")]),
    ("住安徽省合肥市蜀山区长江西路100号3栋201室。", [(FindingKind.ADDRESS, "长江西路100号3栋201室")]),
    ("家庭住址：肥西县上派镇金桥村三组。", [(FindingKind.ADDRESS, "上派镇金桥村三组")]),
    ("现住合肥市某某小区5栋。", [(FindingKind.ADDRESS, "某某小区5栋")]),
    ("合肥市住房和城乡建设局检查了该公司住所地。", []),
    ("当事人住院治疗。", []),
    ("住所地在合肥市。", []),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_gs14_free_text_scan_finds_pii_and_leaves_look_alikes(
    text: str, expected: list[tuple[FindingKind, str]]
) -> None:
    assert kinds(text) == expected


def test_luhn() -> None:
    assert luhn_valid(CARD)
    assert not luhn_valid(NOT_A_CARD)


def test_gs14_an_18_digit_number_with_a_valid_check_digit_is_an_id_not_a_card() -> None:
    first17 = "34010219900307123"
    number = first17 + resident_id_check_digit(first17)
    assert kinds(f"号码{number}") == [(FindingKind.ID_NUMBER, number)]


PEOPLE = (
    Person(name="张三", is_party=True),
    Person(name="李四"),
    Person(name="李五"),
    Person(name="王二"),
    Person(name="欧阳娜娜"),
    Person(name="合肥某某公司", natural_person=False),
)


def test_gs14_names_of_natural_persons_other_than_the_party_are_masked_by_the_court_rule() -> None:
    text = "当事人张三雇用李四、李五，王二和欧阳娜娜在场，合肥某某公司供货。"
    published = render(text, scan(text, PEOPLE))
    assert published == "当事人张三雇用李某甲、李某乙，王某和欧阳某在场，合肥某某公司供货。"


@pytest.mark.parametrize(
    ("name", "masked"),
    [("王二", "王某"), ("欧阳娜娜", "欧阳某"), ("司马光", "司马某"), ("约翰·史密斯", "约翰·某")],
)
def test_mask_name_keeps_the_surname(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def test_gs14_published_copy_contains_none_of_the_planted_pii_and_source_is_unchanged() -> None:
    source = (
        f"证人李四（身份证号{VALID_ID}，手机13812345678，住安徽省合肥市蜀山区长江西路100号）称，"
        f"当事人张三以银行卡{CARD}收款，电话0551-62345678，房产皖(2020)合肥市不动产权第0123456号。"
    )
    original = str(source)
    findings = scan(source, PEOPLE)
    published = render(source, findings)
    for planted in (VALID_ID, "13812345678", "长江西路", CARD, "62345678", "0123456", "李四"):
        assert planted not in published
    assert "张三" in published and "蜀山区" in published
    assert source == original


def test_reviewer_can_undo_a_proposed_redaction_and_add_one_with_a_reason() -> None:
    text = "证人李四称，当事人在合肥某某小卖部出售过期食品。"
    findings = scan(text, PEOPLE)
    [name] = findings
    assert render(text, findings, undone=[name.key]) == text
    start = text.index("合肥某某小卖部")
    manual = ManualRedaction(start=start, end=start + 7, reason="涉及第三方商业秘密")
    # 李某甲: the case also names 李五, so the letters stay the same in every text of the case.
    assert render(text, findings, added=[manual]) == "证人李某甲称，当事人在[审核人隐去]出售过期食品。"


def test_manual_redaction_outside_the_text_or_without_reason_is_refused() -> None:
    with pytest.raises(RedactionError):
        render("abc", [], added=[ManualRedaction(start=1, end=9, reason="x")])
    with pytest.raises(RedactionError):
        render("abc", [], added=[ManualRedaction(start=0, end=1, reason=" ")])


def test_findings_of_another_text_are_refused_rather_than_leaking() -> None:
    findings = scan("手机13812345678", ())
    with pytest.raises(RedactionError):
        render("手机1381234567X", findings)


def test_gs14_forbidden_fields_are_never_published_whatever_was_typed() -> None:
    kept, removed = strip_forbidden_fields(
        {"party_name": "张三", "home_address": "长江西路100号", "bank_account": CARD, "conclusion": "罚款"}
    )
    assert kept == {"party_name": "张三", "conclusion": "罚款"}
    assert removed == ("bank_account", "home_address")


def test_gs15_case_involving_a_minor_is_excluded_whole() -> None:
    first17 = "34010220100307123"  # born 2010-03-07
    minor_id = first17 + resident_id_check_digit(first17)
    verdict = exclusion_verdict([Person(name="张三", is_party=True), Person(name="小明", id_number=minor_id)],
                                date(2026, 3, 2))  # fmt: skip
    assert verdict.excluded
    assert verdict.grounds == (ExclusionGround.MINOR,)
    adult = exclusion_verdict([Person(name="小明", id_number=minor_id)], date(2028, 3, 7))
    assert not adult.excluded
    by_birth_date = exclusion_verdict([Person(name="小红", birth_date=date(2009, 3, 3))], date(2027, 3, 2))
    assert by_birth_date.excluded


def test_gs15_secret_exclusion_needs_the_reviewers_reason() -> None:
    with pytest.raises(RedactionError):
        exclusion_verdict(
            [],
            date(2026, 3, 2),
            [ExclusionClaim(ground=ExclusionGround.STATE_SECRET, reviewer="r", reason="")],
        )
    verdict = exclusion_verdict(
        [],
        date(2026, 3, 2),
        [ExclusionClaim(ground=ExclusionGround.TRADE_SECRET, reviewer="r", reason="配方")],
    )
    assert verdict.excluded and verdict.reasons == ("配方",)
