"""Every role-protected /api/ endpoint, called as every role: exactly ENDPOINT_ROLES (+ system_admin) pass.

Generic over ``app.url_map``, so endpoints other capabilities add are covered the day they land. The
cross-agency walk (JL-20) calls every endpoint again, as every role of agency A, naming agency B's
objects, and looks for B's data in every answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from server.domain.accounts.models import ROLES, User
from server.domain.accounts.roles import ENDPOINT_ROLES
from server.domain.accounts.service import create_user
from server.domain.cases import service as case_service
from server.domain.cases.inputs import NewCase
from server.domain.governance import approvals
from server.domain.people.service import CROSS_AGENCY_READERS, Caller
from server.domain.publicity import annual as publicity_annual
from server.domain.publicity import catalogue_service
from server.domain.publicity import service as publicity_service
from server.domain.publicity.alerts import evaluate_deadline_alerts
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.inputs import NewCatalogueEntry
from server.infra.db import get_engine, session_scope
from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, migrated_app
from tests.fixtures.evidence import assign, record_evidence
from tests.fixtures.people import PASSWORD, World, login
from tests.fixtures.publicity import CONTENT


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app over a fresh migrated SQLite or PostgreSQL database (scope filters are SQL), with an admin."""
    app = migrated_app(tmp_path / "var", db_url)
    with session_scope(app) as session:
        create_user(session, ADMIN_USER, ADMIN_PASSWORD, "system_admin")
    yield app
    get_engine(app).dispose()


_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def _concrete(rule: str, names: dict[str, str] | None = None) -> str:
    """The rule with every path parameter filled from ``names``, else by a value that names nothing."""

    def fill(match: re.Match[str]) -> str:
        if names and match.group(2) in names:
            return names[match.group(2)]
        return "999999" if match.group(1) in ("int", "float") else "no-such-thing"

    return _PARAM.sub(fill, rule)


def _calls(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) of every /api/ route that is role-protected."""
    calls = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        doc = getattr(app.view_functions[rule.endpoint], "zfjl_doc", None)
        assert doc is not None, f"{rule.endpoint} is not declared with api_view"
        if doc.auth != "roles":
            assert rule.endpoint.startswith("auth."), f"{rule.endpoint} under /api/ is not role-protected"
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            calls.append((rule.endpoint, method, _concrete(rule.rule)))
    return calls


def test_every_api_endpoint_allows_exactly_its_roles(app: Flask, client: FlaskClient, world: World) -> None:
    headers = {role: login(client, f"{role}-a") for role in ROLES}
    calls = _calls(app)
    assert len(calls) >= 30
    wrong = []
    for endpoint, method, path in calls:
        allowed = set(ENDPOINT_ROLES[endpoint]) | {"system_admin"}
        for role in ROLES:
            response = client.open(path, method=method, headers=headers[role], json={})
            refused = response.status_code == 403
            if refused == (role in allowed):
                wrong.append(f"{method} {path} as {role}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_every_api_endpoint_needs_a_token(app: Flask, client: FlaskClient) -> None:
    for _endpoint, method, path in _calls(app):
        response = client.open(path, method=method, json={})
        assert response.status_code == 401, (method, path, response.status_code)


# Routes the evidence ledger serves without an account, outside /api/ (docs/ledger.md): checkpoints and
# the consistency proofs a witness needs (subtree hashes, never a leaf's data), and the witnesses'
# cosignatures, authenticated by a configured witness key instead of a token. A new one is added here
# deliberately, or this test fails.
_LEDGER_PUBLIC = {
    "ledger_public.get_checkpoint",
    "ledger_public.public_consistency_proof",
    "ledger_public.add_cosignature",
    # An agency's seal key (JL-18): verifiers of archive and export packages pin it; public by design.
    "ledger_public.agency_seal_key",
}


def test_jl23_the_ledgers_public_routes_are_exactly_the_witness_and_verifier_ones(
    app: Flask, client: FlaskClient
) -> None:
    public = {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.startswith("/ledger/")}
    assert public == _LEDGER_PUBLIC
    for rule in app.url_map.iter_rules():
        if rule.endpoint in _LEDGER_PUBLIC:
            assert app.view_functions[rule.endpoint].zfjl_doc.auth == "public"
    # Anonymous: nothing signed yet; no witness is configured, so no cosignature is taken either.
    assert client.get("/ledger/v1/consistency?old_size=0").status_code == 404
    refused = client.post("/ledger/v1/cosignatures", json={"tree_size": 0, "cosignature": "— w x"})
    assert refused.status_code in (400, 404)


# The public portal's routes, all anonymous (docs/publicity.md; the ledger page, docs/ledger.md): published
# decisions, the before-enforcement catalogue, annual reports, open data, correction requests, and the
# ledger's signed checkpoints with their cosignatures. A new one is added here deliberately, or this fails.
_PORTAL_PUBLIC = {
    "portal.index",
    "portal.item",
    "portal.request_correction",
    "portal.before_enforcement",
    "portal.open_data_search",
    "portal.open_data_export",
    "portal.annual_reports",
    "portal.annual_report",
    "portal.annual_report_csv",
    # JL-6, JL-23: checkpoints, cosignatures and the witness quorum; only what /ledger/v1/checkpoint serves.
    "portal.ledger_page",
}


def test_jl23_the_portals_routes_are_exactly_the_anonymous_ones_and_the_ledger_page_needs_no_login(
    app: Flask, client: FlaskClient
) -> None:
    portal = {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.startswith("/portal/")}
    assert portal == _PORTAL_PUBLIC
    for endpoint in portal:
        assert app.view_functions[endpoint].zfjl_doc.auth == "public", endpoint
    # Anonymous, no cookie, no token: the ledger page answers, before the first checkpoint too.
    page = client.get("/portal/ledger")
    assert page.status_code == 200 and 'data-field="ledger_none"' in page.get_data(as_text=True)


# Path and query parameters that name something of one agency. Parameters not listed here get a value
# that names nothing, so a new route is still walked; list its parameter here to aim it at agency B.
_AGENCY_OWNED = (
    "agency_id",
    "officer_id",
    "user_id",
    "case_id",
    "recording_id",
    "session_id",
    "item_id",
    "report_id",
    "entry_id",
)
# The API also answers another agency's governance request like a missing one (404); the workspace's
# approval form answers both with the same redirect, so the page walk does not aim at it.
_AGENCY_OWNED_API = (*_AGENCY_OWNED, "request_id")


def _agency_b(app: Flask, world: World, tmp_path: Path) -> tuple[dict[str, str], set[str]]:
    """Agency B's evidence, case and people: (parameter values naming them, strings that must not leak)."""
    with session_scope(app) as session:
        user_b = session.scalar(select(User.id).where(User.username == world.officer_user_b))
        assert user_b is not None
        case = case_service.create_case(
            session,
            Caller(str(user_b), "officer", world.agency_b),
            NewCase(
                number="芜城管罚〔2026〕B-0001号",
                act_kind="penalty",
                origin="ex_officio",
                title="乙机关案件",
                party="乙机关当事人",
                officer_ids=(world.officer_b,),
            ),
        )
        case_id = case.id
        # A publication item of B (a draft), for the publicity API and the workspace's publication review.
        content_b = {**CONTENT, "party_name": "乙机关公示当事人有限公司"}
        item = publicity_service.collect(
            session,
            Caller(str(user_b), "officer", world.agency_b),
            publicity_service.CollectInput(
                agency_id=world.agency_b,
                act=EnforcementAct.PENALTY,
                decided_on=date(2026, 9, 30),
                title="乙机关公示事项",
                content=publicity_service.parse_content(content_b),
            ),
        )
        item_id = item.id
        # B's annual report (GS-17), a draft: the annual report API must answer it like a missing one.
        report_id = publicity_annual.generate(
            session, Caller(str(user_b), "officer", world.agency_b), world.agency_b, 2025
        ).id
        # A before-enforcement catalogue entry of B (GS-9), a draft with an open update item.
        entry = catalogue_service.create_entry(
            session,
            Caller(str(user_b), "officer", world.agency_b),
            NewCatalogueEntry.from_json(
                {
                    "kind": "complaint_channel",
                    "content": {
                        "name": "乙机关投诉渠道",
                        "conditions": "乙机关受理条件",
                        "phone": "0553-12345",
                    },
                    "change": {
                        "cause": "duties",
                        "effective_on": "2026-09-30",
                        "reference": "乙机关职责调整",
                    },
                },
                default_agency=world.agency_b,
            ),
        )
        entry_id = entry.id
        # Its deadline (2026-10-15) has passed: a deadline alert of B that A must never see (GS-23).
        evaluate_deadline_alerts(session)
    evidence = record_evidence(app, tmp_path / "dev-b", "dev-b", session_id="sess-b")
    assign(app, "dev-b", user_b, world.agency_b)
    # An external provision request of B (JL-20): its details, decision and export stay B's.
    with session_scope(app) as session:
        provision = approvals.create_request(
            session,
            Caller(str(user_b), "officer", world.agency_b),
            approvals.RequestInput.checked(
                kind="external_provision",
                purpose="乙机关证据交换",
                recipient="乙机关接收法院",
                recording_ids=[evidence.recording_ids[0]],
            ),
        )
        request_id = provision.id
    names = {
        "agency_id": str(world.agency_b),
        "officer_id": str(world.officer_b),
        "user_id": str(user_b),
        "case_id": str(case_id),
        "recording_id": str(evidence.recording_ids[0]),
        "session_id": str(evidence.session_pk),
        "device_id": "dev-b",
        "item_id": str(item_id),
        "report_id": str(report_id),
        "request_id": str(request_id),
        "entry_id": str(entry_id),
    }
    sentinels = evidence.sentinels | {
        "芜湖市城市管理局",
        "赵执法",
        "AH-0002",
        "芜城管罚〔2026〕B-0001号",
        "乙机关案件",
        "乙机关当事人",
        "乙机关公示事项",
        "乙机关公示当事人有限公司",
        "乙机关接收法院",
        "乙机关投诉渠道",
        "乙机关受理条件",
        "乙机关职责调整",
    }
    return names, sentinels


def _seen(response: TestResponse) -> str:
    """Everything a caller gets back: headers and body (JSON decoded, so escapes hide nothing)."""
    body = (
        json.dumps(response.get_json(silent=True), ensure_ascii=False)
        if response.is_json
        else response.get_data().decode("utf-8", errors="replace")
    )
    return " ".join(f"{k}: {v}" for k, v in response.headers.items()) + "\n" + body


def test_no_api_endpoint_gives_agency_a_anything_of_agency_b(
    app: Flask, client: FlaskClient, world: World, tmp_path: Path
) -> None:
    """JL-20: as every agency-bound role of A, every /api/ route aimed at B's objects leaks nothing of B."""
    names, sentinels = _agency_b(app, world, tmp_path)
    scoped = [r for r in ROLES if r not in CROSS_AGENCY_READERS]
    headers = {role: login(client, f"{role}-a") for role in ROLES}
    # The walk can only fail if B's data is there to leak: a cross-agency reader does see it.
    for path in ("/api/v1/recordings", "/api/v1/sessions", "/api/v1/devices/dev-b/chain", "/api/v1/cases"):
        assert any(s in _seen(client.get(path, headers=headers["supervisor"])) for s in sentinels), path
    calls = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        doc = getattr(app.view_functions[rule.endpoint], "zfjl_doc", None)
        assert doc is not None, f"{rule.endpoint} is not declared with api_view"
        if doc.auth != "roles":
            continue
        query = {k: v for k, v in names.items() if k in doc.query}
        owned = any(f"<{k}>" in rule.rule or f":{k}>" in rule.rule for k in _AGENCY_OWNED_API)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            calls.append(
                (method != "GET", rule.endpoint, method, _concrete(rule.rule, names), query, owned, rule.rule)
            )
    assert len(calls) >= 30
    leaks = []
    # Reads first, so a write that succeeds cannot hide what a read would have shown.
    for _write, endpoint, method, path, query, owned, rule in sorted(calls):
        allowed = set(ENDPOINT_ROLES[endpoint]) | {"system_admin"}
        for role in scoped:
            if role not in allowed:
                continue
            for params in ({}, query) if query else ({},):
                response = client.open(
                    path, method=method, headers=headers[role], json={}, query_string=params
                )
                seen = _seen(response)
                found = sorted(s for s in sentinels if s in seen)
                if found:
                    leaks.append(f"{method} {path} {params} as {role}-a shows {found}")
                if owned and 200 <= response.status_code < 300:
                    leaks.append(f"{method} {path} as {role}-a answers {response.status_code} for B's object")
                if owned:
                    # No existence oracle: B's object is answered like one that does not exist.
                    absent = client.open(
                        _concrete(rule), method=method, headers=headers[role], json={}, query_string=params
                    )
                    if absent.status_code != response.status_code:
                        leaks.append(
                            f"{method} {path} as {role}-a: {response.status_code}, "
                            f"but {absent.status_code} for an object that does not exist"
                        )
    assert not leaks, "\n".join(leaks)


# -- the evidence workspace's pages (/workspace/, issue 13) -------------------------------------------
# Each page takes the roles of the API endpoint serving the same data (``zfjl_api_endpoint``), so the
# same table is checked here through the pages' cookie sessions.

_WORKSPACE_OPEN = ("workspace.index", "workspace.login_form", "workspace.login", "workspace.logout")


def _workspace_calls(app: Flask, names: dict[str, str] | None = None) -> list[tuple[str, str, str, str]]:
    """(API endpoint whose roles apply, method, path, rule) of every workspace page behind a session."""
    calls = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/workspace/"):
            continue
        api = getattr(app.view_functions[rule.endpoint], "zfjl_api_endpoint", None)
        if api is None:
            assert rule.endpoint in _WORKSPACE_OPEN, f"{rule.endpoint} names no API endpoint for its roles"
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            calls.append((api, method, _concrete(rule.rule, names), rule.rule))
    return calls


def _workspace_client(app: Flask, username: str) -> tuple[FlaskClient, str]:
    """A browser-like client logged in to the workspace, and the CSRF value of its session."""
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


def test_every_workspace_page_allows_exactly_its_roles(app: Flask, world: World) -> None:
    calls = _workspace_calls(app)
    assert len(calls) >= 8
    wrong = []
    for role in ROLES:
        client, csrf = _workspace_client(app, f"{role}-a")
        for api, method, path, _rule in calls:
            allowed = set(ENDPOINT_ROLES[api]) | {"system_admin"}
            form = {"csrf_token": csrf} if method == "POST" else None
            response = client.open(path, method=method, data=form)
            if (response.status_code == 403) == (role in allowed):
                wrong.append(f"{method} {path} as {role}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_every_workspace_page_needs_a_session(app: Flask, client: FlaskClient) -> None:
    for _api, method, path, _rule in _workspace_calls(app):
        response = client.open(path, method=method)
        assert response.status_code == 303, (method, path, response.status_code)
        assert "/workspace/login" in response.headers["Location"]


def test_no_workspace_page_gives_agency_a_anything_of_agency_b(
    app: Flask, world: World, tmp_path: Path
) -> None:
    """JL-20 through the pages: as every agency-bound role of A, B's objects read like missing ones."""
    names, sentinels = _agency_b(app, world, tmp_path)
    supervisor, _csrf = _workspace_client(app, "supervisor-a")
    assert any(s in _seen(supervisor.get("/workspace/sessions")) for s in sentinels)
    assert any(s in _seen(supervisor.get("/workspace/cases")) for s in sentinels)
    scoped = [r for r in ROLES if r not in CROSS_AGENCY_READERS]
    leaks = []
    for role in scoped:
        client, csrf = _workspace_client(app, f"{role}-a")
        for api, method, path, rule in sorted(
            _workspace_calls(app, names), key=lambda c: (c[1] != "GET", c[2])
        ):
            if role not in set(ENDPOINT_ROLES[api]) | {"system_admin"}:
                continue
            data = {"csrf_token": csrf, "text": "说明", "marker_id": ""} if method == "POST" else None
            response = client.open(path, method=method, data=data)
            found = sorted(s for s in sentinels if s in _seen(response))
            if found:
                leaks.append(f"{method} {path} as {role}-a shows {found}")
            owned = any(f"<{k}>" in rule or f":{k}>" in rule for k in _AGENCY_OWNED)
            if owned:
                absent = client.open(_concrete(rule), method=method, data=data)
                if not (response.status_code == absent.status_code == 404):
                    leaks.append(
                        f"{method} {path} as {role}-a: {response.status_code} vs {absent.status_code}"
                    )
    assert not leaks, "\n".join(leaks)
