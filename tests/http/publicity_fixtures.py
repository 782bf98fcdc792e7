"""Shared fixtures of the publicity API and portal tests: one agency, a login per role, helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.domain.accounts.service import create_user
from server.domain.people.models import Agency
from server.domain.publicity.identifiers import resident_id_check_digit, uscc_check_character
from server.infra.db import session_scope

PASSWORD = "publicity-pass-123"
AGENCY_USCC = "11340100003000001" + uscc_check_character("11340100003000001")
COMPANY_USCC = "91340100MA2N0A0Q0" + uscc_check_character("91340100MA2N0A0Q0")
WITNESS_ID = "11010519491231002X"
MINOR_ID = "34010220100307123" + resident_id_check_digit("34010220100307123")
ROLES = ("officer", "legal_reviewer", "agency_head", "supervisor", "auditor", "auxiliary")

CONTENT: dict[str, Any] = {
    "party_name": "合肥某某餐饮有限公司",
    "party_category": "organisation",
    "party_uscc": COMPANY_USCC,
    "document_number": "合市监罚〔2026〕12号",
    "violation_type": "经营超过保质期的食品",
    "facts": f"经查，当事人经营超过保质期的食品。证人李四（身份证号{WITNESS_ID}，手机13812345678）在场。",
    "basis": "《中华人民共和国食品安全法》第一百二十四条",
    "conclusion": "警告，罚款2000元",
    "penalty_kinds": ["warning", "fine"],
    "fine_yuan": "2000",
    "valid_until": "2027-09-30",
    "agency_uscc": AGENCY_USCC,
    "persons": [{"name": "李四"}],
}


@dataclass
class Staff:
    """Login headers per role in one agency."""

    agency_id: int
    headers: dict[str, dict[str, str]]


def login(client: FlaskClient, username: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


@pytest.fixture
def staff(app: Flask, client: FlaskClient) -> Staff:
    with session_scope(app) as session:
        agency = Agency(name="合肥市市场监督管理局", head="", duties="", address="", contacts="")
        session.add(agency)
        session.flush()
        agency_id = agency.id
        for role in ROLES:
            create_user(session, f"{role}-p", PASSWORD, role, agency_id=agency_id)
    return Staff(agency_id=agency_id, headers={role: login(client, f"{role}-p") for role in ROLES})


def collect(
    client: FlaskClient, staff: Staff, content: dict[str, Any] = CONTENT, **extra: Any
) -> dict[str, Any]:
    body = {"act_kind": "penalty", "decided_on": "2026-09-30", "content": content, **extra}
    response = client.post("/api/v1/publicity/items", json=body, headers=staff.headers["officer"])
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def published(client: FlaskClient, staff: Staff, content: dict[str, Any] = CONTENT) -> dict[str, Any]:
    item = collect(client, staff, content)
    path = f"/api/v1/publicity/items/{item['id']}"
    assert client.post(f"{path}/submit", headers=staff.headers["officer"]).status_code == 200
    response = client.post(f"{path}/publish", headers=staff.headers["legal_reviewer"])
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())
