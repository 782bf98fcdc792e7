"""Offline verifier of the evidence ledger: RFC 9162 Merkle proofs and C2SP signed checkpoints.

Standard library and ``cryptography`` only, nothing of the server, so an auditor, a court or a superior
body can check what the server signed without trusting the server (JL-6, JL-23).
"""

from __future__ import annotations

from zfjl_verify.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from zfjl_verify.errors import (
    BadSignature,
    InconsistentHistory,
    MalformedCheckpoint,
    MalformedNote,
    MalformedProof,
    ProofMismatch,
    QuorumNotMet,
    UnknownKey,
    VerifyError,
)
from zfjl_verify.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from zfjl_verify.note import NoteVerifier, SignedNote, key_id, open_note, sign_note
from zfjl_verify.proofs import ConsistencyProof, InclusionProof, decode_hash, encode_hash
from zfjl_verify.witness import (
    CosignatureCheck,
    CosignatureStatus,
    CosignerKey,
    QuorumVerdict,
    Witness,
    cosign,
    cosignature_lines,
    cosigned_message,
    judge_cosignatures,
    require_quorum,
    verify_cosignature,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "BadSignature",
    "Checkpoint",
    "ConsistencyProof",
    "CosignatureCheck",
    "CosignatureStatus",
    "CosignerKey",
    "InclusionProof",
    "InconsistentHistory",
    "MalformedCheckpoint",
    "MalformedNote",
    "MalformedProof",
    "MerkleTree",
    "NoteVerifier",
    "ProofMismatch",
    "QuorumNotMet",
    "QuorumVerdict",
    "SignedNote",
    "UnknownKey",
    "VerifyError",
    "Witness",
    "cosign",
    "cosignature_lines",
    "cosigned_message",
    "decode_hash",
    "encode_hash",
    "judge_cosignatures",
    "key_id",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "require_quorum",
    "root_from_inclusion_proof",
    "root_of",
    "sign_checkpoint",
    "sign_note",
    "verify_consistency",
    "verify_cosignature",
    "verify_inclusion",
]
