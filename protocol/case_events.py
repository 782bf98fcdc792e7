"""The signed case-event message a recorder publishes on ``zfjl/v1/{d}/up/event`` (JL-2, JL-8).

A recorder reports steps it witnessed (showing the credential, an inquiry, a coercive measure...) so
they land in the case's whole-process record next to its recordings. Like a session event
(``protocol.session``) the report is signed by the device's Ed25519 key over its exact canonical text,
and the envelope carries that text unchanged::

    zfjl/v1/{d}/up/event                   device → server  {"event": <text>, "signature": <b64>, "v": 1}
    zfjl/v1/{d}/down/event-ack/{event_id}  server → device  protocol.session.EventAck payload

The signed text (keys sorted, no spaces, UTF-8)::

    {"at":"2026-03-02T09:15:00.000000Z","case_id":12,"case_number":null,"device_id":"rec-1",
     "event_id":"...","event_type":"investigation.inquiry","officer":"<certificate number>",
     "place":"...","text":"...","version":1}

``event_id`` is chosen by the device: it makes redelivery (QoS 1) idempotent and names the ack topic.
The server stores a report only from an in-service device whose key signed it, and only for the
officer the device is checked out to and a case of that officer's agency. Sans-IO: pure data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import statement, topics
from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.manifest import format_time, parse_time
from protocol.topics import TopicKind

__all__ = ["EVENT_VERSION", "MAX_PAYLOAD", "CaseEventReport", "SignedCaseEvent", "decode", "encode"]

EVENT_VERSION = 1
MAX_PAYLOAD = 16 * 1024
# The event id names the ack topic, so it has the topic-safe shape of every other id (protocol.topics).
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_EVENT_TYPE = re.compile(r"[a-z_]{1,32}\.[a-z_]{1,32}")
_SIGNATURE_BYTES = 64



@dataclass(frozen=True, kw_only=True)
class CaseEventReport:
    """One case event as a device reports it; validates when built."""

    device_id: str
    event_id: str
    event_type: str
    at: datetime
    officer: str  # the certificate number of the officer who did the step
    case_id: int | None = None
    case_number: str | None = None
    place: str = ""
    text: str = ""
    version: int = EVENT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.device_id, str) or not topics.valid_device_id(self.device_id):
            raise RemoteProtocolError(f"bad device id {self.device_id!r}")
        if not isinstance(self.event_id, str) or not _EVENT_ID.fullmatch(self.event_id):
            raise RemoteProtocolError(f"bad event_id {self.event_id!r}")
        if not isinstance(self.event_type, str) or not _EVENT_TYPE.fullmatch(self.event_type):
            raise RemoteProtocolError(f"bad event_type {self.event_type!r}")
        if not isinstance(self.at, datetime) or self.at.tzinfo is None:
            raise RemoteProtocolError("at must be a timezone-aware datetime")
        if not isinstance(self.officer, str) or not 0 < len(self.officer) <= 64:
            raise RemoteProtocolError("officer must be a certificate number of 1–64 characters")
        if self.case_id is not None and (
            isinstance(self.case_id, bool)
            or not isinstance(self.case_id, int)
            or not 0 < self.case_id < 2**63
        ):
            raise RemoteProtocolError("case_id must be a positive integer")
        if self.case_number is not None and (
            not isinstance(self.case_number, str) or not 0 < len(self.case_number) <= 64
        ):
            raise RemoteProtocolError("case_number must be 1–64 characters")
        if not isinstance(self.place, str) or not isinstance(self.text, str):
            raise RemoteProtocolError("place and text must be strings")
        if len(self.place) > 300 or len(self.text) > 4000:
            raise RemoteProtocolError("place or text too long")
        if self.version != EVENT_VERSION:
            raise RemoteProtocolError(f"unsupported case event version {self.version!r}")

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON values (the time in the manifest's canonical form)."""
        return {
            "at": format_time(self.at),
            "case_id": self.case_id,
            "case_number": self.case_number,
            "device_id": self.device_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "officer": self.officer,
            "place": self.place,
            "text": self.text,
            "version": self.version,
        }

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed."""
        return statement.canonical_json(self.to_json_dict())

    @classmethod
    def from_json_dict(cls, data: object) -> CaseEventReport:
        """Build from decoded JSON, refusing unknown or missing fields."""
        if not isinstance(data, dict):
            raise RemoteProtocolError("case event must be a JSON object")
        names = {"at", "case_id", "case_number", "device_id", "event_id", "event_type", "officer"}
        names |= {"place", "text", "version"}
        if set(data) != names:
            raise RemoteProtocolError(f"case event fields must be exactly {sorted(names)}")
        try:
            return cls(**{**data, "at": parse_time(data["at"])})
        except ProtocolError as exc:
            raise RemoteProtocolError(f"bad case event: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"bad case event: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class SignedCaseEvent:
    """A report, the exact text signed, and the device's signature."""

    report: CaseEventReport
    event_text: str
    signature: bytes = field(repr=False)

    @classmethod
    def sign(cls, report: CaseEventReport, private_key: Ed25519PrivateKey) -> SignedCaseEvent:
        """Sign with the device key (what the recorder does before publishing)."""
        body = report.canonical_bytes()
        return cls(report=report, event_text=body.decode("utf-8"), signature=private_key.sign(body))

    def verify(self, public_key_raw: bytes) -> bool:
        """Whether the signature is valid for this device key."""
        return statement.verify(self.event_text, self.signature, public_key_raw)

    def to_envelope(self) -> bytes:
        """The MQTT payload."""
        return statement.seal_envelope(self.event_text, self.signature)

    @classmethod
    def from_envelope(cls, payload: bytes) -> SignedCaseEvent:
        """Decode a payload; the signature is not checked here (the verifier knows the key)."""
        text, body, signature = statement.open_envelope(payload, "case event", MAX_PAYLOAD)
        report = CaseEventReport.from_json_dict(body)
        if report.canonical_bytes().decode("utf-8") != text:
            raise RemoteProtocolError("case event text is not in canonical form")
        return cls(report=report, event_text=text, signature=signature)


def encode(signed: SignedCaseEvent) -> tuple[str, bytes]:
    """Topic and payload of a signed case event (QoS 1, not retained)."""
    payload = signed.to_envelope()
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(f"case event too large ({len(payload)} bytes)")
    return topics.case_event(signed.report.device_id), payload


def decode(topic: str, payload: bytes) -> SignedCaseEvent:
    """Parse a case-event topic and signed payload; ``RemoteProtocolError`` for anything malformed.

    Whether the topic's device is the one the report names, and whether that device's registered key
    made the signature, is for the receiver to check (:meth:`SignedCaseEvent.verify`).
    """
    parsed = topics.parse(topic)
    if parsed.kind is not TopicKind.CASE_EVENT:
        raise RemoteProtocolError(f"not a case-event topic: {topic!r}")
    return SignedCaseEvent.from_envelope(payload)
