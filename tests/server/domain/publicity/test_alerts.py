"""Publication deadline alerts on SQLite and PostgreSQL (GS-22, GS-23): raised before a deadline passes,
overdue after it, cleared once published, never shown to another agency."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity import service
from server.domain.publicity.alerts import (
    DUE_SOON_WORKING_DAYS,
    evaluate_deadline_alerts,
    open_deadline_alerts,
)
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.models import DeadlineAlert, PublicationItem
from server.domain.publicity.schedules import calendar_of
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
