"""What is never published (GS-14), what is not published at all (GS-15), and the redaction of free text.

The rules follow the courts' de-identification practice (法释〔2016〕19号 arts. 8–9 and the technical
rules that go with it): a natural person other than the party keeps the surname and the given name
becomes 某 (two people with the same surname: 某甲, 某乙); ID numbers, contact details, bank accounts,
property certificate numbers and home addresses below the county are removed. The source text is
never changed: ``scan`` proposes redactions, the reviewer undoes or adds some, and ``render`` builds the
published copy from the source and those decisions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from server.domain.publicity.errors import RedactionError
from server.domain.publicity.identifiers import is_resident_id, parse_resident_id

__all__ = [
    "FORBIDDEN_FIELDS",
    "ExclusionClaim",
    "ExclusionGround",
    "ExclusionVerdict",
    "Finding",
    "FindingKind",
    "ManualRedaction",
    "Person",
    "exclusion_verdict",
    "is_minor",
    "luhn_valid",
    "mask_name",
    "render",
    "scan",
    "strip_forbidden_fields",
]

# GS-14: structured fields that never reach the portal, whatever the author typed into them.
FORBIDDEN_FIELDS = frozenset(
    {
        "other_person_names",
        "home_address",
        "id_number",
        "party_id_number",
        "legal_rep_id_number",
        "contact",
        "phone",
        "email",
        "bank_account",
        "property_certificate_number",
        "property_status",
    }
)


def strip_forbidden_fields(fields: Mapping[str, object]) -> tuple[dict[str, object], tuple[str, ...]]:
    """The publishable fields and the names of those removed under GS-14 (sorted)."""
    kept = {name: value for name, value in fields.items() if name not in FORBIDDEN_FIELDS}
    removed = tuple(sorted(name for name in fields if name in FORBIDDEN_FIELDS))
    return kept, removed


class FindingKind(StrEnum):
    """What a proposed redaction hides, with the placeholder the public sees."""

    ID_NUMBER = "id_number"
    MOBILE = "mobile"
    LANDLINE = "landline"
    BANK_ACCOUNT = "bank_account"
    PROPERTY_CERTIFICATE = "property_certificate"
    ADDRESS = "address"
    PERSON_NAME = "person_name"
    MANUAL = "manual"

    @property
    def label(self) -> str:
        """The Chinese name of what was hidden, shown to the reviewer."""
        return _KIND_LABELS[self]


_KIND_LABELS = {
    FindingKind.ID_NUMBER: "身份证号码",
    FindingKind.MOBILE: "手机号码",
    FindingKind.LANDLINE: "固定电话",
    FindingKind.BANK_ACCOUNT: "银行账号",
    FindingKind.PROPERTY_CERTIFICATE: "不动产权证号",
    FindingKind.ADDRESS: "住址",
    FindingKind.PERSON_NAME: "自然人姓名",
    FindingKind.MANUAL: "审核人隐去",
}
_MASK = "×××"


@dataclass(frozen=True, kw_only=True)
class Person:
    """A natural person or an organisation named in a case."""

    name: str
    is_party: bool = False
    natural_person: bool = True
    birth_date: date | None = None
    id_number: str | None = None


@dataclass(frozen=True, kw_only=True)
class Finding:
    """A proposed redaction: the span of the source, what it is, and what replaces it."""

    kind: FindingKind
    start: int
    end: int
    original: str
    replacement: str

    @property
    def key(self) -> str:
        """A stable name for the reviewer's accept/undo decision: ``kind:start-end``."""
        return f"{self.kind.value}:{self.start}-{self.end}"


@dataclass(frozen=True, kw_only=True)
class ManualRedaction:
    """A span the reviewer hides by hand, with the reason kept in the item's history."""

    start: int
    end: int
    reason: str


# Compound surnames first, so 欧阳娜娜 masks as 欧阳某 (the court rule keeps the whole surname).
_COMPOUND_SURNAMES = (
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "令狐", "澹台", "轩辕", "端木", "独孤", "南宫", "西门", "申屠", "太史", "钟离", "闻人",
)  # fmt: skip


def _surname(name: str) -> str:
    for compound in _COMPOUND_SURNAMES:
        if name.startswith(compound) and len(name) > len(compound):
            return compound
    return name[:1]


def mask_name(name: str, suffix: str = "") -> str:
    """Surname + 某 (+ 甲/乙… when several share the surname), the courts' rule (法释〔2016〕19号 art. 9)."""
    # A transliterated foreign name (约翰·史密斯) keeps its first part, the nearest equivalent of a surname.
    if "·" in name:
        return name.split("·", 1)[0] + "·某" + suffix
    return _surname(name) + "某" + suffix


_ORDINALS = "甲乙丙丁戊己庚辛壬癸"


def _name_masks(people: Iterable[Person]) -> dict[str, str]:
    """Replacement of each natural person's name other than the party's, 甲/乙 for shared surnames."""
    names: list[str] = []
    for person in people:
        if person.natural_person and not person.is_party and person.name.strip() and person.name not in names:
            names.append(person.name.strip())
    by_surname: dict[str, list[str]] = {}
    for name in names:
        by_surname.setdefault(mask_name(name), []).append(name)
    masks: dict[str, str] = {}
    for group in by_surname.values():
        if len(group) == 1:
            masks[group[0]] = mask_name(group[0])
        else:
            for index, name in enumerate(group):
                masks[name] = mask_name(name, _ORDINALS[index % len(_ORDINALS)])
    return masks


def luhn_valid(digits: str) -> bool:
    """ISO/IEC 7812 Luhn check, which payment card numbers satisfy."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# Digit runs are matched with look-arounds so a phone number inside a longer number is not a phone number.
_ID_RE = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
_MOBILE_RE = re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d(?:[- ]?\d{4}){2}(?!\d)")
_LANDLINE_RE = re.compile(r"(?<!\d)(?:\(0\d{2,3}\)|（0\d{2,3}）|0\d{2,3}[- ])\d{7,8}(?:-\d{1,5})?(?!\d)")
_CARD_RE = re.compile(r"(?<!\d)\d{4}(?:[ -]?\d{4}){3}(?:[ -]?\d{1,3})?(?!\d)")
# An account named as such (账号/账户/卡号): any long digit run, Luhn or not (organisations' accounts too).
_ACCOUNT_RE = re.compile(r"(?:银行账号|银行账户|开户账号|账号|账户|卡号)[为是:：\s]*(\d[\d -]{7,30}\d)")
_CERT_RE = re.compile(
    r"[\u4e00-\u9fa5][(（]\d{4}[)）][\u4e00-\u9fa5]{1,12}不动产权第\d{4,9}号"
    r"|[\u4e00-\u9fa5]{0,6}房权证[\u4e00-\u9fa5]{0,8}字第\d{3,12}号"
)
# A certificate number named as such, in whatever format: the value after the cue, up to punctuation.
_CERT_CUE_RE = re.compile(
    r"(?:不动产权证号|不动产权证书号|房产证号|房屋所有权证号|土地使用证号)[为是:：\s]*"
    r"([0-9A-Za-z\u4e00-\u9fa5()（）\-]{4,40}?)(?=[，。；;,、\s]|$)"
)
# Cues that introduce a natural person's home address. 住所 alone is also an organisation's seat, so it is
# not a cue; bare 住 ("住合肥市…", the form of court documents) counts only before a place name.
_ADDRESS_CUES = ("家庭住址", "现住址", "户籍所在地", "户籍地", "居住地", "现住", "住址", "家住", "居住于")
_ADDRESS_RE = re.compile(
    r"(?:(?:"
    + "|".join(_ADDRESS_CUES)
    + r")[为是在:：\s]*|(?<![居入暂租])住(?=[\u4e00-\u9fa5]{1,8}(?:省|市|县|区)))"
    r"([\u4e00-\u9fa50-9A-Za-z\-－#]{4,60})"
)
# Only a street-level address is a home address; "住所地在本市" or "住院" are not.
_STREET_RE = re.compile(r"[路街巷道村组号室栋幢弄]|小区|社区|公寓|大厦|花园")
# The court rule keeps a home address down to the county; everything below it is removed.
_COUNTY_RE = re.compile(r"^.*?(?:自治县|自治旗|县|(?<![小社园校])区|旗)")
_CITY_RE = re.compile(r"^.*?市")


def _address_span(match: re.Match[str]) -> tuple[int, int] | None:
    address = match.group(1)
    if not _STREET_RE.search(address):
        return None
    county = _COUNTY_RE.match(address) or _CITY_RE.match(address)
    cut = county.end() if county else 0
    if cut >= len(address):
        return None
    return match.start(1) + cut, match.end(1)


def scan(text: str, people: Iterable[Person] = ()) -> tuple[Finding, ...]:
    """Proposed redactions of ``text``, ordered by position; overlapping proposals keep the earlier rule's."""
    candidates: list[Finding] = []

    def propose(kind: FindingKind, start: int, end: int, replacement: str | None = None) -> None:
        candidates.append(
            Finding(
                kind=kind,
                start=start,
                end=end,
                original=text[start:end],
                replacement=replacement if replacement is not None else f"[{kind.label}已隐去]",
            )
        )

    # Order matters: an 18-digit ID with a valid check digit is an ID, not a card number.
    for match in _ID_RE.finditer(text):
        if is_resident_id(match.group()):
            propose(FindingKind.ID_NUMBER, match.start(), match.end())
    for match in _ACCOUNT_RE.finditer(text):
        propose(FindingKind.BANK_ACCOUNT, match.start(1), match.end(1))
    for match in _CARD_RE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 16 <= len(digits) <= 19 and luhn_valid(digits) and not is_resident_id(digits):
            propose(FindingKind.BANK_ACCOUNT, match.start(), match.end())
    for match in _MOBILE_RE.finditer(text):
        propose(FindingKind.MOBILE, match.start(), match.end())
    for match in _LANDLINE_RE.finditer(text):
        propose(FindingKind.LANDLINE, match.start(), match.end())
    for match in _CERT_RE.finditer(text):
        propose(FindingKind.PROPERTY_CERTIFICATE, match.start(), match.end())
    for match in _CERT_CUE_RE.finditer(text):
        propose(FindingKind.PROPERTY_CERTIFICATE, match.start(1), match.end(1))
    for match in _ADDRESS_RE.finditer(text):
        span = _address_span(match)
        if span:
            propose(FindingKind.ADDRESS, span[0], span[1], _MASK)
    masks = _name_masks(people)
    # Longest names first, so 张三丰 is not masked as 张某丰 through 张三.
    for name in sorted(masks, key=len, reverse=True):
        for match in re.finditer(re.escape(name), text):
            propose(FindingKind.PERSON_NAME, match.start(), match.end(), masks[name])

    chosen: list[Finding] = []
    for finding in candidates:
        if all(finding.end <= kept.start or finding.start >= kept.end for kept in chosen):
            chosen.append(finding)
    return tuple(sorted(chosen, key=lambda f: f.start))


def render(
    text: str,
    findings: Iterable[Finding],
    *,
    undone: Iterable[str] = (),
    added: Iterable[ManualRedaction] = (),
) -> str:
    """The published copy: ``text`` with the accepted findings and the reviewer's own redactions applied."""
    undo = set(undone)
    spans: list[tuple[int, int, str]] = []
    for finding in findings:
        if finding.key in undo:
            continue
        if text[finding.start : finding.end] != finding.original:
            raise RedactionError(
                f"待隐去内容与原文不符（位置 {finding.start}–{finding.end}），请重新扫描",
                f"a proposed redaction does not match the text at {finding.start}-{finding.end}; scan again",
                field="findings",
            )
        spans.append((finding.start, finding.end, finding.replacement))
    for manual in added:
        if not 0 <= manual.start < manual.end <= len(text):
            raise RedactionError(
                f"手动隐去的位置 {manual.start}–{manual.end} 超出原文范围",
                f"manual redaction {manual.start}-{manual.end} lies outside the text",
                field="added",
            )
        if not manual.reason.strip():
            raise RedactionError("手动隐去须说明理由", "a manual redaction needs a reason", field="added")
        spans.append((manual.start, manual.end, f"[{FindingKind.MANUAL.label}]"))
    spans.sort()
    pieces: list[str] = []
    cursor = 0
    for start, end, replacement in spans:
        if start < cursor:
            # Overlapping spans: extend the one already replaced rather than leak the overlap.
            cursor = max(cursor, end)
            continue
        pieces.append(text[cursor:start])
        pieces.append(replacement)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def is_minor(person: Person, on: date) -> bool:
    """Whether ``person`` was under 18 on ``on``, from the birth date or the resident ID number."""
    birth = person.birth_date
    if birth is None and person.id_number and is_resident_id(person.id_number):
        birth = parse_resident_id(person.id_number).birth_date
    if birth is None or not person.natural_person:
        return False
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return age < 18


class ExclusionGround(StrEnum):
    """GS-15 grounds for not publishing an item at all."""

    MINOR = "minor"  # GS-15(3): anything concerning minors; automatic, needs no reviewer
    STATE_SECRET = "state_secret"
    TRADE_SECRET = "trade_secret"
    THIRD_PARTY_PRIVACY = "third_party_privacy"
    SECURITY_STABILITY = "security_stability"


@dataclass(frozen=True, kw_only=True)
class ExclusionClaim:
    """A reviewer's claim that an item is excluded on a ground, with the reason supervisors will read."""

    ground: ExclusionGround
    reviewer: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ExclusionVerdict:
    """Whether an item may be published, and on which grounds it may not."""

    excluded: bool
    grounds: tuple[ExclusionGround, ...]
    reasons: tuple[str, ...]


def exclusion_verdict(
    people: Iterable[Person], decided_on: date, claims: Iterable[ExclusionClaim] = ()
) -> ExclusionVerdict:
    """GS-15: a case involving a minor is excluded whole; other grounds need a reviewer and a reason."""
    grounds: list[ExclusionGround] = []
    reasons: list[str] = []
    minors = [person for person in people if is_minor(person, decided_on)]
    if minors:
        grounds.append(ExclusionGround.MINOR)
        reasons.append("案件涉及未成年人（GS-15(3)），整体不予公示")
    for claim in claims:
        if not claim.reviewer.strip() or not claim.reason.strip():
            raise RedactionError(
                "以国家秘密、商业秘密等理由不予公示，须由审核人说明理由",
                "an exclusion on secrecy or privacy grounds needs the reviewer and a reason",
                field="claims",
            )
        if claim.ground not in grounds:
            grounds.append(claim.ground)
        reasons.append(claim.reason.strip())
    return ExclusionVerdict(excluded=bool(grounds), grounds=tuple(grounds), reasons=tuple(reasons))
