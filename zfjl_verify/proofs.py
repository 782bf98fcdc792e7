"""Inclusion and consistency proofs as JSON documents (what the server serves and ``zfjl-verify`` reads).

Inclusion: ``{"leaf_index": 5, "tree_size": 8, "hashes": ["<base64>", ...]}``.
Consistency: ``{"old_size": 6, "new_size": 8, "hashes": ["<base64>", ...]}``.
Hashes are standard base64 (RFC 4648 §4) like the root hash of a checkpoint, in RFC 9162 path order.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zfjl_verify.errors import MalformedProof

__all__ = ["ConsistencyProof", "InclusionProof", "decode_hash", "encode_hash"]

# A tree of 2**64 leaves has a 64-hash path; anything longer is garbage, not a proof.
MAX_PATH = 64


def encode_hash(digest: bytes) -> str:
    """A hash as standard base64."""
    return base64.b64encode(digest).decode("ascii")


def decode_hash(text: object) -> bytes:
    """A hash from standard base64; MalformedProof if it is not a string of valid base64."""
    if not isinstance(text, str):
        raise MalformedProof("哈希必须是 base64 字符串", "a hash must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise MalformedProof("哈希不是有效的 base64", "a hash is not valid base64") from None


def _size(document: Mapping[str, Any], field: str) -> int:
    value = document.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedProof(f"字段 {field} 必须是非负整数", f"field {field} must be a non-negative integer")
    return value


def _hashes(document: Mapping[str, Any]) -> tuple[bytes, ...]:
    value = document.get("hashes")
    if not isinstance(value, list) or len(value) > MAX_PATH:
        raise MalformedProof("字段 hashes 必须是哈希列表", "field hashes must be a list of at most 64 hashes")
    return tuple(decode_hash(item) for item in value)


def _load(text: str | bytes) -> Mapping[str, Any]:
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise MalformedProof("证明不是有效的 JSON", "the proof is not valid JSON") from None
    if not isinstance(document, dict):
        raise MalformedProof("证明必须是 JSON 对象", "the proof must be a JSON object")
    return document


@dataclass(frozen=True, kw_only=True)
class InclusionProof:
    """The audit path of leaf ``leaf_index`` in the tree of ``tree_size`` leaves (RFC 9162 §2.1.3)."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this proof."""
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "hashes": [encode_hash(h) for h in self.hashes],
        }

    @classmethod
    def from_json(cls, text: str | bytes) -> InclusionProof:
        """Parse an inclusion proof document; MalformedProof on anything else."""
        document = _load(text)
        return cls(
            leaf_index=_size(document, "leaf_index"),
            tree_size=_size(document, "tree_size"),
            hashes=_hashes(document),
        )


@dataclass(frozen=True, kw_only=True)
class ConsistencyProof:
    """The proof that the tree of ``new_size`` leaves extends the tree of ``old_size`` (RFC 9162 §2.1.4)."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this proof."""
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "hashes": [encode_hash(h) for h in self.hashes],
        }

    @classmethod
    def from_json(cls, text: str | bytes) -> ConsistencyProof:
        """Parse a consistency proof document; MalformedProof on anything else."""
        document = _load(text)
        return cls(
            old_size=_size(document, "old_size"),
            new_size=_size(document, "new_size"),
            hashes=_hashes(document),
        )
