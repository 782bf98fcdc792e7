"""C2SP signed notes: byte for byte what Go's sumdb/note produces; tampering and malformations refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.zfjl_verify.vectors import (
    GO_NOTE_ENOCH_KEY,
    GO_NOTE_ENOCH_SIG,
    GO_NOTE_PETER_SIG,
    GO_NOTE_SIGNER_KEY,
    GO_NOTE_TEXT,
    GO_NOTE_VERIFIER_KEY,
)
from zfjl_verify import BadSignature, MalformedNote, NoteVerifier, UnknownKey, key_id, open_note, sign_note


def _go_signer() -> Ed25519PrivateKey:
    # PRIVATE+KEY+<name>+<hex id>+base64(0x01 || 32-byte seed), Go's note.NewSigner format.
    blob = base64.b64decode(GO_NOTE_SIGNER_KEY.split("+", 4)[4])
    assert blob[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(blob[1:])


PETER = NoteVerifier.parse(GO_NOTE_VERIFIER_KEY)
ENOCH = NoteVerifier.parse(GO_NOTE_ENOCH_KEY)


def test_key_id_and_verifier_key_match_go() -> None:
    assert PETER.key_id == 0xC74F20A3
    assert key_id("PeterNeumann", PETER.public_key) == 0xC74F20A3
    assert PETER.encode() == GO_NOTE_VERIFIER_KEY
    assert NoteVerifier.from_private_key("PeterNeumann", _go_signer()) == PETER


def test_signing_produces_the_exact_note_go_produces() -> None:
    assert sign_note(GO_NOTE_TEXT, "PeterNeumann", _go_signer()) == GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG


def test_open_verifies_known_signatures_and_ignores_unknown_ones() -> None:
    message = GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG + GO_NOTE_ENOCH_SIG
    note = open_note(message, [PETER])
    assert note.text == GO_NOTE_TEXT
    assert note.signers == ("PeterNeumann",)
    assert open_note(message, [PETER, ENOCH]).signers == ("PeterNeumann", "EnochRoot")


def test_a_note_with_no_trusted_signature_is_rejected() -> None:
    with pytest.raises(UnknownKey):
        open_note(GO_NOTE_TEXT + "\n" + GO_NOTE_ENOCH_SIG, [PETER])
    with pytest.raises(UnknownKey):
        open_note(GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG, [])


def test_a_changed_text_fails_the_trusted_signature() -> None:
    altered = GO_NOTE_TEXT.replace("problem", "solution", 1)
    with pytest.raises(BadSignature):
        open_note(altered + "\n" + GO_NOTE_PETER_SIG, [PETER])


def test_a_corrupted_signature_rejects_the_whole_note() -> None:
    # Go's TestOpen: four characters spliced into the signature.
    bad = GO_NOTE_PETER_SIG[:60] + "ABCD" + GO_NOTE_PETER_SIG[60:]
    with pytest.raises(BadSignature):
        open_note(GO_NOTE_TEXT + "\n" + bad, [PETER])


@pytest.mark.parametrize(
    "message",
    [
        GO_NOTE_TEXT,
        GO_NOTE_TEXT + "\n",
        GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG[:-1],
        "\x01" + GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG,
        GO_NOTE_TEXT
        + "\n"
        + "— Bad Name "
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
        GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG + "Unexpected line.\n",
        GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG.replace("—", "-"),
        GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG * 101,
    ],
    ids=[
        "no-sigs",
        "blank-only",
        "no-final-newline",
        "control-char",
        "name-with-space",
        "trailing-line",
        "hyphen-not-em-dash",
        "too-many-sigs",
    ],
)
def test_malformed_notes_are_rejected(message: str) -> None:
    # The bad-message list of Go's TestOpen, plus a hyphen for the em dash and Go's 100-signature cap.
    with pytest.raises(MalformedNote):
        open_note(message, [PETER])


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(MalformedNote):
        open_note(b"\xff" + (GO_NOTE_TEXT + "\n" + GO_NOTE_PETER_SIG).encode(), [PETER])


@pytest.mark.parametrize(
    "key",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short key
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_verifier_keys_are_refused(key: str) -> None:
    with pytest.raises(MalformedNote):
        NoteVerifier.parse(key)


def test_sign_refuses_texts_the_verifier_could_not_split() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(MalformedNote):
        sign_note("no final newline", "log", key)
    with pytest.raises(MalformedNote):
        sign_note("a\n\nb\n", "log", key)
    with pytest.raises(MalformedNote):
        sign_note("text\n", "bad+name", key)


def test_verifier_keys_whose_base64_contains_a_plus_round_trip() -> None:
    while True:
        verifier = NoteVerifier.from_private_key("zfjl.example/ledger", Ed25519PrivateKey.generate())
        if "+" in verifier.encode().split("+", 2)[2]:
            break
    assert NoteVerifier.parse(verifier.encode()) == verifier
