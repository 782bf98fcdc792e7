"""The annual report in the database, SQLite and PostgreSQL (GS-17, GS-7)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from server.domain.cases.models import Case, CaseEvent
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.domain.publicity import annual, service
from server.domain.publicity import views as publicity_views
from server.domain.publicity.codes import EnforcementAct, PenaltyKind
from server.domain.publicity.content import DecisionContent
from server.domain.publicity.errors import TransitionForbidden

K = PenaltyKind


def _agency(session: Session, name: str) -> Agency:
    agency = Agency(name=name, head="", duties="", address="", contacts="")
    session.add(agency)
    session.flush()
    return agency


def _penalty(
    session: Session,
    agency: Agency,
    kinds: tuple[PenaltyKind, ...],
    *,
    fine: str | None = None,
    confiscated: str | None = None,
    on: date = date(2026, 5, 6),
) -> None:
    content = DecisionContent(
        party_name="合肥某某公司",
        penalty_kinds=kinds,
        fine_yuan=Decimal(fine) if fine else None,
        confiscated_yuan=Decimal(confiscated) if confiscated else None,
    )
    service.collect(
        session,
        Caller(user_id="10", role="officer", agency_id=agency.id),
        service.CollectInput(agency_id=agency.id, act=EnforcementAct.PENALTY, decided_on=on, content=content),
    )


def _values(report: annual.AnnualReport) -> dict[str, object]:
    return {line["key"]: line["value"] for line in report.figures}


def test_gs17_several_kinds_count_once_under_the_heaviest_amounts_in_wanyuan(db_session: Session) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    other = _agency(db_session, "芜湖市市场监督管理局")
    _penalty(db_session, agency, (K.WARNING, K.FINE), fine="2000")
    _penalty(db_session, agency, (K.FINE, K.REVOKE_LICENCE), fine="15000", confiscated="3456.78")
    _penalty(db_session, agency, (K.OTHER,))
    # 其他 is a catch-all: next to a named kind it never counts as the heavier.
    _penalty(db_session, agency, (K.DETENTION, K.OTHER, K.WARNING))
    _penalty(db_session, agency, ())
    _penalty(db_session, other, (K.FINE,), fine="99999")  # another agency's: not counted
    _penalty(db_session, agency, (K.FINE,), fine="50000", on=date(2025, 12, 31))  # another year
    db_session.add(
        Officer(
            agency_id=agency.id,
            kind="officer",
            name="张执法",
            certificate_number="AH-1",
            valid_to=date(2027, 6, 30),
        )
    )
    db_session.add(
        Officer(
            agency_id=agency.id,
            kind="officer",
            name="王过期",
            certificate_number="AH-2",
            valid_to=date(2026, 6, 30),
        )
    )
    db_session.add(Officer(agency_id=agency.id, kind="auxiliary", name="李辅助"))
    db_session.flush()
    officer = Caller(user_id="10", role="officer", agency_id=agency.id)

    report = annual.generate(db_session, officer, agency.id, 2026, today=date(2027, 1, 5))

    values = _values(report)
    assert values["penalty.decisions"] == 5
    assert values["penalty.kind.fine"] == 1
    assert values["penalty.kind.revoke_licence"] == 1
    assert values["penalty.kind.other"] == 1
    assert values["penalty.kind.detention"] == 1
    assert values["penalty.kind.warning"] == 0
    assert values["penalty.kind_unrecorded"] == 1
    assert sum(v for k, v in values.items() if k.startswith("penalty.kind.")) == 4  # type: ignore[misc]
    assert values["penalty.fines"] == "1.7"  # 17 000 元
    assert values["penalty.confiscations"] == "0.345678"
    assert values["staff.officers"] == 1  # the other officer's certificate lapsed before 31 December
    assert values["staff.auxiliary"] == 1
    # The figures the agency keeps itself have no value until it enters them, and say so; no zero
    # stands in for them. Refusals, reconsideration, litigation and transfers are counted (none here).
    unfed = {line["key"] for line in report.figures if not line["fed"]}
    assert unfed == {"staff.posts", "complaints.received", "complaints.concluded"}
    assert {line["source"] for line in report.figures if not line["fed"]} == {"agency"}
    assert values["licensing.refused"] == 0 and values["transfers.criminal"] == 0
    assert all(line["value"] is None for line in report.figures if not line["fed"])
    assert report.due_on == date(2027, 1, 31)
    # A year not over yet cannot be reported on.
    with pytest.raises(Invalid):
        annual.generate(db_session, officer, agency.id, 2027, today=date(2027, 1, 5))


def _decided(session: Session, agency: Agency, at: datetime, number: str, act: str = "penalty") -> None:
    case = Case(
        agency_id=agency.id,
        number=number,
        title="案件",
        act_kind=act,
        origin="ex_officio" if act != "licensing" else "on_application",
        party="合肥某某公司",
        created_by="10",
    )
    session.add(case)
    session.flush()
    for event_type in (
        ("initiation.application_received", "initiation.application_accepted", "decision.decided")
        if act == "licensing"
        else ("decision.decided",)
    ):
        event = CaseEvent(
            case_id=case.id,
            agency_id=agency.id,
            event_type=event_type,
            occurred_at=at,
            recorded_by="10",
            officer_ids=[],
            recording_ids=[],
            data={"publication": {"penalty_kinds": ["fine"], "fine_yuan": "1000"}}
            if act == "penalty"
            else {},
        )
        session.add(event)
        session.flush()
        service.collect_from_case_event(session, case, event)


def test_gs17_the_year_is_that_of_the_beijing_decision_date(db_session: Session) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    # 15:30 UTC on 31 December is 23:30 in Beijing: still 2025. An hour later it is 2026 there.
    _decided(db_session, agency, datetime(2025, 12, 31, 15, 30, tzinfo=UTC), "A-1")
    _decided(db_session, agency, datetime(2025, 12, 31, 16, 30, tzinfo=UTC), "A-2")
    _decided(db_session, agency, datetime(2025, 12, 31, 16, 30, tzinfo=UTC), "L-1", act="licensing")
    officer = Caller(user_id="10", role="officer", agency_id=agency.id)
    last = _values(annual.generate(db_session, officer, agency.id, 2025, today=date(2027, 1, 5)))
    this = _values(annual.generate(db_session, officer, agency.id, 2026, today=date(2027, 1, 5)))
    assert (last["penalty.decisions"], this["penalty.decisions"]) == (1, 1)
    assert (last["penalty.fines"], this["penalty.fines"]) == ("0.1", "0.1")
    assert (last["licensing.applications"], this["licensing.applications"]) == (0, 1)
    assert (this["licensing.accepted"], this["licensing.granted"]) == (1, 1)


def test_gs17_drafted_on_1_january_reviewed_by_another_and_hidden_until_published(
    db_session: Session,
) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    other = _agency(db_session, "芜湖市市场监督管理局")
    _penalty(db_session, agency, (K.FINE,), fine="2000")
    # Nothing to draft before the year is over; from 1 January, one draft per agency, once.
    assert annual.generate_due(db_session, today=date(2026, 12, 31)) == []
    drafted = annual.generate_due(db_session, today=date(2027, 1, 1))
    assert len(drafted) == 2
    assert annual.generate_due(db_session, today=date(2027, 1, 2)) == []
    report = annual.list_reports(db_session, Caller(user_id="10", role="officer", agency_id=agency.id))[0]
    assert (report.year, report.author, report.state) == (2026, annual.SYSTEM_AUTHOR, "draft")
    assert _values(report)["penalty.fines"] == "0.2"

    # An officer of another agency: the draft does not exist for them, nor in their list.
    stranger = Caller(user_id="90", role="agency_head", agency_id=other.id)
    with pytest.raises(NotFound):
        annual.get_report(db_session, stranger, report.id)
    with pytest.raises(NotFound):
        annual.submit(db_session, stranger, report.id)
    assert [r.agency_id for r in annual.list_reports(db_session, stranger)] == [other.id]
    # The public: not before it is published.
    with pytest.raises(NotFound):
        annual.public_report(db_session, report.id)
    assert annual.published_reports(db_session) == []

    reviewer = Caller(user_id="20", role="legal_reviewer", agency_id=agency.id)
    head = Caller(user_id="30", role="agency_head", agency_id=agency.id)
    officer = Caller(user_id="10", role="officer", agency_id=agency.id)
    annual.submit(db_session, reviewer, report.id)
    with pytest.raises(TransitionForbidden):  # the submitter answers for the draft: not its reviewer
        annual.publish(db_session, reviewer, report.id)
    with pytest.raises(TransitionForbidden):  # an officer collects, never publishes
        annual.publish(db_session, officer, report.id)
    with pytest.raises(Conflict):  # in review: the figures stand as submitted
        annual.generate(db_session, officer, agency.id, 2026, today=date(2027, 1, 5))
    # The report is overdue after 31 January until published (GS-17), on the deadline board.
    supervisor = Caller(user_id="50", role="supervisor", agency_id=None)
    board = publicity_views.deadline_board(db_session, supervisor, today=date(2027, 2, 1))
    assert report.id in {r for row in board for r in row["annual_reports_overdue"]}
    annual.publish(db_session, head, report.id)
    assert annual.public_report(db_session, report.id).state == "published"
    assert [(r.id, name) for r, name in annual.published_reports(db_session)] == [(report.id, agency.name)]
    board = publicity_views.deadline_board(db_session, supervisor, today=date(2027, 2, 1))
    assert report.id not in {r for row in board for r in row["annual_reports_overdue"]}
    history = [(h.action, h.actor) for h in annual.history_of(db_session, report)]
    assert history == [("generate", "system"), ("submit", "20"), ("publish", "30")]
    # The history is append-only in the database.
    db_session.commit()
    with pytest.raises(DatabaseError):
        db_session.execute(text("UPDATE annual_report_history SET actor = 'someone'"))
    db_session.rollback()


def test_gs17_csv_is_utf8_with_bom_one_line_per_figure() -> None:
    report = {
        "agency_name": "合肥市市场监督管理局",
        "year": 2026,
        "sections": [{"key": k, "zh": zh, "en": en} for k, (zh, en) in annual.SECTIONS.items()],
        "lines": annual.lines_to_mapping(
            [
                annual.Line(
                    key="penalty.fines",
                    section="penalty",
                    zh="罚款金额",
                    en="fines",
                    value="1.7",
                    unit="万元",
                ),
                replace(
                    annual.Line(
                        key="complaints.received", section="complaints", zh="投诉举报", en="c", value=None
                    ),
                    fed=False,
                    source="agency",
                ),
            ]
        ),
    }
    lines = annual.to_csv(report).split("\r\n")
    assert lines[0] == "\ufeffagency,year,section,key,item,item_en,value,unit,fed,source"
    assert lines[1] == "合肥市市场监督管理局,2026,行政处罚,penalty.fines,罚款金额,fines,1.7,万元,1,system"
    assert lines[2] == "合肥市市场监督管理局,2026,投诉举报,complaints.received,投诉举报,c,,,0,agency"
