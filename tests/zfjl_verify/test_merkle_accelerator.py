"""The optional C accelerator of the ledger's tree builds exactly the nodes hashlib builds (JL-6, JL-20).

``zfjl_verify._merkle_c`` (setup.py) hashes a whole batch of leaves and a level's sibling pairs in one
call each; ``zfjl_verify.merkle`` falls back to hashlib where it was not built. An auditor's verifier
and the server must agree on every root whichever path each of them runs, so both are checked here
against each other and against RFC 9162's definitions, and the fallback is exercised on its own.
"""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zfjl_verify import MerkleTree, leaf_hash, merkle, node_hash

accelerated = pytest.mark.skipif(not merkle.ACCELERATED, reason="the C accelerator was not built here")


@accelerated
@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=64))
def test_accelerated_leaf_hashes_are_rfc_9162_leaf_hashes(datas: list[bytes]) -> None:
    assert merkle._accelerator is not None
    assert merkle._accelerator.leaf_hashes(datas) == [leaf_hash(d) for d in datas]
    assert merkle._accelerator.leaf_hashes(tuple(datas)) == merkle._leaf_hashes_py(datas)


@accelerated
@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=40), st.integers(0, 40))
def test_accelerated_parents_are_rfc_9162_node_hashes(row: list[bytes], start: int) -> None:
    assert merkle._accelerator is not None
    start = min(start - start % 2, len(row) - len(row) % 2)
    pairs = (len(row) - start) // 2
    expected = [node_hash(row[start + 2 * j], row[start + 2 * j + 1]) for j in range(pairs)]
    assert merkle._accelerator.parents(row, start, pairs) == expected == merkle._parents_py(row, start, pairs)


@accelerated
def test_accelerator_refuses_what_is_not_a_tree_node() -> None:
    """A bad call raises a Python error; it never reads past a list or a buffer."""
    c = merkle._accelerator
    assert c is not None
    good = leaf_hash(b"a")
    with pytest.raises(ValueError):
        c.parents([good, b"short"], 0, 1)
    with pytest.raises(ValueError):
        c.parents([good, "x" * 32], 0, 1)
    with pytest.raises(IndexError):
        c.parents([good, good], 0, 2)
    with pytest.raises(IndexError):
        c.parents([good, good], -2, 1)
    with pytest.raises(TypeError):
        c.leaf_hashes(["text is not bytes"])
    with pytest.raises(TypeError):
        c.leaf_hashes(42)
    # Any bytes-like datum is hashed by its bytes.
    assert c.leaf_hashes([memoryview(b"abc"), bytearray(b"abc")]) == [leaf_hash(b"abc")] * 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=16), max_size=200), st.integers(1, 50))
def test_the_hashlib_fallback_builds_the_same_tree(datas: list[bytes], batch: int) -> None:
    """Where the accelerator is missing, ``extend`` takes the hashlib path and gives the same roots."""
    fast = MerkleTree()
    for start in range(0, len(datas), batch):
        fast.extend(datas[start : start + batch])
    with (
        mock.patch.object(merkle, "_leaf_hashes", merkle._leaf_hashes_py),
        mock.patch.object(merkle, "_parents", merkle._parents_py),
    ):
        slow = MerkleTree()
        for start in range(0, len(datas), batch):
            slow.extend(iter(datas[start : start + batch]))  # a generator, as a caller may pass
    assert [fast.root(n) for n in range(len(datas) + 1)] == [slow.root(n) for n in range(len(datas) + 1)]
