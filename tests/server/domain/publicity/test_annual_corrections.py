"""Correcting a published annual report, and the lines counted from case events and agency entries
(GS-17, GS-19, GS-7), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from server.domain.audit import AuditLog
from server.domain.cases import service as case_service
from server.domain.cases.inputs import CaseEventInput, NewCase
from server.domain.cases.models import Case
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.domain.publicity import annual
from server.domain.publicity import views as publicity_views
from server.domain.publicity.errors import TransitionForbidden
from server.infra.db import make_engine, run_migrations

TODAY = date(2027, 3, 1)


def _agency(session: Session, name: str) -> Agency:
    agency = Agency(name=name, head="", duties="", address="", contacts="")
    session.add(agency)
    session.flush()
    return agency


def _values(report: annual.AnnualReport) -> dict[str, Any]:
    return {line["key"]: line["value"] for line in report.figures}


class _Staff:
    def __init__(self, agency: Agency) -> None:
        self.officer = Caller(user_id="10", role="officer", agency_id=agency.id)
        self.reviewer = Caller(user_id="20", role="legal_reviewer", agency_id=agency.id)
        self.head = Caller(user_id="30", role="agency_head", agency_id=agency.id)


def _published(session: Session, agency: Agency, staff: _Staff) -> annual.AnnualReport:
    report = annual.generate(session, staff.officer, agency.id, 2026, today=TODAY)
    annual.submit(session, staff.officer, report.id)
    return annual.publish(session, staff.reviewer, report.id)


def _case(session: Session, agency: Agency, number: str, act: str = "penalty") -> Case:
    return case_service.create_case(
        session,
        Caller(user_id="10", role="officer", agency_id=agency.id),
        NewCase(
            number=number,
            act_kind=act,  # type: ignore[arg-type]
            origin="on_application" if act == "licensing" else "ex_officio",
        ),
    )


def _event(
    session: Session,
    case: Case,
    event_type: str,
    at: datetime,
    corrects: int | None = None,
    **data: Any,
) -> int:
    row = case_service.record_event(
        session,
        Caller(user_id="10", role="officer", agency_id=case.agency_id),
        case.id,
        CaseEventInput(
            event_type=event_type, occurred_at=at, data=data, officer_ids=(), corrects_event_id=corrects
        ),
    )
    return row.id


def test_gs17_a_published_report_is_corrected_by_a_new_revision_and_the_earlier_stays_on_record(
    db_session: Session,
) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    staff = _Staff(agency)
    first = _published(db_session, agency, staff)
    assert _values(first)["staff.posts"] is None
    published_figures = list(first.figures)

    # The posts were missing when it was published: the agency enters them, then corrects the report.
    annual.enter_figure(
        db_session,
        staff.officer,
        annual.FigureEntry(agency_id=agency.id, year=2026, key="staff.posts", value=42),
        today=TODAY,
    )
    # Generating again never touches a published report: it is corrected instead.
    with pytest.raises(Conflict, match="published; correct it"):
        annual.generate(db_session, staff.officer, agency.id, 2026, today=TODAY)
    correction = annual.correct(db_session, staff.head, first.id, "  补填执法岗位数  ")
    assert (correction.revision, correction.state, correction.corrects_report_id) == (2, "draft", first.id)
    assert correction.correction_reason == "补填执法岗位数"
    assert _values(correction)["staff.posts"] == 42
    # Until the correction is published the first report is the current one, for the public too.
    assert [r.id for r, _ in annual.published_reports(db_session)] == [first.id]
    with pytest.raises(Conflict, match="already open"):
        annual.correct(db_session, staff.reviewer, first.id, "再次更正")
    # GS-7: who opened the correction does not publish it.
    annual.submit(db_session, staff.officer, correction.id)
    with pytest.raises(TransitionForbidden):
        annual.publish(db_session, staff.head, correction.id)
    annual.publish(db_session, staff.reviewer, correction.id)

    db_session.refresh(first)
    assert (first.state, first.superseded_by_id) == (annual.SUPERSEDED, correction.id)
    assert first.figures == published_figures  # never overwritten
    assert [r.id for r, _ in annual.published_reports(db_session)] == [correction.id]
    # The superseded report stays readable by the public, with the reason and the current one.
    public = annual.report_to_dict(db_session, annual.public_report(db_session, first.id))
    assert (public["current"], public["superseded_by_id"]) == (False, correction.id)
    assert public["superseded_reason"] == "补填执法岗位数"
    assert [r.id for r in annual.revisions_of(db_session, correction)] == [correction.id, first.id]
    assert [(h.action, h.actor, h.reason) for h in annual.history_of(db_session, first)] == [
        ("generate", "10", None),
        ("submit", "10", None),
        ("publish", "20", None),
        ("supersede", "20", "补填执法岗位数"),
    ]
    assert [h.action for h in annual.history_of(db_session, correction)] == ["correct", "submit", "publish"]
    audited = set(db_session.scalars(AuditLog.__table__.select().with_only_columns(AuditLog.action)))
    assert {"annual_report.correct", "annual_report.supersede", "annual_report.enter_figure"} <= audited
    # A superseded report is not corrected again, nor moved: the current one is.
    with pytest.raises(Conflict, match=f"superseded by #{correction.id}"):
        annual.correct(db_session, staff.head, first.id, "再次更正")
    with pytest.raises(Conflict):
        annual.submit(db_session, staff.officer, first.id)
    # A correction is never "late": the year's report was published (no deadline board entry).
    third = annual.correct(db_session, staff.head, correction.id, "投诉数据有误")
    assert third.revision == 3
    supervisor = Caller(user_id="50", role="supervisor", agency_id=None)
    board = publicity_views.deadline_board(db_session, supervisor, today=TODAY)
    assert all(not row["annual_reports_overdue"] for row in board)
    assert annual.report_to_dict(db_session, third, today=TODAY)["overdue"] is False
    # The entered figures are append-only in the database.
    db_session.commit()
    with pytest.raises(DatabaseError):
        db_session.execute(text("UPDATE annual_figure_entries SET value = 1"))
    db_session.rollback()
    with pytest.raises(DatabaseError):
        db_session.execute(text("DELETE FROM annual_reports"))
    db_session.rollback()


def test_gs17_correction_is_refused_with_a_precise_reason(db_session: Session) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    other = _agency(db_session, "芜湖市市场监督管理局")
    staff = _Staff(agency)
    draft = annual.generate(db_session, staff.officer, agency.id, 2026, today=TODAY)
    with pytest.raises(Conflict, match="only a published report can be corrected; this one is draft"):
        annual.correct(db_session, staff.head, draft.id, "理由")
    annual.submit(db_session, staff.officer, draft.id)
    with pytest.raises(Conflict, match="this one is in_review"):
        annual.correct(db_session, staff.head, draft.id, "理由")
    annual.publish(db_session, staff.reviewer, draft.id)
    with pytest.raises(Invalid, match="needs a reason"):
        annual.correct(db_session, staff.head, draft.id, "   ")
    # An officer collects; correcting what was published is a reviewer's duty.
    with pytest.raises(TransitionForbidden):
        annual.correct(db_session, staff.officer, draft.id, "理由")
    # Another agency's head: the report does not exist for them. A supervisor reads, never corrects.
    with pytest.raises(NotFound):
        annual.correct(
            db_session, Caller(user_id="90", role="agency_head", agency_id=other.id), draft.id, "x"
        )
    with pytest.raises(NotFound):
        annual.correct(db_session, Caller(user_id="50", role="supervisor", agency_id=None), draft.id, "x")
    # Entered figures: a known key, a count, a year that has begun; never another agency's.
    for bad in (
        {"key": "staff.officers", "value": 3},
        {"key": "staff.posts", "value": -1},
        {"key": "staff.posts", "value": True},
    ):
        with pytest.raises(Invalid):
            annual.FigureEntry(agency_id=agency.id, year=2026, **bad)
    with pytest.raises(Invalid, match="from 2020 to this year"):
        annual.enter_figure(
            db_session,
            staff.officer,
            annual.FigureEntry(agency_id=agency.id, year=2028, key="staff.posts", value=1),
            today=TODAY,
        )
    with pytest.raises(NotFound):
        annual.enter_figure(
            db_session,
            staff.officer,
            annual.FigureEntry(agency_id=other.id, year=2026, key="staff.posts", value=1),
            today=TODAY,
        )
    with pytest.raises(NotFound):
        annual.figure_entries(db_session, staff.officer, other.id, 2026)


def test_gs17_refusals_reconsideration_litigation_transfers_and_entries_are_counted(
    db_session: Session,
) -> None:
    agency = _agency(db_session, "合肥市市场监督管理局")
    other = _agency(db_session, "芜湖市市场监督管理局")
    staff = _Staff(agency)
    in_2026 = datetime(2026, 6, 1, 2, tzinfo=UTC)
    # 16:30 UTC on 31 December 2025 is 1 January 2026 in Beijing.
    new_year = datetime(2025, 12, 31, 16, 30, tzinfo=UTC)

    licence = _case(db_session, agency, "L-1", "licensing")
    _event(db_session, licence, "decision.licence_refused", new_year)
    penalty = _case(db_session, agency, "P-1")
    with pytest.raises(Invalid, match="licensing case"):
        _event(db_session, penalty, "decision.licence_refused", in_2026)
    # A reconsideration needs a decision first; its outcome comes from the vocabulary.
    with pytest.raises(Invalid, match=r"needs decision\.decided / decision\.licence_refused"):
        _event(db_session, penalty, "remedy.reconsideration_filed", in_2026)
    _event(db_session, penalty, "decision.decided", datetime(2026, 3, 1, 2, tzinfo=UTC))
    with pytest.raises(Invalid, match=r"needs remedy\.reconsideration_filed"):
        _event(db_session, penalty, "remedy.reconsideration_decided", in_2026, outcome="revoked")
    _event(db_session, penalty, "remedy.reconsideration_filed", in_2026)
    with pytest.raises(Invalid, match=r"data\.outcome must be one of upheld, altered"):
        _event(db_session, penalty, "remedy.reconsideration_decided", in_2026, outcome="quashed")
    wrong = _event(db_session, penalty, "remedy.reconsideration_decided", in_2026, outcome="upheld")
    # The outcome was recorded wrongly: the correction counts, the corrected event does not.
    _event(db_session, penalty, "remedy.reconsideration_decided", in_2026, corrects=wrong, outcome="altered")
    # Reconsideration of the refusal, upheld.
    _event(db_session, licence, "remedy.reconsideration_filed", in_2026)
    _event(db_session, licence, "remedy.reconsideration_decided", in_2026, outcome="upheld")
    # Litigation: filed in 2026, the agency loses (decision revoked); another suit withdrawn.
    _event(db_session, penalty, "remedy.litigation_filed", in_2026)
    _event(db_session, penalty, "remedy.litigation_judged", in_2026, outcome="revoked")
    _event(db_session, licence, "remedy.litigation_filed", in_2026)
    _event(db_session, licence, "remedy.litigation_judged", in_2026, outcome="withdrawn")
    # Transfers to the judicial organs: one filed, one not, one still pending; one judged in 2027.
    crime = _case(db_session, agency, "P-2")
    with pytest.raises(Invalid, match=r"data\.receiving_body"):
        _event(db_session, crime, "remedy.criminal_transfer", in_2026)
    _event(db_session, crime, "remedy.criminal_transfer", in_2026, receiving_body="合肥市公安局")
    _event(db_session, crime, "remedy.criminal_transfer_result", in_2026, outcome="filed")
    crime2 = _case(db_session, agency, "P-3")
    _event(db_session, crime2, "remedy.criminal_transfer", in_2026, receiving_body="合肥市公安局")
    _event(db_session, crime2, "remedy.criminal_transfer_result", in_2026, outcome="not_filed")
    crime3 = _case(db_session, agency, "P-4")
    _event(db_session, crime3, "remedy.criminal_transfer", in_2026, receiving_body="合肥市人民检察院")
    _event(
        db_session,
        crime3,
        "remedy.criminal_transfer_result",
        datetime(2027, 1, 10, tzinfo=UTC),
        outcome="returned",
    )
    # Another agency's events are not counted.
    theirs = _case(db_session, other, "W-1")
    _event(db_session, theirs, "remedy.criminal_transfer", in_2026, receiving_body="芜湖市公安局")
    # Figures the agency keeps: the latest entry counts, both stay.
    for key, value in (("staff.posts", 40), ("staff.posts", 42), ("complaints.received", 17)):
        annual.enter_figure(
            db_session,
            staff.officer,
            annual.FigureEntry(agency_id=agency.id, year=2026, key=key, value=value, note="岗位清单"),
            today=TODAY,
        )

    values = _values(annual.generate(db_session, staff.officer, agency.id, 2026, today=TODAY))
    assert values["licensing.refused"] == 1
    assert values["review.reconsideration"] == 2
    assert values["review.reconsideration_concluded"] == 2
    assert values["review.reconsideration_corrected"] == 1
    assert (values["review.reconsideration.altered"], values["review.reconsideration.upheld"]) == (1, 1)
    assert (values["review.litigation"], values["review.litigation_concluded"]) == (2, 2)
    assert (values["review.litigation_lost"], values["review.litigation.revoked"]) == (1, 1)
    assert values["review.litigation.withdrawn"] == 1
    assert values["transfers.criminal"] == 3
    assert (values["transfers.filed"], values["transfers.not_filed"], values["transfers.returned"]) == (
        1,
        1,
        0,
    )
    assert (values["staff.posts"], values["complaints.received"]) == (42, 17)
    assert values["complaints.concluded"] is None  # never entered: no value, and the report says so
    entries = annual.figure_entries(db_session, staff.officer, agency.id, 2026)
    assert [(e.key, e.value) for e in entries] == [
        ("staff.posts", 40),
        ("staff.posts", 42),
        ("complaints.received", 17),
    ]
    last_year = _values(annual.generate(db_session, staff.officer, agency.id, 2025, today=TODAY))
    assert (last_year["licensing.refused"], last_year["staff.posts"]) == (0, None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url_at_0028(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated to 0028, the revision before corrections, SQLite then PostgreSQL."""
    url = (
        f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    run_migrations(url, "0028")
    return url


def test_gs17_migration_keeps_the_reports_and_history_already_published(url_at_0028: str) -> None:
    """Migration 0031 rebuilds ``annual_reports`` on SQLite under its history's foreign keys: nothing is
    lost, the history still points at its report, and the year can then be corrected."""
    engine = make_engine(url_at_0028)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO agencies (id, name, head, duties, address, contacts, created_at) "
                    "VALUES (7, '合肥市市场监督管理局', '', '', '', '', :at)"
                ),
                {"at": datetime(2025, 1, 1, tzinfo=UTC)},
            )
            conn.execute(
                text(
                    "INSERT INTO annual_reports (id, agency_id, year, state, author, figures, due_on, "
                    "generated_at, published_at, updated_at) VALUES (3, 7, 2025, 'published', '10', "
                    "'[]', :due, :at, :at, :at)"
                ),
                {"due": date(2026, 1, 31), "at": datetime(2026, 1, 5, tzinfo=UTC)},
            )
            conn.execute(
                text(
                    "INSERT INTO annual_report_history (report_id, action, from_state, to_state, actor, at) "
                    "VALUES (3, 'publish', 'in_review', 'published', '20', :at)"
                ),
                {"at": datetime(2026, 1, 5, tzinfo=UTC)},
            )
        run_migrations(url_at_0028)
        with Session(engine) as session:
            report = session.get(annual.AnnualReport, 3)
            assert report is not None
            assert (report.revision, report.state, report.superseded_by_id) == (1, "published", None)
            assert [h.action for h in annual.history_of(session, report)] == ["publish"]
            head = Caller(user_id="30", role="agency_head", agency_id=7)
            correction = annual.correct(session, head, 3, "补填")
            assert correction.revision == 2
            session.commit()
        if url_at_0028.startswith("sqlite"):
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        engine.dispose()
