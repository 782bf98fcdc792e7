"""The cryptographic suite of a package: which digests its manifests carry and how its seal signs (JL-6).

One small interface, so an agency assessed under GB/T 39786 (商用密码应用安全性评估) can put SM3 digests
(GB/T 32905) in its packages without touching the rest. Suites by name:

``sha256-ed25519`` (the default)
    BagIt manifests in SHA-256 and SHA-512 (RFC 8493 §2.4), the seal an Ed25519 C2SP signed note.
``sm3-ed25519``
    The same, plus ``manifest-sm3.txt`` and ``tagmanifest-sm3.txt``, and the seal also names the SM3
    digest of ``tagmanifest-sm3.txt``. SHA-256/SHA-512 stay so any BagIt validator still validates.

``sm3-sm2``
    The manifests of ``sm3-ed25519``; the seal an SM2 signature with SM3 (GB/T 32918) in the signed note
    (zfjl_verify/sm2_note.py), by the agency's own SM2 key. SM2 needs the optional ``gmssl``
    (``pip install 'zfjl[sm]'``): :meth:`Suite.check_available` says so at start-up.

SM3 comes from hashlib through OpenSSL 3, which is not guaranteed by Python: where it is missing,
:func:`check_digest` says so clearly instead of failing deep inside a hash call.

The ledger's Merkle tree (zfjl_verify/merkle.py) is not part of the suite: it stays SHA-256, as
RFC 9162 defines it, so every proof a verifier already holds keeps verifying.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from zfjl_verify.errors import MalformedNote, VerifyError
from zfjl_verify.note import NoteKey, NoteVerifier, SignedNote, open_note, sign_note
from zfjl_verify.sm2 import Sm2Unavailable
from zfjl_verify.sm2_note import Sm2NoteVerifier, Sm2PrivateKey, sign_sm2_note

__all__ = [
    "DEFAULT_SUITE",
    "KNOWN_DIGESTS",
    "SUITES",
    "DigestUnavailable",
    "Ed25519NoteSeal",
    "SealKey",
    "SealScheme",
    "Sm2NoteSeal",
    "Suite",
    "UnknownSuite",
    "check_digest",
    "get_suite",
]

DEFAULT_SUITE = "sha256-ed25519"
# Every manifest algorithm a package of ours may carry, in the order they are written and checked.
KNOWN_DIGESTS: tuple[str, ...] = ("sha256", "sha512", "sm3")


class UnknownSuite(VerifyError):
    """A suite name that is not registered."""

    code = "unknown_suite"


class DigestUnavailable(VerifyError):
    """The digest exists in a suite but this Python's OpenSSL does not provide it (SM3 needs OpenSSL 3)."""

    code = "digest_unavailable"


def check_digest(algorithm: str) -> None:
    """Raise :class:`DigestUnavailable` unless hashlib can compute ``algorithm`` here."""
    try:
        hashlib.new(algorithm)
    except ValueError:
        raise DigestUnavailable(
            f"本机的 hashlib/OpenSSL 不提供 {algorithm} 摘要（SM3 需要 OpenSSL 3）",
            f"hashlib/OpenSSL on this machine does not provide the {algorithm} digest (SM3 needs OpenSSL 3)",
        ) from None


# A seal's private key: the scheme that signs with it says which it takes.
SealKey = Ed25519PrivateKey | Sm2PrivateKey


class SealScheme(Protocol):
    """How a seal's text is signed and its signature checked, and what its key is."""

    @property
    def name(self) -> str:
        """The signature algorithm, as the docs name it."""
        ...

    @property
    def algorithm(self) -> str:
        """The algorithm as the published seal key names it (``Ed25519``, ``SM2``)."""
        ...

    def check_available(self) -> None:
        """Raise :class:`VerifyError` if this machine cannot sign or check this scheme."""
        ...

    def new_key(self) -> bytes:
        """A new private key, as the 32 bytes a key file keeps (base64)."""
        ...

    def load_key(self, raw: bytes) -> SealKey:
        """The private key from the 32 bytes of its key file."""
        ...

    def verifier(self, key_name: str, private_key: SealKey) -> NoteKey:
        """The public half of ``private_key`` under ``key_name``, as a verifier pins it."""
        ...

    def sign(self, text: str, key_name: str, private_key: SealKey) -> str:
        """The signed seal of ``text`` by the key called ``key_name``."""
        ...

    def open(self, sealed: bytes, verifiers: Sequence[NoteKey]) -> SignedNote:
        """The verified text of a seal; raises :class:`VerifyError` if no pinned key signed it."""
        ...


def _wrong_key(scheme: str) -> MalformedNote:
    return MalformedNote(f"印章密钥不是 {scheme} 密钥", f"the seal key is not an {scheme} key")


@dataclass(frozen=True)
class Ed25519NoteSeal:
    """The Ed25519 C2SP signed note (zfjl_verify/note.py)."""

    name: str = "ed25519"
    algorithm: str = "Ed25519"

    def check_available(self) -> None:
        """Ed25519 is always there (``cryptography``)."""

    def new_key(self) -> bytes:
        """32 random bytes: an Ed25519 seed."""
        return Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def load_key(self, raw: bytes) -> SealKey:
        """The key of a 32-byte seed."""
        if len(raw) != 32:
            raise _wrong_key("Ed25519")
        return Ed25519PrivateKey.from_private_bytes(raw)

    def verifier(self, key_name: str, private_key: SealKey) -> NoteKey:
        """The Ed25519 verifier key."""
        if not isinstance(private_key, Ed25519PrivateKey):
            raise _wrong_key("Ed25519")
        return NoteVerifier.from_private_key(key_name, private_key)

    def sign(self, text: str, key_name: str, private_key: SealKey) -> str:
        """A signed note with one Ed25519 signature."""
        if not isinstance(private_key, Ed25519PrivateKey):
            raise _wrong_key("Ed25519")
        return sign_note(text, key_name, private_key)

    def open(self, sealed: bytes, verifiers: Sequence[NoteKey]) -> SignedNote:
        """Check the signed note against the pinned Ed25519 keys (a seal is signed as its suite says)."""
        return open_note(sealed, [key for key in verifiers if isinstance(key, NoteVerifier)])


@dataclass(frozen=True)
class Sm2NoteSeal:
    """An SM2-with-SM3 signature in the signed note (zfjl_verify/sm2_note.py, GB/T 32918)."""

    name: str = "sm2"
    algorithm: str = "SM2"

    def check_available(self) -> None:
        """SM2 needs the optional ``gmssl`` (and SM3 from OpenSSL 3)."""
        check_digest("sm3")
        try:
            importlib.import_module("gmssl.sm2")
        except ImportError:
            raise Sm2Unavailable(
                "SM2 需要可选依赖 gmssl（pip install 'zfjl[sm]'）",
                "SM2 needs the optional gmssl package (pip install 'zfjl[sm]')",
            ) from None

    def new_key(self) -> bytes:
        """A new SM2 scalar, 32 big-endian bytes."""
        return Sm2PrivateKey.generate().to_bytes()

    def load_key(self, raw: bytes) -> SealKey:
        """The SM2 key of its 32 bytes."""
        return Sm2PrivateKey.from_bytes(raw)

    def verifier(self, key_name: str, private_key: SealKey) -> NoteKey:
        """The SM2 verifier key."""
        if not isinstance(private_key, Sm2PrivateKey):
            raise _wrong_key("SM2")
        return Sm2NoteVerifier.from_private_key(key_name, private_key)

    def sign(self, text: str, key_name: str, private_key: SealKey) -> str:
        """A signed note with one SM2 signature."""
        if not isinstance(private_key, Sm2PrivateKey):
            raise _wrong_key("SM2")
        return sign_sm2_note(text, key_name, private_key)

    def open(self, sealed: bytes, verifiers: Sequence[NoteKey]) -> SignedNote:
        """Check the signed note against the pinned SM2 keys: a seal naming this suite is SM2-signed."""
        return open_note(sealed, [key for key in verifiers if isinstance(key, Sm2NoteVerifier)])


@dataclass(frozen=True)
class Suite:
    """A named suite: the manifest digests of a package and the seal scheme over them."""

    name: str
    digests: tuple[str, ...]
    seal: SealScheme

    def check_available(self) -> None:
        """Raise :class:`VerifyError` if this machine cannot compute a digest or the seal of the suite."""
        for algorithm in self.digests:
            check_digest(algorithm)
        self.seal.check_available()


_ED25519 = Ed25519NoteSeal()
SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite(DEFAULT_SUITE, ("sha256", "sha512"), _ED25519),
        Suite("sm3-ed25519", ("sha256", "sha512", "sm3"), _ED25519),
        Suite("sm3-sm2", ("sha256", "sha512", "sm3"), Sm2NoteSeal()),
    )
}


def get_suite(name: str) -> Suite:
    """The registered suite called ``name``; :class:`UnknownSuite` (naming the known ones) otherwise."""
    suite = SUITES.get(name)
    if suite is None:
        known = ", ".join(sorted(SUITES))
        raise UnknownSuite(
            f"未知的密码套件 {name!r}（可用：{known}）", f"unknown crypto suite {name!r} (known: {known})"
        )
    return suite
