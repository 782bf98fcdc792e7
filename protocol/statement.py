"""The envelope a device signs a statement in (session events, case events): one shape, one parser.

A statement is canonical JSON text; the device signs its UTF-8 bytes with its Ed25519 key. On the wire::

    {"event":"<canonical statement text>","signature":"<base64, 64 bytes>","v":1}

(keys sorted, no spaces). The receiver re-parses the text and refuses it unless re-encoding gives the
very same text, so what was signed, what is stored and what is checked later are one string.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol.errors import RemoteProtocolError

__all__ = [
    "ENVELOPE_VERSION",
    "SIGNATURE_BYTES",
    "canonical_json",
    "open_envelope",
    "seal_envelope",
    "verify",
]

ENVELOPE_VERSION = 1
SIGNATURE_BYTES = 64
_KEYS = {"event", "signature", "v"}


def canonical_json(data: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the one encoding every signed text uses."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def seal_envelope(text: str, signature: bytes) -> bytes:
    """The MQTT payload for a signed statement ``text``."""
    encoded = base64.b64encode(signature).decode("ascii")
    return canonical_json({"event": text, "signature": encoded, "v": ENVELOPE_VERSION})


def open_envelope(payload: bytes, what: str, max_bytes: int) -> tuple[str, dict[str, Any], bytes]:
    """Split a payload into (signed text, its parsed JSON object, signature); the signature is unchecked.

    ``what`` names the statement in error messages ("session event", "case event"). Unsigned, oversize,
    deeply nested or otherwise malformed payloads raise ``RemoteProtocolError``.
    """
    if len(payload) > max_bytes:
        raise RemoteProtocolError(f"{what} payload too large ({len(payload)} bytes)")
    try:
        envelope = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RemoteProtocolError(f"{what} envelope is not JSON: {exc}") from None
    if not isinstance(envelope, dict) or set(envelope) != _KEYS:
        raise RemoteProtocolError(
            f"{what} envelope must have exactly event, signature and v (unsigned {what}s are refused)"
        )
    if envelope["v"] != ENVELOPE_VERSION or not isinstance(envelope["event"], str):
        raise RemoteProtocolError(f"unsupported {what} envelope")
    if not isinstance(envelope["signature"], str):
        raise RemoteProtocolError("signature must be base64 text")
    try:
        signature = base64.b64decode(envelope["signature"], validate=True)
        body = json.loads(envelope["event"])
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"bad {what} envelope: {exc}") from None
    if len(signature) != SIGNATURE_BYTES:
        raise RemoteProtocolError("an Ed25519 signature is 64 bytes")
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"{what} text must be a JSON object")
    return envelope["event"], body, signature


def verify(text: str, signature: bytes, public_key_raw: bytes) -> bool:
    """Whether ``signature`` is the device key's signature over ``text``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, text.encode("utf-8"))
    except (InvalidSignature, ValueError):
        return False
    return True
