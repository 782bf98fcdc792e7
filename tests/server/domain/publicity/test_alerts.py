"""Deadline alerts on SQLite and PostgreSQL (GS-12, GS-22, GS-23, JL-18): raised before a deadline passes,
overdue after it, cleared once published, withdrawn or archived, never shown to another agency."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.cases import service as case_service
from server.domain.cases.inputs import NewCase, StatusChange
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.governance.archives_models import ArchivePackage
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity import schedules, service
from server.domain.publicity.alerts import (
    ARCHIVE_DUE_SOON,
    DUE_SOON_WORKING_DAYS,
    evaluate_deadline_alerts,
    open_deadline_alerts,
)
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.errors import TransitionForbidden
from server.domain.publicity.inputs import OrderSourceKind, WithdrawalOrderSource
from server.domain.publicity.models import DeadlineAlert, PublicationItem, WithdrawalOrder
from server.domain.publicity.schedules import calendar_of, today_in_china
from server.domain.publicity.views import order_to_dict, withdrawal_orders_of
from server.workers.loops import archive_dues
from tests.server.domain.publicity.test_service import PENALTY


def _agency(session: Session, name: str) -> Agency:
    agency = Agency(name=name, head="", duties="", address="", contacts="")
    session.add(agency)
    session.flush()
    return agency


def _draft(session: Session, agency: Agency, title: str) -> PublicationItem:
    return service.collect(
        session,
        Caller(user_id="10", role="officer", agency_id=agency.id),
        service.CollectInput(
            agency_id=agency.id,
            act=EnforcementAct.PENALTY,
            decided_on=date(2026, 9, 30),
            title=title,
            content=PENALTY,
        ),
    )


def _kinds(session: Session, caller: Caller) -> list[tuple[int, str]]:
    return sorted((a.item_id, a.kind) for a in open_deadline_alerts(session, caller))


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 2, 0, tzinfo=UTC)  # 10:00 in Beijing, that same day


def test_gs23_alert_raised_before_the_deadline_then_overdue_then_cleared_when_published(
    db_session: Session,
) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    item = _draft(db_session, agency, "甲机关公示事项")
    assert item.due_on == date(2026, 10, 15)
    head = Caller(user_id="13", role="agency_head", agency_id=agency.id)
    calendar = calendar_of(db_session)
    # The last day on which DUE_SOON_WORKING_DAYS working days are left, and the working day before it.
    warn_from = next(
        item.due_on - timedelta(days=back)
        for back in range(1, 30)
        if calendar.deadline(item.due_on - timedelta(days=back), DUE_SOON_WORKING_DAYS).due == item.due_on
    )
    quiet = warn_from - timedelta(days=1)
    while not calendar.is_working_day(quiet):
        quiet -= timedelta(days=1)

    assert evaluate_deadline_alerts(db_session, today=quiet, now=_at(quiet))["opened"] == 0
    assert _kinds(db_session, head) == []

    counts = evaluate_deadline_alerts(db_session, today=warn_from, now=_at(warn_from))
    assert counts == {"opened": 1, "cleared": 0, "open": 1}
    [alert] = open_deadline_alerts(db_session, head)
    assert (alert.kind, alert.severity, alert.agency_id) == ("publication_due_soon", "warning", agency.id)
    assert alert.detail["working_days_left"] == DUE_SOON_WORKING_DAYS
    assert "甲机关公示事项" in alert.message and "2026-10-15" in alert.message_en
    # Idempotent: a second pass the same day refreshes the open alert and opens nothing.
    again = evaluate_deadline_alerts(db_session, today=warn_from, now=_at(warn_from) + timedelta(minutes=15))
    assert again == {"opened": 0, "cleared": 0, "open": 1}
    assert db_session.scalar(select(func.count(DeadlineAlert.id))) == 1

    late = item.due_on + timedelta(days=1)
    assert evaluate_deadline_alerts(db_session, today=late, now=_at(late)) == {
        "opened": 1,
        "cleared": 1,
        "open": 1,
    }
    assert _kinds(db_session, head) == [(item.id, "publication_overdue")]
    [overdue] = open_deadline_alerts(db_session, head)
    assert overdue.severity == "critical" and overdue.detail["days_late"] == 1

    service.submit(db_session, Caller(user_id="10", role="officer", agency_id=agency.id), item.id)
    assert _kinds(db_session, head) == [(item.id, "publication_overdue")]  # in review still owes publication
    service.publish(db_session, Caller(user_id="12", role="legal_reviewer", agency_id=agency.id), item.id)
    done = evaluate_deadline_alerts(db_session, today=late, now=_at(late) + timedelta(hours=1))
    assert done["cleared"] == 1
    assert _kinds(db_session, head) == []
    # Cleared, not deleted: the history says the item was due soon, then late, then done.
    history = db_session.scalars(select(DeadlineAlert).order_by(DeadlineAlert.id)).all()
    assert [(a.kind, a.cleared_at is not None) for a in history] == [
        ("publication_due_soon", True),
        ("publication_overdue", True),
    ]


def test_gs23_another_agency_does_not_see_your_alerts(db_session: Session) -> None:
    mine, theirs = _agency(db_session, "合肥市市场监督管理局"), _agency(db_session, "芜湖市城市管理局")
    my_item, their_item = _draft(db_session, mine, "甲机关事项"), _draft(db_session, theirs, "乙机关事项")
    # An excluded item owes no publication (GS-15) and raises nothing.
    _draft(db_session, mine, "不予公示事项").state = "excluded"
    late = date(2026, 10, 20)
    assert evaluate_deadline_alerts(db_session, today=late, now=_at(late))["opened"] == 2
    for role in ("officer", "legal_reviewer", "agency_head", "auxiliary"):
        caller = Caller(user_id="20", role=role, agency_id=theirs.id)
        assert _kinds(db_session, caller) == [(their_item.id, "publication_overdue")], role
    assert _kinds(db_session, Caller(user_id="21", role="officer", agency_id=None)) == []
    # Supervisors and auditors watch every agency (GS-22).
    for role in ("supervisor", "auditor"):
        caller = Caller(user_id="30", role=role, agency_id=mine.id)
        assert _kinds(db_session, caller) == sorted(
            [(my_item.id, "publication_overdue"), (their_item.id, "publication_overdue")]
        )


def _published(session: Session, agency: Agency, title: str) -> PublicationItem:
    item = _draft(session, agency, title)
    service.submit(session, Caller(user_id="10", role="officer", agency_id=agency.id), item.id)
    return service.publish(session, Caller(user_id="12", role="legal_reviewer", agency_id=agency.id), item.id)


def test_gs12_ordered_withdrawal_alerts_until_withdrawn_and_only_its_agency_sees_it(
    db_session: Session,
) -> None:
    mine, theirs = _agency(db_session, "合肥市市场监督管理局"), _agency(db_session, "芜湖市城市管理局")
    item = _published(db_session, mine, "被撤销的处罚决定")
    reviewer = Caller(user_id="12", role="legal_reviewer", agency_id=mine.id)
    revoked = date(2026, 11, 2)  # a Monday
    # Only a reviewer orders a withdrawal, only of a published item, and never without a reason.
    with pytest.raises(TransitionForbidden):
        service.order_withdrawal(
            db_session, Caller(user_id="10", role="officer", agency_id=mine.id), item.id, "撤销"
        )
    draft = _draft(db_session, mine, "草稿")
    with pytest.raises(Conflict):
        service.order_withdrawal(db_session, reviewer, draft.id, "撤销")
    draft.state = "excluded"  # owes no publication: only the withdrawal alerts are in play below
    with pytest.raises(Invalid):
        service.order_withdrawal(db_session, reviewer, item.id, "  ")
    # Another agency's reviewer cannot even find the item.
    with pytest.raises(NotFound):
        service.order_withdrawal(
            db_session, Caller(user_id="22", role="legal_reviewer", agency_id=theirs.id), item.id, "撤销"
        )
    assert evaluate_deadline_alerts(db_session, today=revoked, now=_at(revoked))["opened"] == 0

    service.order_withdrawal(db_session, reviewer, item.id, "复议决定撤销", revoked_on=revoked)
    due = calendar_of(db_session).deadline(revoked, 3).due
    assert item.state == "published" and item.withdrawal_due_on == due
    assert evaluate_deadline_alerts(db_session, today=revoked, now=_at(revoked)) == {
        "opened": 1,
        "cleared": 0,
        "open": 1,
    }
    [alert] = open_deadline_alerts(db_session, reviewer)
    assert (alert.kind, alert.severity, alert.item_id) == ("withdrawal_due_soon", "warning", item.id)
    assert alert.detail["withdrawal_due_on"] == due.isoformat() and "被撤销的处罚决定" in alert.message
    for role in ("officer", "legal_reviewer", "agency_head"):
        assert _kinds(db_session, Caller(user_id="20", role=role, agency_id=theirs.id)) == [], role

    late = due + timedelta(days=1)
    assert evaluate_deadline_alerts(db_session, today=late, now=_at(late))["cleared"] == 1
    assert _kinds(db_session, reviewer) == [(item.id, "withdrawal_overdue")]
    assert open_deadline_alerts(db_session, reviewer)[0].severity == "critical"

    service.withdraw(db_session, reviewer, item.id, "该决定已被复议机关撤销")
    assert item.state == "withdrawn" and item.withdrawal_due_on == due  # the ordered deadline stands
    assert evaluate_deadline_alerts(db_session, today=late, now=_at(late) + timedelta(hours=1)) == {
        "opened": 0,
        "cleared": 1,
        "open": 0,
    }
    assert _kinds(db_session, reviewer) == []


def test_gs12_withdrawal_orders_keep_their_source_and_the_latest_sets_the_deadline(
    db_session: Session,
) -> None:
    """Stored on SQLite and PostgreSQL (migration 0030): the reconsideration decision an order comes from,
    an order with none, and the rule that a decision is not revoked before the record revoking it."""
    agency = _agency(db_session, "合肥市市场监督管理局")
    item = _published(db_session, agency, "被复议撤销的处罚决定")
    reviewer = Caller(user_id="12", role="legal_reviewer", agency_id=agency.id)
    source = WithdrawalOrderSource(
        kind=OrderSourceKind.RECONSIDERATION,
        body="合肥市人民政府",
        document_number="合政复决字〔2026〕15号",
        decided_on=date(2026, 11, 18),
    )
    with pytest.raises(Invalid, match="before the decision or judgment was made"):
        service.order_withdrawal(
            db_session, reviewer, item.id, "复议撤销", revoked_on=date(2026, 11, 17), source=source
        )
    assert db_session.scalars(select(WithdrawalOrder)).all() == []
    service.order_withdrawal(
        db_session, reviewer, item.id, "复议撤销", revoked_on=date(2026, 11, 20), source=source
    )
    service.order_withdrawal(db_session, reviewer, item.id, "本机关自行撤销", revoked_on=date(2026, 11, 23))
    db_session.commit()
    first, second = (order_to_dict(o) for o in withdrawal_orders_of(db_session, item))
    assert first["source"] == {
        "kind": "reconsideration",
        "body": "合肥市人民政府",
        "document_number": "合政复决字〔2026〕15号",
        "decided_on": "2026-11-18",
    }
    assert (first["revoked_on"], first["due_on"], first["ordered_by"]) == ("2026-11-20", "2026-11-25", "12")
    assert (second["source"], second["due_on"]) == (None, "2026-11-26")
    assert item.withdrawal_due_on == date(2026, 11, 26)  # the latest order's deadline


def test_gs12_a_provisional_withdrawal_deadline_is_recounted_when_its_years_schedule_is_loaded(
    db_session: Session,
) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    item = _published(db_session, agency, "年底被撤销的处罚决定")
    done = _published(db_session, agency, "已撤回的处罚决定")
    reviewer = Caller(user_id="12", role="legal_reviewer", agency_id=agency.id)
    # Revoked on Wednesday 30 December 2026: with 2027 unknown, 1 January counts as a working day.
    for target in (item, done):
        service.order_withdrawal(db_session, reviewer, target.id, "撤销", revoked_on=date(2026, 12, 30))
    service.withdraw(db_session, reviewer, done.id, "已撤回")  # its deadline is history: left as it was
    [order, done_order] = db_session.scalars(select(WithdrawalOrder).order_by(WithdrawalOrder.id)).all()
    assert (order.due_on, order.deadline_provisional) == (date(2027, 1, 4), True)
    assert item.withdrawal_due_on == date(2027, 1, 4)
    schedule = schedules.parse_schedule(
        {"year": 2027, "source": "test schedule", "holidays": [["2027-01-01", "2027-01-03"]], "workdays": []}
    )
    loaded = schedules.load_schedule(
        db_session, Caller(user_id="1", role="system_admin", agency_id=None), schedule
    )
    assert loaded.withdrawals_recounted == [order.id]
    assert (order.due_on, order.deadline_provisional) == (date(2027, 1, 5), False)
    assert item.withdrawal_due_on == date(2027, 1, 5)
    assert (done_order.due_on, done_order.deadline_provisional) == (date(2027, 1, 4), True)


def _ended_case(session: Session, agency: Agency, number: str) -> int:
    head = Caller(user_id="30", role="agency_head", agency_id=agency.id)
    case = case_service.create_case(
        session, head, NewCase(number=number, act_kind="penalty", origin="ex_officio")
    )
    case_service.change_status(session, head, case.id, StatusChange(status="withdrawn", reason="撤销立案"))
    return case.id


def test_jl18_an_ended_case_without_a_package_alerts_before_and_after_its_30_days(
    db_session: Session,
) -> None:
    mine, theirs = _agency(db_session, "合肥市市场监督管理局"), _agency(db_session, "芜湖市城市管理局")
    my_case = _ended_case(db_session, mine, "皖合市监罚〔2026〕901号")
    their_case = _ended_case(db_session, theirs, "芜城管罚〔2026〕902号")
    [mine_due] = [d for d in archive_dues(db_session) if d.case_id == my_case]
    head = Caller(user_id="30", role="agency_head", agency_id=mine.id)

    def sweep(at: datetime) -> dict[str, int]:
        return evaluate_deadline_alerts(
            db_session, today=today_in_china(at), now=at, archives=archive_dues(db_session)
        )

    def cases(caller: Caller) -> list[tuple[int | None, str]]:
        return sorted((a.case_id, a.kind) for a in open_deadline_alerts(db_session, caller))

    assert sweep(mine_due.ended_at + timedelta(days=1))["opened"] == 0  # 29 days left: quiet
    soon = mine_due.due_at - ARCHIVE_DUE_SOON + timedelta(hours=1)
    assert sweep(soon) == {"opened": 2, "cleared": 0, "open": 2}
    assert cases(head) == [(my_case, "archive_due_soon")]
    [alert] = open_deadline_alerts(db_session, head)
    assert alert.item_id is None and alert.severity == "warning" and "901号" in alert.message
    # Another agency sees its own case only (JL-20); an account of no agency sees nothing.
    assert cases(Caller(user_id="31", role="agency_head", agency_id=theirs.id)) == [
        (their_case, "archive_due_soon")
    ]
    assert cases(Caller(user_id="32", role="officer", agency_id=None)) == []

    late = mine_due.due_at + timedelta(days=1, hours=1)
    assert sweep(late) == {"opened": 2, "cleared": 2, "open": 2}
    assert cases(head) == [(my_case, "archive_overdue")]
    assert open_deadline_alerts(db_session, head)[0].detail["days_late"] == 1
    # A pass that did not look at the archives leaves their alerts alone.
    evaluate_deadline_alerts(db_session, today=today_in_china(late), now=late + timedelta(minutes=5))
    assert cases(head) == [(my_case, "archive_overdue")]

    # The package is sealed (the row build_archive writes): the alert clears; the other agency's stays.
    db_session.add(
        ArchivePackage(
            case_id=my_case,
            agency_id=mine.id,
            bag_name="case-901",
            tagmanifest_sha256="0" * 64,
            zip_sha256="0" * 64,
            zip_size=1,
            object_key="archives/case-901.zip",
            payload_oxum="1.1",
            recording_count=0,
            leaf_count=1,
            checkpoint_size=1,
            ended_at=mine_due.ended_at,
            on_time=False,
            created_by="30",
        )
    )
    db_session.flush()
    assert sweep(late + timedelta(hours=1))["cleared"] == 1
    assert cases(head) == []
    assert cases(Caller(user_id="31", role="agency_head", agency_id=theirs.id)) == [
        (their_case, "archive_overdue")
    ]
