"""Why a proof, a note or a checkpoint was not accepted: one error root, each error in Chinese and English."""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "InconsistentHistory",
    "MalformedCheckpoint",
    "MalformedNote",
    "MalformedProof",
    "ProofMismatch",
    "QuorumNotMet",
    "UnknownKey",
    "VerifyError",
]


class VerifyError(Exception):
    """Root of every verification failure; ``message`` is Chinese, ``message_en`` its English twin."""

    code = "verify_failed"

    def __init__(self, message: str, message_en: str) -> None:
        super().__init__(message_en)
        self.message = message
        self.message_en = message_en


class MalformedProof(VerifyError):
    """A proof that cannot be a proof at all: sizes out of range, a path of the wrong length, a bad hash."""

    code = "malformed_proof"


class ProofMismatch(VerifyError):
    """A well-formed proof whose recomputed root is not the root it must prove against."""

    code = "proof_mismatch"


class InconsistentHistory(ProofMismatch):
    """A consistency proof fails: the newer tree is not an append-only extension of the older one."""

    code = "inconsistent_history"


class MalformedNote(VerifyError):
    """A signed note that breaks the C2SP signed-note syntax."""

    code = "malformed_note"


class MalformedCheckpoint(VerifyError):
    """A note whose text is not a C2SP tlog-checkpoint body (origin, size, root hash)."""

    code = "malformed_checkpoint"


class UnknownKey(VerifyError):
    """No signature on the note comes from a key the verifier trusts."""

    code = "unknown_key"


class BadSignature(VerifyError):
    """A signature from a trusted key does not verify: the note was altered or forged."""

    code = "bad_signature"


class QuorumNotMet(VerifyError):
    """Fewer distinct trusted witnesses cosigned a checkpoint than the quorum asks for."""

    code = "quorum_not_met"
