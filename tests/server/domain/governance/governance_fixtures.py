"""A scene for the governance tests (JL-19, JL-20): agencies A and B, every role in A, a second head and a
second officer in A, a head and an officer in B, and signed recordings of each agency stored through the
real ingest. Recordings start on 2026-03-04, so their six-month routine retention ended in September.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.accounts.models import User
from server.domain.accounts.service import create_user
from server.domain.cases import service as case_service
from server.domain.cases.inputs import CaseEventInput, NewCase
from server.domain.people.models import Officer
from server.domain.people.service import Caller
from server.infra.db import get_engine, session_scope
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, migrated_app
from tests.fixtures.evidence import assign, record_evidence
from tests.fixtures.people import PASSWORD, World, login, world

__all__ = ["PASSWORD", "Gov", "app", "gov", "login", "workspace_client", "world"]

# The officer id the test recorder writes into every manifest it signs.
RECORDER_OFFICER = "officer-7"


@dataclass
class Gov:
    """Ids and callers the tests ask for."""

    app: Flask
    world: World
    users: dict[str, int] = field(default_factory=dict)
    rec_a: list[int] = field(default_factory=list)
    rec_b: list[int] = field(default_factory=list)
    session_a: int = 0  # the enforcement session of rec_a
    sentinels_b: set[str] = field(default_factory=set)

    def caller(self, username: str) -> Caller:
        """The domain caller of one of the scene's accounts."""
        role, agency = {
            "officer-a": ("officer", self.world.agency_a),
            "officer2-a": ("officer", self.world.agency_a),
            "legal_reviewer-a": ("legal_reviewer", self.world.agency_a),
            "agency_head-a": ("agency_head", self.world.agency_a),
            "head2-a": ("agency_head", self.world.agency_a),
            "supervisor-a": ("supervisor", self.world.agency_a),
            "auditor-a": ("auditor", self.world.agency_a),
            "head-b": ("agency_head", self.world.agency_b),
            "officer-b": ("officer", self.world.agency_b),
        }[username]
        return Caller(str(self.users[username]), role, agency)

    def open_case(self, recording_ids: list[int], number: str = "皖合市监检〔2026〕7号") -> int:
        """An open inspection case of A whose first event links ``recording_ids``."""
        head = self.caller("agency_head-a")
        with session_scope(self.app) as session:
            case = case_service.create_case(
                session,
                head,
                NewCase(
                    number=number,
                    act_kind="inspection",
                    origin="ex_officio",
                    officer_ids=(self.world.officer_a,),
                ),
            )
            case_service.record_event(
                session,
                head,
                case.id,
                CaseEventInput(
                    event_type="investigation.on_site_inspection",
                    text="现场检查",
                    recording_ids=tuple(recording_ids),
                    officer_ids=(self.world.officer_a,),
                ),
            )
            return case.id


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database, with an admin."""
    app = migrated_app(tmp_path / "var", db_url)
    with session_scope(app) as session:
        create_user(session, ADMIN_USER, ADMIN_PASSWORD, "system_admin")
    yield app
    get_engine(app).dispose()


@pytest.fixture
def gov(app: Flask, world: World, tmp_path: Path) -> Gov:
    """The scene: two agencies, their people, and two recordings of each."""
    w = world
    scene = Gov(app=app, world=w, users=dict((f"{r}-a", i) for r, i in w.users.items()))
    today = date.today()
    with session_scope(app) as session:
        for name, role, agency in (
            ("head2-a", "agency_head", w.agency_a),
            ("officer2-a", "officer", w.agency_a),
            ("head-b", "agency_head", w.agency_b),
        ):
            scene.users[name] = create_user(session, name, PASSWORD, role, agency_id=agency).id
        session.add(
            Officer(
                agency_id=w.agency_a,
                kind="officer",
                name="钱执法",
                enforcement_category="市场监管综合执法",
                certificate_number=RECORDER_OFFICER,
                issuing_body="安徽省人民政府",
                valid_from=today - timedelta(days=365),
                valid_to=today + timedelta(days=365),
                status="active",
                duties="",
                authority="",
                user_id=scene.users["officer2-a"],
            )
        )
    with session_scope(app) as session:
        scene.users["officer-b"] = session.scalar(select(User.id).where(User.username == "officer-b")) or 0
    evidence_a = record_evidence(app, tmp_path / "dev-a", "dev-a", session_id="sess-a")
    assign(app, "dev-a", scene.users["officer-a"], w.agency_a)
    evidence_b = record_evidence(app, tmp_path / "dev-b", "dev-b", session_id="sess-b")
    assign(app, "dev-b", scene.users["officer-b"], w.agency_b)
    scene.rec_a, scene.rec_b = evidence_a.recording_ids, evidence_b.recording_ids
    scene.session_a = evidence_a.session_pk
    scene.sentinels_b = evidence_b.sentinels
    return scene


def workspace_client(app: Flask, username: str) -> tuple[FlaskClient, str]:
    """A browser-like client logged in to the workspace, and its CSRF value."""
    client = app.test_client()
    form = client.get("/workspace/login").get_data(as_text=True)
    token = re.search(r'name="login_csrf" value="([^"]+)"', form)
    assert token is not None
    answer = client.post(
        "/workspace/login", data={"username": username, "password": PASSWORD, "login_csrf": token.group(1)}
    )
    assert answer.status_code == 303, (username, answer.status_code)
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    return client, csrf.group(1)
