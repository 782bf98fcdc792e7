"""External provision (JL-20) through an expiring link to a sealed export package, on SQLite and
PostgreSQL: refused and audited without approval, refused when the link is tampered with or expired,
and the package fetched through the link verifies offline with the ledger key and the agency's seal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from server.domain.audit import AuditLog
from server.domain.governance import ledger, provision
from server.domain.governance.models import LedgerLeaf
from server.infra.agency_keys import AgencyKeyring
from server.infra.db import session_scope
from tests.fixtures.evidence import assign, record_evidence
from tests.fixtures.people import World
from tests.server.domain.governance.governance_fixtures import app, login, world
from zfjl_verify.cli import main as verify_main

__all__ = ["app", "world"]


@dataclass
class Scene:
    """Agency A with one officer's two recordings (the lighter part of the governance scene)."""

    app: Flask
    world: World
    rec_a: list[int]


@pytest.fixture
def gov(app: Flask, world: World, tmp_path: Path) -> Scene:
    """Two signed recordings of agency A, stored through the real ingest."""
    evidence = record_evidence(app, tmp_path / "dev-a", "dev-a", session_id="sess-a")
    assign(app, "dev-a", world.users["officer"], world.agency_a)
    return Scene(app, world, evidence.recording_ids)


def _audits(gov: Scene, action: str) -> list[AuditLog]:
    with session_scope(gov.app) as session:
        return list(session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def _export(client: FlaskClient, who: str, request_id: int) -> Any:
    return client.post(f"/api/v1/governance/requests/{request_id}/export", headers=login(client, who))


def test_jl20_provision_by_link_refused_without_approval_expired_or_tampered_and_the_fetched_package_verifies(
    gov: Scene, client: FlaskClient, tmp_path: Path
) -> None:
    filed = client.post(
        "/api/v1/governance/requests",
        headers=login(client, "officer-a"),
        json={"kind": "external_provision", "purpose": "证据交换", "recipient": "合肥市蜀山区人民法院",
              "recording_ids": [gov.rec_a[0]], "duration_days": 2},
    )  # fmt: skip
    assert filed.status_code == 201, filed.get_json()
    request_id = filed.get_json()["id"]

    # Not approved yet: refused, and the refusal stays audited.
    pending = _export(client, "officer-a", request_id)
    assert pending.status_code == 403 and pending.get_json()["error"]["code"] == "approval_required"
    assert [json.loads(a.detail)["status"] for a in _audits(gov, "provision.refused")] == ["pending"]

    decided = client.post(
        f"/api/v1/governance/requests/{request_id}/decision",
        headers=login(client, "agency_head-a"),
        json={"outcome": "approve", "reason": "同意"},
    )
    assert decided.status_code == 200
    # Another officer of the agency neither sees nor provides it; another agency's head neither.
    assert _export(client, "auxiliary-a", request_id).status_code == 404
    assert _export(client, "officer-b", request_id).status_code == 404

    made = _export(client, "officer-a", request_id)
    assert made.status_code == 201, made.get_json()
    answer = made.get_json()
    link = "/provision/v1/" + answer["url"].rsplit("/provision/v1/", 1)[1]

    # The recipient has no account: the link alone fetches the sealed package.
    fetched = gov.app.test_client().get(link)
    assert fetched.status_code == 200 and fetched.mimetype == "application/zip"
    package = tmp_path / "provided.zip"
    package.write_bytes(fetched.get_data())
    settings = gov.app.extensions["zfjl.settings"]
    (tmp_path / "ledger.pub").write_text(
        ledger.LedgerSigner.from_ingest_key(settings.ingest_key).verifier.encode() + "\n"
    )
    agency_key = AgencyKeyring.from_settings(settings).verifier(gov.world.agency_a).encode()
    (tmp_path / "agency.pub").write_text(agency_key + "\n")
    argv = ["package", "--key", str(tmp_path / "ledger.pub"), "--agency-key", str(tmp_path / "agency.pub")]
    assert verify_main([*argv, str(package)]) == 0
    # Each download is audited, and the audit row becomes a ledger leaf.
    downloads = _audits(gov, "provision.download")
    assert [d.target_id for d in downloads] == [str(answer["export_id"])]
    with session_scope(gov.app) as session:
        ledger.sequence(session)
        assert None is not session.scalar(
            select(LedgerLeaf.leaf_index).where(
                LedgerLeaf.ref_table == "audit_log", LedgerLeaf.ref_id == downloads[0].id
            )
        )

    # A tampered link: another export id, another expiry, or an altered signature.
    export_id, expiry, mac = link.rsplit("/", 1)[1].split(".")
    for forged in (
        f"{int(export_id) + 1}.{expiry}.{mac}",
        f"{export_id}.{int(expiry) + 86400 * 30}.{mac}",
        f"{export_id}.{expiry}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",
        "not-a-link",
    ):
        refused = gov.app.test_client().get(f"/provision/v1/{forged}")
        assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "link_invalid", forged
    assert len(_audits(gov, "provision.link_refused")) == 4

    # The link expires with the grant.
    with session_scope(gov.app) as session, pytest.raises(provision.LinkExpired):
        provision.open_link(
            session, settings.jwt_secret, link.rsplit("/", 1)[1],
            now=provision.utcnow() + timedelta(days=2, minutes=1),
        )  # fmt: skip
    refusals = _audits(gov, "provision.link_refused")
    assert json.loads(refusals[-1].detail)["refused"] == "expired"
    assert len(_audits(gov, "provision.download")) == 1

    # A grant revoked early takes its link with it at once, and no new link is made.
    revoked = client.post(
        f"/api/v1/governance/requests/{request_id}/revoke",
        headers=login(client, "agency_head-a"),
        json={"reason": "法院已撤回调取"},
    )
    assert revoked.status_code == 200, revoked.get_json()
    gone = gov.app.test_client().get(link)
    assert gone.status_code == 403 and gone.get_json()["error"]["code"] == "link_expired"
    again = _export(client, "officer-a", request_id)
    assert again.status_code == 403 and again.get_json()["error"]["code"] == "approval_required"
    assert len(_audits(gov, "provision.download")) == 1
