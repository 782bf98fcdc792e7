"""The witness (JL-6, JL-23): it keeps the last checkpoint it accepted, cosigns only extensions of it in
the C2SP tlog-cosignature v1 format, and refuses — keeping the evidence — a history that was rewritten."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify import (
    Checkpoint,
    ConsistencyProof,
    CosignerKey,
    InconsistentHistory,
    MerkleTree,
    NoteVerifier,
    VerifyError,
    Witness,
    cosign,
    cosigned_message,
    leaf_hash,
    sign_checkpoint,
    verify_cosignature,
)

SCRIPT = Path(sys.executable).parent / "zfjl-verify"
LOG = "zfjl.ledger/test"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
LOG_VERIFIER = NoteVerifier.from_private_key(LOG, LOG_KEY)


def _tree(leaves: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    tree.extend(leaves)
    return tree


def _signed(tree: MerkleTree, size: int | None = None) -> str:
    size = tree.size if size is None else size
    return sign_checkpoint(Checkpoint(origin=LOG, size=size, root_hash=tree.root(size)), LOG, LOG_KEY)


def _proof(tree: MerkleTree, old: int, new: int) -> ConsistencyProof:
    return ConsistencyProof(old_size=old, new_size=new, hashes=tuple(tree.consistency_proof(old, new)))


def test_cosignature_has_the_c2sp_v1_shape_and_verifies_only_for_its_checkpoint() -> None:
    witness_key = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    head = Checkpoint(origin=LOG, size=5, root_hash=leaf_hash(b"root"))
    line = cosign(head, "witness.example/w1", witness_key, 1679315147)
    assert line.startswith("— witness.example/w1 ") and line.endswith("\n")
    blob = base64.b64decode(line.split()[-1])
    key = CosignerKey.from_private_key("witness.example/w1", witness_key)
    assert len(blob) == 4 + 8 + 64 and int.from_bytes(blob[:4], "big") == key.key_id
    assert int.from_bytes(blob[4:12], "big") == 1679315147
    assert cosigned_message(head, 1679315147).startswith(
        b"cosignature/v1\ntime 1679315147\nzfjl.ledger/test\n5\n"
    )
    assert verify_cosignature(line, head, CosignerKey.parse(key.encode())) == 1679315147
    # The key id uses the cosignature algorithm byte, so a note key of the same bytes differs.
    assert key.key_id != NoteVerifier.from_private_key("witness.example/w1", witness_key).key_id
    other = Checkpoint(origin=LOG, size=6, root_hash=head.root_hash)
    with pytest.raises(VerifyError):
        verify_cosignature(line, other, key)


def test_jl23_the_witness_cosigns_extensions_and_refuses_a_rewritten_history(tmp_path: Path) -> None:
    witness = Witness(tmp_path / "w", name="superior.example/witness")
    leaves = [f"fact {i}".encode() for i in range(7)]
    honest = _tree(leaves)
    first = witness.observe(_signed(honest, 3), None, [LOG_VERIFIER], now=1_700_000_000)
    assert first.previous is None and first.checkpoint.size == 3
    second = witness.observe(_signed(honest), _proof(honest, 3, 7), [LOG_VERIFIER], now=1_700_000_100)
    assert second.previous is not None and second.previous.size == 3
    assert verify_cosignature(second.cosignature, second.checkpoint, witness.key) == 1_700_000_100
    cosigned = (tmp_path / "w" / "cosigned.checkpoint").read_text()
    assert cosigned == _signed(honest) + second.cosignature

    # The operator rewrites fact 1 and re-signs with the real key: the proof cannot bridge the two.
    rewritten = _tree([leaves[0], b"forged", *leaves[2:], b"fact 7"])
    with pytest.raises(InconsistentHistory):
        witness.observe(_signed(rewritten), _proof(rewritten, 7, 8), [LOG_VERIFIER], now=1_700_000_200)
    # Rolled back to fewer leaves, or the same size with another root: refused as well.
    with pytest.raises(InconsistentHistory, match="rolled back"):
        witness.observe(_signed(honest, 5), None, [LOG_VERIFIER], now=1_700_000_300)
    with pytest.raises(InconsistentHistory):
        witness.observe(_signed(rewritten, 7), None, [LOG_VERIFIER], now=1_700_000_300)
    # Nothing moved: the kept checkpoint is the honest one, and the contradiction is kept as evidence.
    kept = witness.kept([LOG_VERIFIER])
    assert kept is not None and (kept.size, kept.root_hash) == (7, honest.root())
    evidence = sorted(p.name for p in (tmp_path / "w" / "evidence").iterdir())
    assert evidence == [
        "kept-7.checkpoint",
        "refused-5.checkpoint",
        "refused-7.checkpoint",
        "refused-8.checkpoint",
    ]
    # The state survives a restart: same key, same name.
    again = Witness(tmp_path / "w")
    assert again.key == witness.key and (tmp_path / "w" / "witness.key").stat().st_mode & 0o077 == 0


def test_the_witness_refuses_a_checkpoint_not_signed_by_the_pinned_key(tmp_path: Path) -> None:
    impostor = Ed25519PrivateKey.generate()
    tree = _tree([b"a", b"b"])
    note = sign_checkpoint(Checkpoint(origin=LOG, size=2, root_hash=tree.root()), LOG, impostor)
    with pytest.raises(VerifyError):
        Witness(tmp_path / "w").observe(note, None, [LOG_VERIFIER], now=1)
    assert not (tmp_path / "w" / "checkpoint").exists()


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_jl23_zfjl_verify_witness_from_files(tmp_path: Path) -> None:
    key = tmp_path / "ledger.pub"
    key.write_text(LOG_VERIFIER.encode() + "\n")
    leaves = [f"fact {i}".encode() for i in range(6)]
    honest = _tree(leaves)
    old, new, bad = tmp_path / "old.cp", tmp_path / "new.cp", tmp_path / "bad.cp"
    old.write_text(_signed(honest, 4))
    new.write_text(json.dumps({"note": _signed(honest), "verifier_key": "ignored"}))
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(_proof(honest, 4, 6).to_json()))
    state = tmp_path / "state"

    first = _cli("witness", "--key", key, "--state", state, "--checkpoint", old)
    assert first.returncode == 0, first.stderr
    assert "first checkpoint witnessed" in first.stdout
    second = _cli("witness", "--key", key, "--state", state, "--checkpoint", new, "--proof", proof)
    assert second.returncode == 0, second.stderr
    assert "extends the witnessed one of 4" in second.stdout and "— zfjl.witness/" in second.stdout

    rewritten = _tree([b"forged", *leaves[1:], b"fact 6"])
    bad.write_text(_signed(rewritten))
    proof.write_text(json.dumps(_proof(rewritten, 6, 7).to_json()))
    refused = _cli("witness", "--key", key, "--state", state, "--checkpoint", bad, "--proof", proof)
    assert refused.returncode == 1
    assert "历史被改写" in refused.stderr and "the history was rewritten" in refused.stderr
