"""Cases and the whole-process record: event catalogue, append-only log, attachments, recordings,
events from recorders over MQTT, and the completeness check (JL-2, JL-7 – JL-11)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from protocol import case_events
from protocol.case_events import CaseEventReport, SignedCaseEvent
from protocol.session import EventAckState
from server.domain.accounts.models import User
from server.domain.base import utcnow
from server.domain.cases import completeness as case_completeness
from server.domain.cases import device_events as case_device_events
from server.domain.cases import service as case_service
from server.domain.cases.inputs import CaseEventInput, NewCase
from server.domain.cases.models import Case, CaseEvent
from server.domain.errors import Invalid
from server.domain.evidence.models import Recording
from server.domain.fleet.models import Device, DeviceAssignment
from server.domain.people.models import Agency, Officer
from server.domain.people.service import Caller
from server.infra.db import session_scope
from server.ingest.service import IngestService
from tests.conftest import raw_public_key
from tests.fixtures.people import World, login

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def _case(client: FlaskClient, headers: dict[str, str], world: World, **extra: Any) -> int:
    body = {
        "number": "合市监罚〔2026〕7号",
        "act_kind": "penalty",
        "origin": "ex_officio",
        "officer_ids": [world.officer_a],
    }
    response = client.post("/api/v1/cases", json={**body, **extra}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def _event(
    client: FlaskClient, headers: dict[str, str], case_id: int, event_type: str, minute: int, **extra: Any
) -> int:
    body = {"event_type": event_type, "occurred_at": _at(minute), "officer_ids": [], **extra}
    response = client.post(f"/api/v1/cases/{case_id}/events", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def _missing(client: FlaskClient, headers: dict[str, str], case_id: int) -> set[str]:
    record = client.get(f"/api/v1/cases/{case_id}/record", headers=headers).get_json()
    return {m["requirement"] for m in record["completeness"]["missing"]}


def test_jl7_to_jl10_catalogue_covers_every_item(client: FlaskClient, world: World) -> None:
    items = client.get("/api/v1/cases/event-types", headers=login(client, "officer-a")).get_json()["items"]
    articles = {i["article"] for i in items}
    expected = {"JL-7"} | {f"JL-8({n})" for n in range(1, 12)} | {f"JL-9({n})" for n in range(1, 6)}
    expected |= {f"JL-10({n})" for n in range(1, 6)}
    assert expected <= articles
    # After the decision: reconsideration, litigation and transfers to the judicial organs (GS-17).
    assert {i["stage"] for i in items} == {"initiation", "investigation", "decision", "execution", "remedy"}


def test_jl9_penalty_completeness_rights_notice_legal_review_head_approval(
    client: FlaskClient, world: World
) -> None:
    officer = login(client, "officer-a")
    case_id = _case(client, officer, world, major=True)
    assert _missing(client, officer, case_id) == {
        "initiation.ex_officio_source",
        "investigation.credential_shown",
        "decision.decided",
    }
    _event(client, officer, case_id, "initiation.ex_officio_source", 0, text="群众举报")
    _event(client, officer, case_id, "investigation.credential_shown", 10, officer_ids=[world.officer_a])
    _event(client, officer, case_id, "decision.decided", 60)
    # JL-8(9) no prior notice of rights; JL-9(3) no legal review or discussion; JL-9(4) no head's approval.
    assert _missing(client, officer, case_id) == {
        "investigation.rights_notified",
        "decision.legal_review",
        "decision.collective_discussion",
        "decision.head_approval",
        "execution.served",
    }
    late_notice = _event(client, officer, case_id, "investigation.rights_notified", 70)
    assert "investigation.rights_notified" in _missing(
        client, officer, case_id
    )  # after the decision: too late
    reviewer, head = login(client, "legal_reviewer-a"), login(client, "agency_head-a")
    _event(
        client,
        officer,
        case_id,
        "investigation.rights_notified",
        30,
        corrects_event_id=late_notice,
        text="时间更正",
    )
    _event(client, reviewer, case_id, "decision.legal_review", 40)
    _event(client, head, case_id, "decision.collective_discussion", 45)
    _event(client, head, case_id, "decision.head_approval", 50)
    _event(client, officer, case_id, "execution.served", 90)
    record = client.get(f"/api/v1/cases/{case_id}/record", headers=officer).get_json()
    assert record["completeness"] == {"complete": True, "missing": []}
    order = [e["event_type"] for s in record["stages"] for e in s["events"]]
    assert order.index("initiation.ex_officio_source") < order.index("investigation.credential_shown")
    assert order.index("decision.head_approval") < order.index("execution.served")
    corrected = next(e for s in record["stages"] for e in s["events"] if e["id"] == late_notice)
    assert corrected["corrected_by_event_id"] is not None


def test_jl7_on_application_licensing_needs_acceptance(client: FlaskClient, world: World) -> None:
    officer = login(client, "officer-a")
    case_id = _case(client, officer, world, number="许可-1", act_kind="licensing", origin="on_application")
    assert {"initiation.application_received", "initiation.application_accepted"} <= _missing(
        client, officer, case_id
    )
    assert "investigation.credential_shown" not in _missing(client, officer, case_id)
    _event(client, officer, case_id, "initiation.application_received", 0)
    _event(client, officer, case_id, "initiation.application_accepted", 5)
    _event(client, officer, case_id, "decision.decided", 10)
    _event(client, officer, case_id, "execution.served", 20)
    assert _missing(client, officer, case_id) == set()


def test_jl11_attachments_stored_by_sha256_and_recordings_linked(
    app: Flask, client: FlaskClient, world: World
) -> None:
    officer = login(client, "officer-a")
    case_id = _case(client, officer, world)
    with session_scope(app) as session:
        session.add(
            Device(id="cam-1", public_key=b"k" * 32, key_fingerprint="f", status="active", registered_by="t")
        )
        session.flush()
        # JL-20: the recorder is out with officer A, so its recordings are agency A's to link.
        session.add(
            DeviceAssignment(
                device_id="cam-1",
                user_id=world.users["officer"],
                agency_id=world.agency_a,
                checked_out_at=T0 - timedelta(days=1),
                checked_out_by="t",
            )
        )
        recording = Recording(
            device_id="cam-1",
            sequence=0,
            file_id="f0",
            kind="video",
            media_type="video/mp4",
            size=1,
            sha256="0" * 64,
            started_at=T0,
            ended_at=T0 + timedelta(minutes=30),
            officer_id="AH-0001",
            session_id="s",
            manifest_text="{}",
            signature=b"s" * 64,
            manifest_hash="1" * 64,
            prev_manifest_hash="2" * 64,
            object_key="k",
            storage_backend="local",
            verified=True,
        )
        other = Recording(
            device_id="cam-1",
            sequence=1,
            file_id="f1",
            kind="video",
            media_type="video/mp4",
            size=1,
            sha256="0" * 64,
            started_at=T0 + timedelta(hours=5),
            ended_at=T0 + timedelta(hours=6),
            officer_id="AH-0001",
            session_id="s",
            manifest_text="{}",
            signature=b"s" * 64,
            manifest_hash="3" * 64,
            prev_manifest_hash="1" * 64,
            object_key="k2",
            storage_backend="local",
            verified=True,
        )
        session.add_all([recording, other])
        session.flush()
        covering_id, other_id = recording.id, other.id
    event_id = _event(
        client,
        officer,
        case_id,
        "investigation.inquiry",
        10,
        officer_ids=[world.officer_a],
        recording_ids=[other_id],
    )
    page = b"%PDF-1.4\n% " + "询问笔录（当事人签字）".encode() + b"\n%%EOF\n"
    upload = client.post(
        f"/api/v1/cases/{case_id}/events/{event_id}/attachments?name=笔录.pdf&kind=signed_page&signed_by_party=1",
        data=page,
        content_type="application/pdf",
        headers=officer,
    )
    assert upload.status_code == 201, upload.get_json()
    attachment = upload.get_json()
    assert attachment["sha256"] == hashlib.sha256(page).hexdigest() and attachment["signed_by_party"]
    download = client.get(attachment["url"], headers=officer)
    assert download.data == page and download.headers["X-Content-SHA256"] == attachment["sha256"]
    record = client.get(f"/api/v1/cases/{case_id}/record", headers=officer).get_json()
    inquiry = next(e for s in record["stages"] for e in s["events"] if e["id"] == event_id)
    assert inquiry["covering_recording_ids"] == [covering_id]
    assert inquiry["recording_ids"] == [other_id]
    assert inquiry["attachments"][0]["name"] == "笔录.pdf"
    bad = client.post(f"/api/v1/cases/{case_id}/events", json={"event_type": "made.up"}, headers=officer)
    assert bad.status_code == 400


def test_jl8_credential_shown_from_the_mobile_button(client: FlaskClient, world: World) -> None:
    officer = login(client, "officer-a")
    case_id = _case(client, officer, world)
    assert client.get("/api/v1/me/cases", headers=officer).get_json()["items"][0]["id"] == case_id
    shown = client.post("/api/v1/me/credential/shown", json={"case_id": case_id}, headers=officer)
    assert shown.status_code == 201, shown.get_json()
    event = shown.get_json()["event"]
    assert event["event_type"] == "investigation.credential_shown" and event["source"] == "mobile"
    assert event["officer_ids"] == [world.officer_a] and event["data"]["certificate_number"] == "AH-0001"
    assert "investigation.credential_shown" not in _missing(client, officer, case_id)
    without_case = client.post("/api/v1/me/credential/shown", json={}, headers=officer)
    assert without_case.status_code == 201 and without_case.get_json()["event"]["case_id"] is None


def _seed(session: Session) -> tuple[Caller, Case, Officer]:
    agency = Agency(name="测试局", head="", duties="", address="", contacts="")
    session.add(agency)
    session.flush()
    user = User(
        username="u", password_hash="x", role="officer", agency_id=agency.id, active=True, failed_logins=0
    )
    session.add(user)
    session.flush()
    officer = Officer(
        agency_id=agency.id,
        kind="officer",
        name="测",
        enforcement_category="",
        certificate_number="DB-9",
        issuing_body="",
        status="active",
        duties="",
        authority="",
        user_id=user.id,
    )
    session.add(officer)
    session.flush()
    caller = Caller(str(user.id), "officer", agency.id)
    case = case_service.create_case(
        session,
        caller,
        NewCase(number="N-1", act_kind="coercion", origin="ex_officio", officer_ids=(officer.id,)),
    )
    session.commit()
    return caller, case, officer


def test_jl6_event_log_is_append_only_in_the_database(db_session: Session) -> None:
    caller, case, _officer = _seed(db_session)
    event = case_service.record_event(
        db_session, caller, case.id, CaseEventInput(event_type="investigation.coercive_measure")
    )
    db_session.commit()
    for statement in ("UPDATE case_events SET text = 'rewritten'", "DELETE FROM case_events"):
        with pytest.raises(DatabaseError, match="append-only"):
            db_session.execute(text(statement))
        db_session.rollback()
    assert db_session.get(CaseEvent, event.id) is not None
    with pytest.raises(Invalid):
        case_service.record_event(
            db_session, caller, case.id, CaseEventInput(event_type="decision.decided", corrects_event_id=999)
        )


def test_jl8_case_events_from_a_recorder_over_mqtt(app: Flask, client: FlaskClient, world: World) -> None:
    officer = login(client, "officer-a")
    case_id = _case(client, officer, world)
    key = Ed25519PrivateKey.generate()
    with session_scope(app) as session:
        session.add(
            Device(
                id="cam-9",
                public_key=raw_public_key(key),
                key_fingerprint="f",
                status="active",
                registered_by="t",
            )
        )
        session.flush()
        session.add(DeviceAssignment(device_id="cam-9", user_id=world.users["officer"], checked_out_by="t"))
    ingest = IngestService.from_app(app)
    report = CaseEventReport(
        device_id="cam-9",
        event_id="evt-0001",
        event_type="investigation.on_site_inspection",
        at=T0 + timedelta(minutes=15),
        officer="AH-0001",
        case_number="合市监罚〔2026〕7号",
        place="合肥市蜀山区某路 1 号",
        text="现场检查开始",
    )
    topic, payload = case_events.encode(SignedCaseEvent.sign(report, key))
    assert topic == "zfjl/v1/cam-9/up/event"
    ack_topic = "zfjl/v1/cam-9/down/event-ack/evt-0001"
    assert ingest.handle(topic, payload) == [(ack_topic, b'{"state":"stored"}')]
    # QoS 1 redelivery: stored once.
    assert ingest.handle(topic, payload) == [(ack_topic, b'{"state":"duplicate"}')]
    record = client.get(f"/api/v1/cases/{case_id}/record", headers=officer).get_json()
    events = [e for s in record["stages"] for e in s["events"]]
    assert [(e["event_type"], e["source"], e["device_id"]) for e in events] == [
        ("investigation.on_site_inspection", "device", "cam-9")
    ]
    assert events[0]["officer_ids"] == [world.officer_a] and events[0]["place"].startswith("合肥市")
    assert events[0]["occurred_at"] == (T0 + timedelta(minutes=15)).isoformat()


def test_jl2_device_event_service_on_both_databases(db_session: Session) -> None:
    _caller, case, officer = _seed(db_session)
    key = Ed25519PrivateKey.generate()
    db_session.add(
        Device(
            id="cam-2",
            public_key=raw_public_key(key),
            key_fingerprint="f",
            status="active",
            registered_by="t",
        )
    )
    db_session.flush()
    assert officer.user_id is not None
    db_session.add(DeviceAssignment(device_id="cam-2", user_id=officer.user_id, checked_out_by="t"))
    db_session.commit()
    report = CaseEventReport(
        device_id="cam-2",
        event_id="e-1",
        event_type="investigation.coercive_measure",
        at=utcnow(),
        officer="DB-9",
        case_id=case.id,
    )
    signed = SignedCaseEvent.sign(report, key)
    first = case_device_events.record_device_event(db_session, "cam-2", signed)
    assert first.ack.state is EventAckState.STORED
    db_session.commit()
    again = case_device_events.record_device_event(db_session, "cam-2", signed)
    assert again.ack.state is EventAckState.DUPLICATE and again.refusal is None
    stored = db_session.scalars(select(CaseEvent)).one()
    assert stored.officer_ids == [officer.id] and stored.source == "device"
    missing = {m["requirement"] for m in case_completeness.completeness(case, [stored])}
    assert "investigation.credential_shown" in missing


def test_gs17_reconsideration_and_transfer_events_are_checked_and_shown_in_the_record(
    client: FlaskClient, world: World
) -> None:
    """GS-17 (3), (5): the annual report counts these events, so a bad one is refused with the reason."""
    officer = login(client, "officer-a")
    case_id = _case(client, officer, world)
    path = f"/api/v1/cases/{case_id}/events"
    for body, message in (
        ({"event_type": "remedy.reconsideration_filed"}, "needs decision.decided / decision.licence_refused"),
        ({"event_type": "decision.licence_refused"}, "can only be recorded in a licensing case"),
        ({"event_type": "remedy.criminal_transfer", "data": {"receiving_body": ""}}, "data.receiving_body"),
    ):
        refused = client.post(path, json=body, headers=officer)
        assert refused.status_code == 400, refused.get_json()
        assert message in refused.get_json()["error"]["message_en"]
    _event(client, officer, case_id, "decision.decided", 10)
    _event(client, officer, case_id, "remedy.reconsideration_filed", 20)
    bad = client.post(
        path,
        json={"event_type": "remedy.reconsideration_decided", "data": {"outcome": "won"}},
        headers=officer,
    )
    assert bad.status_code == 400 and "data.outcome must be one of" in bad.get_json()["error"]["message_en"]
    decided = _event(
        client, officer, case_id, "remedy.reconsideration_decided", 30, data={"outcome": "revoked"}
    )
    record = client.get(f"/api/v1/cases/{case_id}/record", headers=officer).get_json()
    remedy = next(s for s in record["stages"] if s["stage"] == "remedy")
    assert [e["id"] for e in remedy["events"]][-1] == decided
    assert remedy["events"][-1]["article"] == "GS-17(3)"
