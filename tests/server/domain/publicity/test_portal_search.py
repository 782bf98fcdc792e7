"""Portal search over many numbers and dates, SQLite and PostgreSQL (GS-8, issue #10).

PostgreSQL searches a document number holding a year bracket through its own indexes (migration 0029);
these tests hold both databases to the plain meaning: the published, unexpired items whose number
contains the query, newest decision first.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from server.domain.people.models import Agency
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.models import PublicationItem
from server.domain.publicity.portal import PortalQuery, portal_search

TODAY = date(2026, 10, 20)
NOW = datetime(2026, 10, 20, tzinfo=UTC)
# (document number, kind, state, days before TODAY of the decision, disclosure still running)
ITEMS = [
    ("合市监罚决〔2025〕1234号", "penalty", "published", 300, True),
    ("芜市监罚决〔2025〕1234号", "penalty", "corrected", 310, True),
    ("合市监许〔2025〕1234号", "licensing", "published", 320, True),
    ("合市监罚决〔2025〕12345号", "penalty", "published", 330, True),
    ("合市监罚决〔2024〕1234号", "penalty", "published", 700, True),
    ("合市监罚决〔2025〕1234号之一", "penalty", "published", 290, True),
    # A second bracket: the query's year bracket is not the number's first one.
    ("合〔补〕罚决〔2025〕1234号", "penalty", "published", 280, True),
    ("合〔2025〕1234号〔补〕", "penalty", "published", 270, True),
    ("合市监罚决2025-1234号", "penalty", "published", 260, True),
    ("合市监罚决〔2025〕1%34号", "penalty", "published", 250, True),
    ("合市监罚决〔2025〕1_34号", "penalty", "published", 245, True),
    # Not on the portal: a draft, an expired disclosure, a withdrawn decision.
    ("蚌市监罚决〔2025〕1234号", "penalty", "draft", 240, True),
    ("淮市监罚决〔2025〕1234号", "penalty", "published", 230, False),
    ("宿市监罚决〔2025〕1234号", "penalty", "withdrawn", 220, True),
]


@pytest.fixture
def numbered(db_session: Session) -> dict[str, int]:
    """The items of ``ITEMS`` in the database: document number → id."""
    agency = Agency(name="合肥市市场监督管理局", head="", duties="", address="", contacts="")
    db_session.add(agency)
    db_session.flush()
    ids = {}
    for number, kind, state, days_ago, running in ITEMS:
        decided = TODAY - timedelta(days=days_ago)
        item = PublicationItem(
            agency_id=agency.id,
            act_kind=kind,
            title=f"{number}的公示",
            party_name="合肥某某餐饮有限公司",
            document_number=number,
            decided_on=decided,
            content={},
            published={"document_number": number} if state != "draft" else None,
            state=state,
            author="10",
            due_on=decided + timedelta(days=7),
            deadline_rule="test",
            calendar_version="test",
            disclosure_ends=TODAY + timedelta(days=30) if running else TODAY - timedelta(days=1),
            published_at=NOW if state != "draft" else None,
        )
        db_session.add(item)
        db_session.flush()
        ids[number] = item.id
    return ids


def visible(number: str) -> bool:
    return next(
        state in ("published", "corrected") and running for n, _, state, _, running in ITEMS if n == number
    )


@pytest.mark.parametrize(
    "query",
    [
        "〔2025〕1234号",  # what a user copies from a letter
        "罚决〔2025〕1234号",
        "合市监罚决〔2025〕1234号",
        "〔2025〕1234",
        "〔2025〕",
        "〔补〕",
        "〔2025〕1%34号",  # a wildcard in the query is a literal character
        "〔2025〕1_34号",
        "5〕1234号",  # no opening bracket
        "2025",
        "〔2026〕1号",  # nothing
    ],
)
def test_gs8_document_number_search_finds_exactly_the_numbers_containing_the_query(
    db_session: Session, numbered: dict[str, int], query: str
) -> None:
    expected = [n for n, *_ in sorted(ITEMS, key=lambda row: row[3]) if query in n and visible(n)]
    for per_page in (20, 2):  # one page holds every match; pages of two leave the count to the database
        found, total = portal_search(db_session, PortalQuery(document_number=query, per_page=per_page), TODAY)
        assert [item.document_number for item in found] == expected[:per_page]  # newest decision first
        assert total == len(expected)


def test_gs8_kind_and_decision_dates_find_that_kind_in_that_range_newest_first(
    db_session: Session, numbered: dict[str, int]
) -> None:
    query = PortalQuery(
        act_kind=EnforcementAct.PENALTY,
        decided_from=TODAY - timedelta(days=310),
        decided_to=TODAY - timedelta(days=250),
    )
    found, total = portal_search(db_session, query, TODAY)
    assert [item.document_number for item in found] == [
        "合市监罚决〔2025〕1%34号",
        "合市监罚决2025-1234号",
        "合〔2025〕1234号〔补〕",
        "合〔补〕罚决〔2025〕1234号",
        "合市监罚决〔2025〕1234号之一",
        "合市监罚决〔2025〕1234号",
        "芜市监罚决〔2025〕1234号",
    ]
    assert total == 7
    second = portal_search(
        db_session, PortalQuery(act_kind=EnforcementAct.PENALTY, per_page=2, page=2), TODAY
    )
    assert [item.id for item in second[0]] == [
        numbered["合市监罚决2025-1234号"],
        numbered["合〔2025〕1234号〔补〕"],
    ]
    assert second[1] == 10  # every visible penalty
    last = portal_search(db_session, PortalQuery(act_kind=EnforcementAct.PENALTY, per_page=3, page=4), TODAY)
    assert [item.document_number for item in last[0]] == ["合市监罚决〔2024〕1234号"] and last[1] == 10
    beyond = portal_search(
        db_session, PortalQuery(act_kind=EnforcementAct.PENALTY, per_page=3, page=5), TODAY
    )
    assert beyond == ([], 10)
