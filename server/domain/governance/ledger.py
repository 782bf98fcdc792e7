"""The evidence ledger: every row of the append-only evidence tables becomes a leaf of an RFC 9162 tree.

A *sequencer* (:func:`sequence`) reads the rows that other domains already write append-only — stored
recordings, signed session events, case events, and the audit log (every access to evidence) — and
appends one leaf per row, in id order, without touching those domains' code. :func:`checkpoint` signs
the current tree head as a C2SP tlog-checkpoint; the API serves it with inclusion and consistency
proofs, and ``zfjl-verify`` checks them offline (JL-6, JL-23).

What each check catches:

* :func:`verify_ledger` (server side) recomputes every leaf from its row and every signed root from the
  leaves: an edited evidence row, a deleted row, an edited or removed leaf, a changed checkpoint.
* An insider with the database *and* the signing key can rebuild the whole tree and re-sign it, so the
  server's own check passes. A checkpoint kept by someone else (a superior body, a court) then fails
  ``zfjl-verify consistency`` against the new one: the history was rewritten.

The checkpoint key is derived from the server's ingest key (domain-separated, so a checkpoint can never
be mistaken for a signed downlink answer); its name, the checkpoint origin, is ``zfjl.ledger/<key
fingerprint>`` so two deployments never share one.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import RowMapping, Table, and_, exists, func, select
from sqlalchemy.orm import Session

from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.governance.models import LedgerCheckpoint, LedgerLeaf
from server.domain.models import Base
from zfjl_verify import (
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    MerkleTree,
    NoteVerifier,
    VerifyError,
    leaf_hash,
    open_checkpoint,
    sign_checkpoint,
)

__all__ = [
    "SOURCES",
    "LeafKind",
    "LedgerCorrupt",
    "LedgerProblem",
    "LedgerReport",
    "LedgerSigner",
    "canonical_leaf",
    "checkpoint",
    "consistency_proof",
    "get_leaf",
    "inclusion_proof",
    "latest_checkpoint",
    "leaf_for",
    "load_tree",
    "sequence",
    "verify_ledger",
]

LEAF_FORMAT = 1
_KEY_DOMAIN = b"zfjl/v1 ledger checkpoint key\n"
_BATCH = 500


class LeafKind(enum.StrEnum):
    """What a leaf records; stored in ``ledger_leaves.kind``."""

    RECORDING = "recording"  # a segment stored (JL-17, JL-19)
    SESSION_EVENT = "session_event"  # a signed session event from a recorder (JL-16)
    CASE_EVENT = "case_event"  # a step of the whole-process record (JL-2, JL-7 – JL-10)
    AUDIT = "audit"  # an access to evidence or any audited action (JL-20, JL-23)
    ARCHIVE = "archive"  # a sealed archive package of a case file (JL-18)
    CASE_REVIEW = "case_review"  # a review of a case file with its findings (JL-22)
    GOVERNANCE_REQUEST = "governance_request"  # a request for access, provision, retrieval, disposal (JL-20)
    GOVERNANCE_DECISION = "governance_decision"  # its approval (the grant) or rejection (JL-19, JL-20)
    RETENTION = "retention"  # a retention category given to a recording (JL-19)
    LEGAL_HOLD = "legal_hold"  # a legal hold placed (JL-19)
    LEGAL_HOLD_RELEASE = "legal_hold_release"  # a legal hold lifted (JL-19)
    DISPOSAL = "disposal"  # the tombstone of destroyed evidence (JL-19)
    ACCESS_CLASS = "access_class"  # a recording made normal, restricted or confidential (JL-20)
    GRANT_REVOCATION = "grant_revocation"  # a grant ended early by a head, with the reason (JL-20)
    RETENTION_PERIOD = "retention_period"  # an agency's own period for a retention category (JL-19)
    EXPORT = "export"  # a sealed export package for an approved external provision (JL-20)


@dataclass(frozen=True, kw_only=True)
class LeafSource:
    """An append-only table whose rows the sequencer turns into leaves."""

    kind: LeafKind
    table: str


# In this order each round; new kinds (approvals, exports, archives, disposals) add a row here.
SOURCES: tuple[LeafSource, ...] = (
    LeafSource(kind=LeafKind.RECORDING, table="recordings"),
    LeafSource(kind=LeafKind.SESSION_EVENT, table="session_events"),
    LeafSource(kind=LeafKind.CASE_EVENT, table="case_events"),
    LeafSource(kind=LeafKind.AUDIT, table="audit_log"),
    LeafSource(kind=LeafKind.ARCHIVE, table="archive_packages"),
    LeafSource(kind=LeafKind.CASE_REVIEW, table="case_reviews"),
    # Governance facts (server/domain/governance/{approvals,retention,access}_models.py, JL-19, JL-20).
    LeafSource(kind=LeafKind.GOVERNANCE_REQUEST, table="governance_requests"),
    LeafSource(kind=LeafKind.GOVERNANCE_DECISION, table="governance_decisions"),
    LeafSource(kind=LeafKind.RETENTION, table="retention_assignments"),
    LeafSource(kind=LeafKind.LEGAL_HOLD, table="legal_holds"),
    LeafSource(kind=LeafKind.LEGAL_HOLD_RELEASE, table="legal_hold_releases"),
    LeafSource(kind=LeafKind.DISPOSAL, table="disposal_tombstones"),
    LeafSource(kind=LeafKind.ACCESS_CLASS, table="access_class_changes"),
    LeafSource(kind=LeafKind.GRANT_REVOCATION, table="grant_revocations"),
    LeafSource(kind=LeafKind.RETENTION_PERIOD, table="retention_periods"),
    LeafSource(kind=LeafKind.EXPORT, table="provision_exports"),
)
_KIND_OF_TABLE = {source.table: source.kind for source in SOURCES}


class LedgerCorrupt(Conflict):
    """The stored ledger contradicts itself or a checkpoint already signed: the server refuses to sign."""

    code = "ledger_corrupt"


@dataclass(frozen=True)
class LedgerSigner:
    """The key that signs checkpoints, and its name (also the checkpoint origin)."""

    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def from_ingest_key(cls, ingest_key_b64: str) -> LedgerSigner:
        """The ledger key derived from the server's ingest key (base64 of its 32 raw bytes)."""
        raw = base64.b64decode(ingest_key_b64.strip(), validate=True)
        # A separate key, not the ingest key itself: one key, one kind of statement.
        seed = hashlib.sha256(_KEY_DOMAIN + raw).digest()
        private_key = Ed25519PrivateKey.from_private_bytes(seed)
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(f"zfjl.ledger/{hashlib.sha256(public).hexdigest()[:16]}", private_key)

    @property
    def verifier(self) -> NoteVerifier:
        """The public half, as a verifier pins it."""
        return NoteVerifier.from_private_key(self.name, self.private_key)


def _plain(value: Any) -> Any:
    """A column value as a JSON value that reads back the same from either database."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return value.value
    return value


def canonical_leaf(kind: str, table: str, row_id: int, row: Mapping[Any, Any]) -> bytes:
    """The exact bytes of a leaf: canonical JSON (sorted keys, no spaces, UTF-8) of one row."""
    document = {
        "v": LEAF_FORMAT,
        "kind": kind,
        "table": table,
        "id": row_id,
        "row": {name: _plain(value) for name, value in row.items()},
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _pending_rows(session: Session, source: LeafSource) -> Iterator[RowMapping]:
    """Rows of ``source`` with no leaf yet, in id order (NOT EXISTS, not an id watermark: a row that
    commits late, after a higher id, is still sequenced)."""
    table = _table(source.table)
    sequenced = exists().where(and_(LedgerLeaf.ref_table == source.table, LedgerLeaf.ref_id == table.c.id))
    while True:
        rows = session.execute(select(table).where(~sequenced).order_by(table.c.id).limit(_BATCH)).mappings()
        batch = list(rows)
        if not batch:
            return
        yield from batch
        if len(batch) < _BATCH:
            return


def sequence(session: Session) -> int:
    """Append a leaf for every row of the source tables not yet in the ledger; return how many (flushed)."""
    last = session.scalar(select(func.max(LedgerLeaf.leaf_index)))
    next_index = 0 if last is None else last + 1
    appended = 0
    for source in SOURCES:
        for row in _pending_rows(session, source):
            data = canonical_leaf(source.kind, source.table, row["id"], row)
            session.add(
                LedgerLeaf(
                    leaf_index=next_index,
                    leaf_hash=leaf_hash(data),
                    kind=source.kind.value,
                    ref_table=source.table,
                    ref_id=row["id"],
                    data=data.decode("utf-8"),
                )
            )
            next_index += 1
            appended += 1
            if appended % _BATCH == 0:
                session.flush()
        session.flush()
    return appended


def load_tree(session: Session, held: MerkleTree | None = None) -> MerkleTree:
    """The tree of every stored leaf; LedgerCorrupt if the indexes are not 0, 1, 2, … without a gap.

    ``held``, a tree loaded earlier, is extended with the leaves stored since (the API keeps one between
    requests, so a proof costs the new leaves, not all of them) — unless its last leaf is no longer the
    stored one, and then the whole tree is loaded again. Signing never passes one: it reads everything.
    """
    tree = held if held is not None else MerkleTree()
    if tree.size:
        last = session.scalar(select(LedgerLeaf.leaf_hash).where(LedgerLeaf.leaf_index == tree.size - 1))
        if last is None or bytes(last) != tree.leaf(tree.size - 1):
            tree = MerkleTree()
    rows = session.execute(
        select(LedgerLeaf.leaf_index, LedgerLeaf.leaf_hash)
        .where(LedgerLeaf.leaf_index >= tree.size)
        .order_by(LedgerLeaf.leaf_index)
    )
    hashes: list[bytes] = []
    for index, digest in rows:
        expected = tree.size + len(hashes)
        if index != expected:
            raise LedgerCorrupt(
                f"账本第 {expected} 号叶缺失", f"ledger leaf {expected} is missing (next stored is {index})"
            )
        hashes.append(bytes(digest))
    tree.extend_hashes(hashes)
    return tree


def latest_checkpoint(session: Session) -> LedgerCheckpoint | None:
    """The most recent signed checkpoint (the largest tree)."""
    return session.scalars(
        select(LedgerCheckpoint).order_by(LedgerCheckpoint.tree_size.desc()).limit(1)
    ).first()


def checkpoint(session: Session, signer: LedgerSigner) -> LedgerCheckpoint | None:
    """Sign the current tree head if the tree grew since the last checkpoint (flushed); None if it did not.

    Refuses (LedgerCorrupt) to sign a head inconsistent with the last one it signed: a log must never
    sign two inconsistent checkpoints (c2sp.org/tlog-checkpoint, Signatures).
    """
    tree = load_tree(session)
    last = latest_checkpoint(session)
    if last is not None:
        if last.tree_size > tree.size or tree.root(last.tree_size) != bytes(last.root_hash):
            raise LedgerCorrupt(
                "账本与已签名的检查点不一致，拒绝签名",
                "the ledger no longer matches its last signed checkpoint",
            )
        if last.tree_size == tree.size:
            return None
    head = Checkpoint(origin=signer.name, size=tree.size, root_hash=tree.root())
    row = LedgerCheckpoint(
        tree_size=head.size,
        root_hash=head.root_hash,
        origin=head.origin,
        note=sign_checkpoint(head, signer.name, signer.private_key),
    )
    session.add(row)
    session.flush()
    return row


def _checkpoint_of_size(session: Session, size: int | None) -> LedgerCheckpoint:
    if size is None:
        found = latest_checkpoint(session)
    else:
        found = session.scalars(select(LedgerCheckpoint).where(LedgerCheckpoint.tree_size == size)).first()
    if found is None:
        raise NotFound(
            "没有该大小的已签名检查点",
            f"no signed checkpoint of size {size}" if size is not None else "no checkpoint yet",
        )
    return found


def get_leaf(session: Session, leaf_index: int) -> LedgerLeaf | None:
    """The leaf at ``leaf_index``, if the tree is that large."""
    return session.get(LedgerLeaf, leaf_index)


def leaf_for(session: Session, table: str, row_id: int) -> LedgerLeaf:
    """The leaf that records one row of a source table."""
    if table not in _KIND_OF_TABLE:
        raise Invalid(f"“{table}”不是账本记录的表", f"{table!r} is not a table the ledger records")
    found = session.scalars(
        select(LedgerLeaf).where(LedgerLeaf.ref_table == table, LedgerLeaf.ref_id == row_id)
    ).first()
    if found is None:
        raise NotFound("该记录尚未进入账本", "this row is not in the ledger yet")
    return found


def inclusion_proof(
    session: Session, leaf_index: int, tree_size: int | None = None, *, held: MerkleTree | None = None
) -> InclusionProof:
    """The audit path of one leaf against a signed checkpoint (the latest one by default).

    ``held``: a tree loaded earlier, to extend rather than load again (:func:`load_tree`).
    """
    signed = _checkpoint_of_size(session, tree_size)
    if not 0 <= leaf_index < signed.tree_size:
        raise Invalid(
            f"叶序号 {leaf_index} 不在 {signed.tree_size} 个叶的检查点内",
            f"leaf {leaf_index} is not within the checkpoint of {signed.tree_size} leaves",
        )
    tree = load_tree(session, held)
    return InclusionProof(
        leaf_index=leaf_index,
        tree_size=signed.tree_size,
        hashes=tuple(tree.inclusion_proof(leaf_index, signed.tree_size)),
    )


def consistency_proof(
    session: Session, old_size: int, new_size: int | None = None, *, held: MerkleTree | None = None
) -> ConsistencyProof:
    """The proof that a signed checkpoint extends an older one (new_size: the latest by default)."""
    signed = _checkpoint_of_size(session, new_size)
    if not 0 <= old_size <= signed.tree_size:
        raise Invalid(
            f"旧树大小 {old_size} 不在 0 到 {signed.tree_size} 之间",
            f"old size {old_size} is not between 0 and {signed.tree_size}",
        )
    tree = load_tree(session, held)
    return ConsistencyProof(
        old_size=old_size,
        new_size=signed.tree_size,
        hashes=tuple(tree.consistency_proof(old_size, signed.tree_size)),
    )


@dataclass(frozen=True, kw_only=True)
class LedgerProblem:
    """One contradiction found by :func:`verify_ledger`."""

    code: str
    message: str
    message_en: str
    leaf_index: int | None = None


@dataclass(frozen=True, kw_only=True)
class LedgerReport:
    """What :func:`verify_ledger` checked and every contradiction it found."""

    leaves: int
    checkpoints: int
    problems: tuple[LedgerProblem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether nothing contradicts anything."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "ok": self.ok,
            "leaves": self.leaves,
            "checkpoints": self.checkpoints,
            "problems": [
                {"code": p.code, "leaf_index": p.leaf_index, "message": p.message, "message_en": p.message_en}
                for p in self.problems
            ],
        }


def _recompute(stored: dict[str, Any], row: RowMapping | None) -> bytes | None:
    """The leaf bytes the row gives today, over the columns the stored leaf covered (None: row gone)."""
    if row is None:
        return None
    covered = stored.get("row", {})
    current = {name: row[name] for name in covered if name in row}
    if len(current) != len(covered):
        return b""  # a covered column no longer exists: cannot match
    return canonical_leaf(stored["kind"], stored["table"], stored["id"], current)


def verify_ledger(session: Session, verifier: NoteVerifier) -> LedgerReport:
    """Recompute every leaf from its row and every signed root from the leaves; report each contradiction.

    Detects an evidence row edited or deleted after it was sequenced, a leaf edited, removed or
    renumbered, a checkpoint whose signature or root no longer holds. It cannot detect a rebuilt and
    re-signed ledger on its own: that takes an older checkpoint kept outside the server.
    """
    problems: list[LedgerProblem] = []
    leaves = list(session.scalars(select(LedgerLeaf).order_by(LedgerLeaf.leaf_index)))
    rows: dict[str, dict[int, RowMapping]] = {}
    for source in SOURCES:
        ids = [leaf.ref_id for leaf in leaves if leaf.ref_table == source.table]
        table = _table(source.table)
        found: dict[int, RowMapping] = {}
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            for row in session.execute(select(table).where(table.c.id.in_(chunk))).mappings():
                found[row["id"]] = row
        rows[source.table] = found

    tree = MerkleTree()
    for leaf in leaves:
        if leaf.leaf_index != tree.size:
            problems.append(
                LedgerProblem(
                    code="leaf_missing",
                    leaf_index=tree.size,
                    message=f"账本第 {tree.size} 号叶缺失（叶被删除）",
                    message_en=f"ledger leaf {tree.size} is missing (a leaf was deleted)",
                )
            )
            break  # every later index is shifted; the checkpoints below say the rest
        data = leaf.data.encode("utf-8")
        tree.append_hash(bytes(leaf.leaf_hash))
        if leaf_hash(data) != bytes(leaf.leaf_hash):
            problems.append(
                LedgerProblem(
                    code="leaf_altered",
                    leaf_index=leaf.leaf_index,
                    message=f"第 {leaf.leaf_index} 号叶的数据与其哈希不符",
                    message_en=f"leaf {leaf.leaf_index}'s data does not match its hash",
                )
            )
            continue
        stored = json.loads(data)
        recomputed = _recompute(stored, rows.get(leaf.ref_table, {}).get(leaf.ref_id))
        if recomputed is None:
            problems.append(
                LedgerProblem(
                    code="row_deleted",
                    leaf_index=leaf.leaf_index,
                    message=f"第 {leaf.leaf_index} 号叶记录的 {leaf.ref_table} #{leaf.ref_id} 已被删除",
                    message_en=f"{leaf.ref_table} #{leaf.ref_id} of leaf {leaf.leaf_index} was deleted",
                )
            )
        elif recomputed != data:
            problems.append(
                LedgerProblem(
                    code="row_changed",
                    leaf_index=leaf.leaf_index,
                    message=f"第 {leaf.leaf_index} 号叶记录的 {leaf.ref_table} #{leaf.ref_id} 已被改动",
                    message_en=f"{leaf.ref_table} #{leaf.ref_id} of leaf {leaf.leaf_index} was changed",
                )
            )

    checkpoints = list(session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.tree_size)))
    for signed in checkpoints:
        try:
            head, _ = open_checkpoint(signed.note, [verifier])
        except VerifyError as exc:
            problems.append(
                LedgerProblem(
                    code="checkpoint_signature",
                    message=f"大小为 {signed.tree_size} 的检查点签名无效：{exc.message}",
                    message_en=f"checkpoint of size {signed.tree_size} does not verify: {exc.message_en}",
                )
            )
            continue
        if (head.size, head.root_hash) != (signed.tree_size, bytes(signed.root_hash)):
            problems.append(
                LedgerProblem(
                    code="checkpoint_altered",
                    message=f"大小为 {signed.tree_size} 的检查点记录与其签名文本不符",
                    message_en=f"checkpoint row of size {signed.tree_size} differs from its signed text",
                )
            )
        if head.size > tree.size or tree.root(head.size) != head.root_hash:
            problems.append(
                LedgerProblem(
                    code="checkpoint_mismatch",
                    message=f"现有的叶不再得出大小为 {head.size} 的已签名根哈希",
                    message_en=f"the stored leaves no longer give the signed root of size {head.size}",
                )
            )
    return LedgerReport(leaves=len(leaves), checkpoints=len(checkpoints), problems=tuple(problems))
