"""The national 双公示 code lists and the kinds of enforcement act, each an enum named once with its label."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "EnforcementAct",
    "IdDocumentType",
    "LicensingCategory",
    "PartyCategory",
    "PenaltyKind",
    "heaviest_penalty",
]


class _Labelled(StrEnum):
    """A code whose value is a stable English slug (for the API) and whose label is the Chinese text."""

    label: str

    def __new__(cls, value: str, label: str = "") -> _Labelled:
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label
        return member

    @classmethod
    def from_label(cls, label: str) -> _Labelled:
        """The member whose Chinese label is ``label`` (the national CSV files carry labels, not slugs)."""
        for member in cls:
            if member.label == label:
                return member
        raise ValueError(f"{label!r} is not a label of {cls.__name__}")


class EnforcementAct(_Labelled):
    """The kinds of enforcement act the measures cover (GS-2, JL-2); GS-11 sets deadlines by kind."""

    PENALTY = "penalty", "行政处罚"
    LICENSING = "licensing", "行政许可"
    COERCION = "coercion", "行政强制"
    INSPECTION = "inspection", "行政检查"
    LEVY = "levy", "行政征收征用"
    OTHER = "other", "其他行政执法行为"


class PenaltyKind(_Labelled):
    """The 14 kinds of penalty of 行政处罚法 (2021) art. 9, in the order of the national tables.

    The order is the statute's, lightest first; the annual report counts a decision with several kinds
    once, under the kind that comes last in this order (GS-17, the practice of the published reports),
    except 其他, which is a catch-all and counts only when it stands alone.
    """

    WARNING = "warning", "警告"
    CIRCULATED_CRITICISM = "circulated_criticism", "通报批评"
    FINE = "fine", "罚款"
    CONFISCATE_ILLEGAL_GAINS = "confiscate_illegal_gains", "没收违法所得"
    CONFISCATE_ILLEGAL_PROPERTY = "confiscate_illegal_property", "没收非法财物"
    SUSPEND_LICENCE = "suspend_licence", "暂扣许可证件"
    LOWER_QUALIFICATION = "lower_qualification", "降低资质等级"
    REVOKE_LICENCE = "revoke_licence", "吊销许可证件"
    RESTRICT_BUSINESS = "restrict_business", "限制开展生产经营活动"
    SUSPEND_BUSINESS = "suspend_business", "责令停产停业"
    ORDER_CLOSURE = "order_closure", "责令关闭"
    RESTRICT_PRACTICE = "restrict_practice", "限制从业"
    DETENTION = "detention", "行政拘留"
    OTHER = "other", "其他"


class LicensingCategory(_Labelled):
    """许可类别 of the XK_XKLB field; 其他 must say what it is (the national field note: 其他-注明)."""

    ORDINARY = "ordinary", "普通"
    FRANCHISE = "franchise", "特许"
    ACCREDITATION = "accreditation", "认可"
    APPROVAL = "approval", "核准"
    REGISTRATION = "registration", "登记"
    OTHER = "other", "其他"


class PartyCategory(_Labelled):
    """行政相对人类别 of CF_XDR_LB / XK_XDR_LB."""

    ORGANISATION = "organisation", "法人及非法人组织"
    NATURAL_PERSON = "natural_person", "自然人"
    INDIVIDUAL_BUSINESS = "individual_business", "个体工商户"


class IdDocumentType(_Labelled):
    """证件类型 of the party's or legal representative's identity document."""

    RESIDENT_ID = "resident_id", "身份证"
    PASSPORT = "passport", "护照号"
    HK_MACAO_PERMIT = "hk_macao_permit", "港澳居民来往内地通行证"
    TAIWAN_PERMIT = "taiwan_permit", "台湾居民来往大陆通行证"
    FOREIGN_PERMANENT_RESIDENT = "foreign_permanent_resident", "外国人永久居留身份证"
    OTHER = "other", "其他"


def heaviest_penalty(kinds: tuple[PenaltyKind, ...] | frozenset[PenaltyKind]) -> PenaltyKind:
    """The kind a decision with several kinds is counted under: the last in the statute's order (GS-17)."""
    if not kinds:
        raise ValueError("a penalty decision has at least one kind")
    named = [kind for kind in kinds if kind is not PenaltyKind.OTHER]
    if not named:
        return PenaltyKind.OTHER
    order = list(PenaltyKind)
    return max(named, key=order.index)
