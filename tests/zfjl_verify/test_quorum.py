"""A quorum of witnesses (JL-6, JL-23): a checkpoint counts as witnessed only once N distinct trusted
witnesses cosigned it. Duplicates and unknown keys add nothing; a forged cosignature by a trusted key fails
it. Checked by the pure judge and by ``zfjl-verify checkpoint --witness-keys … --quorum N``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify import (
    BadSignature,
    Checkpoint,
    CosignatureStatus,
    CosignerKey,
    NoteVerifier,
    QuorumNotMet,
    cosign,
    cosignature_lines,
    judge_cosignatures,
    leaf_hash,
    require_quorum,
    sign_checkpoint,
)
from zfjl_verify.cli import main

LOG = "zfjl.ledger/test"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
HEAD = Checkpoint(origin=LOG, size=7, root_hash=leaf_hash(b"seven"))
OTHER_HEAD = Checkpoint(origin=LOG, size=8, root_hash=leaf_hash(b"eight"))
W1 = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
W2 = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
W3 = Ed25519PrivateKey.from_private_bytes(b"\x03" * 32)
STRANGER = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
TRUSTED = [
    CosignerKey.from_private_key("superior.example/w1", W1),
    CosignerKey.from_private_key("court.example/w2", W2),
    CosignerKey.from_private_key("audit.example/w3", W3),
]


def _line(head: Checkpoint, name: str, key: Ed25519PrivateKey, at: int = 1_790_000_000) -> str:
    return cosign(head, name, key, at).rstrip("\n")


def _forged(line: str) -> str:
    """The same witness's line with one byte of its Ed25519 signature changed."""
    prefix, blob_b64 = line.rsplit(" ", 1)
    blob = bytearray(base64.b64decode(blob_b64))
    blob[-1] ^= 0x01
    return f"{prefix} {base64.b64encode(bytes(blob)).decode('ascii')}"


W1_LINE = _line(HEAD, "superior.example/w1", W1)
W2_LINE = _line(HEAD, "court.example/w2", W2)


@pytest.mark.parametrize(
    ("lines", "quorum", "met", "witnessed_by"),
    [
        ([W1_LINE, W2_LINE], 2, True, ("superior.example/w1", "court.example/w2")),
        ([W1_LINE], 2, False, ("superior.example/w1",)),
        ([], 1, False, ()),
        # The same witness twice (another time stamp) is one witness.
        (
            [W1_LINE, _line(HEAD, "superior.example/w1", W1, 1_790_000_060)],
            2,
            False,
            ("superior.example/w1",),
        ),
        # A key nobody trusts, even under a trusted witness's name, adds nothing.
        ([W1_LINE, _line(HEAD, "court.example/w2", STRANGER)], 2, False, ("superior.example/w1",)),
        ([W1_LINE, _line(HEAD, "stranger.example/w", STRANGER)], 2, False, ("superior.example/w1",)),
        # A valid cosignature of another checkpoint does not verify for this one: a forgery here.
        ([W1_LINE, _line(OTHER_HEAD, "court.example/w2", W2)], 2, False, ("superior.example/w1",)),
        ([W1_LINE, W2_LINE, _line(HEAD, "audit.example/w3", W3)], 2, True, None),
    ],
    ids=["met", "unmet", "none", "duplicate", "unknown-key-trusted-name", "unknown", "other-head", "more"],
)
def test_jl23_a_checkpoint_is_witnessed_only_by_a_quorum_of_distinct_trusted_witnesses(
    lines: list[str], quorum: int, met: bool, witnessed_by: tuple[str, ...] | None
) -> None:
    verdict = judge_cosignatures(HEAD, lines, TRUSTED, quorum)
    assert verdict.met is met
    if witnessed_by is not None:
        assert verdict.witnessed_by == witnessed_by
    if met:
        require_quorum(verdict)
    else:
        with pytest.raises((QuorumNotMet, BadSignature)):
            require_quorum(verdict)


def test_jl23_duplicates_unknown_keys_and_forgeries_are_each_named() -> None:
    lines = [
        W1_LINE,
        _line(HEAD, "superior.example/w1", W1, 1_790_000_999),
        _line(HEAD, "stranger.example/w", STRANGER),
        _forged(W2_LINE),
    ]
    verdict = judge_cosignatures(HEAD, lines, TRUSTED, 2)
    assert [check.status for check in verdict.checks] == [
        CosignatureStatus.VALID,
        CosignatureStatus.DUPLICATE,
        CosignatureStatus.UNKNOWN,
        CosignatureStatus.INVALID,
    ]
    assert verdict.checks[0].timestamp == 1_790_000_000
    # A forgery by a trusted key fails the checkpoint, even when a quorum cosigned it as well.
    with_quorum = judge_cosignatures(
        HEAD, [W1_LINE, W2_LINE, _forged(_line(HEAD, "audit.example/w3", W3))], TRUSTED, 2
    )
    assert len(with_quorum.witnessed_by) == 2 and not with_quorum.met
    with pytest.raises(BadSignature, match=r"audit\.example/w3"):
        require_quorum(with_quorum)


def test_the_cosignatures_on_a_cosigned_note_are_its_lines_other_than_the_logs() -> None:
    note = sign_checkpoint(HEAD, LOG, LOG_KEY)
    cosigned = note + W1_LINE + "\n" + W2_LINE + "\n"
    log = NoteVerifier.from_private_key(LOG, LOG_KEY)
    assert cosignature_lines(cosigned, [log]) == [W1_LINE, W2_LINE]
    assert cosignature_lines(note, [log]) == []


# -- the command line ------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """The pinned ledger key and a file of the three trusted witness keys."""
    (tmp_path / "ledger.pub").write_text(NoteVerifier.from_private_key(LOG, LOG_KEY).encode() + "\n")
    (tmp_path / "witnesses.txt").write_text(
        "# the superior body, the court, the audit office\n" + "\n".join(k.encode() for k in TRUSTED) + "\n"
    )
    return tmp_path


def _answer(path: Path, cosignatures: list[str]) -> Path:
    """A checkpoint as the server's JSON answer, with its cosignature lines."""
    path.write_text(
        json.dumps(
            {"note": sign_checkpoint(HEAD, LOG, LOG_KEY), "cosignatures": [c + "\n" for c in cosignatures]}
        )
    )
    return path


def _run(files: Path, checkpoint: Path, *extra: str) -> int:
    return main(
        [
            "checkpoint",
            "--key",
            str(files / "ledger.pub"),
            "--witness-keys",
            str(files / "witnesses.txt"),
            *extra,
            str(checkpoint),
        ]
    )


def test_jl23_zfjl_verify_accepts_a_quorum_of_cosignatures(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(files, _answer(files / "cp.json", [W1_LINE, W2_LINE]), "--quorum", "2") == 0
    out = capsys.readouterr().out
    assert "quorum 2 met" in out and "达到法定数 2" in out and "court.example/w2" in out
    # The cosigned note itself (lines appended, as tlog tools write it) is read the same way.
    cosigned = files / "cosigned.checkpoint"
    cosigned.write_text(sign_checkpoint(HEAD, LOG, LOG_KEY) + W1_LINE + "\n" + W2_LINE + "\n")
    assert _run(files, cosigned, "--quorum", "2") == 0


@pytest.mark.parametrize(
    ("cosignatures", "reason"),
    [
        ([W1_LINE], "fewer than the quorum of 2"),
        ([W1_LINE, _line(HEAD, "superior.example/w1", W1, 1_790_000_123)], "fewer than the quorum of 2"),
        ([W1_LINE, _line(HEAD, "stranger.example/w", STRANGER)], "fewer than the quorum of 2"),
        ([W1_LINE, _forged(W2_LINE)], "court.example/w2 does not verify"),
    ],
    ids=["unmet", "duplicate", "unknown", "forged"],
)
def test_jl23_zfjl_verify_fails_without_a_quorum_or_with_a_forged_cosignature(
    files: Path, capsys: pytest.CaptureFixture[str], cosignatures: list[str], reason: str
) -> None:
    assert _run(files, _answer(files / "cp.json", cosignatures), "--quorum", "2") == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and reason in err


def test_a_quorum_larger_than_the_trusted_witnesses_is_a_usage_error(files: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        _run(files, _answer(files / "cp.json", [W1_LINE, W2_LINE]), "--quorum", "4")
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["checkpoint", "--key", str(files / "ledger.pub"), "--quorum", "1", str(files / "cp.json")])
    assert exited.value.code == 2
