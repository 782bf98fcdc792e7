"""C2SP tlog-checkpoint bodies: the exact shape, and a tampered checkpoint detected."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.zfjl_verify.vectors import ROOTS
from zfjl_verify import (
    BadSignature,
    Checkpoint,
    MalformedCheckpoint,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)

ORIGIN = "zfjl.example/ledger"


def test_body_is_origin_size_root_lines() -> None:
    checkpoint = Checkpoint(origin=ORIGIN, size=8, root_hash=ROOTS[7])
    root = base64.b64encode(ROOTS[7]).decode()
    assert checkpoint.body() == f"{ORIGIN}\n8\n{root}\n"
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


def test_the_c2sp_example_body_parses() -> None:
    # c2sp.org/tlog-checkpoint's example.
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = Checkpoint.parse(text)
    assert (checkpoint.origin, checkpoint.size, len(checkpoint.root_hash)) == (
        "example.com/behind-the-sofa",
        20852163,
        32,
    )
    assert checkpoint.body() == text


def test_extension_lines_round_trip() -> None:
    checkpoint = Checkpoint(
        origin=ORIGIN, size=0, root_hash=ROOTS[0], extensions=("time 2026-11-28T10:00:00Z",)
    )
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n8\n",
        f"{ORIGIN}\n08\n{base64.b64encode(ROOTS[7]).decode()}\n",
        f"{ORIGIN}\n-1\n{base64.b64encode(ROOTS[7]).decode()}\n",
        f"{ORIGIN}\n8\n{base64.b64encode(ROOTS[7][:31]).decode()}\n",
        f"{ORIGIN}\n8\n{base64.b64encode(ROOTS[7]).decode().rstrip('=')}\n",
        f"{ORIGIN}\n8\n{base64.b64encode(ROOTS[7]).decode()}",
        f"\n8\n{base64.b64encode(ROOTS[7]).decode()}\n",
        f"{ORIGIN}\n8\n{base64.b64encode(ROOTS[7]).decode()}\n\n",
        f"{ORIGIN}\n 8\n{base64.b64encode(ROOTS[7]).decode()}\n",
    ],
    ids=[
        "no-root",
        "leading-zero",
        "negative",
        "short-root",
        "unpadded",
        "no-newline",
        "empty-origin",
        "empty-extension",
        "spaced-size",
    ],
)
def test_malformed_bodies_are_rejected(text: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        Checkpoint.parse(text)


def test_signed_checkpoint_opens_and_any_changed_byte_is_detected() -> None:
    key = Ed25519PrivateKey.generate()
    verifier = NoteVerifier.from_private_key(ORIGIN, key)
    signed = sign_checkpoint(Checkpoint(origin=ORIGIN, size=8, root_hash=ROOTS[7]), ORIGIN, key)
    checkpoint, note = open_checkpoint(signed, [verifier], origin=ORIGIN)
    assert (checkpoint.size, checkpoint.root_hash, note.signers) == (8, ROOTS[7], (ORIGIN,))
    # An operator who shrinks the tree (hides leaves) or swaps the root breaks the signature.
    with pytest.raises(BadSignature):
        open_checkpoint(signed.replace("\n8\n", "\n7\n", 1), [verifier])
    forged = Checkpoint(origin=ORIGIN, size=8, root_hash=ROOTS[6]).body()
    with pytest.raises(BadSignature):
        open_checkpoint(forged + signed[signed.index("\n\n") + 1 :], [verifier])


def test_a_checkpoint_from_another_log_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    signed = sign_checkpoint(Checkpoint(origin="other.example/log", size=1, root_hash=ROOTS[0]), ORIGIN, key)
    with pytest.raises(MalformedCheckpoint):
        open_checkpoint(signed, [NoteVerifier.from_private_key(ORIGIN, key)], origin=ORIGIN)
