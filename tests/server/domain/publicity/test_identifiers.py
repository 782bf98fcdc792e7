"""Unified social credit codes (GB 32100-2015) and resident ID numbers (GB 11643-1999) at input."""

from __future__ import annotations

from datetime import date

import pytest

from server.domain.publicity.errors import IdentifierError
from server.domain.publicity.identifiers import (
    is_resident_id,
    is_unified_social_credit_code,
    parse_resident_id,
    resident_id_check_digit,
    uscc_check_character,
    validate_unified_social_credit_code,
)


# 91350100M000100Y43 is the example cited by several public implementations.
def test_gs11_valid_unified_social_credit_code_is_accepted_and_normalised() -> None:
    assert validate_unified_social_credit_code(" 91350100m000100y43 ") == "91350100M000100Y43"
    assert is_unified_social_credit_code("91350100M000100Y43")


@pytest.mark.parametrize(
    ("code", "fragment_en", "fragment_zh"),
    [
        ("91350100M000100Y4", "has 17", "实际为17位"),
        ("91350100M000100Y433", "has 19", "实际为19位"),
        ("91350100M0001O0Y43", "character 14", "第14位"),  # letter O is never used
        ("9135A100M000100Y43", "characters 3-8", "第3–8位"),
        ("91350100M000100Y44", "expected '3', got '4'", "应为“3”"),
    ],
)
def test_gs11_malformed_unified_social_credit_code_says_what_and_where(
    code: str, fragment_en: str, fragment_zh: str
) -> None:
    with pytest.raises(IdentifierError) as info:
        validate_unified_social_credit_code(code, field="agency_uscc")
    assert fragment_en in info.value.message_en
    assert fragment_zh in info.value.message
    assert info.value.field == "agency_uscc"
    assert not is_unified_social_credit_code(code)


def test_check_character_of_every_altered_last_character_is_refused() -> None:
    base = "91350100M000100Y4"
    right = uscc_check_character(base)
    for char in "0123456789ABCDEFGHJKLMNPQRTUWXY":
        assert is_unified_social_credit_code(base + char) is (char == right)


# 11010519491231002X is the example of GB 11643-1999 itself.
def test_gs11_valid_resident_id_is_accepted_with_its_birth_date() -> None:
    parsed = parse_resident_id("11010519491231002x")
    assert parsed.number == "11010519491231002X"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.age_on(date(2026, 12, 30)) == 76
    assert parsed.age_on(date(2026, 12, 31)) == 77


@pytest.mark.parametrize(
    ("number", "fragment_en"),
    [
        ("1101051949123100", "has 16"),
        ("11010519491231002Y", "digit or X"),
        ("1101051949123A002X", "character 14"),
        ("110105194902300021", "valid birth date"),
        ("110105180001010021", "valid birth date"),
        ("110105194912310021", "expected 'X', got '1'"),
    ],
)
def test_gs11_malformed_resident_id_says_what_and_where(number: str, fragment_en: str) -> None:
    with pytest.raises(IdentifierError) as info:
        parse_resident_id(number)
    assert fragment_en in info.value.message_en
    assert info.value.message
    assert not is_resident_id(number)


def test_resident_id_check_digit_table() -> None:
    # Each of the 11 residues maps to its own check character.
    seen = {resident_id_check_digit(f"1101051990010{n:03d}1") for n in range(200)}
    assert seen == set("0123456789X")
