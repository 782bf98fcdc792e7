"""JL-19 disposal and JL-20 approval through the API, on SQLite and PostgreSQL: a second person of the right
role decides, never the requester; the tombstone is a ledger leaf, and deleting it is detected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text

from server.domain.audit import AuditLog
from server.domain.evidence.models import Recording
from server.domain.evidence.scrub import scrub
from server.domain.governance import approvals, ledger, retention
from server.domain.governance.approvals_models import GovernanceDecision
from server.domain.governance.ledger import LedgerSigner
from server.domain.governance.retention_models import DisposalTombstone
from server.infra.db import session_scope
from server.infra.storage import STORE_KEY
from tests.server.domain.governance.governance_fixtures import Gov, app, gov, login, world

__all__ = ["app", "gov", "world"]

KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def _key_of(gov: Gov, recording_id: int) -> str:
    with session_scope(gov.app) as session:
        rec = session.get(Recording, recording_id)
        assert rec is not None
        return rec.object_key


def _stored(gov: Gov, recording_id: int) -> bool:
    return bool(gov.app.extensions[STORE_KEY].exists(_key_of(gov, recording_id)))


def _file(client: FlaskClient, who: str, **body: Any) -> Any:
    return client.post("/api/v1/governance/requests", headers=login(client, who), json=body)


def _decide(
    client: FlaskClient, who: str, request_id: int, outcome: str = "approve", reason: str = ""
) -> Any:
    return client.post(
        f"/api/v1/governance/requests/{request_id}/decision",
        headers=login(client, who),
        json={"outcome": outcome, "reason": reason},
    )


def _audits(gov: Gov, action: str) -> list[AuditLog]:
    with session_scope(gov.app) as session:
        return list(session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def test_jl19_a_disposal_request_inside_retention_is_refused(gov: Gov, client: FlaskClient) -> None:
    rid = gov.rec_a[0]
    with session_scope(gov.app) as session:
        retention.assign_category(session, gov.caller("legal_reviewer-a"), rid, "complaint", "信访")
    answer = _file(client, "legal_reviewer-a", kind="disposal", purpose="保存期满", recording_ids=[rid])
    assert answer.status_code == 409, answer.get_json()
    assert answer.get_json()["error"]["code"] == "disposal_refused"
    assert "retained until" in answer.get_json()["error"]["message_en"]
    assert client.get("/api/v1/governance/requests", headers=login(client, "agency_head-a")).get_json() == {
        "items": []
    }
    assert _stored(gov, rid)


def test_jl19_the_requester_approving_their_own_disposal_is_refused_and_a_second_head_disposes(
    gov: Gov, client: FlaskClient
) -> None:
    rid = gov.rec_a[0]
    filed = _file(
        client, "agency_head-a", kind="disposal", purpose="保存期满，无案件关联", recording_ids=[rid]
    )
    assert filed.status_code == 201, filed.get_json()
    request_id = filed.get_json()["id"]
    assert filed.get_json()["status"] == "pending"

    own = _decide(client, "agency_head-a", request_id)
    assert own.status_code == 403 and own.get_json()["error"]["code"] == "self_approval"
    assert _stored(gov, rid)
    assert [a.detail_dict().get("refused") for a in _audits(gov, "governance.decide")] == ["self_approval"]
    # Nobody else of the right role but the head: a reviewer is refused by the roles table.
    assert _decide(client, "legal_reviewer-a", request_id).status_code == 403
    # A head of another agency does not even see it.
    assert _decide(client, "head-b", request_id).status_code == 404
    assert _stored(gov, rid)

    done = _decide(client, "head2-a", request_id, reason="同意销毁")
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "done"
    assert not _stored(gov, rid)
    assert _stored(gov, gov.rec_a[1])  # only what was approved
    with session_scope(gov.app) as session:
        stone = session.scalars(select(DisposalTombstone)).one()
        rec = session.get(Recording, rid)
        assert rec is not None  # the row stays: the ledger still proves what was stored
        assert (stone.recording_id, stone.sha256, stone.size) == (rid, rec.sha256, rec.size)
        assert (stone.requested_by, stone.approved_by) == (
            str(gov.users["agency_head-a"]),
            str(gov.users["head2-a"]),
        )
        assert stone.reason == "保存期满，无案件关联" and stone.categories == ["routine"]
    again = _decide(client, "head2-a", request_id)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_decided"
    media = client.get(f"/api/v1/recordings/{rid}/media", headers=login(client, "agency_head-a"))
    assert media.status_code == 409 and media.get_json()["error"]["code"] == "evidence_disposed"
    detail = client.get(f"/api/v1/recordings/{rid}", headers=login(client, "agency_head-a"))
    assert detail.status_code == 200  # the metadata and the tombstone stay readable
    stones = client.get("/api/v1/governance/disposals", headers=login(client, "auditor-a")).get_json()[
        "items"
    ]
    assert [s["recording_id"] for s in stones] == [rid]
    retention_view = client.get(
        f"/api/v1/governance/recordings/{rid}/retention", headers=login(client, "legal_reviewer-a")
    ).get_json()
    assert retention_view["disposed"] is True and retention_view["disposable"] is False


def test_jl19_disposal_of_evidence_linked_to_an_open_case_is_refused_even_when_approved(
    gov: Gov, client: FlaskClient
) -> None:
    rid = gov.rec_a[1]
    filed = _file(client, "legal_reviewer-a", kind="disposal", purpose="保存期满", recording_ids=[rid])
    assert filed.status_code == 201
    gov.open_case([rid])  # linked to a case after the request was filed
    refused = _decide(client, "agency_head-a", filed.get_json()["id"])
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "disposal_refused"
    assert "open case" in refused.get_json()["error"]["message_en"]
    assert _stored(gov, rid)
    with session_scope(gov.app) as session:
        assert session.scalars(select(DisposalTombstone)).first() is None
        assert session.scalars(select(GovernanceDecision)).first() is None  # nothing half-done
    # And a new request is refused at once.
    again = _file(client, "legal_reviewer-a", kind="disposal", purpose="保存期满", recording_ids=[rid])
    assert again.status_code == 409


def test_jl19_an_officer_may_not_ask_to_dispose_and_nothing_is_deleted_without_a_token(
    gov: Gov, client: FlaskClient
) -> None:
    rid = gov.rec_a[0]
    officer = _file(client, "officer-a", kind="disposal", purpose="清理", recording_ids=[rid])
    assert officer.status_code == 403 and officer.get_json()["error"]["code"] == "governance_forbidden"
    filed = _file(client, "legal_reviewer-a", kind="disposal", purpose="保存期满", recording_ids=[rid])
    anonymous = client.post(
        f"/api/v1/governance/requests/{filed.get_json()['id']}/decision", json={"outcome": "approve"}
    )
    assert anonymous.status_code == 401
    assert _stored(gov, rid)


def test_jl20_an_officer_of_another_agency_cannot_ask_for_this_agencys_evidence(
    gov: Gov, client: FlaskClient
) -> None:
    theirs = _file(client, "officer-b", kind="access", purpose="查看", recording_ids=[gov.rec_a[0]])
    missing = _file(client, "officer-b", kind="access", purpose="查看", recording_ids=[999999])
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json()["error"]["message_en"] == f"recording {gov.rec_a[0]} not found"
    mixed = _file(client, "supervisor-a", kind="retrieval", purpose="调取", recipient="省审计厅",
                  recipient_body="audit", recording_ids=[gov.rec_a[0], gov.rec_b[0]])  # fmt: skip
    assert mixed.status_code == 400  # one request, one agency: one head decides it


def test_jl20_external_provision_names_its_recipient_and_the_grant_expires_by_itself(
    gov: Gov, client: FlaskClient
) -> None:
    no_recipient = _file(
        client, "officer-a", kind="external_provision", purpose="新闻发布", recording_ids=[1]
    )
    assert no_recipient.status_code == 400 and "recipient" in no_recipient.get_json()["error"]["message_en"]
    filed = _file(
        client,
        "officer-a",
        kind="external_provision",
        purpose="法院调取前的证据交换",
        recipient="合肥市蜀山区人民法院",
        recording_ids=[gov.rec_a[0]],
        duration_days=3,
    )
    assert filed.status_code == 201, filed.get_json()
    body = filed.get_json()
    assert (body["actions"], body["duration_days"], body["recipient"]) == (
        ["provide"],
        3,
        "合肥市蜀山区人民法院",
    )
    decided = _decide(client, "agency_head-a", body["id"], reason="同意")
    assert decided.status_code == 200
    decision = decided.get_json()["decision"]
    granted_at = datetime.fromisoformat(decision["decided_at"])
    assert datetime.fromisoformat(decision["expires_at"]) - granted_at == timedelta(days=3)
    grants = client.get("/api/v1/governance/grants", headers=login(client, "officer-a")).get_json()["items"]
    assert [g["id"] for g in grants] == [body["id"]]
    with session_scope(gov.app) as session:
        officer = gov.caller("officer-a")
        assert approvals.grant_for(
            session, officer, gov.rec_a[0], ("provide",), granted_at + timedelta(days=2)
        )
        assert (
            approvals.grant_for(session, officer, gov.rec_a[0], ("provide",), granted_at + timedelta(days=3))
            is None
        )
        assert approvals.grant_for(session, officer, gov.rec_a[1], ("provide",), granted_at) is None
        # Another officer does not borrow it.
        assert (
            approvals.grant_for(session, gov.caller("officer2-a"), gov.rec_a[0], ("provide",), granted_at)
            is None
        )


def test_jl20_a_rejection_needs_a_reason_and_grants_nothing(gov: Gov, client: FlaskClient) -> None:
    filed = _file(
        client, "officer-a", kind="access", purpose="学习", actions=["copy"], recording_ids=[gov.rec_a[0]]
    )
    request_id = filed.get_json()["id"]
    assert _decide(client, "agency_head-a", request_id, outcome="reject").status_code == 400
    rejected = _decide(client, "agency_head-a", request_id, outcome="reject", reason="与职责无关")
    assert rejected.get_json()["status"] == "rejected"
    assert (
        client.get("/api/v1/governance/grants", headers=login(client, "officer-a")).get_json()["items"] == []
    )


def test_jl20_retrieval_by_a_supervisory_body_is_its_own_request_type_decided_by_the_agency_head(
    gov: Gov, client: FlaskClient
) -> None:
    no_body = _file(client, "supervisor-a", kind="retrieval", purpose="执法监督", recipient="省司法厅",
                    recording_ids=[gov.rec_b[0]])  # fmt: skip
    assert no_body.status_code == 400 and "recipient_body" in no_body.get_json()["error"]["message_en"]
    filed = _file(client, "supervisor-a", kind="retrieval", purpose="执法监督检查", recipient="省司法厅",
                  recipient_body="supervisory", recording_ids=[gov.rec_b[0]], duration_days=10)  # fmt: skip
    assert filed.status_code == 201, filed.get_json()
    body = filed.get_json()
    assert (body["kind"], body["agency_id"], body["recipient_body"]) == (
        "retrieval",
        gov.world.agency_b,
        "supervisory",
    )
    # B's head sees it in the queue; A's head does not.
    queue_b = client.get("/api/v1/governance/requests?pending=1", headers=login(client, "head-b")).get_json()
    assert [r["id"] for r in queue_b["items"]] == [body["id"]]
    queue_a = client.get("/api/v1/governance/requests", headers=login(client, "agency_head-a")).get_json()
    assert queue_a["items"] == []
    assert _decide(client, "agency_head-a", body["id"]).status_code == 404
    assert _decide(client, "head-b", body["id"]).get_json()["status"] == "approved"
    assert [a.action for a in _audits(gov, "governance.request")] == ["governance.request"]


def test_jl19_jl20_requests_decisions_and_tombstones_are_ledger_leaves_and_a_deleted_tombstone_is_detected(
    gov: Gov, client: FlaskClient
) -> None:
    rid = gov.rec_a[0]
    filed = _file(client, "legal_reviewer-a", kind="disposal", purpose="保存期满", recording_ids=[rid])
    _decide(client, "agency_head-a", filed.get_json()["id"], reason="同意")
    signer = LedgerSigner.from_ingest_key(KEY)
    with session_scope(gov.app) as session:
        ledger.sequence(session)
        ledger.checkpoint(session, signer)
        stone = session.scalars(select(DisposalTombstone)).one()
        leaf = ledger.leaf_for(session, "disposal_tombstones", stone.id)
        assert leaf.kind == "disposal" and f'"sha256":"{stone.sha256}"' in leaf.data
        assert (
            ledger.leaf_for(session, "governance_requests", filed.get_json()["id"]).kind
            == "governance_request"
        )
        decision_id = session.scalars(select(GovernanceDecision.id)).one()
        assert ledger.leaf_for(session, "governance_decisions", decision_id).kind == "governance_decision"
        assert ledger.verify_ledger(session, signer.verifier).ok
    # The database itself refuses to delete a tombstone …
    with pytest.raises(Exception, match="append-only"), session_scope(gov.app) as session:
        session.execute(text("DELETE FROM disposal_tombstones"))
    # … and an insider who switches the refusal off is caught by the ledger.
    with session_scope(gov.app) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ALTER TABLE disposal_tombstones DISABLE TRIGGER USER"))
        else:
            session.execute(text("DROP TRIGGER disposal_tombstones_no_delete"))
        session.execute(text("DELETE FROM disposal_tombstones"))
    with session_scope(gov.app) as session:
        report = ledger.verify_ledger(session, signer.verifier)
        assert [(p.code, p.leaf_index) for p in report.problems] == [("row_deleted", leaf.leaf_index)]


def test_jl20_requests_are_checked_precisely(gov: Gov, client: FlaskClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"purpose": "x", "recording_ids": [1]}, "kind must be one of"),
        ({"kind": "access", "recording_ids": [1]}, "missing field: purpose"),
        ({"kind": "access", "purpose": "x"}, "give recording_ids or case_id"),
        ({"kind": "access", "purpose": "x", "recording_ids": ["1"]}, "recording_ids[0] must be integer"),
        (
            {"kind": "access", "purpose": "x", "recording_ids": [1], "duration_days": 91},
            "duration_days out of range [1, 90]",
        ),
        (
            {"kind": "access", "purpose": "x", "recording_ids": [1], "actions": ["provide"]},
            "external_provision",
        ),
        (
            {"kind": "access", "purpose": "x", "recording_ids": [1], "actions": ["delete"]},
            "actions[0] must be one of",
        ),
    ]
    wrong = []
    for body, message in cases:
        answer = _file(client, "officer-a", **body)
        if answer.status_code != 400 or message not in answer.get_json()["error"]["message_en"]:
            wrong.append((body, answer.status_code, answer.get_json()))
    assert not wrong


def test_jl20_a_request_by_case_covers_every_recording_linked_to_it(gov: Gov, client: FlaskClient) -> None:
    case_id = gov.open_case(gov.rec_a)
    filed = _file(client, "officer-a", kind="access", purpose="复核", actions=["export"], case_id=case_id)
    assert filed.status_code == 201
    assert filed.get_json()["recording_ids"] == sorted(gov.rec_a)
    other = _file(client, "officer-b", kind="access", purpose="复核", case_id=case_id)
    assert other.status_code == 404


def test_jl20_expired_grant_reads_as_expired(gov: Gov) -> None:
    with session_scope(gov.app) as session:
        new = approvals.RequestInput(
            kind="access", purpose="复核", actions=("view",), recording_ids=(gov.rec_a[0],), duration_days=1
        )
        req = approvals.create_request(session, gov.caller("officer-a"), new)
        t0 = datetime(2026, 11, 1, tzinfo=UTC)
        decision = approvals.decide(session, None, gov.caller("agency_head-a"), req.id, "approve", "", now=t0)
        assert approvals.status_of(decision, t0 + timedelta(hours=23)) == "approved"
        assert approvals.status_of(decision, t0 + timedelta(days=1)) == "expired"


def test_jl19_the_scrubber_skips_a_disposed_recordings_object_but_still_finds_a_lost_one(
    gov: Gov, client: FlaskClient
) -> None:
    """Bytes destroyed by an approved disposal are not missing evidence; bytes gone without one are."""
    disposed, lost = gov.rec_a
    filed = _file(
        client, "agency_head-a", kind="disposal", purpose="保存期满，无案件关联", recording_ids=[disposed]
    )
    assert _decide(client, "head2-a", filed.get_json()["id"]).get_json()["status"] == "done"
    store = gov.app.extensions[STORE_KEY]
    store.delete(_key_of(gov, lost))  # an insider removes another recording's object, no disposal
    with session_scope(gov.app) as session:
        report = scrub(session, store, device_id="dev-a", checkpoint=session.commit)
    assert report.recordings == 2
    assert [(f.recording_id, f.code) for f in report.findings] == [(lost, "object_missing")]
