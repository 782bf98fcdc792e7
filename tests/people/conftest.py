"""Fixtures for people, credentials and cases: two agencies, accounts of every role, officers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.domain.accounts.models import ROLES
from server.domain.accounts.service import create_user
from server.domain.people.models import Agency, Officer
from server.infra.db import session_scope

PASSWORD = "people-pass-123"
# A 1×1 PNG, enough to stand for a photo.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e221bc330000000049454e44ae426082"
)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Authorization headers of a fresh login."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


@dataclass
class World:
    """Agencies A and B, a user of every role in A, officers in both."""

    agency_a: int
    agency_b: int
    users: dict[str, int] = field(default_factory=dict)
    officer_a: int = 0
    officer_b: int = 0
    officer_user_b: str = "officer-b"


@pytest.fixture
def world(app: Flask) -> World:
    """Two agencies; ``<role>-a`` accounts of every role in A; officers A (linked to officer-a) and B."""
    today = date.today()
    with session_scope(app) as session:
        a = Agency(
            name="合肥市市场监督管理局", head="张局长", duties="市场监管", address="合肥市", contacts="0551-1"
        )
        b = Agency(
            name="芜湖市城市管理局", head="李局长", duties="城市管理", address="芜湖市", contacts="0553-1"
        )
        session.add_all([a, b])
        session.flush()
        w = World(agency_a=a.id, agency_b=b.id)
        for role in ROLES:
            w.users[role] = create_user(session, f"{role}-a", PASSWORD, role, agency_id=a.id).id
        user_b = create_user(session, "officer-b", PASSWORD, "officer", agency_id=b.id)
        officer_a = Officer(
            agency_id=a.id,
            kind="officer",
            name="王执法",
            enforcement_category="市场监管综合执法",
            certificate_number="AH-0001",
            issuing_body="安徽省人民政府",
            valid_from=today - timedelta(days=365),
            valid_to=today + timedelta(days=365),
            status="active",
            duties="",
            authority="",
            photo=PNG,
            photo_type="image/png",
            user_id=w.users["officer"],
        )
        officer_b = Officer(
            agency_id=b.id,
            kind="officer",
            name="赵执法",
            enforcement_category="城市管理综合执法",
            certificate_number="AH-0002",
            issuing_body="安徽省人民政府",
            valid_from=today - timedelta(days=10),
            valid_to=today + timedelta(days=10),
            status="active",
            duties="",
            authority="",
            user_id=user_b.id,
        )
        session.add_all([officer_a, officer_b])
        session.flush()
        w.officer_a, w.officer_b = officer_a.id, officer_b.id
    return w
