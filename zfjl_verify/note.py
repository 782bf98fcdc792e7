"""C2SP signed notes with Ed25519 signatures (c2sp.org/signed-note), byte-compatible with Go's sumdb/note.

A signed note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
``— <key name> <base64(4-byte key id || signature)>``. The signature covers the text including its last
newline but not the blank line. Key id = SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4], the
0x01 naming Ed25519. A verifier key is shared as ``<name>+<hex key id>+<base64(0x01 || public key)>``.

Verification follows the spec's rules: signatures from unknown keys are ignored; a signature from a
known key that fails rejects the whole note; a note with no verified known signature is rejected. Keys of
another signature type (SM2, zfjl_verify/sm2_note.py) take part through :class:`NoteKey`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from zfjl_verify.errors import BadSignature, MalformedNote, UnknownKey

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "NoteKey",
    "NoteVerifier",
    "SignedNote",
    "append_signature",
    "key_id",
    "open_note",
    "sign_note",
]

ALG_ED25519 = 0x01
# The spec asks verifiers to cap signatures (at least 16); Go's note.Open allows 100.
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20
_SIG_PREFIX = "— "  # em dash U+2014 and a space: never a hyphen


def _check_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise MalformedNote(
            "密钥名称为空或含有空白或“+”", "a key name must be non-empty, with no spaces and no '+'"
        )


def key_id(name: str, public_key: bytes) -> int:
    """The C2SP key id of an Ed25519 key: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


class NoteKey(Protocol):
    """A trusted key of some signature type, as :func:`open_note` matches and checks it."""

    @property
    def name(self) -> str:
        """The key name on the signature line."""
        ...

    @property
    def key_id(self) -> int:
        """The 32-bit key id that starts the signature."""
        ...

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``text``."""
        ...

    def encode(self) -> str:
        """The ``<name>+<hex key id>+<base64>`` text form."""
        ...


@dataclass(frozen=True, kw_only=True)
class NoteVerifier:
    """A trusted Ed25519 key by name, as a verifier holds it."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != 32:
            raise MalformedNote("Ed25519 公钥必须是 32 字节", "an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        """The 32-bit key id of this key."""
        return key_id(self.name, self.public_key)

    @classmethod
    def from_private_key(cls, name: str, private_key: Ed25519PrivateKey) -> NoteVerifier:
        """The verifier that matches a signing key."""
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(name=name, public_key=raw)

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        """A verifier key ``<name>+<hex key id>+<base64(0x01 || public key)>`` (as Go's note.NewVerifier)."""
        parts = text.strip().split("+", 2)  # the base64 key may itself contain "+"
        if len(parts) != 3 or len(parts[1]) != 8:
            raise MalformedNote("验证公钥格式错误", "a verifier key is <name>+<8 hex digits>+<base64 key>")
        name, id_hex, key_b64 = parts
        try:
            claimed = int(id_hex, 16)
            raw = base64.b64decode(key_b64, validate=True)
        except (ValueError, binascii.Error):
            raise MalformedNote("验证公钥格式错误", "a verifier key has a bad key id or base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise MalformedNote("验证公钥不是 Ed25519 公钥", "the verifier key is not an Ed25519 key")
        verifier = cls(name=name, public_key=raw[1:])
        if verifier.key_id != claimed:
            raise MalformedNote(
                "验证公钥的密钥编号与公钥不符", "the verifier key's id does not match its key"
            )
        return verifier

    def encode(self) -> str:
        """This key in the ``<name>+<hex key id>+<base64>`` text form a verifier can pin."""
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{blob}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``text``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, kw_only=True)
class SignedNote:
    """A note whose text carries at least one verified signature; ``signers`` names the keys that signed."""

    text: str
    signers: tuple[str, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("签名文本必须以换行结束", "a note's text must end with a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise MalformedNote("签名文本含有控制字符", "a note must not contain control characters")


def append_signature(text: str, name: str, key_id_value: int, signature: bytes) -> str:
    """The signed note of ``text`` with one signature line, once the text is checked signable."""
    _check_name(name)
    _check_text(text)
    if "\n\n" in text:
        # The verifier splits at the last blank line; a blank line in our own texts would be ambiguous.
        raise MalformedNote("签名文本不得含空行", "a text we sign must not contain a blank line")
    blob = base64.b64encode(key_id_value.to_bytes(4, "big") + signature).decode("ascii")
    return f"{text}\n{_SIG_PREFIX}{name} {blob}\n"


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """The signed note of ``text`` with one Ed25519 signature by the key called ``name``."""
    _check_name(name)
    _check_text(text)
    verifier = NoteVerifier.from_private_key(name, private_key)
    return append_signature(text, name, verifier.key_id, private_key.sign(text.encode("utf-8")))


def open_note(message: bytes | str, verifiers: Sequence[NoteKey]) -> SignedNote:
    """Parse a signed note and verify it against trusted keys (c2sp.org/signed-note, Signatures)."""
    raw = message.encode("utf-8") if isinstance(message, str) else message
    if len(raw) > MAX_NOTE_BYTES:
        raise MalformedNote("签名文本过长", "the note is too large")
    try:
        whole = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNote("签名文本不是有效的 UTF-8", "the note is not valid UTF-8") from None
    if any(ord(ch) < 0x20 and ch != "\n" for ch in whole):
        raise MalformedNote("签名文本含有控制字符", "a note must not contain control characters")
    # The text is separated from the signatures by the LAST blank line.
    split = whole.rfind("\n\n")
    if split < 0:
        raise MalformedNote("缺少签名部分", "the note has no signature block")
    text, block = whole[: split + 1], whole[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNote("签名行必须以换行结束", "the last signature line must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote("签名过多", f"more than {MAX_SIGNATURES} signatures")
    by_key: dict[tuple[str, int], NoteKey] = {(v.name, v.key_id): v for v in verifiers}
    signers: list[str] = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNote("签名行格式错误", "a signature line must start with an em dash and a space")
        fields = line[len(_SIG_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise MalformedNote("签名行格式错误", "a signature line is '— <name> <base64>'")
        name, blob_b64 = fields
        _check_name(name)
        try:
            blob = base64.b64decode(blob_b64, validate=True)
        except (ValueError, binascii.Error):
            raise MalformedNote("签名不是有效的 base64", "a signature is not valid base64") from None
        if len(blob) < 5:
            raise MalformedNote("签名过短", "a signature is shorter than a key id and a signature")
        verifier = by_key.get((name, int.from_bytes(blob[:4], "big")))
        if verifier is None:
            continue  # unknown keys are ignored (they may be witnesses or a rotated key)
        if not verifier.verify(text.encode("utf-8"), blob[4:]):
            raise BadSignature(
                f"密钥 {name} 的签名无效：文本被篡改或伪造",
                f"the signature of key {name} does not verify: the text was altered or forged",
            )
        signers.append(name)
    if not signers:
        raise UnknownKey("没有来自受信任密钥的签名", "no signature from a trusted key")
    return SignedNote(text=text, signers=tuple(signers))
