"""The deadline board (GS-22, GS-23, JL-18): the workspace page and ``GET /api/v1/publicity/alerts``
show an agency its own overdue and nearly due items, its cases' archive deadlines and the worker's
alerts; supervisors see every agency; another agency sees none of it."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient

from server.domain.accounts.service import create_user
from server.domain.base import utcnow
from server.domain.cases import service as case_service
from server.domain.cases.inputs import NewCase, StatusChange
from server.domain.people.models import Agency
from server.domain.people.service import Caller
from server.infra.db import session_scope
from server.workers.loops import PublicityWorker
from tests.fixtures.publicity import PASSWORD, Staff, collect, login, staff
from tests.server.http.pages.workspace.conftest import login as workspace_login

__all__ = ["staff"]


def test_gs23_board_and_alerts_for_own_agency_and_supervisors_not_for_another_agency(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    item = collect(client, staff, title="甲机关逾期事项")  # decided 2026-09-30, due 2026-10-15: overdue now
    with session_scope(app) as session:
        other = Agency(name="芜湖市城市管理局", head="", duties="", address="", contacts="")
        session.add(other)
        session.flush()
        for role in ("officer", "agency_head"):
            create_user(session, f"{role}-other", PASSWORD, role, agency_id=other.id)
    assert PublicityWorker(app).step()["opened"] == 1

    mine = client.get("/api/v1/publicity/alerts", headers=staff.headers["officer"])
    assert mine.status_code == 200
    [alert] = mine.get_json()["items"]
    assert (alert["item_id"], alert["kind"], alert["severity"]) == (
        item["id"],
        "publication_overdue",
        "critical",
    )
    assert alert["agency_id"] == staff.agency_id and "甲机关逾期事项" in alert["message"]
    supervisor = client.get("/api/v1/publicity/alerts", headers=staff.headers["supervisor"]).get_json()
    assert [a["item_id"] for a in supervisor["items"]] == [item["id"]]
    theirs = client.get("/api/v1/publicity/alerts", headers=login(client, "officer-other")).get_json()
    assert theirs["items"] == []
    assert client.get("/api/v1/publicity/alerts", headers=staff.headers["auxiliary"]).status_code == 403

    head = app.test_client()
    workspace_login(head, "agency_head-p", PASSWORD)
    page = head.get("/workspace/publication-deadlines")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "公示期限看板" in html and "甲机关逾期事项" in html
    assert f'data-alert="publication_overdue" data-item="{item["id"]}"' in html
    assert 'data-column="overdue"' in html and "合肥市市场监督管理局" in html
    english = head.get("/workspace/publication-deadlines?lang=en").get_data(as_text=True)
    assert "Publication deadlines" in english and "is past its deadline" in english

    outsider = app.test_client()
    workspace_login(outsider, "agency_head-other", PASSWORD)
    html = outsider.get("/workspace/publication-deadlines").get_data(as_text=True)
    assert "甲机关逾期事项" not in html and "data-alert=" not in html
    assert "没有未关闭的期限告警" in html

    watcher = app.test_client()
    workspace_login(watcher, "supervisor-p", PASSWORD)
    assert "甲机关逾期事项" in watcher.get("/workspace/publication-deadlines").get_data(as_text=True)


def test_jl18_the_workers_archive_alert_is_on_the_board_of_the_cases_agency_only(
    app: Flask, client: FlaskClient, staff: Staff
) -> None:
    with session_scope(app) as session:
        other = Agency(name="芜湖市城市管理局", head="", duties="", address="", contacts="")
        session.add(other)
        session.flush()
        create_user(session, "agency_head-other", PASSWORD, "agency_head", agency_id=other.id)
        head = Caller(user_id="1", role="agency_head", agency_id=staff.agency_id)
        case = case_service.create_case(
            session, head, NewCase(number="皖合市监罚〔2026〕77号", act_kind="penalty", origin="ex_officio")
        )
        case_service.change_status(
            session, head, case.id, StatusChange(status="withdrawn", reason="撤销立案")
        )
        case_id = case.id
    # Four days before the 30 are over, the worker's pass (governance's deadlines, publicity's alerts).
    assert PublicityWorker(app).step(now=utcnow() + timedelta(days=26))["opened"] == 1
    [alert] = client.get("/api/v1/publicity/alerts", headers=staff.headers["officer"]).get_json()["items"]
    assert (alert["case_id"], alert["item_id"], alert["kind"]) == (case_id, None, "archive_due_soon")

    board = app.test_client()
    workspace_login(board, "agency_head-p", PASSWORD)
    html = board.get("/workspace/publication-deadlines").get_data(as_text=True)
    assert f'data-alert="archive_due_soon" data-item="" data-case="{case_id}"' in html
    assert f'href="/workspace/cases/{case_id}"' in html and "77号" in html
    outsider = app.test_client()
    workspace_login(outsider, "agency_head-other", PASSWORD)
    assert "data-alert=" not in outsider.get("/workspace/publication-deadlines").get_data(as_text=True)
