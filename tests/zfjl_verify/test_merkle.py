"""RFC 9162 hashing, proofs and their verification against the published vectors, and malformed proofs."""

from __future__ import annotations

import pytest

from tests.zfjl_verify.vectors import CONSISTENCY, EMPTY_TREE_HASH, INCLUSION, LEAVES, ROOTS, SOME_HASH
from zfjl_verify import (
    EMPTY_ROOT,
    InconsistentHistory,
    MalformedProof,
    MerkleTree,
    ProofMismatch,
    VerifyError,
    leaf_hash,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)


def _tree(n: int) -> MerkleTree:
    return MerkleTree(leaf_hash(d) for d in LEAVES[:n])


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == EMPTY_TREE_HASH
    assert MerkleTree().root() == EMPTY_TREE_HASH


@pytest.mark.parametrize("n", range(1, 9))
def test_root_of_first_n_leaves_matches_published_root(n: int) -> None:
    assert root_of([leaf_hash(d) for d in LEAVES[:n]]) == ROOTS[n - 1]
    # A tree grown to 8 leaves still answers the root of its first n.
    assert _tree(8).root(n) == ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_published_inclusion_proof_is_generated_and_verifies(
    index: int, size: int, path: tuple[bytes, ...]
) -> None:
    tree = _tree(8)
    assert tuple(tree.inclusion_proof(index, size)) == path
    verify_inclusion(index, size, leaf_hash(LEAVES[index]), path, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_published_consistency_proof_is_generated_and_verifies(
    old: int, new: int, path: tuple[bytes, ...]
) -> None:
    tree = _tree(8)
    assert tuple(tree.consistency_proof(old, new)) == path
    verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], path)


def _inclusion_probes(
    index: int, size: int, path: tuple[bytes, ...], root: bytes, leaf: bytes
) -> list[tuple]:
    """The corruptions transparency-dev/merkle's corruptInclusionProof applies: each must fail."""
    probes: list[tuple] = [
        (index - 1, size, root, leaf, path),
        (index + 1, size, root, leaf, path),
        (index ^ 2, size, root, leaf, path),
        (index, size * 2, root, leaf, path),
        (index, size // 2, root, leaf, path),
        (index, size, root, b"WrongLeaf", path),
        (index, size, EMPTY_TREE_HASH, leaf, path),
        (index, size, SOME_HASH, leaf, path),
        (index, size, root, leaf, (*path, b"")),
        (index, size, root, leaf, (*path, root)),
        (index, size, root, leaf, (b"", *path)),
        (index, size, root, leaf, (root, *path)),
    ]
    for i in range(len(path)):
        flipped = bytearray(path[i])
        flipped[0] ^= 8
        probes.append((index, size, root, leaf, (*path[:i], bytes(flipped), *path[i + 1 :])))
    if path:
        probes.append((index, size, root, leaf, path[:-1]))
    if len(path) > 1:
        probes.append((index, size, root, leaf, (SOME_HASH, path[0], *path[1:])))
    return probes


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_every_corrupted_inclusion_proof_fails(index: int, size: int, path: tuple[bytes, ...]) -> None:
    leaf, root = leaf_hash(LEAVES[index]), ROOTS[size - 1]
    accepted = []
    for probe in _inclusion_probes(index, size, path, root, leaf):
        try:
            verify_inclusion(*probe[:2], probe[3], probe[4], probe[2])
        except VerifyError:
            continue
        accepted.append(probe)
    assert accepted == []


@pytest.mark.parametrize(("old", "new", "path"), [c for c in CONSISTENCY if c[2]])
def test_every_corrupted_consistency_proof_fails(old: int, new: int, path: tuple[bytes, ...]) -> None:
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    probes: list[tuple] = [
        (old - 1, new, r1, r2, path),
        (old + 1, new, r1, r2, path),
        (old ^ 2, new, r1, r2, path),
        (old, new * 2, r1, r2, path),
        (old, new // 2, r1, r2, path),
        (old, new, b"WrongRoot", r2, path),
        (old, new, r1, b"WrongRoot", path),
        (old, new, r2, r1, path),
        (old, new, r1, r2, ()),
        (old, new, r1, r2, (*path, b"")),
        (old, new, r1, r2, (*path, r1)),
        (old, new, r1, r2, (*path, r2)),
        (old, new, r1, r2, (b"", *path)),
        (old, new, r1, r2, (r1, *path)),
        (old, new, r1, r2, (r2, *path)),
        (old, new, r1, r2, (path[0], *path)),
        (old, new, r1, r2, path[:-1]),
    ]
    for i in range(len(path)):
        flipped = bytearray(path[i])
        flipped[0] ^= 16
        probes.append((old, new, r1, r2, (*path[:i], bytes(flipped), *path[i + 1 :])))
    accepted = []
    for o, n, a, b, p in probes:
        try:
            verify_consistency(o, n, a, b, p)
        except VerifyError:
            continue
        accepted.append((o, n, p))
    assert accepted == []


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (1, 1), (-1, 4), (8, 8)])
def test_inclusion_index_out_of_range_is_malformed(index: int, size: int) -> None:
    with pytest.raises(MalformedProof):
        root_from_inclusion_proof(index, size, SOME_HASH, ())


def test_inclusion_path_with_unconsumed_elements_is_malformed_not_just_a_mismatch() -> None:
    index, size, path = INCLUSION[1]
    with pytest.raises(MalformedProof, match="longer"):
        root_from_inclusion_proof(index, size, leaf_hash(LEAVES[index]), (*path, SOME_HASH))
    with pytest.raises(MalformedProof, match="shorter"):
        root_from_inclusion_proof(index, size, leaf_hash(LEAVES[index]), path[:-1])


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_hashes_of_the_wrong_length_are_malformed(bad: bytes) -> None:
    index, size, path = INCLUSION[1]
    leaf, root = leaf_hash(LEAVES[index]), ROOTS[size - 1]
    with pytest.raises(MalformedProof):
        verify_inclusion(index, size, bad, path, root)
    with pytest.raises(MalformedProof):
        verify_inclusion(index, size, leaf, path, bad)
    with pytest.raises(MalformedProof):
        verify_inclusion(index, size, leaf, (bad, *path[1:]), root)
    with pytest.raises(MalformedProof):
        verify_consistency(1, 8, bad, ROOTS[7], CONSISTENCY[1][2])


def test_consistency_edge_sizes() -> None:
    # transparency-dev/merkle TestVerifyConsistency: what is always consistent, and what never is.
    verify_consistency(0, 0, EMPTY_TREE_HASH, EMPTY_TREE_HASH, ())
    verify_consistency(0, 5, EMPTY_TREE_HASH, ROOTS[4], ())
    verify_consistency(3, 3, ROOTS[2], ROOTS[2], ())
    with pytest.raises(InconsistentHistory):
        verify_consistency(3, 3, ROOTS[2], ROOTS[3], ())
    with pytest.raises(MalformedProof):
        verify_consistency(2, 1, ROOTS[1], ROOTS[0], ())  # time travel to the past
    with pytest.raises(MalformedProof):
        verify_consistency(1, 2, ROOTS[0], ROOTS[1], ())  # a proof is needed and none was given
    with pytest.raises(MalformedProof):
        verify_consistency(0, 1, EMPTY_TREE_HASH, ROOTS[0], (EMPTY_TREE_HASH,))
    with pytest.raises(MalformedProof):
        verify_consistency(1, 1, ROOTS[0], ROOTS[0], (EMPTY_TREE_HASH,))


def test_a_rewritten_history_fails_consistency_with_the_older_root() -> None:
    """An operator who changes leaf 2 and rebuilds the tree cannot prove the new root extends the old one."""
    honest = _tree(5)
    old_root = honest.root()
    rewritten = MerkleTree(leaf_hash(d if i != 2 else b"edited") for i, d in enumerate(LEAVES))
    with pytest.raises(InconsistentHistory):
        verify_consistency(5, 8, old_root, rewritten.root(), rewritten.consistency_proof(5, 8))


def test_a_proof_for_a_leaf_not_in_the_tree_is_a_mismatch() -> None:
    tree = _tree(8)
    with pytest.raises(ProofMismatch):
        verify_inclusion(3, 8, leaf_hash(b"not a leaf"), tree.inclusion_proof(3), tree.root())


def test_proof_generation_refuses_sizes_beyond_the_tree() -> None:
    tree = _tree(4)
    with pytest.raises(MalformedProof):
        tree.inclusion_proof(0, 5)
    with pytest.raises(MalformedProof):
        tree.inclusion_proof(4, 4)
    with pytest.raises(MalformedProof):
        tree.consistency_proof(3, 5)
    with pytest.raises(MalformedProof):
        tree.consistency_proof(4, 3)
