"""JL-20 early revocation of a grant, on SQLite and PostgreSQL: the approver or a head of the agency revokes
with a reason, the grant stops working at once, the revocation is audited and a ledger leaf; another
agency cannot revoke it, and the requester cannot revoke it to file again on their own terms."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select, text

from server.domain.audit import AuditLog
from server.domain.governance import ledger
from server.domain.governance.approvals_models import GrantRevocation
from server.domain.governance.ledger import LedgerSigner
from server.infra.db import session_scope
from tests.server.domain.governance.governance_fixtures import Gov, app, gov, login, workspace_client, world

__all__ = ["app", "gov", "world"]

KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def _media(client: FlaskClient, who: str, recording_id: int) -> int:
    return client.get(f"/api/v1/recordings/{recording_id}/media", headers=login(client, who)).status_code


def _granted(client: FlaskClient, gov: Gov, requester: str, approver: str) -> tuple[int, int]:
    """A confidential recording of A and an approved view grant of ``requester`` on it."""
    rid = gov.rec_a[0]
    classified = client.post(
        f"/api/v1/governance/recordings/{rid}/access-class",
        headers=login(client, "agency_head-a"),
        json={"access_class": "confidential", "reason": "涉及个人隐私"},
    )
    assert classified.status_code == 200, classified.get_json()
    filed = client.post(
        "/api/v1/governance/requests",
        headers=login(client, requester),
        json={"kind": "access", "purpose": "复核执法过程", "recording_ids": [rid], "duration_days": 30},
    )
    assert filed.status_code == 201, filed.get_json()
    request_id = int(filed.get_json()["id"])
    decided = client.post(
        f"/api/v1/governance/requests/{request_id}/decision",
        headers=login(client, approver),
        json={"outcome": "approve"},
    )
    assert decided.status_code == 200, decided.get_json()
    return rid, request_id


def _revoke(client: FlaskClient, who: str, request_id: int, reason: str = "用途已完成") -> tuple[int, str]:
    answer = client.post(
        f"/api/v1/governance/requests/{request_id}/revoke",
        headers=login(client, who),
        json={"reason": reason},
    )
    body = answer.get_json()
    return answer.status_code, (body.get("error", {}).get("code", "") if "error" in body else body["status"])


def test_jl20_a_revoked_grant_stops_working_at_once_only_heads_of_its_agency_revoke_and_never_the_requester(
    gov: Gov, client: FlaskClient
) -> None:
    rid, request_id = _granted(client, gov, "officer-a", "agency_head-a")
    assert _media(client, "officer-a", rid) == 200
    assert _revoke(client, "agency_head-a", request_id, reason="") == (400, "invalid_request")
    assert _revoke(client, "head-b", request_id) == (404, "not_found")  # B does not see A's request
    assert _revoke(client, "legal_reviewer-a", request_id)[0] == 403  # not a head
    assert _revoke(client, "officer-a", request_id)[0] == 403  # the requester
    assert _media(client, "officer-a", rid) == 200  # none of those touched the grant
    # Another head of A, not the approver, revokes it in the workspace's approval queue.
    head2, csrf = workspace_client(gov.app, "head2-a")
    assert f"/workspace/approvals/{request_id}/revoke" in head2.get("/workspace/approvals").get_data(
        as_text=True
    )
    revoked = head2.post(
        f"/workspace/approvals/{request_id}/revoke", data={"reason": "用途已完成", "csrf_token": csrf}
    )
    assert revoked.status_code == 303
    page = head2.get("/workspace/approvals").get_data(as_text=True)
    assert f'data-request="{request_id}" data-status="revoked"' in page
    assert _media(client, "officer-a", rid) == 403  # at once
    grants = client.get("/api/v1/governance/grants", headers=login(client, "officer-a")).get_json()
    assert grants == {"items": []}
    shown = client.get(
        f"/api/v1/governance/requests/{request_id}", headers=login(client, "officer-a")
    ).get_json()
    assert shown["status"] == "revoked" and shown["revocation"]["reason"] == "用途已完成"
    assert _revoke(client, "agency_head-a", request_id) == (409, "not_revocable")  # once

    # A head who asked for a grant cannot revoke it to file again on their own terms, nor approve that.
    own_request = client.post(
        "/api/v1/governance/requests",
        headers=login(client, "agency_head-a"),
        json={"kind": "access", "purpose": "复制取证", "recording_ids": [rid], "actions": ["copy"]},
    ).get_json()["id"]
    assert (
        client.post(
            f"/api/v1/governance/requests/{own_request}/decision",
            headers=login(client, "head2-a"),
            json={"outcome": "approve"},
        ).status_code
        == 200
    )
    assert _revoke(client, "agency_head-a", own_request) == (403, "self_revocation")
    again = client.post(
        "/api/v1/governance/requests",
        headers=login(client, "agency_head-a"),
        json={
            "kind": "access",
            "purpose": "延长",
            "recording_ids": [rid],
            "actions": ["copy"],
            "duration_days": 90,
        },
    )
    assert again.status_code == 201
    self_approved = client.post(
        f"/api/v1/governance/requests/{again.get_json()['id']}/decision",
        headers=login(client, "agency_head-a"),
        json={"outcome": "approve"},
    )
    assert self_approved.status_code == 403 and self_approved.get_json()["error"]["code"] == "self_approval"
    assert _revoke(client, "head2-a", own_request) == (200, "revoked")  # its approver ends it

    with session_scope(gov.app) as session:
        audits = [
            (a.actor, a.detail_dict())
            for a in session.scalars(select(AuditLog).where(AuditLog.action == "governance.revoke"))
        ]
        assert (str(gov.users["agency_head-a"]), {"refused": "self_revocation"}) in audits
        done = [(actor, d["reason"]) for actor, d in audits if "reason" in d]
        assert done == [(str(gov.users["head2-a"]), "用途已完成")] * 2
        signer = LedgerSigner.from_ingest_key(KEY)
        ledger.sequence(session)
        ledger.checkpoint(session, signer)
        revocation = session.scalars(select(GrantRevocation).order_by(GrantRevocation.id)).first()
        assert revocation is not None
        leaf = ledger.leaf_for(session, "grant_revocations", revocation.id)
        assert leaf.kind == "grant_revocation"
        assert ledger.verify_ledger(session, signer.verifier).ok
        # An insider who deletes the revocation (to bring the grant back) is caught by the ledger.
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ALTER TABLE grant_revocations DISABLE TRIGGER USER"))
        else:
            session.execute(text("DROP TRIGGER grant_revocations_no_delete"))
        session.execute(text(f"DELETE FROM grant_revocations WHERE id = {revocation.id}"))
        report = ledger.verify_ledger(session, signer.verifier)
        assert [(p.code, p.leaf_index) for p in report.problems] == [("row_deleted", leaf.leaf_index)]
        session.rollback()
