"""``zfjl-verify``: check the evidence ledger's checkpoints and proofs offline, with nothing of the server.

Exit status 0 when everything verifies, 1 when anything does not (or an input cannot be read), 2 on a
usage error. Every verdict is printed in Chinese and English. The key file holds one or more verifier
keys ``<name>+<hex key id>+<base64>``, one a line (lines starting with ``#`` are comments): the key an
agency publishes for its ledger, kept by whoever witnesses it (JL-6, JL-23). A checkpoint file may be
the signed note itself or the server's JSON answer (``GET /ledger/v1/checkpoint``); a leaf may be its
exact bytes, its hash, or the server's leaf answer (``--leaf-json``, data and proof in one file).
``package`` checks an archive package (JL-18) as a whole: zfjl_verify/package.py says what it checks.
``witness`` keeps the last checkpoint it accepted and cosigns each newer one that extends it
(zfjl_verify/witness.py); it refuses, exit status 1, a checkpoint that rewrites the history it saw.
``checkpoint`` and ``inclusion`` with ``--witness-keys`` (and ``--quorum``) also require the checkpoint
to be cosigned by that many distinct trusted witnesses, and fail on a forged cosignature.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zfjl_verify.checkpoint import Checkpoint, open_checkpoint
from zfjl_verify.errors import MalformedProof, VerifyError
from zfjl_verify.merkle import leaf_hash, verify_consistency, verify_inclusion
from zfjl_verify.note import NoteKey, NoteVerifier
from zfjl_verify.package import verify_package
from zfjl_verify.proofs import ConsistencyProof, InclusionProof, decode_hash
from zfjl_verify.sm2_note import parse_note_key
from zfjl_verify.suite import DEFAULT_SUITE
from zfjl_verify.witness import (
    CosignatureStatus,
    CosignerKey,
    Witness,
    cosignature_lines,
    judge_cosignatures,
    require_quorum,
)

__all__ = ["main"]


class _InputError(VerifyError):
    """A file named on the command line cannot be read."""

    code = "unreadable_input"


class _UsageError(Exception):
    """Options that cannot work together (exit status 2, like argparse's own usage errors)."""


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _InputError(
            f"无法读取文件 {path}：{exc.strerror}", f"cannot read {path}: {exc.strerror}"
        ) from None


def _keys(path: str) -> list[NoteVerifier]:
    try:
        text = _read(path).decode("utf-8")
    except UnicodeDecodeError:
        raise _InputError(f"公钥文件 {path} 不是 UTF-8 文本", f"key file {path} is not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines()]
    keys = [NoteVerifier.parse(line) for line in lines if line and not line.startswith("#")]
    if not keys:
        raise _InputError(f"公钥文件 {path} 中没有公钥", f"key file {path} holds no key")
    return keys


def _seal_keys(path: str) -> list[NoteKey]:
    """An agency's seal key file: Ed25519 or SM2 verifier keys, one a line."""
    try:
        text = _read(path).decode("utf-8")
    except UnicodeDecodeError:
        raise _InputError(f"公钥文件 {path} 不是 UTF-8 文本", f"key file {path} is not UTF-8 text") from None
    keys = [parse_note_key(line) for line in map(str.strip, text.splitlines()) if line and line[0] != "#"]
    if not keys:
        raise _InputError(f"公钥文件 {path} 中没有公钥", f"key file {path} holds no key")
    return keys


def _witness_keys(paths: list[str]) -> list[CosignerKey]:
    """The trusted witness keys: every vkey line of every file (a witness's own ``witness.pub`` will do)."""
    keys: list[CosignerKey] = []
    for path in paths:
        try:
            text = _read(path).decode("utf-8")
        except UnicodeDecodeError:
            raise _InputError(
                f"见证人公钥文件 {path} 不是 UTF-8 文本", f"witness key file {path} is not UTF-8 text"
            ) from None
        found = [
            CosignerKey.parse(line) for line in map(str.strip, text.splitlines()) if line and line[0] != "#"
        ]
        if not found:
            raise _InputError(f"见证人公钥文件 {path} 中没有公钥", f"witness key file {path} holds no key")
        keys.extend(found)
    return keys


def _json_file(path: str) -> Any:
    try:
        return json.loads(_read(path))
    except (ValueError, UnicodeDecodeError):
        raise _InputError(f"{path} 不是有效的 JSON", f"{path} is not valid JSON") from None


def _note(path: str) -> bytes:
    """The signed note of a checkpoint file: the note itself, or the server's JSON answer's ``note``.

    Only the note is taken from a JSON answer, never its ``verifier_key``: the key comes from --key.
    """
    raw = _read(path)
    if raw.lstrip().startswith(b"{"):
        document = _json_file(path)
        note = document.get("note") if isinstance(document, dict) else None
        if not isinstance(note, str):
            raise _InputError(f"{path} 中没有检查点（note）", f"{path} holds no checkpoint note")
        raw = note.encode("utf-8")
    return raw


def _checkpoint(path: str, keys: list[NoteVerifier], origin: str | None) -> Checkpoint:
    """A signed checkpoint file, verified against the pinned keys."""
    checkpoint, _ = open_checkpoint(_note(path), keys, origin=origin)
    return checkpoint


def _cosignatures(path: str, keys: list[NoteVerifier]) -> list[str]:
    """The cosignature lines of a checkpoint file: those appended to its note (a cosigned checkpoint),
    and, for the server's JSON answer, its ``cosignatures`` list."""
    lines = cosignature_lines(_note(path).decode("utf-8", errors="replace"), keys)
    raw = _read(path)
    if raw.lstrip().startswith(b"{"):
        document = _json_file(path)
        listed = document.get("cosignatures", []) if isinstance(document, dict) else []
        if not isinstance(listed, list) or not all(isinstance(line, str) for line in listed):
            raise _InputError(
                f"{path} 中的 cosignatures 不是字符串列表", f"{path}: cosignatures is not a list"
            )
        lines.extend(line.rstrip("\n") for line in listed)
    return lines


def _check_quorum(args: argparse.Namespace, keys: list[NoteVerifier], checkpoint: Checkpoint) -> None:
    """With --witness-keys: fail unless a quorum of distinct trusted witnesses cosigned the checkpoint."""
    if not args.witness_keys:
        if args.quorum is not None:
            raise _UsageError("--quorum 需要 --witness-keys / --quorum needs --witness-keys")
        return
    trusted = _witness_keys(args.witness_keys)
    quorum = 1 if args.quorum is None else args.quorum
    distinct = len({key.name for key in trusted})
    if not 1 <= quorum <= distinct:
        raise _UsageError(
            f"--quorum 须在 1 到 {distinct}（受信任见证人的数量）之间 / "
            f"--quorum must be between 1 and {distinct}, the number of trusted witnesses"
        )
    verdict = judge_cosignatures(checkpoint, _cosignatures(args.checkpoint, keys), trusted, quorum)
    for check in verdict.checks:
        if check.status is CosignatureStatus.DUPLICATE:
            print(
                f"注意：{check.witness} 的重复联署不计\nnote: a repeated cosignature of {check.witness} "
                "does not count",
                file=sys.stderr,
            )
        elif check.status is CosignatureStatus.UNKNOWN:
            print(
                f"注意：{check.witness} 不是受信任的见证人，其联署不计\nnote: {check.witness} is not a "
                "trusted witness; its cosignature does not count",
                file=sys.stderr,
            )
    require_quorum(verdict)
    names = ", ".join(verdict.witnessed_by)
    _say(
        f"通过：{len(verdict.witnessed_by)} 个受信任的见证人联署了该检查点，达到法定数 {quorum}（{names}）",
        f"OK: {len(verdict.witnessed_by)} trusted witnesses cosigned the checkpoint, quorum {quorum} met "
        f"({names})",
    )


def _say(zh: str, en: str) -> None:
    print(f"{zh}\n{en}")


def _cmd_checkpoint(args: argparse.Namespace) -> None:
    keys = _keys(args.key)
    checkpoint = _checkpoint(args.checkpoint, keys, args.origin)
    _say(
        f"通过：检查点签名有效（{checkpoint.origin}，{checkpoint.size} 个叶）",
        f"OK: checkpoint signature verifies ({checkpoint.origin}, {checkpoint.size} leaves)",
    )
    _check_quorum(args, keys, checkpoint)


def _cmd_inclusion(args: argparse.Namespace) -> None:
    keys = _keys(args.key)
    checkpoint = _checkpoint(args.checkpoint, keys, args.origin)
    _check_quorum(args, keys, checkpoint)
    served: Any = _json_file(args.leaf_json) if args.leaf_json is not None else None
    if served is not None and not (isinstance(served, dict) and isinstance(served.get("data"), str)):
        raise _InputError("叶文件中没有 data 字段", f"{args.leaf_json} holds no leaf data")
    if args.proof is not None:
        proof = InclusionProof.from_json(_read(args.proof))
    elif served is not None and isinstance(served.get("inclusion_proof"), dict):
        proof = InclusionProof.from_json(json.dumps(served["inclusion_proof"]))
    else:
        raise MalformedProof("需要包含证明（--proof）", "an inclusion proof is needed (--proof)")
    if served is not None:
        leaf = leaf_hash(served["data"].encode("utf-8"))
    elif args.leaf_data is not None:
        leaf = leaf_hash(_read(args.leaf_data))
    else:
        leaf = decode_hash(args.leaf_hash)
    if proof.tree_size != checkpoint.size:
        raise MalformedProof(
            f"证明针对 {proof.tree_size} 个叶的树，检查点却有 {checkpoint.size} 个叶",
            f"the proof is for a tree of {proof.tree_size} leaves, the checkpoint has {checkpoint.size}",
        )
    verify_inclusion(proof.leaf_index, proof.tree_size, leaf, proof.hashes, checkpoint.root_hash)
    _say(
        f"通过：第 {proof.leaf_index} 号叶包含在已签名的 {checkpoint.size} 叶树中",
        f"OK: leaf {proof.leaf_index} is included in the signed tree of {checkpoint.size} leaves",
    )


def _cmd_consistency(args: argparse.Namespace) -> None:
    keys = _keys(args.key)
    old = _checkpoint(args.old, keys, args.origin)
    new = _checkpoint(args.new, keys, args.origin)
    if old.origin != new.origin:
        raise MalformedProof(
            "两个检查点来自不同的账本",
            f"the checkpoints come from different logs: {old.origin!r}, {new.origin!r}",
        )
    proof = ConsistencyProof.from_json(_read(args.proof)) if args.proof else None
    if proof is None and old.size != new.size and old.size != 0:
        raise MalformedProof("需要一致性证明（--proof）", "a consistency proof is needed (--proof)")
    if proof is not None and (proof.old_size, proof.new_size) != (old.size, new.size):
        raise MalformedProof(
            f"证明针对 {proof.old_size}→{proof.new_size}，检查点却是 {old.size}→{new.size}",
            f"the proof is for sizes {proof.old_size}→{proof.new_size}, "
            f"the checkpoints are {old.size}→{new.size}",
        )
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof.hashes if proof else ())
    _say(
        f"通过：{new.size} 叶的检查点是 {old.size} 叶检查点的追加延续，历史未被改写",
        f"OK: the checkpoint of {new.size} leaves extends the one of {old.size}; "
        "the history was not rewritten",
    )


class _PackageFailed(VerifyError):
    """An archive package with at least one problem (each already printed)."""

    code = "package_failed"


def _cmd_package(args: argparse.Namespace) -> None:
    agency_keys = _seal_keys(args.agency_key) if args.agency_key else None
    report = verify_package(Path(args.package), _keys(args.key), origin=args.origin, agency_keys=agency_keys)
    for problem in report.problems:
        print(f"[{problem.code}] {problem.message}\n[{problem.code}] {problem.message_en}", file=sys.stderr)
    if not report.ok:
        raise _PackageFailed(
            f"档案包有 {len(report.problems)} 处问题", f"the package has {len(report.problems)} problems"
        )
    size = report.checkpoint.size if report.checkpoint else 0
    if report.sealed_by:
        _say(
            f"通过：机关电子印章有效（{report.sealed_by}）",
            f"OK: the agency seal verifies ({report.sealed_by})",
        )
    if report.suite and report.suite != DEFAULT_SUITE:
        _say(
            f"通过：密码套件 {report.suite} 的摘要均一致",
            f"OK: the digests of crypto suite {report.suite} hold",
        )
    if report.disposed:
        _say(
            f"通过：{report.disposed} 段录像已依法销毁，以经证明的销毁记录代替其文件",
            f"OK: {report.disposed} recordings were disposed of; proved tombstones stand in for their files",
        )
    _say(
        f"通过：{report.files} 个文件的哈希、{report.recordings} 段录像和 {report.leaves} 个叶的包含证明"
        f"均与 {size} 叶的已签名检查点一致",
        f"OK: {report.files} payload files, {report.recordings} recordings and {report.leaves} inclusion "
        f"proofs verify against the signed checkpoint of {size} leaves",
    )


def _http(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST ``body`` as JSON to) a server URL; the decoded JSON answer."""
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:300]
        raise _InputError(
            f"服务器对 {url} 的应答为 {exc.code}：{detail}",
            f"the server answered {exc.code} to {url}: {detail}",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _InputError(f"无法访问 {url}：{exc}", f"cannot fetch {url}: {exc}") from None


def _cmd_witness(args: argparse.Namespace) -> None:
    keys = _keys(args.key)
    witness = Witness(Path(args.state), name=args.name)
    old = witness.kept(keys, args.origin)
    base = args.url.rstrip("/") if args.url else None
    if base is not None:
        if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
            raise _InputError("--url 必须是 http(s) 地址", "--url must be an http(s) URL")
        answer = _http(f"{base}/ledger/v1/checkpoint")
        if not (isinstance(answer, dict) and isinstance(answer.get("note"), str)):
            raise _InputError("服务器的应答中没有检查点", "the server's answer holds no checkpoint note")
        note = answer["note"]
        new, _ = open_checkpoint(note, keys, origin=args.origin)
        proof = None
        if old is not None and 0 < old.size < new.size:
            query = urllib.parse.urlencode({"old_size": old.size, "new_size": new.size})
            proof = ConsistencyProof.from_json(json.dumps(_http(f"{base}/ledger/v1/consistency?{query}")))
    else:
        note = _note(args.checkpoint).decode("utf-8", errors="replace")
        proof = ConsistencyProof.from_json(_read(args.proof)) if args.proof else None
    accepted = witness.observe(note, proof, keys, now=int(time.time()), origin=args.origin)
    size = accepted.checkpoint.size
    if accepted.previous is None:
        _say(
            f"通过：首次见证，保存 {size} 叶的检查点并联署（此后只接受它的追加延续）",
            f"OK: first checkpoint witnessed ({size} leaves), kept and cosigned; "
            "from now on only its extensions are accepted",
        )
    else:
        _say(
            f"通过：{size} 叶的检查点是已见证的 {accepted.previous.size} 叶检查点的追加延续，已联署",
            f"OK: the checkpoint of {size} leaves extends the witnessed one of "
            f"{accepted.previous.size}; cosigned",
        )
    print(accepted.cosignature, end="")
    if base is not None and not args.no_submit:
        # The checkpoint is witnessed and kept either way: a server that does not take the cosignature
        # (this witness's key not configured there) is told on stderr, not a failed verification.
        try:
            stored = _http(
                f"{base}/ledger/v1/cosignatures", {"tree_size": size, "cosignature": accepted.cosignature}
            )
        except _InputError as exc:
            print(
                f"警告：联署签名未提交：{exc.message}\nWARNING: cosignature not submitted: {exc.message_en}",
                file=sys.stderr,
            )
            return
        witness_name = stored.get("witness", "?") if isinstance(stored, dict) else "?"
        _say(f"服务器已保存联署签名（{witness_name}）", f"the server stored the cosignature ({witness_name})")


def _quorum_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--witness-keys",
        action="append",
        metavar="FILE",
        help="trusted witness keys, one vkey a line (repeatable); the checkpoint must then be cosigned by "
        "a quorum of them / 受信任的见证人公钥文件（可重复）",
    )
    parser.add_argument(
        "--quorum",
        type=int,
        help="how many distinct trusted witnesses must cosign (default 1) / 见证法定数（默认 1）",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zfjl-verify",
        description="离线核验执法证据账本 / verify the evidence ledger offline (RFC 9162, C2SP checkpoints)",
    )
    parser.add_argument("--origin", help="expected checkpoint origin (log identity) / 预期的账本标识")
    sub = parser.add_subparsers(dest="command", required=True)

    cp = sub.add_parser("checkpoint", help="verify a signed checkpoint / 核验签名检查点")
    cp.add_argument("--key", required=True, help="verifier key file / 公钥文件")
    cp.add_argument("checkpoint", help="signed checkpoint file / 检查点文件")
    _quorum_options(cp)
    cp.set_defaults(run=_cmd_checkpoint)

    inc = sub.add_parser("inclusion", help="verify that a leaf is in a signed tree / 核验包含证明")
    inc.add_argument("--key", required=True, help="verifier key file / 公钥文件")
    inc.add_argument("--checkpoint", required=True, help="signed checkpoint file / 检查点文件")
    inc.add_argument("--proof", help="inclusion proof JSON (else the one in --leaf-json) / 包含证明")
    leaf = inc.add_mutually_exclusive_group(required=True)
    leaf.add_argument("--leaf-data", help="file holding the leaf's exact bytes / 叶数据文件")
    leaf.add_argument("--leaf-hash", help="the leaf hash, base64 / 叶哈希（base64）")
    leaf.add_argument("--leaf-json", help="the server's leaf answer (data and proof) / 服务器返回的叶")
    _quorum_options(inc)
    inc.set_defaults(run=_cmd_inclusion)

    con = sub.add_parser(
        "consistency", help="verify that a newer checkpoint extends an older one / 核验一致性"
    )
    con.add_argument("--key", required=True, help="verifier key file / 公钥文件")
    con.add_argument("--old", required=True, help="the older signed checkpoint / 较早的检查点")
    con.add_argument("--new", required=True, help="the newer signed checkpoint / 较新的检查点")
    con.add_argument("--proof", help="consistency proof JSON / 一致性证明")
    con.set_defaults(run=_cmd_consistency)

    pkg = sub.add_parser("package", help="verify an archive package (JL-18) / 核验档案包")
    pkg.add_argument("--key", required=True, help="verifier key file / 公钥文件")
    pkg.add_argument(
        "--agency-key",
        help="the agency's seal key file (GET /ledger/v1/agencies/{id}/seal-key); the seal is then "
        "required / 机关电子印章公钥文件",
    )
    pkg.add_argument("package", help="the package: a BagIt directory or its zip / 档案包目录或 zip")
    pkg.set_defaults(run=_cmd_package)

    wit = sub.add_parser("witness", help="keep, check and cosign the ledger's checkpoints / 见证并联署检查点")
    wit.add_argument("--key", required=True, help="the ledger's verifier key file / 账本公钥文件")
    wit.add_argument("--state", required=True, help="the witness's state directory / 见证人状态目录")
    wit.add_argument("--name", help="witness name on first use / 首次使用时的见证人名称")
    source = wit.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="the server's base URL / 服务器地址")
    source.add_argument("--checkpoint", help="a signed checkpoint file / 检查点文件")
    wit.add_argument("--proof", help="with --checkpoint: consistency proof JSON / 一致性证明")
    wit.add_argument(
        "--no-submit", action="store_true", help="with --url: do not send the cosignature / 不提交联署签名"
    )
    wit.set_defaults(run=_cmd_witness)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verification; 0 if it holds, 1 if it does not."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except _UsageError as exc:
        parser.error(str(exc))
    except VerifyError as exc:
        print(f"失败：{exc.message}\nFAILED: {exc.message_en}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m zfjl_verify.cli`
    sys.exit(main())
