"""A recorder's signing-key rotation, signed by the key it replaces (JL-6).

A recorder's key history decides which signatures count. A new key may enter it only with the consent of
the key that held until then: the old key signs this statement naming the device, itself and the new key.
Whoever can write to the server's database, but does not hold the recorder's key, cannot make one.

The statement is canonical JSON (``protocol.statement.canonical_json``), prefixed with a context line so
that a rotation's signature can never be taken for the signature of a manifest or an event::

    zfjl/v1 device key rotation\\n{"device_id":"…","new_public_key":"<base64>","old_public_key":"<base64>"}

A replayed statement does not help either: it names the key it replaces, so it authorises a change only
while that key is the recorder's current one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import LocalProtocolError
from protocol.statement import SIGNATURE_BYTES, canonical_json

__all__ = ["ROTATION_CONTEXT", "KeyRotation"]

ROTATION_CONTEXT = b"zfjl/v1 device key rotation\n"
_KEY_BYTES = 32


@dataclass(frozen=True, kw_only=True)
class KeyRotation:
    """The change of ``device_id``'s key from ``old_public_key`` to ``new_public_key`` (raw Ed25519)."""

    device_id: str
    old_public_key: bytes
    new_public_key: bytes

    def __post_init__(self) -> None:
        if not self.device_id:
            raise LocalProtocolError("a key rotation names its device")
        for name in ("old_public_key", "new_public_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != _KEY_BYTES:
                raise LocalProtocolError(f"{name} must be a raw 32-byte Ed25519 public key")
        if self.old_public_key == self.new_public_key:
            raise LocalProtocolError("a key rotation needs a new key")

    def statement(self) -> bytes:
        """The exact bytes the old key signs."""
        return ROTATION_CONTEXT + canonical_json(
            {
                "device_id": self.device_id,
                "new_public_key": base64.b64encode(self.new_public_key).decode("ascii"),
                "old_public_key": base64.b64encode(self.old_public_key).decode("ascii"),
            }
        )

    def sign(self, old_private_key: Ed25519PrivateKey) -> bytes:
        """The old key's signature of the statement (done on the recorder, which alone holds it)."""
        return old_private_key.sign(self.statement())

    def verify(self, signature: bytes) -> bool:
        """Whether ``signature`` is the old key's signature of this statement."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.old_public_key).verify(signature, self.statement())
        except (InvalidSignature, ValueError):
            return False
        return True
