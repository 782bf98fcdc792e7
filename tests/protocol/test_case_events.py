"""The signed case-event message: exact bytes, signature, canonical form, and its ack topic."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import case_events, topics
from protocol.case_events import CaseEventReport, SignedCaseEvent
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.session import EventAck, EventAckState
from tests.conftest import raw_public_key

# A fixed key makes the signature, and so the whole payload, reproducible (Ed25519 is deterministic).
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
REPORT = CaseEventReport(
    device_id="cam-1",
    event_id="e-1",
    event_type="investigation.inquiry",
    at=datetime(2026, 1, 1, tzinfo=UTC),
    officer="AH-0001",
    case_id=12,
    text="询问",
)


def test_case_event_canonical_text_is_exact() -> None:
    assert (
        REPORT.canonical_bytes()
        == (
            '{"at":"2026-01-01T00:00:00.000000Z","case_id":12,"case_number":null,"device_id":"cam-1",'
            '"event_id":"e-1","event_type":"investigation.inquiry","officer":"AH-0001","place":"",'
            '"text":"询问","version":1}'
        ).encode()
    )


def test_case_event_envelope_is_exact_and_round_trips() -> None:
    signed = SignedCaseEvent.sign(REPORT, KEY)
    topic, payload = case_events.encode(signed)
    assert topic == "zfjl/v1/cam-1/up/event"
    signature = base64.b64encode(KEY.sign(REPORT.canonical_bytes())).decode()
    assert payload == json.dumps(
        {"event": REPORT.canonical_bytes().decode(), "signature": signature, "v": 1},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    decoded = case_events.decode(topic, payload)
    assert decoded == signed and decoded.report == REPORT
    assert decoded.verify(raw_public_key(KEY))
    assert not decoded.verify(raw_public_key(Ed25519PrivateKey.generate()))


def test_case_event_edited_after_signing_no_longer_verifies() -> None:
    signed = SignedCaseEvent.sign(REPORT, KEY)
    edited = replace(REPORT, officer="WH-0001")
    forged = SignedCaseEvent(
        report=edited, event_text=edited.canonical_bytes().decode(), signature=signed.signature
    )
    assert not case_events.decode(*case_events.encode(forged)).verify(raw_public_key(KEY))


def _envelope(event: object, signature: object = "A" * 88, v: object = 1) -> bytes:
    return json.dumps({"event": event, "signature": signature, "v": v}).encode()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            b'{"at":"2026-01-01T00:00:00Z","case_id":12,"event_id":"e-1","event_type":"investigation.inquiry",'
            b'"officer":"AH-0001"}',
            id="the old unsigned report",
        ),
        pytest.param(b"[]", id="not an object"),
        pytest.param(b"{not json", id="not json"),
        pytest.param(b"[" * 100_000, id="deep nesting"),
        pytest.param(_envelope(json.dumps(REPORT.to_json_dict(), indent=1)), id="not canonical"),
        pytest.param(_envelope(REPORT.canonical_bytes().decode(), "!!"), id="signature not base64"),
        pytest.param(_envelope(REPORT.canonical_bytes().decode(), "AAAA"), id="signature too short"),
        pytest.param(_envelope(REPORT.canonical_bytes().decode(), v=2), id="unknown version"),
        pytest.param(
            _envelope(
                json.dumps({**REPORT.to_json_dict(), "extra": 1}, sort_keys=True, separators=(",", ":"))
            ),
            id="unknown field",
        ),
        pytest.param(
            _envelope(
                json.dumps({**REPORT.to_json_dict(), "case_id": "12"}, sort_keys=True, separators=(",", ":"))
            ),
            id="case id as text",
        ),
        pytest.param(
            _envelope(
                json.dumps({**REPORT.to_json_dict(), "case_id": 2**63}, sort_keys=True, separators=(",", ":"))
            ),
            id="case id beyond 64 bits",
        ),
        pytest.param(
            _envelope(
                json.dumps(
                    {**REPORT.to_json_dict(), "event_id": "a/b"}, sort_keys=True, separators=(",", ":")
                )
            ),
            id="event id not topic-safe",
        ),
        pytest.param(b"x" * (case_events.MAX_PAYLOAD + 1), id="too large"),
    ],
)
def test_malformed_or_unsigned_case_events_are_refused(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        case_events.decode("zfjl/v1/cam-1/up/event", payload)


def test_case_event_on_another_topic_is_refused() -> None:
    _topic, payload = case_events.encode(SignedCaseEvent.sign(REPORT, KEY))
    with pytest.raises(RemoteProtocolError):
        case_events.decode("zfjl/v1/cam-1/up/health", payload)


def test_case_event_too_large_to_send_is_a_local_error() -> None:
    huge = replace(REPORT, text="字" * 4000, place="地" * 300)
    signed = SignedCaseEvent.sign(huge, KEY)
    with pytest.raises(LocalProtocolError):
        case_events.encode(replace(signed, event_text=signed.event_text * 2))


def test_case_event_ack_topic_round_trips() -> None:
    topic = topics.case_event_ack("cam-1", "e-1")
    assert topic == "zfjl/v1/cam-1/down/event-ack/e-1"
    parsed = topics.parse(topic)
    assert (parsed.kind, parsed.device_id, parsed.event_id) == (
        topics.TopicKind.CASE_EVENT_ACK,
        "cam-1",
        "e-1",
    )
    ack = EventAck(device_id="cam-1", event_id="e-1", state=EventAckState.REJECTED, code="device_inactive")
    assert EventAck.from_payload("cam-1", "e-1", ack.to_payload()) == ack
    with pytest.raises(LocalProtocolError):
        topics.case_event_ack("cam-1", "e/1")
