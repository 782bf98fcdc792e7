"""SM2 signatures in a C2SP signed note: the seal of the ``sm3-sm2`` suite (GB/T 32918, GB/T 39786; JL-6).

The signed-note format names each signature type by one byte in the key id; ``0xff`` is "reserved for
signature types without an identifier byte assigned by this specification", to be followed by a longer
identifier (c2sp.org/signed-note, Signature types). An SM2 key here is therefore::

    type      = 0xff || "zfjl.sm2-sm3/v1"
    key id    = SHA-256(key name || 0x0A || type || 0x04 || x || y)[:4]
    vkey      = <name>+<hex key id>+base64(type || 0x04 || x || y)
    signature = base64(key id || r || s), SM2 with SM3 over the note text, the default identifier
                1234567812345678 (GB/T 35276)

so a note may carry an SM2 and an Ed25519 signature side by side, and a verifier that pins one ignores the
other (unknown keys are ignored). The curve arithmetic is ``zfjl_verify/sm2.py`` over the optional
``gmssl``; without it signing or checking an SM2 signature answers ``sm2_unavailable``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from zfjl_verify import sm2
from zfjl_verify.errors import MalformedNote
from zfjl_verify.note import ALG_ED25519, NoteKey, NoteVerifier, append_signature

__all__ = [
    "SM2_SIGNATURE_TYPE",
    "Sm2NoteVerifier",
    "Sm2PrivateKey",
    "parse_note_key",
    "sign_sm2_note",
]

SM2_SIGNATURE_TYPE = b"\xff" + b"zfjl.sm2-sm3/v1"


@dataclass(frozen=True)
class Sm2PrivateKey:
    """An SM2 private scalar on sm2p256v1, in [1, n − 2] (GB/T 32918.1 §6.1)."""

    scalar: int

    def __post_init__(self) -> None:
        if not 1 <= self.scalar <= int(sm2.SM2P256V1.n, 16) - 2:
            raise MalformedNote("SM2 私钥超出范围", "the SM2 private key is out of range")

    @classmethod
    def generate(cls) -> Sm2PrivateKey:
        """A new random key."""
        return cls(sm2.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> Sm2PrivateKey:
        """The key from its 32 big-endian bytes."""
        if len(raw) != 32:
            raise MalformedNote("SM2 私钥必须是 32 字节", "an SM2 private key is 32 bytes")
        return cls(int.from_bytes(raw, "big"))

    def to_bytes(self) -> bytes:
        """The 32 big-endian bytes of the scalar."""
        return self.scalar.to_bytes(32, "big")

    def public_key(self) -> bytes:
        """``x ‖ y`` (64 bytes)."""
        return sm2.public_key(self.scalar)


def _check_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise MalformedNote(
            "密钥名称为空或含有空白或“+”", "a key name must be non-empty, with no spaces and no '+'"
        )


@dataclass(frozen=True, kw_only=True)
class Sm2NoteVerifier:
    """A trusted SM2 key by name, as a verifier pins it (``x ‖ y``, on sm2p256v1)."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not sm2.SM2P256V1.contains(self.public_key):
            raise MalformedNote("不是 sm2p256v1 曲线上的 SM2 公钥", "not an SM2 public key on sm2p256v1")

    @property
    def key_id(self) -> int:
        """The 32-bit key id (type 0xff and its identifier, then the uncompressed point)."""
        material = self.name.encode("utf-8") + b"\n" + SM2_SIGNATURE_TYPE + b"\x04" + self.public_key
        return int.from_bytes(hashlib.sha256(material).digest()[:4], "big")

    @classmethod
    def from_private_key(cls, name: str, private_key: Sm2PrivateKey) -> Sm2NoteVerifier:
        """The verifier that matches a signing key."""
        return cls(name=name, public_key=private_key.public_key())

    @classmethod
    def parse(cls, text: str) -> Sm2NoteVerifier:
        """A verifier key ``<name>+<hex key id>+<base64(type || 0x04 || x || y)>``."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise MalformedNote("验证公钥格式错误", "a verifier key is <name>+<8 hex digits>+<base64 key>")
        name, id_hex, key_b64 = parts
        try:
            claimed = int(id_hex, 16)
            raw = base64.b64decode(key_b64, validate=True)
        except (ValueError, binascii.Error):
            raise MalformedNote("验证公钥格式错误", "a verifier key has a bad key id or base64") from None
        point = raw[len(SM2_SIGNATURE_TYPE) :]
        if not raw.startswith(SM2_SIGNATURE_TYPE) or len(point) != 65 or point[0] != 0x04:
            raise MalformedNote("验证公钥不是 SM2 公钥", "the verifier key is not an SM2 key")
        verifier = cls(name=name, public_key=point[1:])
        if verifier.key_id != claimed:
            raise MalformedNote(
                "验证公钥的密钥编号与公钥不符", "the verifier key's id does not match its key"
            )
        return verifier

    def encode(self) -> str:
        """This key in the ``<name>+<hex key id>+<base64>`` text form a verifier can pin."""
        blob = base64.b64encode(SM2_SIGNATURE_TYPE + b"\x04" + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{blob}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (``r ‖ s``) is this key's SM2 signature of ``text``."""
        return sm2.verify(self.public_key, text, signature)


def sign_sm2_note(text: str, name: str, private_key: Sm2PrivateKey) -> str:
    """The signed note of ``text`` with one SM2 signature by the key called ``name``."""
    verifier = Sm2NoteVerifier.from_private_key(name, private_key)
    return append_signature(text, name, verifier.key_id, sm2.sign(private_key.scalar, text.encode("utf-8")))


def parse_note_key(text: str) -> NoteKey:
    """A pinned verifier key of either type, told apart by the type byte its key starts with."""
    parts = text.strip().split("+", 2)
    try:
        first = base64.b64decode(parts[2], validate=True)[:1] if len(parts) == 3 else b""
    except (ValueError, binascii.Error):
        first = b""
    if first == SM2_SIGNATURE_TYPE[:1]:
        return Sm2NoteVerifier.parse(text)
    if first == bytes([ALG_ED25519]):
        return NoteVerifier.parse(text)
    return NoteVerifier.parse(text)  # its own precise error
