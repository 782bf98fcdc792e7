"""Signed downlink answers: the server's ingest key seals every ack so a recorder can trust it (sans-IO).

Anyone who can publish on a device's ``down/`` tree — a broker with a weak ACL, a stolen service
password, a local process on an open embedded broker — could otherwise answer an ``init`` with a forged
``complete`` and make the recorder free evidence the server never received (JL-19: nothing destroyed).
So every transfer ack, every session-event ack, every command and the desired configuration travel in
an envelope signed with the server's **ingest key** (Ed25519), and the recorder verifies it against the
public keys pinned in its configuration at provisioning before anything reaches its uploader, session
machine or command handler.

Envelope (canonical JSON, keys sorted, no spaces)::

    {"body":"<canonical JSON text of the ack>","kid":"<key id>","sig":"<base64 signature>","v":1}

The signature covers ``SIGNING_DOMAIN + topic + "\\n" + body``: the topic names the device and the
file (or event) id, so a genuine ack cannot be replayed to another device, another file or another
kind of answer; the domain string keeps these signatures apart from any other use of the key. The key
id is the first 16 hex characters of the SHA-256 of the raw public key, so a recorder can pin several
keys (rotation, docs/protocol.md) and pick the right one without trying each.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol import topics
from protocol.errors import LocalProtocolError, RemoteProtocolError, TopicError
from protocol.manifest import public_key_fingerprint

__all__ = [
    "DOWNLINK_VERSION",
    "SIGNED_KINDS",
    "SIGNING_DOMAIN",
    "DownlinkRefusal",
    "IngestKeyring",
    "UntrustedDownlink",
    "decode_public_key",
    "encode_public_key",
    "is_signed_topic",
    "key_id",
    "open_signed",
    "seal",
    "signing_input",
]

DOWNLINK_VERSION = 1
SIGNING_DOMAIN = b"zfjl/v1 signed downlink\n"
MAX_ENVELOPE_BYTES = 64 * 1024
_KEY_ID_HEX = 16
# Everything a recorder acts on: transfer acks and status answers, session-event and case-event acks,
# commands and the desired configuration. Both sides ask :func:`is_signed_topic`, so they cannot disagree.
SIGNED_KINDS = frozenset(
    {
        topics.TopicKind.ACK,
        topics.TopicKind.SESSION_ACK,
        topics.TopicKind.CASE_EVENT_ACK,
        topics.TopicKind.COMMAND,
        topics.TopicKind.CONFIG_DESIRED,
    }
)


class DownlinkRefusal(Enum):
    """Why a downlink answer was not trusted (a stable code for logs and counters)."""

    UNSIGNED = "unsigned"  # not an envelope at all (e.g. a bare forged ``{"state":"complete"}``)
    MALFORMED = "malformed"  # an envelope, but not a well-formed one
    UNKNOWN_KEY = "unknown_key"  # signed by a key this recorder has not pinned
    BAD_SIGNATURE = "bad_signature"  # the signature does not cover this topic and body


class UntrustedDownlink(RemoteProtocolError):
    """A downlink answer that must not be acted on; ``reason`` says why."""

    def __init__(self, reason: DownlinkRefusal, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


def key_id(public_key_raw: bytes) -> str:
    """The id an envelope names its key by: 16 hex characters of the key's SHA-256 fingerprint."""
    if len(public_key_raw) != 32:
        raise LocalProtocolError("an Ed25519 public key is 32 bytes")
    return public_key_fingerprint(public_key_raw)[:_KEY_ID_HEX]


def encode_public_key(public_key_raw: bytes) -> str:
    """How a pinned ingest public key is written (agent.toml, provisioning answers): base64 of 32 bytes."""
    key_id(public_key_raw)  # length check
    return base64.b64encode(public_key_raw).decode("ascii")


def decode_public_key(text: str) -> bytes:
    """The raw 32 bytes of a pinned key written by :func:`encode_public_key`; ValueError if it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError(f"not a base64 Ed25519 public key: {text!r}") from None
    return raw


def is_signed_topic(topic: str) -> bool:
    """Whether a downlink topic carries a signed envelope (acks, event acks, commands, configuration)."""
    try:
        return topics.parse(topic).kind in SIGNED_KINDS
    except TopicError:
        return False


def signing_input(topic: str, body: bytes) -> bytes:
    """The exact bytes the ingest key signs: domain, topic, newline, body."""
    return SIGNING_DOMAIN + topic.encode("utf-8") + b"\n" + body


def _canonical(data: dict[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# The key id of each signing key used so far (a server has one or two). Deriving the public key from the
# private one is a scalar multiplication, about as costly as the signature itself, and seal() runs for
# every chunk ack. Keyed by the key object, which is kept alive by the entry, so an id is never reused.
_SIGNING_KEY_IDS: dict[int, tuple[Ed25519PrivateKey, str]] = {}


def _signing_key_id(private_key: Ed25519PrivateKey) -> str:
    known = _SIGNING_KEY_IDS.get(id(private_key))
    if known is not None and known[0] is private_key:
        return known[1]
    kid = key_id(private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    if len(_SIGNING_KEY_IDS) >= 16:
        _SIGNING_KEY_IDS.clear()  # bounded: tests make many keys, a server one or two
    _SIGNING_KEY_IDS[id(private_key)] = (private_key, kid)
    return kid


def seal(topic: str, body: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The signed envelope of one downlink answer (``body``: the canonical JSON of the ack)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise LocalProtocolError("a downlink body is UTF-8 JSON text") from None
    signature = private_key.sign(signing_input(topic, body))
    return _canonical(
        {
            "body": text,
            "kid": _signing_key_id(private_key),
            "sig": base64.b64encode(signature).decode("ascii"),
            "v": DOWNLINK_VERSION,
        }
    )


@dataclass(frozen=True)
class IngestKeyring:
    """The ingest public keys a recorder trusts, by key id (pinned at provisioning; several for rotation)."""

    keys: Mapping[str, bytes]

    @classmethod
    def of(cls, public_keys_raw: Iterable[bytes]) -> IngestKeyring:
        """A keyring over raw 32-byte public keys."""
        return cls({key_id(raw): raw for raw in public_keys_raw})

    def __bool__(self) -> bool:
        return bool(self.keys)

    def open(self, topic: str, payload: bytes) -> bytes:
        """The verified body of a signed envelope received on ``topic``; :class:`UntrustedDownlink` if not."""
        return open_signed(topic, payload, self.keys)


def open_signed(topic: str, payload: bytes, trusted: Mapping[str, bytes]) -> bytes:
    """Verify an envelope received on ``topic`` against the trusted keys and return its body bytes."""
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise UntrustedDownlink(DownlinkRefusal.MALFORMED, f"envelope too large ({len(payload)} bytes)")
    try:
        envelope = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UntrustedDownlink(DownlinkRefusal.UNSIGNED, "payload is not a signed envelope") from None
    if not isinstance(envelope, dict) or not {"body", "kid", "sig", "v"} <= set(envelope):
        raise UntrustedDownlink(DownlinkRefusal.UNSIGNED, "payload is not a signed envelope")
    if set(envelope) != {"body", "kid", "sig", "v"} or envelope["v"] != DOWNLINK_VERSION:
        raise UntrustedDownlink(DownlinkRefusal.MALFORMED, "envelope must have exactly body, kid, sig, v=1")
    body, kid, sig = envelope["body"], envelope["kid"], envelope["sig"]
    if not isinstance(body, str) or not isinstance(kid, str) or not isinstance(sig, str):
        raise UntrustedDownlink(DownlinkRefusal.MALFORMED, "body, kid and sig must be strings")
    public_raw = trusted.get(kid)
    if public_raw is None:
        raise UntrustedDownlink(DownlinkRefusal.UNKNOWN_KEY, f"key {kid[:32]!r} is not pinned")
    try:
        signature = base64.b64decode(sig, validate=True)
    except ValueError:
        raise UntrustedDownlink(DownlinkRefusal.MALFORMED, "sig is not base64") from None
    try:
        body_bytes = body.encode("utf-8")
    except UnicodeEncodeError:
        raise UntrustedDownlink(DownlinkRefusal.MALFORMED, "body is not UTF-8 text") from None
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, signing_input(topic, body_bytes))
    except (InvalidSignature, ValueError):
        raise UntrustedDownlink(
            DownlinkRefusal.BAD_SIGNATURE, f"signature by {kid} does not cover this topic and body"
        ) from None
    return body_bytes
