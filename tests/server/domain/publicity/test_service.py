"""Publication items in the database, SQLite and PostgreSQL (GS-7, GS-11 – GS-15, GS-19)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from server.domain.cases.models import Case, CaseEvent
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity import portal as portal_service
from server.domain.publicity import schedules, service
from server.domain.publicity import views as publicity_views
from server.domain.publicity.codes import EnforcementAct, IdDocumentType, PartyCategory, PenaltyKind
from server.domain.publicity.content import DecisionContent, FieldRedactions, PersonEntry
from server.domain.publicity.identifiers import resident_id_check_digit, uscc_check_character
from server.domain.publicity.models import PublicationHistory, PublicationItem
from server.domain.publicity.redaction import ExclusionClaim, ExclusionGround
from server.errors import ZfjlError

BEIJING = timezone(timedelta(hours=8))
AGENCY_USCC = "11340100003000001" + uscc_check_character("11340100003000001")
COMPANY_USCC = "91340100MA2N0A0Q0" + uscc_check_character("91340100MA2N0A0Q0")
WITNESS_ID = "11010519491231002X"
MINOR_17 = "34010220100307123"
MINOR_ID = MINOR_17 + resident_id_check_digit(MINOR_17)

PENALTY = DecisionContent(
    party_name="合肥某某餐饮有限公司",
    party_category=PartyCategory.ORGANISATION,
    party_uscc=COMPANY_USCC,
    document_number="合市监罚〔2026〕12号",
    violation_type="经营超过保质期的食品",
    facts=f"经查，当事人经营超过保质期的食品。证人李四（身份证号{WITNESS_ID}，手机13812345678）在场。",
    basis="《中华人民共和国食品安全法》第一百二十四条",
    conclusion="警告，罚款2000元",
    penalty_kinds=(PenaltyKind.WARNING, PenaltyKind.FINE),
    fine_yuan=Decimal("2000"),
    valid_until=date(2027, 9, 30),
    agency_uscc=AGENCY_USCC,
    persons=(PersonEntry(name="李四"),),
)


@pytest.fixture
def agency(db_session: Session) -> Agency:
    agency = Agency(name="合肥市市场监督管理局", head="", duties="", address="", contacts="")
    db_session.add(agency)
    db_session.flush()
    return agency


def caller(agency: Agency, user_id: str, role: str) -> Caller:
    return Caller(user_id=user_id, role=role, agency_id=agency.id)


def decided_case(
    session: Session,
    agency: Agency,
    act_kind: str,
    at: datetime,
    number: str = "A-1",
    *,
    event_type: str = "decision.decided",
    data: dict[str, object] | None = None,
) -> tuple[Case, CaseEvent]:
    case = Case(
        agency_id=agency.id,
        number=number,
        title="食品安全案",
        act_kind=act_kind,
        origin="ex_officio",
        party="合肥某某餐饮有限公司",
        created_by="10",
    )
    session.add(case)
    session.flush()
    event = CaseEvent(
        case_id=case.id,
        agency_id=agency.id,
        event_type=event_type,
        occurred_at=at,
        recorded_by="10",
        officer_ids=[],
        recording_ids=[],
        data=data or {},
    )
    session.add(event)
    session.flush()
    return case, event


@pytest.mark.parametrize(
    ("act_kind", "at", "due"),
    [
        ("penalty", datetime(2026, 9, 30, 10, 0, tzinfo=BEIJING), date(2026, 10, 15)),
        ("licensing", datetime(2026, 2, 13, 16, 0, tzinfo=BEIJING), date(2026, 3, 2)),
        ("inspection", datetime(2026, 9, 30, 10, 0, tzinfo=BEIJING), date(2026, 11, 3)),
        # 23:30 UTC on 29 Sep is already 30 Sep in Beijing: the Chinese date counts.
        ("penalty", datetime(2026, 9, 29, 23, 30, tzinfo=UTC), date(2026, 10, 15)),
    ],
)
def test_gs11_decision_event_creates_item_due_in_working_days(
    db_session: Session, agency: Agency, act_kind: str, at: datetime, due: date
) -> None:
    case, event = decided_case(db_session, agency, act_kind, at)
    item = service.collect_from_case_event(db_session, case, event)
    assert item is not None
    assert item.state == "draft"
    assert item.due_on == due
    assert not item.deadline_provisional
    assert item.party_name == "合肥某某餐饮有限公司"
    # Recording the same event again does not open a second item.
    assert service.collect_from_case_event(db_session, case, event).id == item.id  # type: ignore[union-attr]


def test_gs11_deadline_in_2027_is_provisional_and_says_its_calendar(
    db_session: Session, agency: Agency
) -> None:
    case, event = decided_case(db_session, agency, "penalty", datetime(2026, 12, 25, 10, 0, tzinfo=BEIJING))
    item = service.collect_from_case_event(db_session, case, event)
    assert item is not None
    assert item.deadline_provisional
    assert item.due_on == date(2027, 1, 5)
    assert "2027:weekends-only" in item.calendar_version
    assert publicity_views.item_to_dict(item)["deadline_provisional"] is True


def test_other_event_types_create_nothing(db_session: Session, agency: Agency) -> None:
    case, event = decided_case(
        db_session, agency, "penalty", datetime(2026, 3, 2, tzinfo=BEIJING), event_type="decision.proposed"
    )
    assert service.collect_from_case_event(db_session, case, event) is None


def collect_penalty(session: Session, agency: Agency, content: DecisionContent = PENALTY) -> PublicationItem:
    return service.collect(
        session,
        caller(agency, "10", "officer"),
        service.CollectInput(
            agency_id=agency.id, act=EnforcementAct.PENALTY, decided_on=date(2026, 9, 30), content=content
        ),
    )


def test_gs7_published_by_another_person_with_a_redacted_copy(db_session: Session, agency: Agency) -> None:
    item = collect_penalty(db_session, agency)
    service.submit(db_session, caller(agency, "10", "officer"), item.id)
    with pytest.raises(ZfjlError) as info:
        service.publish(db_session, caller(agency, "10", "agency_head"), item.id)
    assert info.value.kind == "forbidden"
    with pytest.raises(ZfjlError) as info:
        service.publish(db_session, caller(agency, "11", "officer"), item.id)
    assert info.value.kind == "forbidden"
    service.publish(db_session, caller(agency, "12", "legal_reviewer"), item.id)
    assert item.state == "published"
    published = item.published or {}
    for planted in (WITNESS_ID, "13812345678", "李四"):
        assert planted not in str(published)
    assert "李某" in published["facts"]
    assert published["record"]["CF_NR_FK"] == "0.2"
    # The source record keeps what the collector typed (GS-14: the copy is redacted, not the source).
    assert WITNESS_ID in item.content["facts"]
    assert item.disclosure_ends == date(2029, 9, 30)
    actions = [(h.action, h.actor) for h in publicity_views.history_of(db_session, item)]
    assert actions == [("collect", "10"), ("submit", "10"), ("publish", "12")]


def test_gs11_incomplete_national_fields_are_refused_at_submission(
    db_session: Session, agency: Agency
) -> None:
    item = collect_penalty(db_session, agency, replace(PENALTY, agency_uscc="11340100003000001X"))
    with pytest.raises(ZfjlError) as info:
        service.submit(db_session, caller(agency, "10", "officer"), item.id)
    assert info.value.code == "invalid_identifier"
    assert item.state == "draft"


def published_item(session: Session, agency: Agency, content: DecisionContent = PENALTY) -> PublicationItem:
    item = collect_penalty(session, agency, content)
    service.submit(session, caller(agency, "10", "officer"), item.id)
    service.publish(session, caller(agency, "12", "legal_reviewer"), item.id)
    return item


def test_gs8_portal_search_finds_published_items_only(db_session: Session, agency: Agency) -> None:
    item = published_item(db_session, agency)
    draft = collect_penalty(db_session, agency, replace(PENALTY, document_number="合市监罚〔2026〕99号"))
    today = date(2026, 10, 20)
    found, total = portal_service.portal_search(
        db_session, portal_service.PortalQuery(party="某某餐饮"), today
    )
    assert [i.id for i in found] == [item.id] and total == 1
    found, _ = portal_service.portal_search(
        db_session, portal_service.PortalQuery(document_number="99号"), today
    )
    assert found == []
    assert draft.state == "draft"
    found, _ = portal_service.portal_search(db_session, portal_service.PortalQuery(party="%"), today)
    assert found == []  # wildcards are literal text
    assert portal_service.export_records(db_session, "CF", today=today)[0]["CF_WSH"] == "合市监罚〔2026〕12号"


def test_gs15_case_involving_a_minor_is_excluded_and_never_published(
    db_session: Session, agency: Agency
) -> None:
    minor = replace(PENALTY, persons=(PersonEntry(name="小明", id_number=MINOR_ID),))
    item = collect_penalty(db_session, agency, minor)
    assert item.state == "excluded"
    assert item.excluded_grounds == ["minor"]
    with pytest.raises(ZfjlError):
        service.publish(db_session, caller(agency, "12", "legal_reviewer"), item.id)
    assert portal_service.portal_search(db_session, portal_service.PortalQuery(), date(2026, 10, 20))[1] == 0


def test_gs15_natural_person_party_who_is_a_minor_is_excluded(db_session: Session, agency: Agency) -> None:
    minor_party = replace(
        PENALTY,
        party_name="王小明",
        party_category=PartyCategory.NATURAL_PERSON,
        party_uscc=None,
        party_id_type=IdDocumentType.RESIDENT_ID,
        party_id_number=MINOR_ID,
    )
    assert collect_penalty(db_session, agency, minor_party).state == "excluded"


def test_gs15_secret_exclusion_keeps_the_reviewers_reason(db_session: Session, agency: Agency) -> None:
    item = collect_penalty(db_session, agency)
    claim = ExclusionClaim(ground=ExclusionGround.TRADE_SECRET, reviewer="12", reason="涉及配方")
    service.exclude(db_session, caller(agency, "12", "legal_reviewer"), item.id, claim)
    assert item.state == "excluded" and item.excluded_reason == "涉及配方"


def test_gs12_withdrawn_item_leaves_search_and_shows_its_reason(db_session: Session, agency: Agency) -> None:
    item = published_item(db_session, agency)
    with pytest.raises(ZfjlError):
        service.withdraw(db_session, caller(agency, "12", "legal_reviewer"), item.id, " ")
    service.withdraw(
        db_session,
        caller(agency, "12", "legal_reviewer"),
        item.id,
        "决定已被复议机关撤销",
        revoked_on=date(2026, 9, 18),
    )
    assert item.state == "withdrawn"
    assert item.withdrawal_due_on == date(2026, 9, 22)
    assert portal_service.portal_search(db_session, portal_service.PortalQuery(), date(2026, 10, 20))[1] == 0
    notice = portal_service.portal_item(db_session, item.id, date(2026, 10, 20))
    assert notice.withdrawal_reason == "决定已被复议机关撤销"


def test_gs12_replacement_decision_is_linked_to_the_withdrawn_one(
    db_session: Session, agency: Agency
) -> None:
    old = published_item(db_session, agency)
    service.withdraw(db_session, caller(agency, "12", "legal_reviewer"), old.id, "重新作出决定")
    new = service.collect(
        db_session,
        caller(agency, "10", "officer"),
        service.CollectInput(
            agency_id=agency.id,
            act=EnforcementAct.PENALTY,
            decided_on=date(2026, 10, 9),
            content=PENALTY,
            replaces_item_id=old.id,
        ),
    )
    assert new.replaces_item_id == old.id


def test_gs13_item_leaves_the_portal_after_its_disclosure_deadline(
    db_session: Session, agency: Agency
) -> None:
    item = published_item(db_session, agency)
    assert portal_service.portal_search(db_session, portal_service.PortalQuery(), date(2029, 9, 30))[1] == 1
    assert portal_service.portal_search(db_session, portal_service.PortalQuery(), date(2029, 10, 1))[1] == 0
    assert service.expire_due(db_session, date(2029, 10, 1)) == [item.id]
    assert item.state == "expired"


def test_gs13_early_termination_only_after_the_minimum(db_session: Session, agency: Agency) -> None:
    item = published_item(db_session, agency)
    reviewer = caller(agency, "12", "legal_reviewer")
    with pytest.raises(ZfjlError) as info:
        service.terminate_early(db_session, reviewer, item.id, "信用修复", on=date(2026, 12, 29))
    assert "2026-12-30" in info.value.message_en
    service.terminate_early(db_session, reviewer, item.id, "信用修复", on=date(2026, 12, 30))
    assert item.state == "expired"


def test_gs19_correction_keeps_the_item_public_and_says_when(db_session: Session, agency: Agency) -> None:
    item = published_item(db_session, agency)
    request = portal_service.request_correction(db_session, item.id, "当事人名称有误", "")
    assert request.status == "received"
    corrected = replace(PENALTY, party_name="合肥某某餐饮管理有限公司")
    service.correct(
        db_session,
        caller(agency, "12", "legal_reviewer"),
        item.id,
        service.CorrectionInput(content=corrected, reason="当事人名称有误"),
    )
    portal_service.decide_correction_request(
        db_session, caller(agency, "12", "legal_reviewer"), request.id, accepted=True, outcome="已更正"
    )
    assert item.state == "corrected" and item.corrected_at is not None
    assert (item.published or {})["party_name"] == "合肥某某餐饮管理有限公司"
    assert (item.published or {})["disclosure_until"] == "2029-09-30"
    assert (
        portal_service.portal_search(
            db_session, portal_service.PortalQuery(party="餐饮管理"), date(2026, 10, 20)
        )[1]
        == 1
    )


def test_gs7_history_is_append_only_in_the_database(db_session: Session, agency: Agency) -> None:
    item = published_item(db_session, agency)
    db_session.commit()
    with pytest.raises(DatabaseError):
        db_session.execute(
            text("UPDATE publication_history SET actor = 'x' WHERE item_id = :i"), {"i": item.id}
        )
        db_session.flush()
    db_session.rollback()
    with pytest.raises(DatabaseError):
        db_session.execute(text("DELETE FROM publication_history WHERE item_id = :i"), {"i": item.id})
    db_session.rollback()
    assert db_session.query(PublicationHistory).filter_by(item_id=item.id).count() == 3


def test_reviewer_undoes_a_proposed_redaction(db_session: Session, agency: Agency) -> None:
    item = collect_penalty(db_session, agency)
    view = publicity_views.review_view(db_session, caller(agency, "12", "legal_reviewer"), item.id)
    mobile = next(f for f in view["fields"]["facts"]["findings"] if f["kind"] == "mobile")
    service.set_redactions(
        db_session,
        caller(agency, "12", "legal_reviewer"),
        item.id,
        {"facts": FieldRedactions(undone=(mobile["key"],))},
    )
    service.submit(db_session, caller(agency, "10", "officer"), item.id)
    service.publish(db_session, caller(agency, "12", "legal_reviewer"), item.id)
    assert "13812345678" in (item.published or {})["facts"]
    assert WITNESS_ID not in (item.published or {})["facts"]


def test_other_agencies_items_look_missing(db_session: Session, agency: Agency) -> None:
    item = collect_penalty(db_session, agency)
    stranger = Caller(user_id="99", role="legal_reviewer", agency_id=agency.id + 1000)
    with pytest.raises(ZfjlError) as info:
        service.publish(db_session, stranger, item.id)
    assert info.value.kind == "not_found"


def test_loading_the_2027_schedule_recounts_provisional_deadlines(
    db_session: Session, agency: Agency
) -> None:
    case, event = decided_case(db_session, agency, "penalty", datetime(2026, 12, 25, 10, 0, tzinfo=BEIJING))
    item = service.collect_from_case_event(db_session, case, event)
    assert item is not None and item.due_on == date(2027, 1, 5) and item.deadline_provisional
    # A schedule made up for this test (the official 2027 one is not published yet): 1–3 January off.
    schedule = schedules.parse_schedule(
        {"year": 2027, "source": "test schedule", "holidays": [["2027-01-01", "2027-01-03"]], "workdays": []}
    )
    with pytest.raises(ZfjlError) as info:
        schedules.load_schedule(db_session, caller(agency, "12", "legal_reviewer"), schedule)
    assert info.value.kind == "forbidden"
    admin = Caller(user_id="1", role="system_admin", agency_id=None)
    assert schedules.load_schedule(db_session, admin, schedule).recounted == [item.id]
    assert item.due_on == date(2027, 1, 6)
    assert not item.deadline_provisional
    assert "weekends-only" not in item.calendar_version
    # Items collected afterwards use the loaded schedule at once; loading it again changes nothing.
    later_case, later = decided_case(
        db_session, agency, "penalty", datetime(2026, 12, 25, tzinfo=BEIJING), "A-2"
    )
    assert service.collect_from_case_event(db_session, later_case, later).due_on == date(2027, 1, 6)  # type: ignore[union-attr]
    assert schedules.load_schedule(db_session, admin, schedule).changes == ()


def test_gs23_deadline_board_shows_overdue_due_soon_and_provisional(
    db_session: Session, agency: Agency
) -> None:
    overdue = collect_penalty(db_session, agency)  # due 2026-10-15
    soon = service.collect(
        db_session,
        caller(agency, "10", "officer"),
        service.CollectInput(agency_id=agency.id, act=EnforcementAct.PENALTY, decided_on=date(2026, 10, 12)),
    )  # due 2026-10-21
    late_case, late = decided_case(db_session, agency, "penalty", datetime(2026, 12, 25, tzinfo=BEIJING))
    provisional = service.collect_from_case_event(db_session, late_case, late)
    assert provisional is not None
    supervisor = Caller(user_id="50", role="supervisor", agency_id=None)
    [row] = publicity_views.deadline_board(db_session, supervisor, today=date(2026, 10, 19))
    assert row["overdue"] == [overdue.id]
    assert row["due_soon"] == [soon.id]
    assert row["provisional"] == [provisional.id]


@pytest.mark.parametrize(
    ("query", "found"), [("餐饮", False), ("合肥", True), ("某某餐饮", True), ("%", False)]
)
def test_gs8_a_query_shorter_than_three_characters_matches_the_start_of_the_name(
    db_session: Session, agency: Agency, query: str, found: bool
) -> None:
    published_item(db_session, agency)
    total = portal_service.portal_search(
        db_session, portal_service.PortalQuery(party=query), date(2026, 10, 20)
    )[1]
    assert (total == 1) is found


def test_gs11_bad_content_in_the_decision_event_still_opens_the_item_and_says_why(
    db_session: Session, agency: Agency
) -> None:
    bad = {"publication": {"fine_yuan": 2000.5}}
    case, event = decided_case(
        db_session, agency, "penalty", datetime(2026, 9, 30, 10, tzinfo=BEIJING), data=bad
    )
    item = service.collect_from_case_event(db_session, case, event)
    assert item is not None and item.due_on == date(2026, 10, 15)
    [collected] = publicity_views.history_of(db_session, item)
    assert "fine_yuan" in collected.detail["content_error_en"]
    assert item.party_name == "合肥某某餐饮有限公司"  # taken from the case
