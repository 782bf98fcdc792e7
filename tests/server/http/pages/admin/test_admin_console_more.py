"""Console pages over APIs that already existed: provisioning (requests, serial allow-list) and rollouts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.accounts.service import create_user
from server.domain.audit import AuditLog
from server.domain.fleet import service as fleet_service
from server.domain.fleet.models import Device, ProvisioningRequest, SerialAllowlistEntry
from server.domain.fleet.rollout_models import Rollout
from server.http.pages.admin.console import TEXT
from server.infra.db import session_scope
from tests.conftest import raw_public_key
from tests.edge_agent.test_updates import make_bundle
from tests.server.domain.fleet.test_rollouts import _group, _register, _trust
from tests.server.http.pages.admin.test_admin_console import PASSWORD, _login


@pytest.fixture
def accounts(app: Flask) -> None:
    """A device admin and a supervisor (reads the fleet, manages nothing)."""
    with session_scope(app) as session:
        for role in ("device_admin", "supervisor"):
            create_user(session, f"{role}-c", PASSWORD, role)


def _request(app: Flask, device_id: str, serial: str) -> int:
    with session_scope(app) as session:
        req, _, issued = fleet_service.request_provisioning(
            session, device_id, raw_public_key(Ed25519PrivateKey.generate()), serial=serial, model="DSJ-X1"
        )
        assert issued is None
        return req.id


def _actions(app: Flask) -> list[str]:
    with session_scope(app) as session:
        return [row.action for row in session.scalars(select(AuditLog).order_by(AuditLog.id))]


def test_provisioning_page_approves_refuses_and_adds_serials(
    app: Flask, client: FlaskClient, accounts: None
) -> None:
    """Pending requests are decided and serials allow-listed through the fleet services, audited."""
    first, second = _request(app, "rec-new-1", "SN-901"), _request(app, "rec-new-2", "SN-902")
    csrf = _login(client, "device_admin-c")
    html = client.get("/admin/provisioning").get_data(as_text=True)
    assert re.findall(r'data-request="(\d+)"', html) == [str(first), str(second)]
    assert TEXT["zh"]["pending_requests"] in html
    # No CSRF value: refused, nothing decided.
    assert client.post(f"/admin/provisioning/{first}/approve").status_code == 400
    answer = client.post(f"/admin/provisioning/{first}/approve", data={"csrf_token": csrf})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/admin/provisioning")
    assert client.post(f"/admin/provisioning/{second}/reject", data={"csrf_token": csrf}).status_code == 303
    # Deciding twice is the service's conflict, shown as a flash message.
    again = client.post(f"/admin/provisioning/{second}/approve", data={"csrf_token": csrf})
    assert again.status_code == 303
    page = client.get("/admin/provisioning").get_data(as_text=True)
    assert "申请已处理（rejected）" in page and "data-request=" not in page
    form = {"serials": "SN-1, SN-2\nSN-3", "model": "DSJ-X2", "csrf_token": csrf}
    client.get("/admin/provisioning?lang=en")  # remembered: the next messages are in English
    assert client.post("/admin/allowlist", data=form).status_code == 303
    page = client.get("/admin/provisioning?lang=en").get_data(as_text=True)
    assert "3 new serial(s) added" in page
    assert sorted(re.findall(r'data-serial="([^"]+)"', page)) == ["SN-1", "SN-2", "SN-3"]
    with session_scope(app) as session:
        assert session.get(Device, "rec-new-1") is not None
        assert session.get(Device, "rec-new-2") is None
        req = session.get(ProvisioningRequest, second)
        assert req is not None and req.state == "rejected"
        entry = session.get(SerialAllowlistEntry, "SN-2")
        assert entry is not None and entry.model == "DSJ-X2"
    actions = _actions(app)
    for action in (
        "device.provisioning_view",
        "device.provision_approve",
        "device.provision_reject",
        "device.allowlist_add",
    ):
        assert action in actions


def test_provisioning_is_for_device_admins_only(app: Flask, client: FlaskClient, accounts: None) -> None:
    """ENDPOINT_ROLES of fleet.pending_requests / decide_request / allowlist_add: not a supervisor."""
    request_id = _request(app, "rec-new-3", "SN-903")
    csrf = _login(client, "supervisor-c")
    assert client.get("/admin/provisioning").status_code == 403
    data = {"csrf_token": csrf}
    assert client.post(f"/admin/provisioning/{request_id}/approve", data=data).status_code == 403
    assert client.post("/admin/allowlist", data=data | {"serials": "SN-9"}).status_code == 403
    with session_scope(app) as session:
        assert session.get(Device, "rec-new-3") is None
        assert session.get(SerialAllowlistEntry, "SN-9") is None


def test_provisioning_page_removes_an_unused_serial(app: Flask, client: FlaskClient, accounts: None) -> None:
    """The remove button is shown for unused serials only; removal is audited, a used serial stays."""
    with session_scope(app) as session:
        fleet_service.add_allowed_serials(session, ["SN-A", "SN-B"], actor="test")
        fleet_service.request_provisioning(
            session, "rec-used", raw_public_key(Ed25519PrivateKey.generate()), serial="SN-A"
        )
    csrf = _login(client, "device_admin-c")
    html = client.get("/admin/provisioning").get_data(as_text=True)
    assert html.count('name="serial" value=') == 1 and 'name="serial" value="SN-B"' in html
    assert client.post("/admin/allowlist/remove", data={"serial": "SN-B"}).status_code == 400  # no CSRF
    client.get("/admin/provisioning?lang=en")
    done = client.post("/admin/allowlist/remove", data={"serial": "SN-B", "csrf_token": csrf})
    assert done.status_code == 303
    assert "SN-B removed from the allow-list" in client.get("/admin/provisioning").get_data(as_text=True)
    client.post("/admin/allowlist/remove", data={"serial": "SN-A", "csrf_token": csrf})
    assert "stays as its record" in client.get("/admin/provisioning").get_data(as_text=True)
    with session_scope(app) as session:
        assert session.get(SerialAllowlistEntry, "SN-B") is None
        assert session.get(SerialAllowlistEntry, "SN-A") is not None
    assert "device.allowlist_remove" in _actions(app)
    client.post("/admin/logout", data={"csrf_token": csrf})
    csrf = _login(client, "supervisor-c")
    refused = client.post("/admin/allowlist/remove", data={"serial": "SN-A", "csrf_token": csrf})
    assert refused.status_code == 403


def test_rollouts_page_lists_bundles_and_starts_a_rollout_for_a_group(
    app: Flask, client: FlaskClient, accounts: None, tmp_path: Path
) -> None:
    """The bundle list, a started rollout with per-device results; readers look, admins start."""
    key = Ed25519PrivateKey.generate()
    _trust(app, key)
    bundle = make_bundle(tmp_path, "1.1.0", key)
    with session_scope(app) as session:
        _group(session, 3)
    with session_scope(app) as session:
        bundle_id = _register(app, session, bundle)
    csrf = _login(client, "device_admin-c")
    html = client.get("/admin/rollouts").get_data(as_text=True)
    assert f'data-bundle="{bundle_id}"' in html and 'id="start-rollout"' in html
    assert TEXT["zh"]["no_rollouts"] in html
    client.get("/admin/rollouts?lang=en")  # remembered: the next messages are in English
    bad = {"bundle_id": bundle_id, "group": "traffic", "batch_size": "x", "csrf_token": csrf}
    assert client.post("/admin/rollouts", data=bad).status_code == 303
    assert "batch_size must be an integer" in client.get("/admin/rollouts?lang=en").get_data(as_text=True)
    form = {"bundle_id": bundle_id, "group": "traffic", "batch_size": "2", "csrf_token": csrf}
    assert client.post("/admin/rollouts", data=form).status_code == 303
    with session_scope(app) as session:
        rollout = session.scalars(select(Rollout)).one()
        rollout_id, threshold = rollout.id, rollout.success_threshold_pct
    assert threshold == 100  # the API's default
    page = client.get("/admin/rollouts?lang=en").get_data(as_text=True)
    assert f"Rollout {rollout_id} created" in page
    section = page[page.index(f'data-rollout="{rollout_id}"') :]
    assert re.findall(r'<tr data-device="([^"]+)">', section) == ["rec-1", "rec-2", "rec-3"]
    assert section.count("<td>queued</td>") == 2 and section.count("<td>pending</td>") == 1
    assert "device.rollouts_view" in _actions(app)

    client.post("/admin/logout", data={"csrf_token": csrf})
    csrf = _login(client, "supervisor-c")
    html = client.get("/admin/rollouts").get_data(as_text=True)
    assert f'data-rollout="{rollout_id}"' in html and 'id="start-rollout"' not in html
    assert client.post("/admin/rollouts", data=form | {"csrf_token": csrf}).status_code == 403


def test_groups_page_lists_members_and_sets_a_group_config(
    app: Flask, client: FlaskClient, accounts: None
) -> None:
    """Member counts and the latest group config; the form goes through device_config.set_desired."""
    from server.domain.fleet import config as device_config

    with session_scope(app) as session:
        _group(session, 3)
        device_config.set_desired(
            session, scope="group", target="patrol", settings={"segment_seconds": 60}, actor="t"
        )
    csrf = _login(client, "device_admin-c")
    html = client.get("/admin/groups").get_data(as_text=True)
    assert re.findall(r'data-group="([^"]+)"', html) == ["patrol", "traffic"]
    traffic = html[html.index('data-group="traffic"') :]
    assert '<td class="members">3</td>' in traffic and 'id="group-config"' in html
    assert "<code>segment_seconds=60</code>" in html
    form = {"group": "traffic", "cfg_fps": "12", "cfg_bitrate_kbps": "800"}
    assert client.post("/admin/groups/config", data=form).status_code == 400  # no CSRF
    client.get("/admin/groups?lang=en")
    assert client.post("/admin/groups/config", data=form | {"csrf_token": csrf}).status_code == 303
    page = client.get("/admin/groups").get_data(as_text=True)
    assert "Group traffic: desired configuration is now version" in page
    traffic = page[page.index('data-group="traffic"') :]
    assert "<code>bitrate_kbps=800</code>" in traffic and "<code>fps=12</code>" in traffic
    bad = form | {"cfg_fps": "90", "csrf_token": csrf}
    assert client.post("/admin/groups/config", data=bad).status_code == 303
    assert "fps must be an integer 1..60" in client.get("/admin/groups").get_data(as_text=True)
    with session_scope(app) as session:
        desired = device_config.desired_for(session, "rec-1")
        assert desired is not None and desired.settings == {"fps": 12, "bitrate_kbps": 800}
    actions = _actions(app)
    assert "device.groups_view" in actions and "device.config_desired" in actions

    client.post("/admin/logout", data={"csrf_token": csrf})
    csrf = _login(client, "supervisor-c")
    html = client.get("/admin/groups").get_data(as_text=True)
    assert 'data-group="traffic"' in html and 'id="group-config"' not in html
    refused = client.post("/admin/groups/config", data=form | {"csrf_token": csrf})
    assert refused.status_code == 403
