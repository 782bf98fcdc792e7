"""JL-16 second clause: written explanations are signed by two distinct officers in good standing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from protocol.session import SessionEventKind
from server.domain.people.models import Officer
from server.domain.sessions.models import ExplanationSignature
from server.infra.db import session_scope
from server.ingest.service import IngestService
from tests.server.domain.sessions.conftest import Recorder, hand_over, make_officer, send
from tests.server.domain.sessions.test_sessions import login, s, session_pk, timeline

K = SessionEventKind


def interrupted_session(recorder: Recorder, ingest: IngestService) -> int:
    """A session that ended while interrupted: recording could not resume (JL-16, second clause)."""
    send(ingest, recorder.event(K.STARTED, s(0)))
    recorder.clip(s(0), 60)
    send(ingest, recorder.event(K.INTERRUPTED, s(60), marker_id="m1", cause="device_fault"))
    send(ingest, recorder.event(K.ENDED, s(90)))
    return session_pk(recorder.app, recorder.device_id)


def file(client: FlaskClient, pk: int, username: str) -> Any:
    """File an explanation for marker m1 as ``username``."""
    return client.post(
        f"/api/v1/sessions/{pk}/explanations",
        json={"text": "执法记录仪故障，无法恢复录制。", "marker_id": "m1"},
        headers=login(client, username),
    )


def cosign(client: FlaskClient, pk: int, eid: int, username: str) -> Any:
    """Co-sign explanation ``eid`` as ``username``."""
    return client.post(
        f"/api/v1/sessions/{pk}/explanations/{eid}/signatures", headers=login(client, username)
    )


def code(response: Any) -> str:
    """The error code of a refused request."""
    return response.get_json()["error"]["code"]


def officer_pk(app: Flask, certificate: str) -> int:
    """The register id of the officer holding ``certificate``."""
    with session_scope(app) as session:
        pk = session.scalar(select(Officer.id).where(Officer.certificate_number == certificate))
    assert pk is not None
    return pk


def test_jl16_signatures_record_officer_and_certificate(recorder: Recorder, ingest: IngestService) -> None:
    app = recorder.app
    pk = interrupted_session(recorder, ingest)
    make_officer(app, "officer-a", certificate="皖A-0001")
    make_officer(app, "officer-b", role="agency_head", certificate="皖A-0002")
    client = app.test_client()
    filed = file(client, pk, "officer-a")
    assert filed.status_code == 201, filed.get_json()
    body = cosign(client, pk, filed.get_json()["id"], "officer-b").get_json()
    assert body["complete"] and body["signature_count"] == 2
    assert [(g["officer_name"], g["certificate_number"]) for g in body["signatures"]] == [
        ("officer-a 姓名", "皖A-0001"),
        ("officer-b 姓名", "皖A-0002"),
    ]
    tl = timeline(app, pk)
    assert tl["verdict"] == "gaps_explained"
    signers = tl["written_explanations"][0]["signatures"]
    assert [g["officer_id"] for g in signers] == [officer_pk(app, "皖A-0001"), officer_pk(app, "皖A-0002")]
    assert [g["certificate_number"] for g in signers] == ["皖A-0001", "皖A-0002"]
    assert [g["officer_name"] for g in signers] == ["officer-a 姓名", "officer-b 姓名"]
    with session_scope(app) as session:
        rows = session.scalars(select(ExplanationSignature).order_by(ExplanationSignature.id)).all()
        assert [r.certificate_number for r in rows] == ["皖A-0001", "皖A-0002"]


def test_jl16_accounts_without_officer_entry_or_auxiliary_staff_cannot_sign(
    recorder: Recorder, ingest: IngestService
) -> None:
    app = recorder.app
    pk = interrupted_session(recorder, ingest)
    make_officer(app, "unregistered", register=False)
    make_officer(app, "aux-c", kind="auxiliary")
    make_officer(app, "officer-a")
    client = app.test_client()
    for username in ("unregistered", "aux-c"):
        refused = file(client, pk, username)
        assert refused.status_code == 403 and code(refused) == "not_an_officer", username
    eid = file(client, pk, "officer-a").get_json()["id"]
    for username in ("unregistered", "aux-c"):
        refused = cosign(client, pk, eid, username)
        assert refused.status_code == 403 and code(refused) == "not_an_officer", username
    assert timeline(app, pk)["verdict"] == "gaps_unexplained"


def test_jl16_suspended_revoked_and_expired_officers_cannot_sign(
    recorder: Recorder, ingest: IngestService
) -> None:
    app = recorder.app
    pk = interrupted_session(recorder, ingest)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    make_officer(app, "suspended", status="suspended")
    make_officer(app, "revoked", status="revoked")
    make_officer(app, "expired", valid_to=yesterday)
    make_officer(app, "officer-a")
    client = app.test_client()
    assert code(file(client, pk, "suspended")) == "officer_not_active"
    expired = file(client, pk, "expired")
    assert expired.status_code == 403 and code(expired) == "certificate_expired"
    eid = file(client, pk, "officer-a").get_json()["id"]
    for username, expected in (
        ("suspended", "officer_not_active"),
        ("revoked", "officer_not_active"),
        ("expired", "certificate_expired"),
    ):
        refused = cosign(client, pk, eid, username)
        assert refused.status_code == 403 and code(refused) == expected, username
    assert timeline(app, pk)["verdict"] == "gaps_unexplained"


def test_jl16_one_officer_through_two_accounts_counts_once(recorder: Recorder, ingest: IngestService) -> None:
    app = recorder.app
    pk = interrupted_session(recorder, ingest)
    make_officer(app, "officer-a", certificate="皖A-0001")
    second_account = make_officer(app, "officer-a-new", register=False)
    client = app.test_client()
    eid = file(client, pk, "officer-a").get_json()["id"]
    # The register entry is moved to the officer's new account: still the same officer.
    with session_scope(app) as session:
        session.execute(update(Officer).where(Officer.certificate_number == "皖A-0001").values(user_id=None))
        session.execute(
            update(Officer).where(Officer.certificate_number == "皖A-0001").values(user_id=second_account)
        )
    refused = cosign(client, pk, eid, "officer-a-new")
    assert refused.status_code == 409 and code(refused) == "same_officer"
    tl = timeline(app, pk)
    assert tl["verdict"] == "gaps_unexplained" and tl["written_explanations"][0]["signature_count"] == 1


def test_jl16_signers_must_share_the_session_officers_agency(
    recorder: Recorder, ingest: IngestService
) -> None:
    app = recorder.app
    # The recorder's events name officer "officer-7": the register entry with that certificate number.
    officer = make_officer(app, "officer-7", certificate="officer-7", agency="甲局")
    make_officer(app, "colleague", agency="甲局")
    make_officer(app, "outsider", agency="乙局")
    hand_over(app, recorder.device_id, officer)
    pk = interrupted_session(recorder, ingest)
    client = app.test_client()
    # JL-20: another agency's session is not even visible to the outsider.
    refused = file(client, pk, "outsider")
    assert refused.status_code == 404 and code(refused) == "not_found"
    filed = file(client, pk, "officer-7")
    assert filed.status_code == 201, filed.get_json()
    eid = filed.get_json()["id"]
    assert code(cosign(client, pk, eid, "outsider")) == "not_found"
    assert cosign(client, pk, eid, "colleague").status_code == 201
    assert timeline(app, pk)["verdict"] == "gaps_explained"
