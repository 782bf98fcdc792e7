"""The ``sm3-sm2`` suite's seal (JL-6, GB/T 32918, GB/T 39786): an SM2 signature with SM3 in a C2SP signed
note, under a key type of its own (``0xff`` and a longer identifier, c2sp.org/signed-note). The suite alone
here; the server-built package and its tampering are in tests/server/domain/governance/test_archive_seal.py.
"""

from __future__ import annotations

import base64
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify import sm2
from zfjl_verify.errors import BadSignature, MalformedNote, UnknownKey
from zfjl_verify.note import NoteVerifier, open_note
from zfjl_verify.seal import agency_verifier, parse_seal_text, sign_seal
from zfjl_verify.sm2_note import (
    SM2_SIGNATURE_TYPE,
    Sm2NoteVerifier,
    Sm2PrivateKey,
    parse_note_key,
    sign_sm2_note,
)
from zfjl_verify.suite import get_suite

KEY = Sm2PrivateKey(0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8)
TEXT = "zfjl.package-seal/1\nagency 5\nbag bag-z\n"


def test_jl6_an_sm2_signed_note_verifies_only_with_its_key_and_only_unchanged() -> None:
    note = sign_sm2_note(TEXT, "zfjl-agency-5", KEY)
    verifier = Sm2NoteVerifier.from_private_key("zfjl-agency-5", KEY)
    assert open_note(note, [verifier]).text == TEXT
    line = note.rstrip("\n").rsplit("\n", 1)[1]
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 4 + 64 and int.from_bytes(blob[:4], "big") == verifier.key_id
    # One byte of the text or of the signature changed: the pinned key refuses the note.
    with pytest.raises(BadSignature):
        open_note(note.replace("bag-z", "bag-y"), [verifier])
    forged = bytearray(blob)
    forged[-1] ^= 0x01
    tampered = note.replace(line.split(" ")[2], base64.b64encode(bytes(forged)).decode())
    with pytest.raises(BadSignature):
        open_note(tampered, [verifier])
    # Another SM2 key of the same name has another key id: its holder's note is not this agency's.
    other = Sm2NoteVerifier.from_private_key("zfjl-agency-5", Sm2PrivateKey(12345))
    with pytest.raises(UnknownKey):
        open_note(note, [other])
    # An Ed25519 key of the same name does not stand in for the SM2 one either.
    with pytest.raises(UnknownKey):
        open_note(note, [NoteVerifier.from_private_key("zfjl-agency-5", Ed25519PrivateKey.generate())])


def test_jl6_an_sm2_verifier_key_round_trips_and_is_told_apart_from_an_ed25519_one() -> None:
    verifier = Sm2NoteVerifier.from_private_key("zfjl-agency-5", KEY)
    text = verifier.encode()
    name, key_id, blob = text.split("+", 2)
    raw = base64.b64decode(blob)
    assert name == "zfjl-agency-5" and int(key_id, 16) == verifier.key_id
    assert raw.startswith(SM2_SIGNATURE_TYPE) and raw[len(SM2_SIGNATURE_TYPE)] == 0x04
    assert parse_note_key(text) == verifier
    ed = NoteVerifier.from_private_key("zfjl-agency-5", Ed25519PrivateKey.generate())
    assert parse_note_key(ed.encode()) == ed
    wrong_id = f"{name}+{(verifier.key_id ^ 1):08x}+{blob}"
    with pytest.raises(MalformedNote):
        parse_note_key(wrong_id)
    off_curve = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(MalformedNote):
        Sm2NoteVerifier.parse(f"{name}+{key_id}+{base64.b64encode(off_curve).decode()}")
    with pytest.raises(MalformedNote):
        Sm2PrivateKey(0)
    with pytest.raises(MalformedNote):
        Sm2PrivateKey(int(sm2.SM2P256V1.n, 16) - 1)


def test_jl6_an_sm3_sm2_seal_names_its_suite_and_is_signed_with_sm2() -> None:
    suite = get_suite("sm3-sm2")
    assert suite.digests == ("sha256", "sha512", "sm3") and suite.seal.algorithm == "SM2"
    digests = {"sha256": "a" * 64, "sha512": "b" * 128, "sm3": "c" * 64}
    sealed = sign_seal(5, "bag-z", digests, KEY, suite)
    note = suite.seal.open(sealed.encode(), [agency_verifier(5, KEY)])
    stated = parse_seal_text(note.text)
    assert stated is not None and stated.suite == "sm3-sm2" and stated.digests == digests
    # A seal that names this suite but carries an Ed25519 signature is refused, the key pinned or not.
    ed_key = Ed25519PrivateKey.generate()
    ed_signed = get_suite("sm3-ed25519").seal.sign(note.text, "zfjl-agency-5", ed_key)
    with pytest.raises(UnknownKey):
        suite.seal.open(ed_signed.encode(), [agency_verifier(5, ed_key), agency_verifier(5, KEY)])
    # A key file's 32 bytes load back to the same key; an Ed25519 key cannot sign an SM2 seal.
    assert suite.seal.load_key(KEY.to_bytes()) == KEY
    with pytest.raises(MalformedNote):
        sign_seal(5, "bag-z", digests, Ed25519PrivateKey.generate(), suite)


def test_jl6_without_gmssl_the_sm3_sm2_suite_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gmssl.sm2", None)  # as if the optional package were not installed
    with pytest.raises(sm2.Sm2Unavailable, match="gmssl"):
        get_suite("sm3-sm2").check_available()
    get_suite("sm3-ed25519").check_available()  # the other suites do not need it
