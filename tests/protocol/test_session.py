"""Enforcement session machine and signed session events (JL-16, JL-15)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol import topics
from protocol.errors import RemoteProtocolError
from protocol.session import (
    EnforcementSession,
    EventAck,
    EventAckState,
    SessionError,
    SessionEvent,
    SessionEventKind,
    SessionState,
    SignedSessionEvent,
)

KEY = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
AT = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def event(kind: SessionEventKind, seq: int, **fields: object) -> SessionEvent:
    values: dict[str, object] = {
        "event_id": f"ev-{seq}",
        "device_id": "rec-1",
        "session_id": "s-1",
        "kind": kind,
        "at": AT,
        "mono_ns": seq,
        "seq": seq,
    }
    return SessionEvent(**{**values, **fields})  # type: ignore[arg-type]


def test_jl16_session_runs_recording_interrupted_resumed_ended() -> None:
    session = EnforcementSession("s-1")
    session.apply(event(SessionEventKind.STARTED, 0))
    session.apply(
        event(SessionEventKind.INTERRUPTED, 1, marker_id="m-1", cause="camera_stall", automatic=True)
    )
    assert session.state is SessionState.INTERRUPTED and session.open_marker == "m-1"
    session.apply(event(SessionEventKind.BOOKMARK, 2, bookmark_type="scene"))
    session.apply(event(SessionEventKind.RESUMED, 3, marker_id="m-1"))
    assert session.unexplained == {"m-1"}
    session.explained("m-1")
    session.apply(event(SessionEventKind.ENDED, 4))
    assert session.state is SessionState.ENDED and session.unexplained == set()


def test_jl16_impossible_transitions_are_refused() -> None:
    session = EnforcementSession("s-1")
    with pytest.raises(SessionError, match="resumed is not allowed while idle"):
        session.apply(event(SessionEventKind.RESUMED, 0, marker_id="m-1"))
    session.apply(event(SessionEventKind.STARTED, 0))
    session.apply(event(SessionEventKind.INTERRUPTED, 1, marker_id="m-1", cause="bad_weather"))
    with pytest.raises(SessionError, match="resumed names marker m-2"):
        session.apply(event(SessionEventKind.RESUMED, 2, marker_id="m-2"))
    # Ending while interrupted is allowed: that is JL-16's case for a written explanation.
    session.apply(event(SessionEventKind.ENDED, 3))
    with pytest.raises(SessionError):
        session.apply(event(SessionEventKind.STARTED, 4))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kind": SessionEventKind.INTERRUPTED, "marker_id": "m", "cause": "coffee"},
            "unknown interruption cause",
        ),
        (
            {
                "kind": SessionEventKind.INTERRUPTED,
                "marker_id": "m",
                "cause": "bad_weather",
                "automatic": True,
            },
            "cause",
        ),
        ({"kind": SessionEventKind.RESUMED}, "needs a marker_id"),
        ({"kind": SessionEventKind.BOOKMARK, "bookmark_type": "selfie"}, "unknown bookmark type"),
        ({"session_id": "a/b"}, "bad session_id"),
        ({"note": "x" * 501}, "note"),
    ],
)
def test_bad_events_are_refused_with_a_reason(fields: dict[str, object], message: str) -> None:
    fields = dict(fields)
    kind = fields.pop("kind", SessionEventKind.STARTED)
    assert isinstance(kind, SessionEventKind)
    with pytest.raises(RemoteProtocolError, match=message):
        event(kind, 0, **fields)


def test_signed_event_round_trips_exact_bytes_and_detects_tampering() -> None:
    marker = event(SessionEventKind.INTERRUPTED, 1, marker_id="m-1", cause="obstruction", note="人群遮挡")
    signed = SignedSessionEvent.sign(marker, KEY)
    assert signed.verify(PUB)
    payload = signed.to_envelope()
    assert SignedSessionEvent.from_envelope(payload) == signed
    assert '"cause":"obstruction"' in signed.event_text and "人群遮挡" in signed.event_text
    tampered = payload.replace(b"obstruction", b"bad_weather")
    assert not SignedSessionEvent.from_envelope(tampered).verify(PUB)
    with pytest.raises(RemoteProtocolError):
        SignedSessionEvent.from_envelope(b"{}")


def test_session_topics_and_acks() -> None:
    assert topics.session_event("rec-1", "ev-1") == "zfjl/v1/rec-1/up/session/ev-1"
    assert topics.session_ack("rec-1", "ev-1") == "zfjl/v1/rec-1/down/session-ack/ev-1"
    parsed = topics.parse("zfjl/v1/rec-1/up/session/ev-1")
    assert (parsed.kind, parsed.event_id) == (topics.TopicKind.SESSION_EVENT, "ev-1")
    ack = EventAck(device_id="rec-1", event_id="ev-1", state=EventAckState.STORED)
    assert ack.to_payload() == b'{"state":"stored"}'
    assert EventAck.from_payload("rec-1", "ev-1", ack.to_payload()) == ack


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 5000 + b"]" * 5000,  # nested past the parser's depth, inside the size limit
        b'{"event":"' + b"[" * 5000 + b"]" * 5000 + b'","signature":"' + b"A" * 88 + b'","v":1}',
        b'{"event":"[]","signature":"' + b"A" * 88 + b'","v":1}',  # a signed text that is not an object
        b'{"event":"{}","signature":7,"v":1}',
    ],
)
def test_malformed_session_event_envelopes_are_refused_as_remote_errors(payload: bytes) -> None:
    """Whatever a publisher sends, decoding answers RemoteProtocolError (a rejection), never a crash."""
    with pytest.raises(RemoteProtocolError):
        SignedSessionEvent.from_envelope(payload)
