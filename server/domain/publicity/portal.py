"""The public side of publicity: portal search, one item, open data, public corrections (GS-5, GS-19)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, literal_column, or_, select
from sqlalchemy.orm import Session

from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.people.service import Caller
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.models import (
    BRACKETS_TWICE,
    YEAR_BRACKET,
    CorrectionRequest,
    PublicationItem,
    document_year_on,
)
from server.domain.publicity.schedules import today_in_china
from server.domain.publicity.service import actor_of, forbidden_collect
from server.domain.publicity.workflow import PUBLIC_STATES, ItemState, Role

__all__ = [
    "COUNT_CAP",
    "MIN_SUBSTRING",
    "PortalQuery",
    "decide_correction_request",
    "export_records",
    "portal_item",
    "portal_search",
    "request_correction",
]


@dataclass(frozen=True, kw_only=True)
class PortalQuery:
    """A portal search: free filters and one page."""

    party: str = ""
    document_number: str = ""
    agency_id: int | None = None
    act_kind: EnforcementAct | None = None
    decided_from: date | None = None
    decided_to: date | None = None
    page: int = 1
    per_page: int = 20


# Beyond this many matches the portal says "more than 10000" instead of counting them all.
COUNT_CAP = 10_000


def _portal_visible(today: date) -> Any:
    return (
        PublicationItem.state.in_([state.value for state in PUBLIC_STATES]),
        PublicationItem.disclosure_ends >= today,
    )


# A trigram index finds substrings of three characters or more; a shorter query (a two-character
# personal name such as 张三) would read the whole table, so it matches the start of the text instead.
MIN_SUBSTRING = 3


def _like(text: str) -> str:
    escaped = _escape(text)
    return f"%{escaped}%" if len(text) >= MIN_SUBSTRING else f"{escaped}%"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _document_number_match(session: Session, number: str) -> list[Any]:
    """The conditions of a document-number search: ``document_number LIKE`` the query, as for a name.

    On PostgreSQL, a query holding a year bracket (〔2025〕1234号, what a user copies from a letter) is
    first narrowed through ``ix_publication_items_document_year_on``: a number that contains the query
    contains its part from the bracket on, and if the number has only one bracket, its own part from
    that bracket starts with it; numbers with two brackets come from
    ``ix_publication_items_document_brackets``. The ``LIKE`` on the whole query then decides, so the
    matches are exactly those of the ``LIKE`` alone. The trigram index would find them too, but it reads
    the posting lists of the year's trigrams (20, 202, 025), which nearly every number has: 25–50 ms on
    a million items against ≈ 1 ms this way (docs/performance.md, "Portal search").
    """
    bracket = number.find(YEAR_BRACKET)
    if len(number) < MIN_SUBSTRING or bracket < 0 or session.get_bind().dialect.name != "postgresql":
        return [PublicationItem.document_number.like(_like(number), escape="\\")]
    year_on = _escape(number[bracket:]) + "%"
    narrowed = or_(
        document_year_on(PublicationItem.document_number).like(year_on, escape="\\"),
        PublicationItem.document_number.like(literal_column(f"'{BRACKETS_TWICE}'")),
    )
    # The whole query is matched on an expression no index holds (``|| ''``), so that the planner does
    # not add the trigram index back in for it (its estimate of that index's cost is far too low here).
    unindexed = (PublicationItem.document_number + literal_column("''")).like(_like(number), escape="\\")
    return [narrowed, unindexed]


def portal_search(
    session: Session, query: PortalQuery, today: date | None = None
) -> tuple[list[PublicationItem], int]:
    """Published, unexpired items matching the query, newest decision first, and how many match.

    The count stops at ``COUNT_CAP + 1``: a total above ``COUNT_CAP`` means "more than that".
    """
    day = today or today_in_china()
    where = list(_portal_visible(day))
    if query.party.strip():
        where.append(PublicationItem.party_name.like(_like(query.party.strip()), escape="\\"))
    if query.document_number.strip():
        where.extend(_document_number_match(session, query.document_number.strip()))
    if query.agency_id is not None:
        where.append(PublicationItem.agency_id == query.agency_id)
    if query.act_kind is not None:
        where.append(PublicationItem.act_kind == query.act_kind.value)
    if query.decided_from is not None:
        where.append(PublicationItem.decided_on >= query.decided_from)
    if query.decided_to is not None:
        where.append(PublicationItem.decided_on <= query.decided_to)
    offset = (query.page - 1) * query.per_page
    rows = list(
        session.scalars(
            select(PublicationItem)
            .where(*where)
            .order_by(PublicationItem.decided_on.desc(), PublicationItem.id.desc())
            .offset(offset)
            .limit(query.per_page)
        )
    )
    # A page that is not full is the last one: the matches are counted already (the usual case of a
    # narrow search, a document number or a full name), so the database is asked once.
    if 0 < len(rows) < query.per_page or (offset == 0 and not rows):
        return rows, min(offset + len(rows), COUNT_CAP + 1)
    # Counting every match of a broad search costs as much as reading them: count up to a cap.
    matches = select(PublicationItem.id).where(*where).limit(COUNT_CAP + 1).subquery()
    total = session.scalar(select(func.count()).select_from(matches)) or 0
    return rows, int(total)


def portal_item(session: Session, item_id: int, today: date | None = None) -> PublicationItem:
    """A published item, or a withdrawn one (which shows only its withdrawal notice); else not found."""
    day = today or today_in_china()
    item = session.get(PublicationItem, item_id)
    if item is None or item.published is None:
        raise NotFound("公示信息不存在或已到期", "no such published item, or its disclosure has ended")
    if item.state == ItemState.WITHDRAWN.value:
        return item
    if item.state not in {state.value for state in PUBLIC_STATES} or (item.disclosure_ends or date.min) < day:
        raise NotFound("公示信息不存在或已到期", "no such published item, or its disclosure has ended")
    return item


def export_records(
    session: Session,
    table: str,
    *,
    agency_id: int | None = None,
    today: date | None = None,
    limit: int = 10000,
) -> list[dict[str, str]]:
    """The public 双公示 records (``CF`` or ``XK``) of the published, unexpired items."""
    if table not in ("CF", "XK"):
        raise Invalid("table 须为 CF 或 XK", "table must be CF or XK")
    act = EnforcementAct.PENALTY if table == "CF" else EnforcementAct.LICENSING
    where = [*_portal_visible(today or today_in_china()), PublicationItem.act_kind == act.value]
    if agency_id is not None:
        where.append(PublicationItem.agency_id == agency_id)
    items = session.scalars(select(PublicationItem).where(*where).order_by(PublicationItem.id).limit(limit))
    return [
        dict(item.published["record"]) for item in items if item.published and item.published.get("record")
    ]


def request_correction(session: Session, item_id: int, text: str, contact: str = "") -> CorrectionRequest:
    """GS-19: anyone may ask for a published item to be corrected; the request is kept with its outcome."""
    item = portal_item(session, item_id)
    if item.state == ItemState.WITHDRAWN.value:
        raise Conflict("该决定已撤回，无需更正", "the decision was withdrawn; there is nothing to correct")
    body = text.strip()
    if not body or len(body) > 2000 or len(contact) > 200:
        raise Invalid(
            "更正请求须为1–2000字，联系方式不超过200字", "a request is 1-2000 characters, contact at most 200"
        )
    request = CorrectionRequest(
        item_id=item.id, text=body, contact=contact.strip(), received_at=utcnow(), status="received"
    )
    session.add(request)
    session.flush()
    write_audit(
        session,
        actor="public",
        action="publicity.correction_requested",
        target_type="publication_item",
        target_id=item.id,
    )
    return request


def decide_correction_request(
    session: Session, caller: Caller, request_id: int, *, accepted: bool, outcome: str
) -> CorrectionRequest:
    """The agency verifies a request: accepted (then corrects the item) or rejected, with its outcome."""
    request = session.get(CorrectionRequest, request_id)
    item = session.get(PublicationItem, request.item_id) if request else None
    if request is None or item is None or not caller.may_write(item.agency_id):
        raise NotFound("更正请求不存在", "correction request not found")
    if Role.REVIEWER not in actor_of(caller).roles:
        raise forbidden_collect()
    if request.status != "received":
        raise Conflict("该更正请求已处理", "the request has been decided")
    if not outcome.strip():
        raise Invalid("须说明处理结果", "the outcome needs a text")
    request.status = "accepted" if accepted else "rejected"
    request.outcome = outcome.strip()
    request.decided_by = caller.user_id
    request.decided_at = utcnow()
    return request
