"""JL-20: evidence reads are scoped to the caller's agency through the recorder's check-out.

Two agencies, accounts of every role in each, a recorder checked out in each with real signed segments
and a signed session, and one recorder never checked out. Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.accounts.models import ROLES, User
from server.domain.accounts.roles import ENDPOINT_ROLES
from server.domain.accounts.service import create_user
from server.domain.audit import AuditLog
from server.domain.fleet import assignments as assignment_service
from server.domain.fleet.telemetry_models import DeviceHealthSample
from server.domain.people.models import Agency, Officer
from server.domain.scope import CROSS_AGENCY_READERS
from server.infra.db import get_engine, session_scope
from tests.conftest import migrated_app
from tests.fixtures.evidence import AgencyEvidence, assign, record_evidence
from tests.server.domain.sessions.conftest import T0

PASSWORD = "scope-password-1"
READERS = ENDPOINT_ROLES["recordings.list_recordings"]
# Evidence readers held to their own agency, and those who read across (the roles table).
SCOPED_READERS = tuple(r for r in READERS if r not in CROSS_AGENCY_READERS)
CROSS_READERS = tuple(r for r in READERS if r in CROSS_AGENCY_READERS)
CHAIN_SCOPED = tuple(r for r in ENDPOINT_ROLES["devices.chain"] if r not in CROSS_AGENCY_READERS)


@dataclass
class Agencies:
    """Agencies A and B, ``<role>-a`` / ``<role>-b`` accounts, and each one's evidence."""

    app: Flask
    client: FlaskClient
    agency: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    evidence: dict[str, AgencyEvidence] = field(default_factory=dict)
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def headers(self, username: str) -> dict[str, str]:
        """Bearer headers of ``username`` (logged in once)."""
        if username not in self._headers:
            response = self.client.post(
                "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
            )
            assert response.status_code == 200, response.get_json()
            self._headers[username] = {"Authorization": f"Bearer {response.get_json()['access_token']}"}
        return self._headers[username]

    def get(self, username: str, path: str, **kwargs: Any) -> Any:
        """GET ``path`` as ``username``."""
        return self.client.get(
            path, headers={**self.headers(username), **kwargs.pop("headers", {})}, **kwargs
        )


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[Agencies]:
    """Both agencies with evidence; device ``dev-u`` recorded while checked out to nobody."""
    app = migrated_app(tmp_path / "var", db_url)
    w = Agencies(app, app.test_client())
    with session_scope(app) as session:
        create_user(session, "admin", PASSWORD, "system_admin")
        for suffix, name in (("a", "合肥市市场监督管理局"), ("b", "芜湖市城市管理局")):
            agency = Agency(name=name)
            session.add(agency)
            session.flush()
            w.agency[suffix] = agency.id
            for role in ROLES:
                w.users[f"{role}-{suffix}"] = create_user(
                    session, f"{role}-{suffix}", PASSWORD, role, agency_id=agency.id
                ).id
    for suffix in ("a", "b"):
        device = f"dev-{suffix}"
        w.evidence[suffix] = record_evidence(app, tmp_path / device, device, session_id=f"sess-{suffix}")
        assign(app, device, w.users[f"officer-{suffix}"], w.agency[suffix])
    w.evidence["u"] = record_evidence(app, tmp_path / "dev-u", "dev-u", session_id="sess-u")
    yield w
    get_engine(app).dispose()


def _listed(w: Agencies, user: str, path: str) -> set[int]:
    response = w.get(user, path)
    assert response.status_code == 200, response.get_json()
    return {item["id"] for item in response.get_json()["items"]}


def _missing_like(w: Agencies, user: str, path: str, real_id: int | str, absent_id: int | str) -> None:
    """``path`` (naming ``real_id``) answers exactly what an id that names nothing answers."""
    response = w.get(user, path)
    absent = w.get(user, path.replace(str(real_id), str(absent_id)))
    assert response.status_code == absent.status_code == 404, (user, path, response.status_code)
    assert response.get_data(as_text=True) == absent.get_data(as_text=True).replace(
        str(absent_id), str(real_id)
    )
    assert response.headers.get("ETag") is None and response.headers.get("Content-Range") is None


@pytest.mark.parametrize("role", SCOPED_READERS)
def test_jl20_recording_list_omits_other_agencies(world: Agencies, role: str) -> None:
    a, b = world.evidence["a"], world.evidence["b"]
    assert _listed(world, f"{role}-a", "/api/v1/recordings") == set(a.recording_ids)
    assert _listed(world, f"{role}-b", "/api/v1/recordings") == set(b.recording_ids)
    # Filters cannot reach around the scope.
    assert _listed(world, f"{role}-a", "/api/v1/recordings?device_id=dev-b") == set()
    assert _listed(world, f"{role}-a", "/api/v1/recordings?device_id=dev-u&limit=200") == set()
    page = world.get(f"{role}-a", "/api/v1/recordings?limit=1").get_json()
    assert page["items"][0]["id"] == max(a.recording_ids) and page["next"] == max(a.recording_ids)
    rest = _listed(world, f"{role}-a", f"/api/v1/recordings?limit=1&before={page['next']}")
    assert rest == {min(a.recording_ids)}


@pytest.mark.parametrize("role", SCOPED_READERS)
def test_jl20_other_agency_recording_detail_media_and_range_look_missing(world: Agencies, role: str) -> None:
    user = f"{role}-a"
    own, other = world.evidence["a"].recording_ids[0], world.evidence["b"].recording_ids[0]
    for suffix in ("", "/media"):
        assert world.get(user, f"/api/v1/recordings/{own}{suffix}").status_code == 200
        _missing_like(world, user, f"/api/v1/recordings/{other}{suffix}", other, 987654)
    ranged = world.get(user, f"/api/v1/recordings/{other}/media", headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 404 and b"dev-b" not in ranged.data and "ETag" not in ranged.headers
    assert (
        world.get(user, f"/api/v1/recordings/{own}/media", headers={"Range": "bytes=0-9"}).status_code == 206
    )


@pytest.mark.parametrize("role", SCOPED_READERS)
def test_jl20_sessions_and_timelines_of_other_agencies_look_missing(world: Agencies, role: str) -> None:
    user = f"{role}-a"
    a, b = world.evidence["a"], world.evidence["b"]
    assert _listed(world, user, "/api/v1/sessions") == {a.session_pk}
    assert _listed(world, user, "/api/v1/sessions?device_id=dev-b") == set()
    assert _listed(world, user, "/api/v1/sessions?verdict=continuous") <= {a.session_pk}
    for suffix in ("", "/timeline"):
        own = world.get(user, f"/api/v1/sessions/{a.session_pk}{suffix}")
        assert own.status_code == 200
        _missing_like(world, user, f"/api/v1/sessions/{b.session_pk}{suffix}", b.session_pk, 987654)
    timeline = world.get(user, f"/api/v1/sessions/{a.session_pk}/timeline").get_json()
    assert [m["note"] for m in timeline["bookmarks"]] == ["note-of-sess-a"]


def test_jl20_no_explanation_can_be_filed_or_signed_on_another_agencys_session(world: Agencies) -> None:
    b = world.evidence["b"]
    for role in ("officer", "agency_head"):
        headers = world.headers(f"{role}-a")
        filed = world.client.post(
            f"/api/v1/sessions/{b.session_pk}/explanations", json={"text": "越权说明"}, headers=headers
        )
        signed = world.client.post(
            f"/api/v1/sessions/{b.session_pk}/explanations/1/signatures", headers=headers
        )
        assert filed.status_code == signed.status_code == 404


@pytest.mark.parametrize("role", CHAIN_SCOPED)
def test_jl20_chain_report_of_another_agencys_recorder_looks_missing(world: Agencies, role: str) -> None:
    user = f"{role}-a"
    own = world.get(user, "/api/v1/devices/dev-a/chain")
    assert own.status_code == 200 and own.get_json()["segments"] == 2
    _missing_like(world, user, "/api/v1/devices/dev-b/chain", "dev-b", "dev-none")
    assert world.get(user, "/api/v1/devices/dev-u/chain").status_code == 404


@pytest.mark.parametrize("user", [*(f"{r}-a" for r in CROSS_READERS), "admin"])
def test_jl20_supervisors_and_auditors_read_every_agency(world: Agencies, user: str) -> None:
    everything = {i for e in world.evidence.values() for i in e.recording_ids}
    assert _listed(world, user, "/api/v1/recordings") == everything
    assert _listed(world, user, "/api/v1/sessions") == {e.session_pk for e in world.evidence.values()}
    for e in world.evidence.values():
        assert world.get(user, f"/api/v1/recordings/{e.recording_ids[0]}/media").status_code == 200
        assert world.get(user, f"/api/v1/sessions/{e.session_pk}/timeline").status_code == 200
        assert world.get(user, f"/api/v1/devices/{e.device_id}/chain").status_code == 200


def test_jl20_evidence_of_a_recorder_checked_out_to_nobody_is_for_cross_agency_roles_only(
    world: Agencies,
) -> None:
    u = world.evidence["u"]
    for suffix in ("a", "b"):
        for role in SCOPED_READERS:
            assert not _listed(world, f"{role}-{suffix}", "/api/v1/recordings") & set(u.recording_ids)
            assert world.get(f"{role}-{suffix}", f"/api/v1/sessions/{u.session_pk}").status_code == 404
    assert set(u.recording_ids) <= _listed(world, "auditor-b", "/api/v1/recordings")


def test_jl20_evidence_belongs_to_the_check_out_open_when_it_was_recorded(
    world: Agencies, tmp_path: Path
) -> None:
    # dev-x goes from an officer of A to an officer of B 90 s into its session: the first two
    # one-minute clips started under A's check-out, the last two under B's.
    x = record_evidence(world.app, tmp_path / "dev-x", "dev-x", session_id="sess-x", clips=4)
    handover = T0 + timedelta(seconds=90)
    assign(world.app, "dev-x", world.users["officer-a"], world.agency["a"], end=handover)
    assign(world.app, "dev-x", world.users["officer-b"], world.agency["b"], start=handover)
    seen_by_a = _listed(world, "agency_head-a", "/api/v1/recordings?device_id=dev-x")
    seen_by_b = _listed(world, "agency_head-b", "/api/v1/recordings?device_id=dev-x")
    assert seen_by_a == set(x.recording_ids[:2]) and seen_by_b == set(x.recording_ids[2:])
    # The session started under A's check-out; both may see the chain of a recorder they held.
    assert _listed(world, "officer-a", "/api/v1/sessions?device_id=dev-x") == {x.session_pk}
    assert _listed(world, "officer-b", "/api/v1/sessions?device_id=dev-x") == set()
    assert world.get("legal_reviewer-b", "/api/v1/devices/dev-x/chain").status_code == 200


def test_jl20_an_officer_who_moves_agency_takes_no_evidence_along(world: Agencies) -> None:
    with session_scope(world.app) as session:
        session.add(
            DeviceHealthSample(device_id="dev-u", at=T0, backlog_bytes=0, backlog_segments=0, battery_pct=90)
        )
        # The real check-out keeps the agency the officer belongs to at check-out time.
        row = assignment_service.check_out(
            session, "dev-u", world.users["officer-a"], min_battery_pct=20, actor="test"
        )
        assert row.agency_id == world.agency["a"]
        user = session.get(User, world.users["officer-a"])
        assert user is not None
        user.agency_id = world.agency["b"]
    a = world.evidence["a"]
    assert set(a.recording_ids) <= _listed(world, "agency_head-a", "/api/v1/recordings")
    assert not set(a.recording_ids) & _listed(world, "agency_head-b", "/api/v1/recordings")


def test_jl20_refused_evidence_reads_are_audited(world: Agencies) -> None:
    other = world.evidence["b"].recording_ids[0]
    world.get("officer-a", f"/api/v1/recordings/{other}/media")
    world.get("officer-a", "/api/v1/recordings/987654")
    world.get("legal_reviewer-a", "/api/v1/devices/dev-b/chain")
    world.get("officer-a", f"/api/v1/sessions/{world.evidence['b'].session_pk}/timeline")
    with session_scope(world.app) as session:
        rows = list(
            session.scalars(
                select(AuditLog)
                .where(
                    AuditLog.action.in_(
                        ["recording.media", "recording.view", "device.chain_report", "session.timeline"]
                    )
                )
                .order_by(AuditLog.id)
            )
        )
        seen = [(r.actor, r.action, r.target_id, r.detail_dict().get("refused")) for r in rows]
    officer, reviewer = str(world.users["officer-a"]), str(world.users["legal_reviewer-a"])
    assert seen == [
        (officer, "recording.media", str(other), "out_of_scope"),
        (officer, "recording.view", "987654", "not_found"),
        (reviewer, "device.chain_report", "dev-b", "out_of_scope"),
        (officer, "session.timeline", str(world.evidence["b"].session_pk), "out_of_scope"),
    ]


def test_jl20_a_case_links_and_shows_only_its_own_agencys_recordings(world: Agencies) -> None:
    a, b = world.evidence["a"], world.evidence["b"]
    with session_scope(world.app) as session:
        # The recorders' manifests name officer "officer-7": in agency A that is this register entry.
        officer = Officer(agency_id=world.agency["a"], name="王执法", certificate_number="officer-7")
        session.add(officer)
        session.flush()
        officer_pk = officer.id
    headers = world.headers("officer-a")
    case = world.client.post(
        "/api/v1/cases",
        json={"number": "合市监罚〔2026〕9号", "act_kind": "penalty", "origin": "ex_officio"},
        headers=headers,
    )
    assert case.status_code == 201, case.get_json()
    events = f"/api/v1/cases/{case.get_json()['id']}/events"
    body = {"event_type": "investigation.inquiry", "occurred_at": T0.isoformat(), "officer_ids": [officer_pk]}
    # Linking another agency's recording is refused exactly like linking one that does not exist.
    other = world.client.post(events, json={**body, "recording_ids": [b.recording_ids[0]]}, headers=headers)
    absent = world.client.post(events, json={**body, "recording_ids": [987654]}, headers=headers)
    assert other.status_code == absent.status_code == 400
    assert other.get_json() == absent.get_json()
    own = world.client.post(events, json={**body, "recording_ids": [a.recording_ids[0]]}, headers=headers)
    assert own.status_code == 201, own.get_json()
    record = world.get("officer-a", f"/api/v1/cases/{case.get_json()['id']}/record").get_json()
    (inquiry,) = [e for s in record["stages"] for e in s["events"]]
    # Both recorders ran at T0 under "officer-7"; only A's recording covers A's case event.
    assert inquiry["recording_ids"] == [a.recording_ids[0]]
    assert inquiry["covering_recording_ids"] == sorted(a.recording_ids)
