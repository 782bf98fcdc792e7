"""The publication deadline board (GS-22, GS-23): the workspace page and ``GET /api/v1/publicity/alerts``
show an agency its own overdue and nearly due items and the worker's alerts; supervisors see every
agency; another agency sees none of it."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from server.domain.accounts.service import create_user
from server.domain.people.models import Agency
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
