"""The evidence ledger over HTTP: published checkpoints, proofs and leaves (JL-6, JL-23).

Checkpoints are public (``/ledger/v1/checkpoint``, outside ``/api/``) so a superior body can fetch
and keep one without an account: it is a witness only if it keeps its own copy. Proofs and leaves
(``/api/v1/ledger/…``) need a role that reads across agencies: the ledger is one tree for the whole
deployment and a leaf names officers and whoever looked at evidence (JL-20). Reading a leaf is
audited, like every access to evidence. docs/ledger.md explains it all.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.domain.governance import archives, ledger, ledger_quorum
from server.domain.governance.models import LedgerCheckpoint, LedgerLeaf
from server.http.context import audit_request, json_body
from server.http.errors import ApiError
from server.http.openapi import api_view
from server.infra.agency_keys import AgencyKeyring
from server.infra.db import session_scope
from zfjl_verify import MerkleTree, encode_hash

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

bp = Blueprint("ledger", __name__)
public_bp = Blueprint("ledger_public", __name__)

_CHECKPOINT = {
    "type": "object",
    "properties": {
        "origin": {"type": "string"},
        "tree_size": {"type": "integer"},
        "root_hash": {"type": "string", "description": "base64"},
        "signed_at": {"type": "string", "format": "date-time"},
        "note": {"type": "string", "description": "C2SP signed note (tlog-checkpoint)"},
        "verifier_key": {"type": "string", "description": "<name>+<key id>+<base64>; pin it out of band"},
        "cosignatures": {
            "type": "array",
            "description": "witnesses' tlog-cosignature lines; append them to the note to check them",
            "items": {"type": "string"},
        },
        "witnessing": {
            "type": "object",
            "description": "whether a quorum of distinct trusted witnesses cosigned it (docs/ledger.md)",
            "properties": {
                "quorum": {"type": "integer"},
                "trusted_witnesses": {"type": "array", "items": {"type": "string"}},
                "witnessed_by": {"type": "array", "items": {"type": "string"}},
                "met": {"type": "boolean"},
                "cosignatures": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "witness": {"type": "string"},
                            "status": {"enum": ["valid", "duplicate", "unknown", "invalid"]},
                            "cosigned_at": {"type": ["string", "null"], "format": "date-time"},
                        },
                    },
                },
            },
        },
    },
}
_HASHES = {"type": "array", "items": {"type": "string", "description": "base64"}}
_INCLUSION = {
    "type": "object",
    "properties": {"leaf_index": {"type": "integer"}, "tree_size": {"type": "integer"}, "hashes": _HASHES},
}
_CONSISTENCY = {
    "type": "object",
    "properties": {"old_size": {"type": "integer"}, "new_size": {"type": "integer"}, "hashes": _HASHES},
}
_LEAF = {
    "type": "object",
    "properties": {
        "leaf_index": {"type": "integer"},
        "leaf_hash": {"type": "string"},
        "kind": {"type": "string"},
        "ref_table": {"type": "string"},
        "ref_id": {"type": "integer"},
        "data": {"type": "string", "description": "the exact bytes hashed (UTF-8 canonical JSON)"},
        "sequenced_at": {"type": "string", "format": "date-time"},
        # null while the leaf is newer than the latest checkpoint (the next round signs it)
        "checkpoint": {**_CHECKPOINT, "type": ["object", "null"]},
        "inclusion_proof": {**_INCLUSION, "type": ["object", "null"]},
    },
}
_REPORT = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "leaves": {"type": "integer"},
        "checkpoints": {"type": "integer"},
        "problems": {"type": "array", "items": {"type": "object"}},
    },
}
_SIZE = {"type": "integer", "minimum": 0}


_TREE_KEY = "zfjl.ledger_tree"


class _HeldTree:
    """The ledger tree this process keeps between requests (extended, never rebuilt, per proof)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tree = MerkleTree()


def _held_tree(session: Session) -> MerkleTree:
    """The process's tree brought up to the stored leaves: a proof then costs O(log n), not a full read."""
    holder: _HeldTree = current_app.extensions.setdefault(_TREE_KEY, _HeldTree())
    # One request at a time extends it; proofs read only sizes already complete, so they need no lock.
    with holder.lock:
        holder.tree = ledger.load_tree(session, holder.tree)
        return holder.tree


def _signer() -> ledger.LedgerSigner:
    return ledger.LedgerSigner.from_ingest_key(current_app.extensions["zfjl.settings"].ingest_key)


def _int_arg(name: str, *, required: bool = False) -> int | None:
    """A query integer (already checked by the query schema); 400 when a required one is absent."""
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise ApiError(400, "invalid_query", f"缺少参数 {name}", f"query parameter {name} is required")
        return None
    return int(raw)


def witness_policy() -> ledger_quorum.WitnessPolicy:
    """The trusted witnesses and the quorum of this deployment (checked at start-up)."""
    return ledger_quorum.WitnessPolicy.from_settings(current_app.extensions["zfjl.settings"])


def witnessing_json(judged: ledger_quorum.WitnessedCheckpoint) -> dict[str, Any]:
    """Whether a checkpoint is witnessed, and what each of its cosignatures counted for."""
    verdict = judged.verdict
    return {
        "quorum": verdict.quorum,
        "trusted_witnesses": list(verdict.trusted),
        "witnessed_by": list(verdict.witnessed_by),
        "met": verdict.met,
        "cosignatures": [
            {
                "witness": check.witness,
                "status": check.status.value,
                "cosigned_at": (
                    datetime.fromtimestamp(check.timestamp, tz=UTC).isoformat()
                    if check.timestamp is not None
                    else None
                ),
            }
            for check in verdict.checks
        ],
    }


def _checkpoint_json(row: LedgerCheckpoint, session: Session) -> dict[str, Any]:
    judged = ledger_quorum.judge(session, row, witness_policy())
    return {
        "origin": row.origin,
        "tree_size": row.tree_size,
        "root_hash": encode_hash(bytes(row.root_hash)),
        "signed_at": row.signed_at.isoformat(),
        "note": row.note,
        "verifier_key": _signer().verifier.encode(),
        "cosignatures": [check.line + "\n" for check in judged.verdict.checks],
        "witnessing": witnessing_json(judged),
    }


def _leaf_json(session: Session, leaf: LedgerLeaf) -> dict[str, Any]:
    signed = ledger.latest_checkpoint(session)
    covered = signed is not None and leaf.leaf_index < signed.tree_size
    return {
        "leaf_index": leaf.leaf_index,
        "leaf_hash": encode_hash(bytes(leaf.leaf_hash)),
        "kind": leaf.kind,
        "ref_table": leaf.ref_table,
        "ref_id": leaf.ref_id,
        "data": leaf.data,
        "sequenced_at": leaf.sequenced_at.isoformat(),
        # A leaf sequenced after the latest checkpoint has no proof yet: the next round signs it.
        "checkpoint": _checkpoint_json(signed, session) if covered and signed else None,
        "inclusion_proof": (
            ledger.inclusion_proof(session, leaf.leaf_index, held=_held_tree(session)).to_json()
            if covered
            else None
        ),
    }


@public_bp.get("/checkpoint")
@api_view(
    "ledger_public.get_checkpoint",
    "最新（或指定大小、或最新已达见证法定数）的签名检查点 / the latest (or a given size's, or the latest "
    "witnessed) signed checkpoint",
    auth="public",
    query={"size": _SIZE, "witnessed": {"enum": ["true", "false"]}},
    response=_CHECKPOINT,
)
def get_checkpoint() -> ResponseReturnValue:
    """The latest signed checkpoint, the one of ``?size=``, or with ``?witnessed=true`` the latest one a
    quorum of trusted witnesses cosigned; 404 when there is none."""
    size = _int_arg("size")
    witnessed = request.args.get("witnessed", "false")
    if witnessed not in ("true", "false"):
        raise ApiError(
            400, "invalid_query", "witnessed 须为 true 或 false", "witnessed must be true or false"
        )
    with session_scope() as session:
        if witnessed == "true":
            if size is not None:
                raise ApiError(
                    400,
                    "invalid_query",
                    "size 与 witnessed 不能同时使用",
                    "size and witnessed exclude each other",
                )
            judged = ledger_quorum.latest_witnessed(session, witness_policy())
            if judged is None:
                raise ApiError(
                    404,
                    "not_found",
                    "尚无达到见证法定数的检查点",
                    "no checkpoint has met the witness quorum yet",
                )
            return jsonify(_checkpoint_json(judged.checkpoint, session))
        if size is None:
            row = ledger.latest_checkpoint(session)
        else:
            row = session.query(LedgerCheckpoint).filter_by(tree_size=size).one_or_none()
        if row is None:
            raise ApiError(404, "not_found", "没有该检查点", "no such checkpoint")
        return jsonify(_checkpoint_json(row, session))


@public_bp.get("/consistency")
@api_view(
    "ledger_public.public_consistency_proof",
    "公开的一致性证明（供见证人使用）/ public consistency proof between two checkpoints, for witnesses",
    auth="public",
    query={"old_size": _SIZE, "new_size": _SIZE},
    response=_CONSISTENCY,
)
def public_consistency_proof() -> ResponseReturnValue:
    """RFC 9162 §2.1.4 proof from ``old_size`` to the latest (or ``new_size``) checkpoint, without an account.

    A proof holds only hashes of subtrees, never a leaf's data: a witness needs it to check that a new
    checkpoint extends the one it kept, and may not have an account.
    """
    old = _int_arg("old_size", required=True)
    assert old is not None
    with session_scope() as session:
        proof = ledger.consistency_proof(session, old, _int_arg("new_size"), held=_held_tree(session))
        return jsonify(proof.to_json())


_COSIGNATURE_REQUEST = {
    "type": "object",
    "required": ["tree_size", "cosignature"],
    "properties": {
        "tree_size": {"type": "integer", "minimum": 0},
        "cosignature": {
            "type": "string",
            "maxLength": 1000,
            "description": "the tlog-cosignature line: — <witness> base64(key id, time, signature)",
        },
    },
}


@public_bp.post("/cosignatures")
@api_view(
    "ledger_public.add_cosignature",
    "见证人提交检查点联署签名 / a witness submits its cosignature of a checkpoint",
    auth="public",
    request=_COSIGNATURE_REQUEST,
    response={
        "type": "object",
        "properties": {
            "tree_size": {"type": "integer"},
            "witness": {"type": "string"},
            "cosigned_at": {"type": "string", "format": "date-time"},
        },
    },
)
def add_cosignature() -> ResponseReturnValue:
    """Store a configured witness's cosignature (its Ed25519 signature authenticates it: no account)."""
    body = json_body(("tree_size", "cosignature"))
    size, line = body["tree_size"], body["cosignature"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ApiError(
            400, "invalid_request", "tree_size 必须是非负整数", "tree_size must be a non-negative integer"
        )
    if not isinstance(line, str) or len(line) > 1000 or not line.startswith("— "):
        raise ApiError(
            400, "invalid_request", "cosignature 必须是一行签名", "cosignature must be one signature line"
        )
    with session_scope() as session:
        stored = ledger.add_cosignature(session, size, line, list(witness_policy().witnesses))
        answer = {
            "tree_size": stored.tree_size,
            "witness": stored.witness,
            "cosigned_at": stored.cosigned_at.isoformat(),
        }
        session.commit()
        return jsonify(answer)


@public_bp.get("/agencies/<int:agency_id>/seal-key")
@api_view(
    "ledger_public.agency_seal_key",
    "机关电子印章公钥（核验档案包时固定使用）/ an agency's seal key, to pin when verifying its packages",
    auth="public",
    response={
        "type": "object",
        "properties": {
            "agency_id": {"type": "integer"},
            "agency": {"type": "string"},
            "algorithm": {"type": "string"},
            "verifier_key": {"type": "string", "description": "<name>+<key id>+<base64>; pin it out of band"},
            "valid_from": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "轮换后启用时间（null：首个密钥）/ in force since (null: the first key)",
            },
            "previous_keys": {
                "type": "array",
                "description": "已轮换的旧公钥，最新在前 / retired keys, newest first (older packages)",
                "items": {
                    "type": "object",
                    "properties": {
                        "verifier_key": {"type": "string"},
                        "valid_from": {"type": ["string", "null"], "format": "date-time"},
                        "valid_until": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    },
)
def agency_seal_key(agency_id: int) -> ResponseReturnValue:
    """The public half of the agency's seal key (JL-18): ``zfjl-verify package --agency-key``."""
    with session_scope() as session:
        return jsonify(
            archives.agency_seal_key(
                session, AgencyKeyring.from_settings(current_app.extensions["zfjl.settings"]), agency_id
            )
        )


@bp.post("/checkpoint")
@api_view(
    "ledger.sign_checkpoint",
    "立即记入新记录并签名检查点 / sequence new rows and sign a checkpoint now",
    response={"type": "object", "properties": {"appended": {"type": "integer"}, "checkpoint": _CHECKPOINT}},
)
def sign_checkpoint() -> ResponseReturnValue:
    """Run one ledger round on demand (audited); answers the latest checkpoint."""
    with session_scope() as session:
        audit_request(session, "ledger.checkpoint", "ledger", None)
        session.flush()
        appended = ledger.sequence(session)
        ledger.checkpoint(session, _signer())
        latest = ledger.latest_checkpoint(session)
        assert latest is not None  # just signed, or an earlier one of the same size
        return jsonify(appended=appended, checkpoint=_checkpoint_json(latest, session))


@bp.get("/proofs/inclusion")
@api_view(
    "ledger.inclusion_proof",
    "叶的包含证明 / inclusion proof of one leaf against a signed checkpoint",
    query={"leaf_index": _SIZE, "tree_size": _SIZE},
    response=_INCLUSION,
)
def inclusion_proof() -> ResponseReturnValue:
    """RFC 9162 §2.1.3 audit path of ``leaf_index`` in the latest (or ``tree_size``) checkpoint."""
    index = _int_arg("leaf_index", required=True)
    assert index is not None
    with session_scope() as session:
        proof = ledger.inclusion_proof(session, index, _int_arg("tree_size"), held=_held_tree(session))
        return jsonify(proof.to_json())


@bp.get("/proofs/consistency")
@api_view(
    "ledger.consistency_proof",
    "两个检查点之间的一致性证明 / consistency proof between an older size and a signed checkpoint",
    query={"old_size": _SIZE, "new_size": _SIZE},
    response=_CONSISTENCY,
)
def consistency_proof() -> ResponseReturnValue:
    """RFC 9162 §2.1.4 proof that the latest (or ``new_size``) checkpoint extends ``old_size``."""
    old = _int_arg("old_size", required=True)
    assert old is not None
    with session_scope() as session:
        proof = ledger.consistency_proof(session, old, _int_arg("new_size"), held=_held_tree(session))
        return jsonify(proof.to_json())


@bp.get("/leaves/<int:leaf_index>")
@api_view("ledger.get_leaf", "账本中的一个叶及其包含证明 / one leaf with its inclusion proof", response=_LEAF)
def get_leaf(leaf_index: int) -> ResponseReturnValue:
    """One leaf: the exact data hashed, what row it records, its proof (audited)."""
    with session_scope() as session:
        leaf = ledger.get_leaf(session, leaf_index)
        if leaf is None:
            raise ApiError(404, "not_found", "账本中没有该叶", "no such leaf in the ledger")
        audit_request(session, "ledger.leaf", "ledger_leaf", leaf_index)
        return jsonify(_leaf_json(session, leaf))


@bp.get("/rows/<string:table>/<int:row_id>")
@api_view(
    "ledger.get_row_leaf",
    "某条记录（如录像）在账本中的叶 / the leaf of one recorded row (e.g. recordings/12)",
    response=_LEAF,
)
def get_row_leaf(table: str, row_id: int) -> ResponseReturnValue:
    """The leaf that records one row of a source table, with its proof (audited)."""
    with session_scope() as session:
        leaf = ledger.leaf_for(session, table, row_id)
        audit_request(
            session, "ledger.leaf", "ledger_leaf", leaf.leaf_index, detail={"table": table, "id": row_id}
        )
        return jsonify(_leaf_json(session, leaf))


@bp.post("/verify")
@api_view(
    "ledger.verify",
    "服务器端核验账本（逐条重算）/ verify the ledger on the server, row by row",
    response=_REPORT,
)
def verify() -> ResponseReturnValue:
    """Recompute every leaf and signed root (audited); the report lists each contradiction."""
    with session_scope() as session:
        audit_request(session, "ledger.verify", "ledger", None)
        session.commit()
        report = ledger.verify_ledger(session, _signer().verifier)
        return jsonify(report.to_dict())
