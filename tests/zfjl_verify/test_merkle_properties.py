"""Property tests: every proof the tree generates verifies, and every single mutation of it fails."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from zfjl_verify import MerkleTree, VerifyError, leaf_hash, node_hash, verify_consistency, verify_inclusion


def _reference_root(hashes: list[bytes]) -> bytes:
    """MTH exactly as RFC 9162 §2.1.1 states it, recursively, to check the tree's stored-subtree shortcut."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return node_hash(_reference_root(hashes[:k]), _reference_root(hashes[k:]))


def _tree(n: int) -> MerkleTree:
    return MerkleTree(leaf_hash(i.to_bytes(4, "big")) for i in range(n))


@st.composite
def _inclusion_case(draw: st.DrawFn) -> tuple[MerkleTree, int, int]:
    size = draw(st.integers(1, 300))
    return _tree(size + draw(st.integers(0, 20))), draw(st.integers(0, size - 1)), size


@st.composite
def _consistency_case(draw: st.DrawFn) -> tuple[MerkleTree, int, int]:
    new = draw(st.integers(1, 300))
    return _tree(new), draw(st.integers(1, new)), new


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 200))
def test_root_equals_the_rfc_recursive_definition(n: int) -> None:
    tree = _tree(n)
    hashes = [tree.leaf(i) for i in range(n)]
    for size in {0, n // 3, n // 2, n}:
        assert tree.root(size) == _reference_root(hashes[:size])


@settings(max_examples=200, deadline=None)
@given(_inclusion_case(), st.data())
def test_generated_inclusion_proofs_verify_and_every_mutation_fails(
    case: tuple[MerkleTree, int, int], data: st.DataObject
) -> None:
    tree, index, size = case
    path = tree.inclusion_proof(index, size)
    root, leaf = tree.root(size), tree.leaf(index)
    verify_inclusion(index, size, leaf, path, root)

    mutations: list[tuple[int, int, bytes, list[bytes], bytes]] = []
    if path:
        i = data.draw(st.integers(0, len(path) - 1))
        bit = data.draw(st.integers(0, 255))
        flipped = bytearray(path[i])
        flipped[bit // 8] ^= 1 << (bit % 8)
        mutations.append((index, size, leaf, [*path[:i], bytes(flipped), *path[i + 1 :]], root))
        mutations.append((index, size, leaf, path[:-1], root))
    mutations.append((index, size, leaf, [*path, root], root))
    other = data.draw(st.integers(0, size - 1).filter(lambda j: j != index)) if size > 1 else None
    if other is not None:
        mutations.append((other, size, leaf, path, root))
        mutations.append((index, size, tree.leaf(other), path, root))
    if tree.size > size:
        # The root of a larger tree: a checkpoint signs the size and root together, so only the pair counts.
        mutations.append((index, size, leaf, path, tree.root(size + 1)))
    mutations.append((index, size, leaf, path, leaf_hash(b"another root")))
    for mutated in mutations:
        try:
            verify_inclusion(*mutated)
        except VerifyError:
            continue
        raise AssertionError(f"a mutated inclusion proof verified: index={mutated[0]} size={mutated[1]}")


@settings(max_examples=200, deadline=None)
@given(_consistency_case(), st.data())
def test_generated_consistency_proofs_verify_and_every_mutation_fails(
    case: tuple[MerkleTree, int, int], data: st.DataObject
) -> None:
    tree, old, new = case
    path = tree.consistency_proof(old, new)
    r1, r2 = tree.root(old), tree.root(new)
    verify_consistency(old, new, r1, r2, path)
    if old == new:
        return  # nothing to mutate but the roots, covered below
    mutations: list[tuple[int, int, bytes, bytes, list[bytes]]] = []
    i = data.draw(st.integers(0, len(path) - 1))
    bit = data.draw(st.integers(0, 255))
    flipped = bytearray(path[i])
    flipped[bit // 8] ^= 1 << (bit % 8)
    mutations.append((old, new, r1, r2, [*path[:i], bytes(flipped), *path[i + 1 :]]))
    mutations.append((old, new, r1, r2, path[:-1]))
    mutations.append((old, new, r1, r2, [*path, r1]))
    mutations.append((old, new, leaf_hash(b"x"), r2, path))
    mutations.append((old, new, r1, leaf_hash(b"x"), path))
    if old > 1:
        mutations.append((old - 1, new, r1, r2, path))
    for mutated in mutations:
        try:
            verify_consistency(*mutated)
        except VerifyError:
            continue
        raise AssertionError(f"a mutated consistency proof verified: {mutated[0]}→{mutated[1]}")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=150))
def test_bulk_extend_builds_the_same_tree_as_appending_one_by_one(datas: list[bytes]) -> None:
    one_by_one, bulk = MerkleTree(), MerkleTree()
    for data in datas:
        one_by_one.append(data)
    bulk.extend(datas)
    sizes = range(len(datas) + 1)
    assert [bulk.root(n) for n in sizes] == [one_by_one.root(n) for n in sizes]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=4), max_size=130), st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_batched_appends_give_the_same_roots_and_proofs_as_one_by_one(
    datas: list[bytes], batches: list[int]
) -> None:
    """Batches of any sizes, onto a tree of any size, build the very tree that single appends build."""
    one_by_one, batched = MerkleTree(), MerkleTree()
    for data in datas:
        one_by_one.append(data)
    start, turn = 0, 0
    while start < len(datas):
        step = batches[turn % len(batches)]
        if turn % 2:
            batched.extend(datas[start : start + step])
        else:
            batched.extend_hashes(leaf_hash(data) for data in datas[start : start + step])
        start, turn = start + step, turn + 1
    n = len(datas)
    assert batched.size == one_by_one.size == n
    for size in range(n + 1):
        assert batched.root(size) == one_by_one.root(size)
        assert batched.consistency_proof(size, n) == one_by_one.consistency_proof(size, n)
    for index in range(n):
        assert batched.inclusion_proof(index) == one_by_one.inclusion_proof(index)


def test_extend_hashes_refuses_a_hash_of_the_wrong_length() -> None:
    tree = MerkleTree([leaf_hash(b"a")])
    try:
        tree.extend_hashes([leaf_hash(b"b"), b"short"])
    except VerifyError:
        assert tree.size == 1  # nothing of the refused batch was appended
        return
    raise AssertionError("a 5-byte leaf hash was accepted")
