"""``zfjl-verify package`` on bags made by hand, with no server: what the BagIt layer and the proofs refuse.

The server-built packages and their tampering are tested in tests/server/domain/governance/test_archive.py;
here each rule of the verifier is taken alone, including the malformed inputs a forger could hand it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify import Checkpoint, MerkleTree, NoteVerifier, encode_hash, leaf_hash, sign_checkpoint
from zfjl_verify.cli import main
from zfjl_verify.package import PACKAGE_FORMAT, verify_package

NAME = "zfjl.ledger/test"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
VERIFIER = NoteVerifier.from_private_key(NAME, KEY)
MEDIA = b"\x00\x00\x00\x18ftypiso6" + bytes(range(256)) * 8
MANIFEST = '{"kind":"segment"}'


def _leaf(table: str, row_id: int, row: dict[str, object]) -> bytes:
    document = {"v": 1, "kind": "x", "table": table, "id": row_id, "row": row}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _seal(bag: Path) -> None:
    """Write the BagIt manifests, tag manifests and bag-info over whatever is under data/."""
    files = sorted(p for p in (bag / "data").rglob("*") if p.is_file())
    for algorithm in ("sha256", "sha512"):
        lines = [
            f"{hashlib.new(algorithm, p.read_bytes()).hexdigest()}  {p.relative_to(bag).as_posix()}\n"
            for p in files
        ]
        (bag / f"manifest-{algorithm}.txt").write_text("".join(lines))
    (bag / "bagit.txt").write_text("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    oxum = f"{sum(p.stat().st_size for p in files)}.{len(files)}"
    (bag / "bag-info.txt").write_text(f"Payload-Oxum: {oxum}\n")
    tags = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest-sha512.txt")
    (bag / "tagmanifest-sha256.txt").write_text(
        "".join(f"{hashlib.sha256((bag / t).read_bytes()).hexdigest()}  {t}\n" for t in tags)
    )


def make_bag(root: Path) -> Path:
    """A package of one recording (leaf 1 of a three-leaf tree) with a signed checkpoint."""
    bag = root / "bag"
    (bag / "data/recordings/7").mkdir(parents=True)
    (bag / "data/ledger/leaves").mkdir(parents=True)
    (bag / "data/recordings/7/segment.mp4").write_bytes(MEDIA)
    (bag / "data/recordings/7/manifest.txt").write_text(MANIFEST)
    row = {"sha256": hashlib.sha256(MEDIA).hexdigest(), "size": len(MEDIA), "manifest_text": MANIFEST}
    leaves = [_leaf("audit_log", 1, {}), _leaf("recordings", 7, row), _leaf("audit_log", 2, {})]
    tree = MerkleTree()
    for data in leaves:
        tree.append_hash(leaf_hash(data))
    (bag / "data/ledger/leaves/1.json").write_bytes(leaves[1])
    head = Checkpoint(origin=NAME, size=3, root_hash=tree.root())
    (bag / "data/ledger/checkpoint.note").write_text(sign_checkpoint(head, NAME, KEY))
    path = [encode_hash(h) for h in tree.inclusion_proof(1, 3)]
    index = {
        "format": PACKAGE_FORMAT,
        "checkpoint": "ledger/checkpoint.note",
        "leaves": [{"leaf_index": 1, "table": "recordings", "id": 7, "data": "ledger/leaves/1.json",
                    "proof": {"leaf_index": 1, "tree_size": 3, "hashes": path}}],
        "recordings": [{"id": 7, "media": "recordings/7/segment.mp4",
                        "manifest": "recordings/7/manifest.txt"}],
        "rows": {"recordings": [7]},
    }  # fmt: skip
    (bag / "data/package.json").write_text(json.dumps(index))
    _seal(bag)
    return bag


def _codes(bag: Path) -> list[str]:
    return [p.code for p in verify_package(bag, [VERIFIER]).problems]


def test_a_good_bag_verifies_as_a_directory_and_as_a_zip(tmp_path: Path) -> None:
    bag = make_bag(tmp_path)
    report = verify_package(bag, [VERIFIER])
    assert report.ok, report.problems
    assert (report.leaves, report.recordings, report.files) == (1, 1, 5)
    archive = tmp_path / "bag.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(p for p in bag.rglob("*") if p.is_file()):
            out.write(path, f"zfjl-case-1/{path.relative_to(bag).as_posix()}")
    assert verify_package(archive, [VERIFIER]).ok
    (tmp_path / "key.pub").write_text(VERIFIER.encode() + "\n")
    assert main(["package", "--key", str(tmp_path / "key.pub"), str(archive)]) == 0


def test_a_manifest_path_leaving_the_bag_is_refused(tmp_path: Path) -> None:
    bag = make_bag(tmp_path)
    manifest = bag / "manifest-sha256.txt"
    manifest.write_text(manifest.read_text() + f"{'0' * 64}  data/../../etc/passwd\n")
    assert "bad_manifest" in _codes(bag)


def test_a_wrong_payload_oxum_and_a_missing_declaration_are_reported(tmp_path: Path) -> None:
    bag = make_bag(tmp_path)
    (bag / "bag-info.txt").write_text("Payload-Oxum: 1.1\n")
    assert "oxum_mismatch" in _codes(bag)
    (bag / "bagit.txt").unlink()
    assert "not_a_bag" in _codes(bag)


def test_an_extra_file_in_the_payload_is_unlisted(tmp_path: Path) -> None:
    bag = make_bag(tmp_path)
    (bag / "data/smuggled.mp4").write_bytes(b"x")
    assert "file_unlisted" in _codes(bag)


def test_a_recording_the_ledger_does_not_vouch_for_is_unproved(tmp_path: Path) -> None:
    bag = make_bag(tmp_path)
    index = json.loads((bag / "data/package.json").read_text())
    index["recordings"].append(
        {"id": 8, "media": "recordings/7/segment.mp4", "manifest": "recordings/7/manifest.txt"}
    )
    index["rows"]["case_events"] = [3]
    (bag / "data/package.json").write_text(json.dumps(index))
    _seal(bag)
    assert sorted(_codes(bag)) == ["unproved_recording", "unproved_row"]


def test_a_proof_for_another_tree_size_fails(tmp_path: Path) -> None:
    bag = make_bag(tmp_path)
    index = json.loads((bag / "data/package.json").read_text())
    index["leaves"][0]["proof"]["tree_size"] = 2
    (bag / "data/package.json").write_text(json.dumps(index))
    _seal(bag)
    assert "proof_failed" in _codes(bag)


@pytest.mark.parametrize("content", [b"not json", b'{"format": "other/1"}', b"[]"])
def test_an_index_that_is_not_ours_is_refused(tmp_path: Path, content: bytes) -> None:
    bag = make_bag(tmp_path)
    (bag / "data/package.json").write_bytes(content)
    _seal(bag)
    assert _codes(bag) == ["no_index"]


def test_an_unreadable_package_exits_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "key.pub").write_text(VERIFIER.encode() + "\n")
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really")
    assert main(["package", "--key", str(tmp_path / "key.pub"), str(tmp_path / "junk.zip")]) == 1
    assert main(["package", "--key", str(tmp_path / "key.pub"), str(tmp_path / "absent")]) == 1
    assert "FAILED" in capsys.readouterr().err


def _disposed_bag(root: Path, stone: dict[str, object], described: dict[str, object]) -> Path:
    """make_bag's recording disposed of (JL-19): no bytes, a tombstone file, the tombstone a proved leaf."""
    bag = make_bag(root)
    (bag / "data/recordings/7/segment.mp4").unlink()
    (bag / "data/recordings/7/tombstone.json").write_text(json.dumps(described))
    row = {"sha256": hashlib.sha256(MEDIA).hexdigest(), "size": len(MEDIA), "manifest_text": MANIFEST}
    leaves = [_leaf("audit_log", 1, {}), _leaf("recordings", 7, row), _leaf("disposal_tombstones", 5, stone)]
    tree = MerkleTree()
    for data in leaves:
        tree.append_hash(leaf_hash(data))
    head = Checkpoint(origin=NAME, size=3, root_hash=tree.root())
    (bag / "data/ledger/checkpoint.note").write_text(sign_checkpoint(head, NAME, KEY))
    entries = []
    for i, (table, row_id) in ((1, ("recordings", 7)), (2, ("disposal_tombstones", 5))):
        (bag / f"data/ledger/leaves/{i}.json").write_bytes(leaves[i])
        path = [encode_hash(h) for h in tree.inclusion_proof(i, 3)]
        entries.append({"leaf_index": i, "table": table, "id": row_id, "data": f"ledger/leaves/{i}.json",
                        "proof": {"leaf_index": i, "tree_size": 3, "hashes": path}})  # fmt: skip
    index = json.loads((bag / "data/package.json").read_text())
    index["leaves"] = entries
    index["recordings"] = [{"id": 7, "tombstone": "recordings/7/tombstone.json", "tombstone_id": 5,
                            "manifest": "recordings/7/manifest.txt"}]  # fmt: skip
    index["rows"]["disposal_tombstones"] = [5]
    (bag / "data/package.json").write_text(json.dumps(index))
    _seal(bag)
    return bag


def test_jl18_a_disposed_recording_is_accounted_for_only_by_its_proved_matching_tombstone(
    tmp_path: Path,
) -> None:
    stone = {"recording_id": 7, "sha256": hashlib.sha256(MEDIA).hexdigest(), "size": len(MEDIA),
             "reason": "保存期满", "requested_by": "3", "approved_by": "4"}  # fmt: skip
    report = verify_package(_disposed_bag(tmp_path / "good", stone, stone), [VERIFIER])
    assert report.ok, report.problems
    assert (report.recordings, report.disposed) == (1, 1)
    # The tombstone file says another reason than the ledger: refused.
    edited = _disposed_bag(tmp_path / "edited", stone, {**stone, "reason": "随意删除"})
    assert _codes(edited) == ["disposal_mismatch"]
    # A tombstone of other bytes does not account for this recording.
    other = {**stone, "sha256": "0" * 64}
    assert _codes(_disposed_bag(tmp_path / "other", other, other)) == ["disposal_mismatch"]
    # Bytes dropped with no proved tombstone at all: reported, never passed as disposed.
    bag = _disposed_bag(tmp_path / "unproved", stone, stone)
    index = json.loads((bag / "data/package.json").read_text())
    index["recordings"][0]["tombstone_id"] = 6
    (bag / "data/package.json").write_text(json.dumps(index))
    _seal(bag)
    assert _codes(bag) == ["unproved_disposal"]
