"""Enforcement sessions and interruption markers (JL-16), sans-IO: the record and its state machine.

JL-16 requires recording **without a break from arrival until the end of the enforcement**; when a
recording is interrupted (device fault, bad weather, obstruction…) the officer gives the reason **by
voice when recording resumes**. So a session is an explicit machine — idle → recording ⇄ interrupted
→ ended — and every transition is a signed, append-only :class:`SessionEvent` that the device keeps in
its outbox and sends until the server acknowledges it. There is no mute, pause or stealth while a
session is open that is not itself an interruption with a cause.

Wire format (topics in ``protocol/topics.py``)::

    zfjl/v1/{d}/up/session/{event_id}        device → server  signed event envelope (QoS 1)
    zfjl/v1/{d}/down/session-ack/{event_id}  server → device  {"state": "stored"|"duplicate"|"rejected", …}

The envelope mirrors the manifest's: ``{"event": <canonical JSON text>, "signature": <base64>, "v": 1}``,
the signature by the device's Ed25519 key over the exact text. A spoken explanation clip is an ordinary
segment whose signed manifest has ``kind = "explanation"`` and names the marker (``marker_id``), so the
link between a gap and its explanation is part of the signed evidence, not a database claim.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import statement
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.manifest import format_time, parse_time
from protocol.topics import valid_device_id, valid_file_id

__all__ = [
    "AUTOMATIC_CAUSES",
    "BOOKMARK_TYPES",
    "DECLARED_CAUSES",
    "EVENT_VERSION",
    "EnforcementSession",
    "EventAck",
    "EventAckState",
    "SessionError",
    "SessionEvent",
    "SessionEventKind",
    "SessionState",
    "SignedSessionEvent",
]

EVENT_VERSION = 1
MAX_EVENT_PAYLOAD = 16 * 1024

# Causes an officer declares (JL-16 names device fault, bad weather and obstruction; local rules add
# low battery or storage and a change of location — research/domain.md).
DECLARED_CAUSES = frozenset(
    {"device_fault", "bad_weather", "obstruction", "low_battery", "low_storage", "location_change", "other"}
)
# Causes the recorder detects itself.
AUTOMATIC_CAUSES = frozenset(
    {
        "camera_stall",
        "microphone_failure",
        "encoder_error",
        "storage_error",
        "storage_full",
        "clock_jump",
        "power_loss",
    }
)
# What JL-15 says the recording must show, plus the officer showing the certificate (JL-8(1), GS-10(1)).
BOOKMARK_TYPES = frozenset(
    {"scene", "persons", "items", "coercive_measure", "document_served", "credential_shown", "other"}
)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_MAX_NOTE = 500


class SessionError(LocalProtocolError):
    """A transition the session machine does not allow (e.g. resuming what is not interrupted)."""


class SessionState(Enum):
    """Where an enforcement session stands."""

    IDLE = "idle"
    RECORDING = "recording"
    INTERRUPTED = "interrupted"
    ENDED = "ended"


class SessionEventKind(Enum):
    """What happened."""

    STARTED = "started"  # arrival: recording starts (pre-record buffer prepended)
    INTERRUPTED = "interrupted"  # recording stopped: ``marker_id``, ``cause``, ``automatic``
    RESUMED = "resumed"  # recording runs again after ``marker_id``
    EXPLANATION_MISSING = "explanation_missing"  # the officer gave no spoken reason for ``marker_id``
    BOOKMARK = "bookmark"  # a tagged moment (JL-15): ``bookmark_type``, ``note``
    ENDED = "ended"  # the enforcement is over


@dataclass(frozen=True, kw_only=True)
class SessionEvent:
    """One signed, append-only fact about a session (JL-16)."""

    event_id: str
    device_id: str
    session_id: str
    kind: SessionEventKind
    at: datetime
    mono_ns: int
    seq: int  # per device, from 0, so the server can tell a missing event from a late one
    officer_id: str = ""
    marker_id: str = ""
    cause: str = ""
    automatic: bool = False
    bookmark_type: str = ""
    note: str = ""
    case_id: str = ""
    version: int = EVENT_VERSION

    def __post_init__(self) -> None:
        for name in ("event_id", "session_id"):
            if not _ID.fullmatch(getattr(self, name)):
                raise RemoteProtocolError(f"bad {name} {getattr(self, name)!r}")
        if not valid_device_id(self.device_id):
            raise RemoteProtocolError(f"bad device id {self.device_id!r}")
        if self.version != EVENT_VERSION:
            raise RemoteProtocolError(f"unsupported session event version {self.version!r}")
        if not isinstance(self.at, datetime) or self.at.tzinfo is None:
            raise RemoteProtocolError("at must be a timezone-aware datetime")
        if isinstance(self.mono_ns, bool) or not isinstance(self.mono_ns, int) or self.mono_ns < 0:
            raise RemoteProtocolError("mono_ns must be a non-negative integer")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            raise RemoteProtocolError("seq must be a non-negative integer")
        for name in ("officer_id", "case_id", "cause", "bookmark_type"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > 128:
                raise RemoteProtocolError(f"{name} must be a string of at most 128 characters")
        if not isinstance(self.note, str) or len(self.note) > _MAX_NOTE:
            raise RemoteProtocolError(f"note must be a string of at most {_MAX_NOTE} characters")
        needs_marker = {
            SessionEventKind.INTERRUPTED,
            SessionEventKind.RESUMED,
            SessionEventKind.EXPLANATION_MISSING,
        }
        if self.kind in needs_marker and not _ID.fullmatch(self.marker_id):
            raise RemoteProtocolError(f"{self.kind.value} needs a marker_id")
        if self.kind is SessionEventKind.INTERRUPTED:
            allowed = AUTOMATIC_CAUSES if self.automatic else DECLARED_CAUSES
            if self.cause not in allowed:
                raise RemoteProtocolError(f"unknown interruption cause {self.cause!r}")
        if self.kind is SessionEventKind.BOOKMARK and self.bookmark_type not in BOOKMARK_TYPES:
            raise RemoteProtocolError(f"unknown bookmark type {self.bookmark_type!r}")

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        data = asdict(self)
        data["kind"] = self.kind.value
        data["at"] = format_time(self.at)
        return data

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed."""
        return statement.canonical_json(self.to_json_dict())

    @classmethod
    def from_json_dict(cls, data: object) -> SessionEvent:
        """Build from decoded JSON, refusing unknown or missing fields."""
        if not isinstance(data, dict):
            raise RemoteProtocolError("session event must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise RemoteProtocolError(f"unknown session event fields: {sorted(unknown)}")
        values = dict(data)
        try:
            values["kind"] = SessionEventKind(values["kind"])
            values["at"] = parse_time(values["at"])
            return cls(**values)
        except KeyError as exc:
            raise RemoteProtocolError(f"session event field missing: {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"bad session event: {exc}") from None



@dataclass(frozen=True, kw_only=True)
class SignedSessionEvent:
    """An event, the exact text signed, and the device's signature."""

    event: SessionEvent
    event_text: str
    signature: bytes = field(repr=False)

    @classmethod
    def sign(cls, event: SessionEvent, private_key: Ed25519PrivateKey) -> SignedSessionEvent:
        """Sign with the device key."""
        body = event.canonical_bytes()
        return cls(event=event, event_text=body.decode("utf-8"), signature=private_key.sign(body))

    def verify(self, public_key_raw: bytes) -> bool:
        """Whether the signature is valid for this device key."""
        return statement.verify(self.event_text, self.signature, public_key_raw)

    def to_envelope(self) -> bytes:
        """The MQTT payload."""
        return statement.seal_envelope(self.event_text, self.signature)

    @classmethod
    def from_envelope(cls, payload: bytes) -> SignedSessionEvent:
        """Decode a payload; the signature is not checked here (the verifier knows the key)."""
        text, body, signature = statement.open_envelope(payload, "session event", MAX_EVENT_PAYLOAD)
        event = SessionEvent.from_json_dict(body)
        if event.canonical_bytes().decode("utf-8") != text:
            raise RemoteProtocolError("session event text is not in canonical form")
        return cls(event=event, event_text=text, signature=signature)


class EventAckState(Enum):
    """The server's answer to a session event; only ``stored``/``duplicate`` let the device forget it."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, kw_only=True)
class EventAck:
    """Acknowledgement of one session event, sent after the database commit."""

    device_id: str
    event_id: str
    state: EventAckState
    code: str = ""
    message: str = ""

    def to_payload(self) -> bytes:
        """JSON payload."""
        body: dict[str, Any] = {"state": self.state.value}
        if self.code:
            body["code"] = self.code
        if self.message:
            body["message"] = self.message
        return statement.canonical_json(body)

    @classmethod
    def from_payload(cls, device_id: str, event_id: str, payload: bytes) -> EventAck:
        """Decode an ack payload."""
        try:
            data = json.loads(payload.decode("utf-8"))
            state = EventAckState(data["state"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, ValueError, TypeError):
            raise RemoteProtocolError("bad session event ack") from None
        return cls(
            device_id=device_id,
            event_id=event_id,
            state=state,
            code=str(data.get("code", "")),
            message=str(data.get("message", "")),
        )


# ------------------------------------------------------------------------- the session machine

_Transition = tuple[SessionState, SessionEventKind]
_S, _K = SessionState, SessionEventKind
# The one table of what may follow what. Bookmarks are allowed whenever the session is open.
_NEXT_STATE: dict[_Transition, SessionState] = {
    (_S.IDLE, _K.STARTED): _S.RECORDING,
    (_S.RECORDING, _K.INTERRUPTED): _S.INTERRUPTED,
    (_S.INTERRUPTED, _K.RESUMED): _S.RECORDING,
    (_S.RECORDING, _K.EXPLANATION_MISSING): _S.RECORDING,
    (_S.RECORDING, _K.BOOKMARK): _S.RECORDING,
    (_S.INTERRUPTED, _K.BOOKMARK): _S.INTERRUPTED,
    (_S.RECORDING, _K.ENDED): _S.ENDED,
    # Ending while interrupted is JL-16's second case: recording could not resume, so a written
    # explanation signed by two officers is required afterwards.
    (_S.INTERRUPTED, _K.ENDED): _S.ENDED,
}


@dataclass
class EnforcementSession:
    """The session machine; both the recorder (to act) and the server (to check) drive it."""

    session_id: str
    state: SessionState = SessionState.IDLE
    open_marker: str = ""
    unexplained: set[str] = field(default_factory=set)
    markers: list[str] = field(default_factory=list)

    def can_apply(self, kind: SessionEventKind) -> bool:
        """Whether an event of this kind may happen now."""
        return (self.state, kind) in _NEXT_STATE

    def apply(self, event: SessionEvent) -> SessionState:
        """Apply one event (raise :class:`SessionError` if the table does not allow it)."""
        if event.session_id != self.session_id:
            raise SessionError(f"event of session {event.session_id} applied to {self.session_id}")
        key = (self.state, event.kind)
        if key not in _NEXT_STATE:
            raise SessionError(f"{event.kind.value} is not allowed while {self.state.value}")
        if event.kind is SessionEventKind.INTERRUPTED:
            self.open_marker = event.marker_id
            self.markers.append(event.marker_id)
            self.unexplained.add(event.marker_id)
        elif event.kind is SessionEventKind.RESUMED:
            if event.marker_id != self.open_marker:
                raise SessionError(f"resumed names marker {event.marker_id}, open is {self.open_marker}")
            self.open_marker = ""
        elif event.kind is SessionEventKind.EXPLANATION_MISSING and event.marker_id not in self.markers:
            raise SessionError(f"unknown marker {event.marker_id}")
        self.state = _NEXT_STATE[key]
        return self.state

    def explained(self, marker_id: str) -> None:
        """A spoken explanation clip for this marker was recorded."""
        self.unexplained.discard(marker_id)


def valid_event_id(event_id: str) -> bool:
    """Whether an id can stand in a topic."""
    return valid_file_id(event_id)
