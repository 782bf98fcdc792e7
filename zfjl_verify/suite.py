"""The cryptographic suite of a package: which digests its manifests carry and how its seal signs (JL-6).

One small interface, so an agency assessed under GB/T 39786 (商用密码应用安全性评估) can put SM3 digests
(GB/T 32905) in its packages without touching the rest. Suites by name:

``sha256-ed25519`` (the default)
    BagIt manifests in SHA-256 and SHA-512 (RFC 8493 §2.4), the seal an Ed25519 C2SP signed note.
``sm3-ed25519``
    The same, plus ``manifest-sm3.txt`` and ``tagmanifest-sm3.txt``, and the seal also names the SM3
    digest of ``tagmanifest-sm3.txt``. SHA-256/SHA-512 stay so any BagIt validator still validates.

SM2 seals (GB/T 32918) are not built: ``cryptography`` cannot load an SM2 key, and no SM2 signer is a
dependency yet. A :class:`SealScheme` for SM2 goes here, registered as ``sm3-sm2``, with nothing else
changed. SM3 comes from hashlib through OpenSSL 3, which is not guaranteed by Python: where it is
missing, :func:`check_digest` says so clearly instead of failing deep inside a hash call.

The ledger's Merkle tree (zfjl_verify/merkle.py) is not part of the suite: it stays SHA-256, as
RFC 9162 defines it, so every proof a verifier already holds keeps verifying.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify.errors import VerifyError
from zfjl_verify.note import NoteVerifier, SignedNote, open_note, sign_note

__all__ = [
    "DEFAULT_SUITE",
    "KNOWN_DIGESTS",
    "SUITES",
    "DigestUnavailable",
    "Ed25519NoteSeal",
    "SealScheme",
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


class SealScheme(Protocol):
    """How a seal's text is signed and its signature checked."""

    @property
    def name(self) -> str:
        """The signature algorithm, as the docs name it."""
        ...

    def sign(self, text: str, key_name: str, private_key: Ed25519PrivateKey) -> str:
        """The signed seal of ``text`` by the key called ``key_name``."""
        ...

    def open(self, sealed: bytes, verifiers: list[NoteVerifier]) -> SignedNote:
        """The verified text of a seal; raises :class:`VerifyError` if no pinned key signed it."""
        ...


@dataclass(frozen=True)
class Ed25519NoteSeal:
    """The Ed25519 C2SP signed note (zfjl_verify/note.py)."""

    name: str = "ed25519"

    def sign(self, text: str, key_name: str, private_key: Ed25519PrivateKey) -> str:
        """A signed note with one Ed25519 signature."""
        return sign_note(text, key_name, private_key)

    def open(self, sealed: bytes, verifiers: list[NoteVerifier]) -> SignedNote:
        """Check the signed note against the pinned keys."""
        return open_note(sealed, verifiers)


@dataclass(frozen=True)
class Suite:
    """A named suite: the manifest digests of a package and the seal scheme over them."""

    name: str
    digests: tuple[str, ...]
    seal: SealScheme

    def check_available(self) -> None:
        """Raise :class:`DigestUnavailable` if this machine cannot compute one of the suite's digests."""
        for algorithm in self.digests:
            check_digest(algorithm)


_ED25519 = Ed25519NoteSeal()
SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite(DEFAULT_SUITE, ("sha256", "sha512"), _ED25519),
        Suite("sm3-ed25519", ("sha256", "sha512", "sm3"), _ED25519),
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
