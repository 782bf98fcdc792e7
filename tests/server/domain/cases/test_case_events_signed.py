"""Case events from recorders are signed, from in-service devices, for their assignee's agency only.

Finding 2 of the zero-trust review: case events arrived unsigned on ``zfjl/v1/{d}/up/event``, the
officer named in them was looked up across all agencies, a revoked device's events were accepted, and
``case_events`` is append-only, so an injected event could never be removed. Every test here drives
the real ingest service over SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import Flask
from sqlalchemy import select, text

from protocol import case_events, topics
from protocol.case_events import CaseEventReport, SignedCaseEvent
from protocol.session import EventAck, EventAckState
from server.domain.accounts.service import create_user
from server.domain.base import utcnow
from server.domain.cases.device_events import CASE_EVENT_REJECTION_CODES
from server.domain.cases.models import Case, CaseEvent
from server.domain.evidence.models import IngestRejection
from server.domain.evidence.scrub import device_open_findings, scrub
from server.domain.fleet.devices import register_device
from server.domain.fleet.models import Device, DeviceAssignment
from server.domain.people.models import Agency, Officer
from server.infra.db import get_engine, session_scope
from server.infra.storage import STORE_KEY
from server.ingest.service import IngestService
from tests.conftest import migrated_app, raw_public_key

DEVICE = "rec-1"
AT = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


@dataclass
class Scene:
    """Agencies A and B; the recorder checked out to officer AH-1 of A; a case in each agency."""

    app: Flask
    key: Ed25519PrivateKey
    officer_a: int
    case_a: int
    case_b: int
    user_a: int


def _case(agency_id: int, number: str) -> Case:
    return Case(
        agency_id=agency_id,
        number=number,
        title="",
        act_kind="coercion",
        origin="ex_officio",
        party="",
        major=False,
        status="open",
        created_by="t",
    )


@pytest.fixture
def scene(db_url: str, tmp_path: Path) -> Iterator[Scene]:
    """The app over a migrated SQLite or PostgreSQL database, with the people and the recorder."""
    app = migrated_app(tmp_path / "var", db_url)
    key = Ed25519PrivateKey.generate()
    with session_scope(app) as session:
        a, b = Agency(name="合肥市市场监督管理局"), Agency(name="芜湖市城市管理局")
        session.add_all([a, b])
        session.flush()
        users = {
            name: create_user(session, name, "people-pass-123", "officer", agency_id=agency).id
            for name, agency in (("officer-a", a.id), ("officer-a2", a.id), ("officer-b", b.id))
        }
        officers = [
            Officer(agency_id=a.id, name="王执法", certificate_number="AH-0001", user_id=users["officer-a"]),
            Officer(agency_id=a.id, name="钱执法", certificate_number="AH-0002", user_id=users["officer-a2"]),
            Officer(agency_id=b.id, name="赵执法", certificate_number="WH-0001", user_id=users["officer-b"]),
        ]
        cases = [_case(a.id, "合市监罚〔2026〕7号"), _case(b.id, "芜城管罚〔2026〕9号")]
        session.add_all([*officers, *cases])
        register_device(session, DEVICE, raw_public_key(key))
        session.flush()
        session.add(DeviceAssignment(device_id=DEVICE, user_id=users["officer-a"], checked_out_by="admin"))
        result = Scene(app, key, officers[0].id, cases[0].id, cases[1].id, users["officer-a"])
    yield result
    get_engine(app).dispose()


def _report(scene: Scene, **fields: Any) -> CaseEventReport:
    values: dict[str, Any] = {
        "device_id": DEVICE,
        "event_id": "evt-0001",
        "event_type": "investigation.coercive_measure",
        "at": AT,
        "officer": "AH-0001",
        "case_id": scene.case_a,
        "place": "合肥市蜀山区某路 1 号",
        "text": "查封",
    }
    values.update(fields)
    return CaseEventReport(**values)


def _send(ingest: IngestService, topic: str, payload: bytes) -> EventAck | None:
    """Hand one message to ingest; return the ack it publishes on the device's event-ack topic, if any."""
    out = ingest.handle(topic, payload)
    if not out:
        return None
    ((ack_topic, ack_payload),) = out
    parsed = topics.parse(ack_topic)
    assert parsed.kind is topics.TopicKind.CASE_EVENT_ACK and parsed.event_id is not None
    return EventAck.from_payload(parsed.device_id, parsed.event_id, ack_payload)


def _stored(app: Flask) -> list[CaseEvent]:
    with session_scope(app) as session:
        return list(session.scalars(select(CaseEvent)))


def _rejections(app: Flask) -> list[tuple[str, str | None, str | None]]:
    with session_scope(app) as session:
        rows = session.scalars(select(IngestRejection).order_by(IngestRejection.id))
        return [(r.code, r.device_id, r.file_id) for r in rows]


def test_finding2_signed_event_of_the_assignee_is_stored_acked_and_verifiable(scene: Scene) -> None:
    ingest = IngestService.from_app(scene.app)
    signed = SignedCaseEvent.sign(_report(scene), scene.key)
    ack = _send(ingest, *case_events.encode(signed))
    assert ack is not None and ack.state is EventAckState.STORED and ack.event_id == "evt-0001"
    again = _send(ingest, *case_events.encode(signed))  # QoS 1 redelivery: stored once
    assert again is not None and again.state is EventAckState.DUPLICATE
    (event,) = _stored(scene.app)
    assert (event.case_id, event.officer_ids, event.source, event.device_id) == (
        scene.case_a,
        [scene.officer_a],
        "device",
        DEVICE,
    )
    # The device's signed statement is kept with the event: anyone can verify it again later.
    kept = event.data["device_signed"]
    Ed25519PublicKey.from_public_bytes(raw_public_key(scene.key)).verify(
        base64.b64decode(kept["signature"]), kept["event"].encode()
    )
    assert json.loads(kept["event"])["text"] == "查封"
    assert _rejections(scene.app) == []


def test_finding2_unsigned_event_naming_another_agency_is_refused_and_logged(scene: Scene) -> None:
    """The attack as it was: the old unsigned payload naming agency B's officer and case."""
    forged = {
        "event_id": "x1",
        "event_type": "investigation.coercive_measure",
        "at": datetime.now(UTC).isoformat(),
        "officer": "WH-0001",
        "case_id": scene.case_b,
        "case_number": None,
        "place": "",
        "text": "forged",
    }
    ingest = IngestService.from_app(scene.app)
    assert _send(ingest, topics.case_event(DEVICE), json.dumps(forged).encode()) is None
    assert _stored(scene.app) == []
    assert _rejections(scene.app) == [("bad_case_event", DEVICE, None)]


def _other_key(scene: Scene, report: CaseEventReport) -> tuple[str, bytes]:
    return case_events.encode(SignedCaseEvent.sign(report, Ed25519PrivateKey.generate()))


def _set_status(status: str) -> Callable[[Scene], None]:
    def change(scene: Scene) -> None:
        with session_scope(scene.app) as session:
            device = session.get(Device, DEVICE)
            assert device is not None
            device.status = status

    return change


def _check_in(scene: Scene) -> None:
    with session_scope(scene.app) as session:
        for row in session.scalars(select(DeviceAssignment)):
            row.checked_in_at, row.checked_in_by = utcnow(), "admin"


def _nothing(_scene: Scene) -> None:
    return None


# (name, what happens to the world first, what the device's key signs, topic device, expected code)
_REFUSALS: list[tuple[str, Callable[[Scene], None], dict[str, Any], str, str]] = [
    ("lost device", _set_status("lost"), {}, DEVICE, "device_inactive"),
    ("retired device", _set_status("retired"), {}, DEVICE, "device_inactive"),
    ("device checked in", _check_in, {}, DEVICE, "device_not_assigned"),
    (
        "officer of another agency",
        _nothing,
        {"officer": "WH-0001", "case_id": None},
        DEVICE,
        "officer_not_assignee",
    ),
    ("colleague, not the assignee", _nothing, {"officer": "AH-0002"}, DEVICE, "officer_not_assignee"),
    ("unknown officer", _nothing, {"officer": "XX-9"}, DEVICE, "officer_not_assignee"),
    ("another agency's case by id", _nothing, {"case_id": -1}, DEVICE, "case_not_found"),
    (
        "another agency's case by number",
        _nothing,
        {"case_id": None, "case_number": "芜城管罚〔2026〕9号"},
        DEVICE,
        "case_not_found",
    ),
    ("a case that does not exist", _nothing, {"case_id": 999_999}, DEVICE, "case_not_found"),
    (
        "event type outside the catalogue",
        _nothing,
        {"event_type": "investigation.nonsense"},
        DEVICE,
        "invalid_case_event",
    ),
    (
        "status change from a device",
        _nothing,
        {"event_type": "case.status_changed"},
        DEVICE,
        "invalid_case_event",
    ),
    ("report names another device", _nothing, {"device_id": "rec-2"}, DEVICE, "event_mismatch"),
    ("unregistered device", _nothing, {"device_id": "rec-9"}, "rec-9", "unknown_device"),
]


@pytest.mark.parametrize(
    ("before", "fields", "topic_device", "code"),
    [pytest.param(*row[1:], id=row[0]) for row in _REFUSALS],
)
def test_finding2_refused_case_events_leave_no_event_and_one_rejection_row(
    scene: Scene, before: Callable[[Scene], None], fields: dict[str, Any], topic_device: str, code: str
) -> None:
    """A stolen or revoked recorder signs what it likes: the server still stores none of it."""
    assert code in CASE_EVENT_REJECTION_CODES
    before(scene)
    if fields.get("case_id") == -1:
        fields = {**fields, "case_id": scene.case_b}
    signed = SignedCaseEvent.sign(_report(scene, **fields), scene.key)
    ingest = IngestService.from_app(scene.app)
    ack = _send(ingest, topics.case_event(topic_device), signed.to_envelope())
    assert ack is not None and (ack.state, ack.code, ack.device_id) == (
        EventAckState.REJECTED,
        code,
        topic_device,
    )
    assert _stored(scene.app) == []
    assert _rejections(scene.app) == [(code, topic_device, "evt-0001")]


def test_finding2_event_signed_by_another_key_is_refused(scene: Scene) -> None:
    ingest = IngestService.from_app(scene.app)
    ack = _send(ingest, *_other_key(scene, _report(scene)))
    assert ack is not None and (ack.state, ack.code) == (EventAckState.REJECTED, "bad_signature")
    assert _stored(scene.app) == []
    assert _rejections(scene.app) == [("bad_signature", DEVICE, "evt-0001")]


def test_finding2_device_revoked_a_moment_ago_is_refused_at_once(scene: Scene) -> None:
    """No cache window: the device row is read in the transaction that would write the event."""
    ingest = IngestService.from_app(scene.app)
    first = _send(ingest, *case_events.encode(SignedCaseEvent.sign(_report(scene), scene.key)))
    assert first is not None and first.state is EventAckState.STORED
    _set_status("lost")(scene)
    second = _send(
        ingest, *case_events.encode(SignedCaseEvent.sign(_report(scene, event_id="evt-0002"), scene.key))
    )
    assert second is not None and (second.state, second.code) == (EventAckState.REJECTED, "device_inactive")
    assert [e.device_event_id for e in _stored(scene.app)] == ["evt-0001"]


def test_finding2_event_id_reused_with_other_content_is_a_conflict(scene: Scene) -> None:
    ingest = IngestService.from_app(scene.app)
    report = _report(scene)
    assert _send(ingest, *case_events.encode(SignedCaseEvent.sign(report, scene.key))) is not None
    changed = SignedCaseEvent.sign(replace(report, text="改写"), scene.key)
    ack = _send(ingest, *case_events.encode(changed))
    assert ack is not None and (ack.state, ack.code) == (EventAckState.REJECTED, "event_conflict")
    assert [e.text for e in _stored(scene.app)] == ["查封"]


def _insider_disables_case_event_triggers(session: Any) -> None:
    """An insider with full database rights switches off the append-only triggers of ``case_events``."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ALTER TABLE case_events DISABLE TRIGGER USER"))
        return
    for action in ("update", "delete"):
        session.execute(text(f"DROP TRIGGER IF EXISTS case_events_no_{action}"))


def _case_event_findings(scene: Scene) -> dict[str, str]:
    """Run the scrubber over the recorder; its case-event findings as code -> message."""
    with session_scope(scene.app) as session:
        report = scrub(session, scene.app.extensions[STORE_KEY], device_id=DEVICE, checkpoint=session.commit)
        return {f.code: f.message_en for f in report.findings if f.code.startswith("case_event_")}


def test_jl8_scrubber_flags_device_case_events_an_insider_inserted_or_edited(scene: Scene) -> None:
    """The append-only triggers allow INSERT, and the ledger sequences what is inserted: only the
    recorder's signature tells a forged "device" event from a real one. The scrubber re-verifies every
    stored device event against the key history and the signed text (JL-8; docs/security.md)."""
    ingest = IngestService.from_app(scene.app)
    for event_id, words in (("evt-0001", "查封"), ("evt-0002", "扣押")):
        signed = SignedCaseEvent.sign(_report(scene, event_id=event_id, text=words), scene.key)
        ack = _send(ingest, *case_events.encode(signed))
        assert ack is not None and ack.state is EventAckState.STORED
    assert _case_event_findings(scene) == {}  # genuine events pass

    stranger = Ed25519PrivateKey.generate()
    forged = SignedCaseEvent.sign(_report(scene, event_id="evt-0666", text="现场无异常"), stranger)
    with session_scope(scene.app) as session:
        rows = {e.device_event_id: e.id for e in session.scalars(select(CaseEvent))}
        template = dict(
            case_id=scene.case_a,
            agency_id=session.get(Case, scene.case_a).agency_id,  # type: ignore[union-attr]
            event_type="investigation.coercive_measure",
            occurred_at=AT,
            place="合肥市蜀山区某路 1 号",
            officer_ids=[scene.officer_a],
            source="device",
            recorded_by=f"device:{DEVICE}",
            device_id=DEVICE,
        )
        signed_by_stranger = CaseEvent(
            **template,
            text="现场无异常",
            device_event_id="evt-0666",
            data={
                "device_signed": {
                    "event": forged.event_text,
                    "signature": base64.b64encode(forged.signature).decode(),
                    "v": 1,
                }
            },
        )
        unsigned = CaseEvent(**template, text="当事人拒绝签字", device_event_id="evt-0667", data={})
        session.add_all([signed_by_stranger, unsigned])
        session.flush()
        forged_id, unsigned_id = signed_by_stranger.id, unsigned.id
        _insider_disables_case_event_triggers(session)
        session.execute(
            text("UPDATE case_events SET text = :t WHERE id = :i"), {"t": "未扣押", "i": rows["evt-0002"]}
        )

    findings = _case_event_findings(scene)
    assert set(findings) == {"case_event_bad_signature", "case_event_unsigned", "case_event_altered"}
    assert findings["case_event_bad_signature"].endswith(f"case events {forged_id}")
    assert findings["case_event_unsigned"].endswith(f"case events {unsigned_id}")
    assert findings["case_event_altered"].endswith(f"case events {rows['evt-0002']}")
    assert str(rows["evt-0001"]) not in " ".join(findings.values())
    # The findings stay open (they raise the evidence-integrity alert) until a check passes again.
    with session_scope(scene.app) as session:
        open_codes = {row.code for row in device_open_findings(session, DEVICE)}
    assert {"case_event_bad_signature", "case_event_unsigned", "case_event_altered"} <= open_codes
