"""The crypto suite (JL-6): the SM3 digest against its published vector, the seal text per suite, names.

The server-built SM3 package and its tampering are tested in
tests/server/domain/governance/test_archive_seal.py; here the suite is taken alone, with no server.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify.note import open_note
from zfjl_verify.seal import agency_verifier, parse_seal_text, seal_suite_name, seal_text, sign_seal
from zfjl_verify.suite import DEFAULT_SUITE, DigestUnavailable, UnknownSuite, check_digest, get_suite

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def test_jl6_sm3_gives_the_gbt32905_example_digest() -> None:
    # GB/T 32905-2016 附录 A.1: SM3("abc").
    check_digest("sm3")
    assert hashlib.new("sm3", b"abc").hexdigest() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    # A.2: "abcd" sixteen times (512 bits).
    assert hashlib.new("sm3", b"abcd" * 16).hexdigest() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )
    assert get_suite("sm3-ed25519").digests == ("sha256", "sha512", "sm3")


def test_jl6_an_unknown_suite_or_digest_is_a_clear_error() -> None:
    with pytest.raises(UnknownSuite) as caught:
        get_suite("sm3-rsa")
    assert caught.value.code == "unknown_suite"
    assert "known: sha256-ed25519, sm3-ed25519, sm3-sm2" in caught.value.message_en
    assert "未知的密码套件" in caught.value.message
    with pytest.raises(DigestUnavailable) as missing:
        check_digest("no-such-digest")
    assert "does not provide the no-such-digest digest" in missing.value.message_en


def test_jl6_the_default_suites_seal_text_is_unchanged() -> None:
    digests = {"sha256": "a" * 64, "sha512": "b" * 128}
    assert seal_text(3, "bag-x", digests) == (
        "zfjl.package-seal/1\nagency 3\nbag bag-x\n"
        f"sha256 {'a' * 64} tagmanifest-sha256.txt\nsha512 {'b' * 128} tagmanifest-sha512.txt\n"
    )
    stated = parse_seal_text(seal_text(3, "bag-x", digests))
    assert stated is not None and stated.suite == DEFAULT_SUITE and stated.digests == digests
    # Naming the default suite explicitly is not one of our texts (one text per statement).
    named = seal_text(3, "bag-x", digests).replace("bag bag-x\n", "bag bag-x\nsuite sha256-ed25519\n")
    assert parse_seal_text(named) is None


def test_jl6_an_sm3_seal_names_its_suite_and_every_tag_manifest() -> None:
    suite = get_suite("sm3-ed25519")
    digests = {"sha256": "a" * 64, "sha512": "b" * 128, "sm3": "c" * 64}
    sealed = sign_seal(5, "bag-y", digests, KEY, suite)
    assert seal_suite_name(sealed.encode()) == "sm3-ed25519"
    note = open_note(sealed, [agency_verifier(5, KEY)])
    stated = parse_seal_text(note.text)
    assert stated is not None and stated.suite == "sm3-ed25519" and stated.digests == digests
    # A seal that names the SM3 suite but omits the SM3 digest (or names an unknown suite) is refused.
    assert parse_seal_text(note.text.replace(f"sm3 {'c' * 64} tagmanifest-sm3.txt\n", "")) is None
    assert parse_seal_text(note.text.replace("suite sm3-ed25519", "suite sm3-rsa")) is None
    with pytest.raises(KeyError):
        seal_text(5, "bag-y", {"sha256": "a" * 64, "sha512": "b" * 128}, suite)
