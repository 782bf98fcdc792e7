"""The evidence ledger: every row of the append-only evidence tables becomes a leaf of an RFC 9162 tree.

A *sequencer* (:func:`sequence`) reads the rows that other domains already write append-only — stored
recordings, signed session events, case events, the audit log (every access to evidence), governance
facts, the recorders' key history — and appends one leaf per row, in id order, without touching those
domains' code; a device check-out gives two leaves, one when it is made and one at its check-in.
:func:`checkpoint` signs the current tree head as a C2SP tlog-checkpoint; the API serves it with inclusion
and consistency proofs, and ``zfjl-verify`` checks them offline (JL-6, JL-23).

What each check catches:

* :func:`verify_ledger` (server side) recomputes every leaf from its row and every signed root from the
  leaves: an edited evidence row, a deleted row, an edited or removed leaf, a changed checkpoint, and a
  key-history entry inserted later with a validity dated back (``key_history_backdated``).
* An insider with the database *and* the signing key can rebuild the whole tree and re-sign it, so the
  server's own check passes. A checkpoint kept by someone else (a superior body, a court) then fails
  ``zfjl-verify consistency`` against the new one: the history was rewritten.

The checkpoint key is derived from the server's ingest key (domain-separated, so a checkpoint can never
be mistaken for a signed downlink answer); its name, the checkpoint origin, is ``zfjl.ledger/<key
fingerprint>`` so two deployments never share one.
"""

from __future__ import annotations

import base64
import bisect
import enum
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import RowMapping, Table, and_, exists, func, select
from sqlalchemy.orm import Session

from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.evidence.keys import history_authorization
from server.domain.fleet.models import DeviceKey
from server.domain.governance.models import LedgerCheckpoint, LedgerCosignature, LedgerLeaf
from server.domain.models import Base
from zfjl_verify import (
    Checkpoint,
    ConsistencyProof,
    CosignerKey,
    InclusionProof,
    MerkleTree,
    NoteVerifier,
    VerifyError,
    leaf_hash,
    open_checkpoint,
    sign_checkpoint,
    verify_cosignature,
)

__all__ = [
    "SOURCES",
    "LeafKind",
    "LedgerCorrupt",
    "LedgerProblem",
    "LedgerReport",
    "LedgerSigner",
    "UnknownWitness",
    "add_cosignature",
    "canonical_leaf",
    "checkpoint",
    "consistency_proof",
    "cosignatures_of",
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
    DEVICE_KEY = "device_key"  # an entry of a recorder's signing-key history (JL-6)
    DEVICE_CHECKOUT = "device_checkout"  # a recorder handed to an officer, with the agency (JL-20)
    DEVICE_CHECKIN = "device_checkin"  # that recorder taken back: the check-out's window closes (JL-20)


@dataclass(frozen=True, kw_only=True)
class LeafSource:
    """A table whose rows the sequencer turns into leaves.

    Most sources are append-only tables, one leaf per row over every column. A table whose row is
    completed later (a device check-out, closed by its check-in) gives one leaf per *fact*: ``columns``
    names the columns fixed when the fact happened, ``ready`` the column that is set once it has happened,
    and ``ref`` the name the leaf refers to the row by (``ledger_leaves.ref_table``, unique with the id).
    """

    kind: LeafKind
    table: str
    columns: tuple[str, ...] | None = None
    ready: str | None = None
    ref: str | None = None

    @property
    def ref_table(self) -> str:
        """What ``ledger_leaves.ref_table`` holds for this source's leaves."""
        return self.ref or self.table


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
    # The recorders' key history (append-only) and who held a recorder for which agency (JL-6, JL-20):
    # a forged key or an edited agency would otherwise change whose evidence a recording is.
    LeafSource(kind=LeafKind.DEVICE_KEY, table="device_keys"),
    LeafSource(
        kind=LeafKind.DEVICE_CHECKOUT,
        table="device_assignments",
        columns=(
            "id",
            "device_id",
            "user_id",
            "agency_id",
            "checked_out_at",
            "checked_out_by",
            "battery_at_checkout",
        ),
    ),
    LeafSource(
        kind=LeafKind.DEVICE_CHECKIN,
        table="device_assignments",
        columns=("id", "device_id", "checked_in_at", "checked_in_by"),
        ready="checked_in_at",
        ref="device_assignments.check_in",
    ),
)
_SOURCE_OF_REF = {source.ref_table: source for source in SOURCES}
# A key-history entry states validity from the moment it is written; one whose period starts before a
# checkpoint that did not yet contain it was written afterwards with a date in the past. The grace covers
# a transaction that read the clock just before a checkpoint and committed just after it.
KEY_HISTORY_GRACE = timedelta(minutes=5)


class LedgerCorrupt(Conflict):
    """The stored ledger contradicts itself or a checkpoint already signed: the server refuses to sign."""

    code = "ledger_corrupt"


class UnknownWitness(Invalid):
    """A cosignature by a key that is not one of the configured witnesses (``ZFJL_LEDGER_WITNESS_KEYS``)."""

    code = "unknown_witness"


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
    sequenced = exists().where(
        and_(LedgerLeaf.ref_table == source.ref_table, LedgerLeaf.ref_id == table.c.id)
    )
    columns = [table.c[name] for name in source.columns] if source.columns else list(table.c)
    condition = ~sequenced if source.ready is None else and_(~sequenced, table.c[source.ready].is_not(None))
    while True:
        rows = session.execute(
            select(*columns).where(condition).order_by(table.c.id).limit(_BATCH)
        ).mappings()
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
                    ref_table=source.ref_table,
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


# A cosignature dated this far ahead of the server's clock is refused (the spec lets verifiers do so).
_COSIGNATURE_CLOCK_SKEW = timedelta(minutes=10)


def add_cosignature(
    session: Session, tree_size: int, line: str, witnesses: list[CosignerKey]
) -> LedgerCosignature:
    """Store a witness's cosignature of the checkpoint of ``tree_size`` (flushed), after verifying it.

    Only configured witness keys are accepted: the signature itself authenticates the witness, so the
    endpoint needs no account. The same witness sending again for the same size gets the stored one; a
    stored one that does not verify (written behind the API) is LedgerCorrupt, never passed off as stored.
    """
    signed = _checkpoint_of_size(session, tree_size)
    head = Checkpoint.parse(signed.note.split("\n\n", 1)[0] + "\n")
    name = line.removeprefix("— ").split(" ", 1)[0]
    keys = [key for key in witnesses if key.name == name]
    if not keys:
        raise UnknownWitness(f"“{name}”不是已登记的见证人", f"{name!r} is not a configured witness")
    # A witness may have rotated its key: any configured key of that name that verifies it will do.
    stamps = [stamp for stamp in (_verified(line, head, key) for key in keys) if stamp is not None]
    if not stamps:
        raise Invalid("联署签名无效", "the cosignature does not verify against the witness's key")
    timestamp = stamps[0]
    cosigned_at = datetime.fromtimestamp(timestamp, tz=UTC)
    if cosigned_at > utcnow() + _COSIGNATURE_CLOCK_SKEW:
        raise Invalid("联署签名的时间在将来", "the cosignature is dated in the future")
    stored = session.scalars(
        select(LedgerCosignature).where(
            LedgerCosignature.tree_size == tree_size, LedgerCosignature.witness == name
        )
    ).first()
    if stored is not None:
        if any(_verified(stored.line, head, key) is not None for key in keys):
            return stored
        # The stored row of this witness does not verify, yet only verified ones are ever written: it was
        # put there behind the API, and the unique key now keeps the genuine one out. Say so, never "stored".
        raise LedgerCorrupt(
            f"见证人 {name} 对该检查点的已存联署签名无法核验：联署表被改动",
            f"the stored cosignature of witness {name} for this checkpoint does not verify: the table was "
            "altered",
        )
    row = LedgerCosignature(
        tree_size=tree_size, witness=name, cosigned_at=cosigned_at, line=line.rstrip("\n") + "\n"
    )
    session.add(row)
    session.flush()
    return row


def _verified(line: str, head: Checkpoint, key: CosignerKey) -> int | None:
    """The cosignature's timestamp if ``key`` made it over ``head``, else None."""
    try:
        return verify_cosignature(line, head, key)
    except VerifyError:
        return None


def cosignatures_of(session: Session, tree_size: int) -> list[LedgerCosignature]:
    """The witnesses' cosignatures of one checkpoint, oldest first."""
    return list(
        session.scalars(
            select(LedgerCosignature)
            .where(LedgerCosignature.tree_size == tree_size)
            .order_by(LedgerCosignature.id)
        )
    )


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
    if table not in _SOURCE_OF_REF:
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
        ids = [leaf.ref_id for leaf in leaves if leaf.ref_table == source.ref_table]
        table = _table(source.table)
        found: dict[int, RowMapping] = {}
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            for row in session.execute(select(table).where(table.c.id.in_(chunk))).mappings():
                found[row["id"]] = row
        rows[source.ref_table] = found

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
    problems.extend(_backdated_keys(session, leaves, checkpoints))
    problems.extend(_unauthorised_keys(session, leaves))
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


def _unauthorised_keys(session: Session, leaves: list[LedgerLeaf]) -> list[LedgerProblem]:
    """Key-history entries nothing authorises (JL-6, ``evidence.keys.authorize``), dated now or back.

    The ledger commits to each entry, with its authorisation columns, but a leaf only proves that the row
    existed; that a key entered the history with the consent of the act (and, for a new key, of the key
    it replaced) is checked here.
    """
    key_leaves = {leaf.ref_id: leaf.leaf_index for leaf in leaves if leaf.kind == LeafKind.DEVICE_KEY}
    out: list[LedgerProblem] = []
    for device_id in session.scalars(select(DeviceKey.device_id).distinct().order_by(DeviceKey.device_id)):
        for entry in history_authorization(session, device_id)[1]:
            out.append(
                LedgerProblem(
                    code="key_history_unauthorised",
                    leaf_index=key_leaves.get(entry.entry_id),
                    message=f"设备 {device_id} 的密钥历史记录 #{entry.entry_id} 没有授权"
                    f"（{entry.reason.value}）",
                    message_en=f"key history entry #{entry.entry_id} of device {device_id} is not "
                    f"authorised ({entry.reason.value})",
                )
            )
    return out


def _backdated_keys(
    session: Session, leaves: list[LedgerLeaf], checkpoints: list[LedgerCheckpoint]
) -> list[LedgerProblem]:
    """Key-history entries written after a checkpoint with a validity that starts (or ends) before it (JL-6).

    Every entry the server writes starts or ends its validity *now*, and the next round makes it a leaf.
    An insider who inserts an entry directly cannot edit the signed past, but can date the entry back,
    so that a key of his own seems to have been valid when forged recordings were "made". The entry's
    leaf, or its absence, dates it: the last checkpoint signed before the entry was sequenced (or the
    latest one, if it is not sequenced yet) did not contain it, so its period may not start before that
    checkpoint was signed. Checkpoints from before the ledger recorded any key history (a ledger older
    than these leaves) date nothing.
    """
    key_leaves = {leaf.ref_id: leaf.leaf_index for leaf in leaves if leaf.kind == LeafKind.DEVICE_KEY}
    if not key_leaves:
        return []
    first_key_leaf = min(key_leaves.values())
    sizes = [signed.tree_size for signed in checkpoints]  # ascending
    table = _table("device_keys")
    out: list[LedgerProblem] = []
    for row in session.execute(select(table).order_by(table.c.id)).mappings():
        position = key_leaves.get(row["id"], len(leaves))
        last_without = bisect.bisect_right(sizes, position) - 1
        if last_without < 0 or sizes[last_without] <= first_key_leaf:
            continue
        before = checkpoints[last_without]
        signed_at = before.signed_at
        claimed = [moment for moment in (row["valid_from"], row["valid_until"]) if moment is not None]
        if any(moment < signed_at - KEY_HISTORY_GRACE for moment in claimed):
            out.append(
                LedgerProblem(
                    code="key_history_backdated",
                    leaf_index=key_leaves.get(row["id"]),
                    message=f"设备 {row['device_id']} 的密钥历史记录 #{row['id']} 是事后补写的，"
                    f"其有效期早于不含它的检查点（{before.tree_size} 个叶）",
                    message_en=f"key history entry #{row['id']} of device {row['device_id']} was written "
                    f"after the checkpoint of {before.tree_size} leaves yet claims a validity before it",
                )
            )
    return out
