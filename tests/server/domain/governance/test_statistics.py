"""Statistics per agency and officer (JL-21) on SQLite and PostgreSQL, with numbers counted by hand:

Agency A (某市市场监督管理局): 王 records a continuous two-minute session (2 segments of 60 s, stored months
later: 2 late uploads); 李 records a session of two 60 s segments with a 60 s gap nobody explained
(2 late), and one 60 s segment two hours ago (on time). 王's inspection case is complete, closed and
archived on time; 李's case is open with nothing recorded. Agency B (芜湖市城市管理局): one 60 s segment.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from protocol.session import SessionEventKind
from server.domain.accounts.models import User
from server.domain.base import utcnow
from server.domain.cases import service as case_service
from server.domain.cases.inputs import NewCase
from server.domain.errors import Invalid, NotFound
from server.domain.fleet.devices import register_device
from server.domain.governance.approvals_models import GovernanceDecision, GovernanceRequest, GrantRevocation
from server.domain.governance.statistics import StatsQuery, statistics, to_csv
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.domain.publicity import service as publicity_service
from server.domain.publicity.codes import EnforcementAct
from server.infra.db import get_engine, session_scope
from server.ingest.service import IngestService
from tests.conftest import SegmentFactory, migrated_app
from tests.fixtures.people import World
from tests.server.domain.governance.test_archive import CaseScene, build_case, seal
from tests.server.domain.sessions.conftest import T0, Recorder, hand_over, make_officer, send
from tests.server.http.pages.workspace.conftest import commit_media

K = SessionEventKind
LI, B_CERT = "AH-3002", "WH-4001"


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database."""
    app = migrated_app(tmp_path / "var", db_url)
    yield app
    get_engine(app).dispose()


def _device(app: Flask, tmp: Path, device_id: str, user_id: int, session_id: str) -> Recorder:
    (tmp / device_id).mkdir(parents=True, exist_ok=True)
    segments = SegmentFactory(tmp / device_id, device_id=device_id)
    with session_scope(app) as session:
        register_device(session, device_id, segments.public_key)
    hand_over(app, device_id, user_id, at=T0 - timedelta(days=1))
    return Recorder(app, segments, session_id=session_id)


def build_world(app: Flask, tmp: Path) -> CaseScene:
    """The scene of the module docstring."""
    scene = build_case(app, tmp)
    seal(app, scene, tmp / "out")
    ingest = IngestService.from_app(app)
    li = make_officer(app, "li", certificate=LI)
    recorder = _device(app, tmp, "rec-st-2", li, "li-s1")
    start = T0 + timedelta(hours=1)
    send(ingest, recorder.event(K.STARTED, start, officer_id=LI))
    commit_media(recorder, start, 60, os.urandom(2048), officer_id=LI)
    commit_media(recorder, start + timedelta(seconds=120), 60, os.urandom(2048), officer_id=LI)
    send(ingest, recorder.event(K.ENDED, start + timedelta(seconds=180), officer_id=LI))
    recorder.session_id = "li-s2"  # a segment with no session events: counted, no session
    commit_media(recorder, utcnow() - timedelta(hours=2), 60, os.urandom(2048), officer_id=LI)
    with session_scope(app) as session:
        li_officer = session.scalar(select(Officer.id).where(Officer.certificate_number == LI))
        case_service.create_case(
            session, scene.callers["wang"],
            NewCase.from_json({"number": "皖罚〔2026〕9", "act_kind": "penalty", "origin": "ex_officio",
                               "officer_ids": [li_officer]}),
        )  # fmt: skip
    b_user = make_officer(app, "b-officer", certificate=B_CERT, agency="芜湖市城市管理局")
    other = _device(app, tmp, "rec-st-b", b_user, "b-s1")
    commit_media(other, T0, 60, os.urandom(2048), officer_id=B_CERT)
    return scene


def _query(**args: str) -> StatsQuery:
    return StatsQuery.from_args({"from": "2026-03-01", "to": utcnow().date().isoformat(), **args})


def _agency(app: Flask, name: str) -> int:
    with session_scope(app) as session:
        found = session.scalar(select(Agency.id).where(Agency.name == name))
        assert found is not None
        return found


def test_jl21_statistics_per_agency_count_what_was_recorded_and_archived(app: Flask, tmp_path: Path) -> None:
    scene = build_world(app, tmp_path)
    a, b = _agency(app, "某市市场监督管理局"), _agency(app, "芜湖市城市管理局")
    with session_scope(app) as session:
        report = statistics(session, scene.callers["supervisor"], _query())
    rows = {r["agency_id"]: r for r in report["rows"]}
    assert set(rows) == {a, b}
    assert rows[a] | {} == {
        **rows[a],
        "recordings": 5, "hours": 0.08, "late_uploads": 4,  # 300 s; all but the recent one
        "sessions": 2, "sessions_continuous": 1, "sessions_gaps_unexplained": 1, "sessions_gaps_explained": 0,
        "gaps": 1, "unexplained_gaps": 1,
        "cases_opened": 2, "cases_complete": 1, "cases_ended": 1,
        "archived_on_time": 1, "archived_late": 0, "archive_overdue": 0,
    }  # fmt: skip
    assert (rows[b]["recordings"], rows[b]["hours"], rows[b]["sessions"]) == (1, 0.02, 0)
    assert report["totals"]["recordings"] == 6


def test_jl21_statistics_per_officer(app: Flask, tmp_path: Path) -> None:
    scene = build_world(app, tmp_path)
    with session_scope(app) as session:
        report = statistics(session, scene.callers["reviewer"], _query(group="officer"))
    rows = {r["officer"]: r for r in report["rows"]}
    wang = "AH-2001-rec-ar-1"
    assert set(rows) == {wang, LI}  # agency A only: the reviewer is bound to it (JL-20)
    assert (rows[wang]["recordings"], rows[wang]["late_uploads"], rows[wang]["sessions_continuous"]) == (
        2,
        2,
        1,
    )
    assert (rows[wang]["cases_opened"], rows[wang]["cases_complete"], rows[wang]["archived_on_time"]) == (
        1,
        1,
        1,
    )
    assert (rows[LI]["recordings"], rows[LI]["late_uploads"], rows[LI]["unexplained_gaps"]) == (3, 2, 1)
    assert (rows[LI]["cases_opened"], rows[LI]["cases_complete"]) == (1, 0)
    assert rows[LI]["officer_name"]


def test_jl20_statistics_of_another_agency_look_missing(app: Flask, tmp_path: Path) -> None:
    scene = build_world(app, tmp_path)
    b = _agency(app, "芜湖市城市管理局")
    with session_scope(app) as session:
        with pytest.raises(NotFound):
            statistics(session, scene.callers["reviewer"], _query(agency_id=str(b)))
        only_b = statistics(session, scene.callers["supervisor"], _query(agency_id=str(b)))
    assert [r["agency_id"] for r in only_b["rows"]] == [b]


def test_jl21_csv_export_has_a_header_and_one_line_per_row(app: Flask, tmp_path: Path) -> None:
    scene = build_world(app, tmp_path)
    with session_scope(app) as session:
        report = statistics(session, scene.callers["supervisor"], _query())
    lines = list(csv.DictReader(io.StringIO(to_csv(report).lstrip("\ufeff"))))
    assert len(lines) == 2
    a_line = next(line for line in lines if line["agency"] == "某市市场监督管理局")
    assert (a_line["recordings"], a_line["hours"], a_line["unexplained_gaps"]) == ("5", "0.08", "1")


@pytest.mark.parametrize(
    "args",
    [
        {"from": "2026-13-01"},
        {"from": "2026-05-01", "to": "2026-04-01"},
        {"from": "9999-12-01", "to": "9999-12-31"},
        {"group": "team"},
        {"agency_id": "x"},
        {"agency_id": "99999999999"},
    ],
)
def test_jl21_a_bad_period_or_grouping_is_refused_precisely(args: dict[str, str]) -> None:
    with pytest.raises(Invalid):
        StatsQuery.from_args(args)


def test_jl21_the_workspace_page_shows_the_numbers_a_chart_and_a_csv(app: Flask, tmp_path: Path) -> None:
    from tests.server.http.pages.workspace.conftest import login

    build_world(app, tmp_path)
    client = app.test_client()
    login(client, "rec-ar-1-supervisor")
    page = client.get("/workspace/statistics?from=2026-03-01")
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    assert 'data-nav="statistics"' in html and 'id="stats-chart"' in html
    assert "<script" not in html and "style=" not in html  # the workspace CSP allows neither inline
    a = _agency(app, "某市市场监督管理局")
    row = html.split(f'data-agency="{a}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-col="recordings">5<' in row and 'data-col="unexplained_gaps">1<' in row
    assert 'data-col="access_requests">0<' in row and 'data-col="publication_overdue">0<' in row
    csv_page = client.get("/workspace/statistics.csv?from=2026-03-01&group=officer")
    assert csv_page.status_code == 200 and csv_page.mimetype == "text/csv"
    assert len(csv_page.data.decode("utf-8-sig").splitlines()) == 1 + 3  # 王, 李 and agency B's officer
    assert client.get("/workspace/statistics?from=2026-13-01").status_code == 400
    officer = app.test_client()
    login(officer, "rec-ar-1-wang")
    assert officer.get("/workspace/statistics").status_code == 403


def test_jl21_statistics_count_access_requests_by_outcome_and_publication_deadlines_met(
    app: Flask, world: World
) -> None:
    """JL-20 requests filed in the period (pending, approved, rejected; approved then revoked) and GS-11
    items due in the period (published by the deadline, after it, not at all; an excluded one not counted)."""
    now = utcnow()
    today = now.date()
    a, b = world.agency_a, world.agency_b
    with session_scope(app) as session:
        officer_user = session.scalar(select(User.id).where(User.username == "officer-a"))
        head = session.scalar(select(User.id).where(User.username == "agency_head-a"))
        requests = []
        for agency, kind in ((a, "access"), (a, "external_provision"), (a, "retrieval"), (a, "access"),
                             (a, "disposal"), (b, "access")):  # fmt: skip
            row = GovernanceRequest(
                kind=kind, agency_id=agency, requested_by=str(officer_user), requester_role="officer",
                purpose="复核", recording_ids=[], actions=["view"], duration_days=7, requested_at=now,
            )  # fmt: skip
            session.add(row)
            requests.append(row)
        session.flush()
        for request, outcome in zip(requests[1:4], ("approve", "reject", "approve"), strict=True):
            session.add(
                GovernanceDecision(
                    request_id=request.id,
                    outcome=outcome,
                    reason="",
                    decided_by=str(head),
                    decider_role="agency_head",
                    decided_at=now,
                    expires_at=now + timedelta(days=7),
                )
            )
        session.add(
            GrantRevocation(
                request_id=requests[3].id,
                reason="用途已完成",
                revoked_by=str(head),
                revoker_role="agency_head",
                revoked_at=now,
            )
        )
        caller_a = Caller(str(head), "agency_head", a)
        due = today - timedelta(days=3)
        for published_at, state in (
            (datetime.combine(due, time(9), tzinfo=UTC), "published"),  # on the deadline day
            (datetime.combine(due + timedelta(days=2), time(9), tzinfo=UTC), "published"),  # late
            (None, "in_review"),  # overdue
            (None, "excluded"),  # never to be published: no deadline to meet
        ):
            item = publicity_service.collect(
                session,
                caller_a,
                publicity_service.CollectInput(
                    agency_id=a, act=EnforcementAct.PENALTY, decided_on=due - timedelta(days=7), title="公示"
                ),
            )
            item.due_on, item.published_at, item.state = due, published_at, state
    with session_scope(app) as session:
        report = statistics(
            session,
            Caller("1", "supervisor", None),
            StatsQuery.from_args({"from": (today - timedelta(days=10)).isoformat(), "to": today.isoformat()}),
        )
        by_officer = statistics(
            session,
            Caller(str(head), "agency_head", a),
            StatsQuery.from_args({"from": (today - timedelta(days=10)).isoformat(), "group": "officer"}),
        )
    rows = {r["agency_id"]: r for r in report["rows"]}
    assert {k: rows[a][k] for k in rows[a] if k.startswith(("access_", "publication", "published_"))} == {
        "access_requests": 4, "access_approved": 2, "access_rejected": 1, "access_pending": 1,
        "access_revoked": 1,
        "publications_due": 3, "published_on_time": 1, "published_late": 1, "publication_overdue": 1,
    }  # fmt: skip
    assert (rows[b]["access_requests"], rows[b]["access_pending"], rows[b]["publications_due"]) == (1, 1, 0)
    assert {r["agency_id"] for r in by_officer["rows"]} == {a}  # the head sees their own agency only
    mine = [r for r in by_officer["rows"] if r["officer"]]
    assert [(r["officer"], r["access_requests"]) for r in mine] == [("AH-0001", 4)]
    header = to_csv(report).lstrip("\ufeff").splitlines()[0].split(",")
    assert {"access_requests", "access_revoked", "published_on_time", "publication_overdue"} <= set(header)
