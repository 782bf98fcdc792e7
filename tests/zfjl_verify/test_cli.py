"""``zfjl-verify`` as an auditor runs it: exit 0 when the ledger holds, 1 with a message when it does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify import (
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    MerkleTree,
    NoteVerifier,
    encode_hash,
    leaf_hash,
    sign_checkpoint,
)

ORIGIN = "zfjl.example/ledger"
SCRIPT = Path(sys.executable).parent / "zfjl-verify"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as someone without the server would."""
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


class Log:
    """A small signed log written to files: the key, checkpoints and proofs an auditor receives."""

    def __init__(self, folder: Path, leaves: list[bytes]) -> None:
        self.folder = folder
        self.key = Ed25519PrivateKey.generate()
        self.leaves = leaves
        self.tree = MerkleTree(leaf_hash(d) for d in leaves)
        self.key_file = folder / "ledger.pub"
        self.key_file.write_text(
            "# the agency's ledger key\n" + NoteVerifier.from_private_key(ORIGIN, self.key).encode() + "\n"
        )

    def checkpoint(self, size: int, name: str, root: bytes | None = None) -> Path:
        """Sign the tree head of ``size`` leaves (or a chosen root) into a file."""
        head = Checkpoint(origin=ORIGIN, size=size, root_hash=root or self.tree.root(size))
        path = self.folder / name
        path.write_text(sign_checkpoint(head, ORIGIN, self.key), encoding="utf-8")
        return path

    def write(self, name: str, document: dict[str, object]) -> Path:
        """Write a JSON document."""
        path = self.folder / name
        path.write_text(json.dumps(document))
        return path


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path, [f"segment {i} sha256=…".encode() for i in range(11)])


def test_checkpoint_with_the_right_key_passes(log: Log) -> None:
    result = run("checkpoint", "--key", log.key_file, log.checkpoint(11, "cp"))
    assert result.returncode == 0, result.stderr
    assert "通过" in result.stdout and "OK" in result.stdout


def test_checkpoint_with_a_changed_size_fails_with_a_bilingual_message(log: Log) -> None:
    path = log.checkpoint(11, "cp")
    path.write_text(path.read_text(encoding="utf-8").replace("\n11\n", "\n10\n"), encoding="utf-8")
    result = run("checkpoint", "--key", log.key_file, path)
    assert result.returncode == 1
    assert "失败" in result.stderr and "FAILED" in result.stderr and "signature" in result.stderr


def test_checkpoint_signed_by_another_key_fails(log: Log, tmp_path: Path) -> None:
    other = tmp_path / "other.pub"
    other.write_text(NoteVerifier.from_private_key(ORIGIN, Ed25519PrivateKey.generate()).encode())
    result = run("checkpoint", "--key", other, log.checkpoint(11, "cp"))
    assert result.returncode == 1
    assert "trusted key" in result.stderr


def test_checkpoint_from_an_unexpected_origin_fails(log: Log) -> None:
    result = run(
        "--origin", "elsewhere.example/log", "checkpoint", "--key", log.key_file, log.checkpoint(11, "cp")
    )
    assert result.returncode == 1


def test_inclusion_of_leaf_data_passes_and_of_other_data_fails(log: Log) -> None:
    cp = log.checkpoint(11, "cp")
    proof = log.write(
        "proof.json",
        InclusionProof(leaf_index=6, tree_size=11, hashes=tuple(log.tree.inclusion_proof(6, 11))).to_json(),
    )
    data = log.folder / "leaf"
    data.write_bytes(log.leaves[6])
    ok = run("inclusion", "--key", log.key_file, "--checkpoint", cp, "--proof", proof, "--leaf-data", data)
    assert ok.returncode == 0, ok.stderr
    by_hash = run(
        "inclusion",
        "--key",
        log.key_file,
        "--checkpoint",
        cp,
        "--proof",
        proof,
        "--leaf-hash",
        encode_hash(log.tree.leaf(6)),
    )
    assert by_hash.returncode == 0, by_hash.stderr
    data.write_bytes(log.leaves[6] + b" edited")
    bad = run("inclusion", "--key", log.key_file, "--checkpoint", cp, "--proof", proof, "--leaf-data", data)
    assert bad.returncode == 1
    assert "inclusion proof fails" in bad.stderr


def test_inclusion_proof_with_an_unconsumed_path_fails(log: Log) -> None:
    cp = log.checkpoint(11, "cp")
    hashes = [*map(encode_hash, log.tree.inclusion_proof(6, 11)), encode_hash(log.tree.root())]
    proof = log.write("proof.json", {"leaf_index": 6, "tree_size": 11, "hashes": hashes})
    result = run(
        "inclusion",
        "--key",
        log.key_file,
        "--checkpoint",
        cp,
        "--proof",
        proof,
        "--leaf-hash",
        encode_hash(log.tree.leaf(6)),
    )
    assert result.returncode == 1
    assert "longer" in result.stderr


@pytest.mark.parametrize(
    "document",
    [
        {"leaf_index": 11, "tree_size": 11, "hashes": []},
        {"leaf_index": -1, "tree_size": 11, "hashes": []},
        {"leaf_index": True, "tree_size": 11, "hashes": []},
        {"leaf_index": 0, "tree_size": 11, "hashes": "nope"},
        {"leaf_index": 0, "tree_size": 11, "hashes": ["not base64!"]},
        {"leaf_index": 0, "tree_size": 11, "hashes": [encode_hash(b"short")]},
        [],
    ],
    ids=["index-eq-size", "negative", "bool", "hashes-not-list", "bad-base64", "short-hash", "not-object"],
)
def test_malformed_inclusion_proofs_fail_cleanly(log: Log, document: object) -> None:
    cp = log.checkpoint(11, "cp")
    proof = log.folder / "proof.json"
    proof.write_text(json.dumps(document))
    result = run(
        "inclusion",
        "--key",
        log.key_file,
        "--checkpoint",
        cp,
        "--proof",
        proof,
        "--leaf-hash",
        encode_hash(log.tree.leaf(0)),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_consistency_of_an_honest_log_passes(log: Log) -> None:
    old, new = log.checkpoint(5, "old"), log.checkpoint(11, "new")
    proof = log.write(
        "c.json",
        ConsistencyProof(old_size=5, new_size=11, hashes=tuple(log.tree.consistency_proof(5, 11))).to_json(),
    )
    result = run("consistency", "--key", log.key_file, "--old", old, "--new", new, "--proof", proof)
    assert result.returncode == 0, result.stderr
    assert "历史未被改写" in result.stdout


def test_consistency_detects_a_rewritten_history(log: Log) -> None:
    """The operator edits leaf 2 and re-signs a rebuilt tree: a witness with the older checkpoint sees it."""
    old = log.checkpoint(5, "old")
    rewritten = MerkleTree(leaf_hash(d if i != 2 else b"edited") for i, d in enumerate(log.leaves))
    new = log.checkpoint(11, "new", root=rewritten.root())
    proof = log.write(
        "c.json",
        ConsistencyProof(old_size=5, new_size=11, hashes=tuple(rewritten.consistency_proof(5, 11))).to_json(),
    )
    result = run("consistency", "--key", log.key_file, "--old", old, "--new", new, "--proof", proof)
    assert result.returncode == 1
    assert "rewritten" in result.stderr and "历史被改写" in result.stderr


def test_consistency_of_two_heads_of_one_size_with_different_roots_fails(log: Log) -> None:
    old = log.checkpoint(11, "old")
    new = log.checkpoint(11, "new", root=leaf_hash(b"another tree"))
    result = run("consistency", "--key", log.key_file, "--old", old, "--new", new)
    assert result.returncode == 1


def test_a_shrunken_log_fails_consistency(log: Log) -> None:
    old, new = log.checkpoint(11, "old"), log.checkpoint(5, "new")
    proof = log.write("c.json", {"old_size": 11, "new_size": 5, "hashes": []})
    result = run("consistency", "--key", log.key_file, "--old", old, "--new", new, "--proof", proof)
    assert result.returncode == 1


def test_missing_file_is_a_failure_not_a_traceback(log: Log) -> None:
    result = run("checkpoint", "--key", log.key_file, log.folder / "absent")
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_usage_error_exits_2() -> None:
    assert run("inclusion").returncode == 2


def test_the_servers_json_answers_verify_as_they_are_downloaded(log: Log) -> None:
    """``curl …/ledger/v1/checkpoint > cp.json`` and a leaf answer: no editing needed before verifying."""
    note = log.checkpoint(11, "cp").read_text(encoding="utf-8")
    # The served verifier_key is ignored: a key fetched beside the checkpoint would prove nothing.
    stranger = NoteVerifier.from_private_key(ORIGIN, Ed25519PrivateKey.generate()).encode()
    cp = log.write("cp.json", {"origin": ORIGIN, "tree_size": 11, "note": note, "verifier_key": stranger})
    proof = InclusionProof(
        leaf_index=4, tree_size=11, hashes=tuple(log.tree.inclusion_proof(4, 11))
    ).to_json()
    leaf = log.write("leaf.json", {"leaf_index": 4, "data": log.leaves[4].decode(), "inclusion_proof": proof})
    assert run("checkpoint", "--key", log.key_file, cp).returncode == 0
    ok = run("inclusion", "--key", log.key_file, "--checkpoint", cp, "--leaf-json", leaf)
    assert ok.returncode == 0, ok.stderr
    other = log.write("other.json", {"data": log.leaves[5].decode(), "inclusion_proof": proof})
    assert run("inclusion", "--key", log.key_file, "--checkpoint", cp, "--leaf-json", other).returncode == 1
    no_proof = log.write("bare.json", {"data": log.leaves[4].decode()})
    result = run("inclusion", "--key", log.key_file, "--checkpoint", cp, "--leaf-json", no_proof)
    assert result.returncode == 1 and "--proof" in result.stderr
    empty = log.write("empty.json", {"tree_size": 11})
    assert run("checkpoint", "--key", log.key_file, empty).returncode == 1


def test_the_verifier_runs_with_the_server_and_its_dependencies_absent(log: Log) -> None:
    """An auditor's machine has no Flask, SQLAlchemy or server code: blocked here, the check still passes."""
    blocked = ["server", "protocol", "edge_agent", "zfjl_common", "flask", "sqlalchemy", "paho", "boto3"]
    program = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from zfjl_verify.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cp = log.checkpoint(11, "cp")
    result = subprocess.run(
        [sys.executable, "-c", program, "checkpoint", "--key", str(log.key_file), str(cp)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
