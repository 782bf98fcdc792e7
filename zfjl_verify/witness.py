"""A witness of the evidence ledger: keep the last checkpoint accepted, accept only extensions of it,
cosign each accepted one (c2sp.org/tlog-cosignature, Ed25519, version 1) — JL-6, JL-23.

A superior body runs ``zfjl-verify witness`` every day or every hour. Its state directory holds its own
Ed25519 key and the last checkpoint it accepted. A new checkpoint is accepted only if it is signed by the
pinned ledger key and a consistency proof shows that it extends the one kept; then the witness cosigns
it. A checkpoint that does not extend it — the history was rewritten, or rolled back to a smaller tree —
is refused, the kept checkpoint stays as it was, and both signed notes are saved under ``evidence/``:
two checkpoints signed by one key that contradict each other prove that the log misbehaved.

A checkpoint counts as *witnessed* only once a quorum of distinct trusted witnesses cosigned it
(:func:`judge_cosignatures`): a cosignature by a key nobody trusts, or a second one by a witness already
counted, adds nothing; one by a trusted key that does not verify is a forgery and fails the checkpoint,
as a failing signature of a known key fails a whole note (c2sp.org/signed-note).

Cosignature format (tlog-cosignature v1): a note signature line ``— <witness name> base64(key id ||
u64 timestamp || Ed25519 signature)``, key id = SHA-256(name || 0x0A || 0x04 || public key)[:4], signed
message ``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint's note text.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from zfjl_verify.checkpoint import Checkpoint, open_checkpoint
from zfjl_verify.errors import (
    BadSignature,
    InconsistentHistory,
    MalformedNote,
    MalformedProof,
    QuorumNotMet,
    VerifyError,
)
from zfjl_verify.merkle import verify_consistency
from zfjl_verify.note import NoteVerifier
from zfjl_verify.proofs import ConsistencyProof

__all__ = [
    "ALG_COSIGNATURE_V1",
    "CosignatureCheck",
    "CosignatureStatus",
    "CosignerKey",
    "QuorumVerdict",
    "Witness",
    "WitnessStateError",
    "cosign",
    "cosignature_lines",
    "cosigned_message",
    "judge_cosignatures",
    "require_quorum",
    "verify_cosignature",
]

ALG_COSIGNATURE_V1 = 0x04
_SIG_PREFIX = "— "
_KEY_FILE = "witness.key"
_PUB_FILE = "witness.pub"
_CHECKPOINT_FILE = "checkpoint"
_COSIGNED_FILE = "cosigned.checkpoint"


class WitnessStateError(VerifyError):
    """The witness's state directory cannot be read or written, or holds something else."""

    code = "witness_state"


def _check_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise MalformedNote(
            "见证人名称为空或含有空白或“+”", "a witness name must be non-empty, no spaces, no '+'"
        )


@dataclass(frozen=True, kw_only=True)
class CosignerKey:
    """A witness's public key by name, as a log or a reader of cosignatures pins it."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != 32:
            raise MalformedNote("Ed25519 公钥必须是 32 字节", "an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        """The 32-bit key id of a v1 cosignature key (algorithm byte 0x04)."""
        material = self.name.encode("utf-8") + b"\n" + bytes([ALG_COSIGNATURE_V1]) + self.public_key
        return int.from_bytes(hashlib.sha256(material).digest()[:4], "big")

    @classmethod
    def from_private_key(cls, name: str, private_key: Ed25519PrivateKey) -> CosignerKey:
        """The public half of a witness key."""
        return cls(
            name=name, public_key=private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )

    @classmethod
    def parse(cls, text: str) -> CosignerKey:
        """A vkey ``<name>+<hex key id>+<base64(0x04 || public key)>``."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise MalformedNote("见证人公钥格式错误", "a witness key is <name>+<8 hex digits>+<base64 key>")
        name, id_hex, key_b64 = parts
        try:
            claimed = int(id_hex, 16)
            raw = base64.b64decode(key_b64, validate=True)
        except (ValueError, binascii.Error):
            raise MalformedNote("见证人公钥格式错误", "a witness key has a bad key id or base64") from None
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            raise MalformedNote("不是 cosignature/v1 的 Ed25519 公钥", "not an Ed25519 cosignature/v1 key")
        key = cls(name=name, public_key=raw[1:])
        if key.key_id != claimed:
            raise MalformedNote(
                "见证人公钥的密钥编号与公钥不符", "the witness key's id does not match its key"
            )
        return key

    def encode(self) -> str:
        """The vkey text form."""
        blob = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{blob}"


def cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """What a v1 cosignature signs: the header, the time line, the checkpoint's whole note text."""
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint.body()}".encode()


def cosign(checkpoint: Checkpoint, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> str:
    """The cosignature line (newline-terminated) of a witness over a checkpoint at ``timestamp``."""
    if not 0 <= timestamp < 1 << 63:
        raise MalformedNote("时间戳超出范围", "the timestamp is out of range")
    key = CosignerKey.from_private_key(name, private_key)
    signature = private_key.sign(cosigned_message(checkpoint, timestamp))
    blob = key.key_id.to_bytes(4, "big") + timestamp.to_bytes(8, "big") + signature
    return f"{_SIG_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def verify_cosignature(line: str, checkpoint: Checkpoint, key: CosignerKey) -> int:
    """Check one cosignature line by ``key`` over ``checkpoint``; return its timestamp."""
    text = line.rstrip("\n")
    if not text.startswith(_SIG_PREFIX) or "\n" in text:
        raise MalformedNote("不是一行签名", "not a signature line")
    name, _, blob_b64 = text[len(_SIG_PREFIX) :].partition(" ")
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (ValueError, binascii.Error):
        raise MalformedNote("联署签名不是有效的 base64", "the cosignature is not valid base64") from None
    if name != key.name or len(blob) != 4 + 8 + 64 or int.from_bytes(blob[:4], "big") != key.key_id:
        raise MalformedNote("联署签名不属于该见证人公钥", "the cosignature is not by this witness key")
    timestamp = int.from_bytes(blob[4:12], "big")
    if timestamp >= 1 << 63:
        raise MalformedNote("时间戳超出范围", "the timestamp is out of range")
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(
            blob[12:], cosigned_message(checkpoint, timestamp)
        )
    except InvalidSignature:
        raise BadSignature(
            f"见证人 {name} 的联署签名无效", f"the cosignature of witness {name} does not verify"
        ) from None
    return timestamp


class CosignatureStatus(enum.StrEnum):
    """What one cosignature line counts for towards a quorum."""

    VALID = "valid"  # a trusted witness's cosignature that verifies: it counts
    DUPLICATE = "duplicate"  # verifies, but its witness is already counted: it adds nothing
    UNKNOWN = "unknown"  # no trusted key of that name and key id: ignored, as a note ignores unknown keys
    INVALID = "invalid"  # a trusted key's id, but the signature does not verify: forged or altered


@dataclass(frozen=True, kw_only=True)
class CosignatureCheck:
    """One cosignature line judged against the trusted witnesses."""

    line: str
    witness: str
    status: CosignatureStatus
    key_id: int | None = None
    timestamp: int | None = None


@dataclass(frozen=True, kw_only=True)
class QuorumVerdict:
    """Which trusted witnesses cosigned one checkpoint, and whether they are a quorum."""

    quorum: int
    trusted: tuple[str, ...]
    checks: tuple[CosignatureCheck, ...]

    @property
    def witnessed_by(self) -> tuple[str, ...]:
        """The distinct trusted witnesses whose cosignature verifies, in the order they came."""
        return tuple(check.witness for check in self.checks if check.status is CosignatureStatus.VALID)

    @property
    def forged(self) -> tuple[CosignatureCheck, ...]:
        """Lines by a trusted key that do not verify."""
        return tuple(check for check in self.checks if check.status is CosignatureStatus.INVALID)

    @property
    def met(self) -> bool:
        """Whether at least ``quorum`` distinct trusted witnesses cosigned, and nothing was forged."""
        return self.quorum >= 1 and len(self.witnessed_by) >= self.quorum and not self.forged


def _judge(line: str, checkpoint: Checkpoint, by_id: dict[tuple[str, int], CosignerKey]) -> CosignatureCheck:
    """One line's status, before duplicates are counted."""
    text = line.rstrip("\n")
    name, _, blob_b64 = text.removeprefix(_SIG_PREFIX).partition(" ")
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (ValueError, binascii.Error):
        blob = b""
    if not text.startswith(_SIG_PREFIX) or len(blob) < 4:
        # Not even a key id: nobody's cosignature. A trusted witness's name on it makes it a forgery.
        trusted_name = any(key_name == name for key_name, _ in by_id)
        status = CosignatureStatus.INVALID if trusted_name else CosignatureStatus.UNKNOWN
        return CosignatureCheck(line=text, witness=name, status=status)
    claimed = int.from_bytes(blob[:4], "big")
    key = by_id.get((name, claimed))
    if key is None:
        return CosignatureCheck(line=text, witness=name, status=CosignatureStatus.UNKNOWN, key_id=claimed)
    try:
        timestamp = verify_cosignature(text, checkpoint, key)
    except VerifyError:
        return CosignatureCheck(line=text, witness=name, status=CosignatureStatus.INVALID, key_id=claimed)
    return CosignatureCheck(
        line=text, witness=name, status=CosignatureStatus.VALID, key_id=claimed, timestamp=timestamp
    )


def judge_cosignatures(
    checkpoint: Checkpoint, lines: Iterable[str], trusted: Sequence[CosignerKey], quorum: int
) -> QuorumVerdict:
    """Judge every cosignature line of ``checkpoint`` against the trusted witness keys.

    A witness is its name: two trusted keys of one name (a rotated key) are one witness, so a second
    cosignature by it is a duplicate and counts once. Lines by keys not trusted are ignored.
    """
    by_id = {(key.name, key.key_id): key for key in trusted}
    counted: set[str] = set()
    checks: list[CosignatureCheck] = []
    for line in lines:
        check = _judge(line, checkpoint, by_id)
        if check.status is CosignatureStatus.VALID:
            if check.witness in counted:
                check = CosignatureCheck(
                    line=check.line,
                    witness=check.witness,
                    status=CosignatureStatus.DUPLICATE,
                    key_id=check.key_id,
                    timestamp=check.timestamp,
                )
            counted.add(check.witness)
        checks.append(check)
    names = tuple(dict.fromkeys(key.name for key in trusted))
    return QuorumVerdict(quorum=quorum, trusted=names, checks=tuple(checks))


def require_quorum(verdict: QuorumVerdict) -> None:
    """Raise unless the verdict is a quorum: BadSignature for a forged line, else QuorumNotMet."""
    if verdict.forged:
        names = "、".join(dict.fromkeys(check.witness for check in verdict.forged))
        names_en = ", ".join(dict.fromkeys(check.witness for check in verdict.forged))
        raise BadSignature(
            f"见证人 {names} 的联署签名无效：被伪造或篡改",
            f"the cosignature of {names_en} does not verify: forged or altered",
        )
    if not verdict.met:
        got = len(verdict.witnessed_by)
        ignored = sum(1 for check in verdict.checks if check.status is not CosignatureStatus.VALID)
        raise QuorumNotMet(
            f"只有 {got} 个受信任的见证人联署，未达到法定数 {verdict.quorum}（另有 {ignored} 个联署签名"
            "因重复或来自未受信任的密钥而不计）",
            f"only {got} trusted witnesses cosigned, fewer than the quorum of {verdict.quorum} "
            f"({ignored} more cosignatures did not count: duplicates or untrusted keys)",
        )


def cosignature_lines(note: str, log_keys: Sequence[NoteVerifier]) -> list[str]:
    """The signature lines of a (cosigned) note that are not the log's own: the cosignatures on it."""
    split = note.rfind("\n\n")
    if split < 0:
        return []
    own = {(key.name, key.key_id) for key in log_keys}
    out: list[str] = []
    for line in note[split + 2 :].splitlines():
        name, _, blob_b64 = line.removeprefix(_SIG_PREFIX).partition(" ")
        try:
            claimed = int.from_bytes(base64.b64decode(blob_b64, validate=True)[:4], "big")
        except (ValueError, binascii.Error):
            claimed = -1
        if (name, claimed) not in own:
            out.append(line)
    return out


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """A checkpoint the witness accepted: the one it held before (None on first use) and its cosignature."""

    checkpoint: Checkpoint
    previous: Checkpoint | None
    cosignature: str


class Witness:
    """A witness's state directory: its key, its name, the last checkpoint it accepted."""

    def __init__(self, state: Path, *, name: str | None = None) -> None:
        """Open ``state`` (created with a new key on first use; ``name`` then names the witness)."""
        self.state = state
        key_path = state / _KEY_FILE
        try:
            if key_path.exists():
                seed = base64.b64decode(key_path.read_text(encoding="ascii").strip(), validate=True)
                self.private_key = Ed25519PrivateKey.from_private_bytes(seed)
                self.name = (state / _PUB_FILE).read_text(encoding="utf-8").strip().split("+", 1)[0]
            else:
                state.mkdir(parents=True, exist_ok=True)
                self.private_key = Ed25519PrivateKey.generate()
                public = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                self.name = name or f"zfjl.witness/{hashlib.sha256(public).hexdigest()[:16]}"
                _check_name(self.name)
                seed = self.private_key.private_bytes_raw()
                descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                    handle.write(base64.b64encode(seed).decode("ascii") + "\n")
                (state / _PUB_FILE).write_text(self.key.encode() + "\n", encoding="utf-8")
        except (OSError, ValueError, binascii.Error) as exc:
            raise WitnessStateError(
                f"见证人状态目录 {state} 无法使用：{exc}", f"the witness state {state} is unusable: {exc}"
            ) from None

    @property
    def key(self) -> CosignerKey:
        """The witness's public key."""
        return CosignerKey.from_private_key(self.name, self.private_key)

    def kept(self, log_keys: list[NoteVerifier], origin: str | None = None) -> Checkpoint | None:
        """The last checkpoint accepted, verified again against the pinned ledger key (None on first use)."""
        path = self.state / _CHECKPOINT_FILE
        if not path.exists():
            return None
        checkpoint, _ = open_checkpoint(path.read_bytes(), log_keys, origin=origin)
        return checkpoint

    def observe(
        self,
        note: str,
        proof: ConsistencyProof | None,
        log_keys: list[NoteVerifier],
        *,
        now: int,
        origin: str | None = None,
    ) -> Accepted:
        """Accept and cosign ``note`` if it extends the kept checkpoint; else refuse and keep the evidence."""
        new, _ = open_checkpoint(note, log_keys, origin=origin)
        old = self.kept(log_keys, origin)
        if old is not None:
            try:
                self._check_extends(old, new, proof)
            except InconsistentHistory:
                self._save_evidence(old, new, note)
                raise
        cosignature = cosign(new, self.name, self.private_key, now)
        self._write(_CHECKPOINT_FILE, note)
        self._write(_COSIGNED_FILE, note + cosignature)
        return Accepted(checkpoint=new, previous=old, cosignature=cosignature)

    @staticmethod
    def _check_extends(old: Checkpoint, new: Checkpoint, proof: ConsistencyProof | None) -> None:
        if new.origin != old.origin:
            raise MalformedProof(
                "新检查点来自另一个账本",
                f"the new checkpoint is of another log: {new.origin!r}, not {old.origin!r}",
            )
        if new.size < old.size:
            raise InconsistentHistory(
                f"新检查点只有 {new.size} 个叶，少于已见证的 {old.size} 个：账本被回滚，历史被改写",
                f"the new checkpoint has {new.size} leaves, fewer than the {old.size} already witnessed: "
                "the log was rolled back, the history was rewritten",
            )
        if proof is not None and (proof.old_size, proof.new_size) != (old.size, new.size):
            raise MalformedProof(
                f"证明针对 {proof.old_size}→{proof.new_size}，应为 {old.size}→{new.size}",
                f"the proof is for sizes {proof.old_size}→{proof.new_size}, not {old.size}→{new.size}",
            )
        if proof is None and old.size not in (0, new.size):
            raise MalformedProof("需要一致性证明", "a consistency proof is needed")
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof.hashes if proof else ())

    def _save_evidence(self, old: Checkpoint, new: Checkpoint, note: str) -> None:
        """Keep the refused checkpoint next to a copy of the kept one: together they prove the rewrite."""
        folder = self.state / "evidence"
        folder.mkdir(exist_ok=True)
        (folder / f"refused-{new.size}.checkpoint").write_text(note, encoding="utf-8")
        kept = (self.state / _CHECKPOINT_FILE).read_text(encoding="utf-8")
        (folder / f"kept-{old.size}.checkpoint").write_text(kept, encoding="utf-8")

    def _write(self, name: str, text: str) -> None:
        """Replace one state file atomically (a crash leaves the old or the new one, never half)."""
        target = self.state / name
        temporary = target.with_suffix(".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
