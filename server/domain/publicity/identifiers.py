"""Validation of the unified social credit code (GB 32100-2015) and the resident ID number (GB 11643-1999).

Both are checked at input with a precise error (issue #10, point 3): what is wrong, and where.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from server.domain.publicity.errors import IdentifierError

__all__ = [
    "ResidentId",
    "is_resident_id",
    "is_unified_social_credit_code",
    "parse_resident_id",
    "resident_id_check_digit",
    "uscc_check_character",
    "validate_unified_social_credit_code",
]

# GB 32100-2015 §4: the code's characters are the digits and the capital letters without I, O, S, V, Z.
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

# GB 11643-1999 §8.2: ISO 7064 MOD 11-2 weights of the first 17 digits, and the check digit table.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def uscc_check_character(first17: str) -> str:
    """The 18th character of a unified social credit code whose first 17 are ``first17`` (GB 32100 §5)."""
    total = sum(
        _USCC_ALPHABET.index(char) * weight for char, weight in zip(first17, _USCC_WEIGHTS, strict=True)
    )
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def validate_unified_social_credit_code(raw: str, *, field: str = "uscc") -> str:
    """The code, upper-cased and stripped, or ``IdentifierError`` saying what is wrong and where."""
    code = raw.strip().upper()
    if len(code) != 18:
        raise IdentifierError(
            f"统一社会信用代码应为18位，实际为{len(code)}位",
            f"a unified social credit code has 18 characters, this one has {len(code)}",
            field=field,
        )
    for position, char in enumerate(code, start=1):
        if char not in _USCC_ALPHABET:
            raise IdentifierError(
                f"统一社会信用代码第{position}位字符“{char}”不允许（不使用 I、O、S、V、Z）",
                f"character {position} of the unified social credit code, {char!r}, is not allowed "
                "(I, O, S, V and Z are never used)",
                field=field,
            )
    division = code[2:8]
    if not division.isdigit():
        raise IdentifierError(
            f"统一社会信用代码第3–8位（登记管理机关行政区划码）应为数字，实际为“{division}”",
            f"characters 3-8 of the unified social credit code (administrative division) must be digits, "
            f"not {division!r}",
            field=field,
        )
    expected = uscc_check_character(code[:17])
    if code[17] != expected:
        raise IdentifierError(
            f"统一社会信用代码校验位错误：第18位应为“{expected}”，实际为“{code[17]}”",
            f"the unified social credit code's check character is wrong: "
            f"expected {expected!r}, got {code[17]!r}",
            field=field,
        )
    return code


def is_unified_social_credit_code(raw: str) -> bool:
    """Whether ``raw`` is a well-formed unified social credit code with a correct check character."""
    try:
        validate_unified_social_credit_code(raw)
    except IdentifierError:
        return False
    return True


def resident_id_check_digit(first17: str) -> str:
    """The 18th character of a resident ID number whose first 17 digits are ``first17`` (GB 11643 §8.2)."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


@dataclass(frozen=True, kw_only=True)
class ResidentId:
    """A checked resident ID number and the birth date it encodes."""

    number: str
    birth_date: date

    def age_on(self, day: date) -> int:
        """Completed years of age on ``day`` (GS-15(3) needs to know whether a party is a minor)."""
        years = day.year - self.birth_date.year
        if (day.month, day.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        return years


def parse_resident_id(raw: str, *, field: str = "id_number") -> ResidentId:
    """A checked 18-digit resident ID number, or ``IdentifierError`` saying what is wrong and where."""
    number = raw.strip().upper()
    if len(number) != 18:
        raise IdentifierError(
            f"居民身份证号码应为18位，实际为{len(number)}位",
            f"a resident ID number has 18 characters, this one has {len(number)}",
            field=field,
        )
    for position, char in enumerate(number[:17], start=1):
        if not char.isascii() or not char.isdigit():
            raise IdentifierError(
                f"居民身份证号码第{position}位应为数字，实际为“{char}”",
                f"character {position} of the resident ID number must be a digit, not {char!r}",
                field=field,
            )
    last = number[17]
    if not (last == "X" or (last.isascii() and last.isdigit())):
        raise IdentifierError(
            f"居民身份证号码第18位应为数字或 X，实际为“{last}”",
            f"character 18 of the resident ID number must be a digit or X, not {last!r}",
            field=field,
        )
    try:
        birth = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        birth = None
    if birth is None or birth.year < 1900:
        raise IdentifierError(
            f"居民身份证号码第7–14位不是有效的出生日期：“{number[6:14]}”",
            f"characters 7-14 of the resident ID number are not a valid birth date: {number[6:14]!r}",
            field=field,
        )
    expected = resident_id_check_digit(number[:17])
    if last != expected:
        raise IdentifierError(
            f"居民身份证号码校验码错误：第18位应为“{expected}”，实际为“{last}”",
            f"the resident ID number's check digit is wrong: expected {expected!r}, got {last!r}",
            field=field,
        )
    return ResidentId(number=number, birth_date=birth)


def is_resident_id(raw: str) -> bool:
    """Whether ``raw`` is an 18-digit resident ID number with a valid birth date and check digit."""
    try:
        parse_resident_id(raw)
    except IdentifierError:
        return False
    return True
