"""Offline check of an archive package (JL-18): a BagIt bag (RFC 8493) that carries its own ledger proofs.

A package is a directory or a zip of one directory::

    bagit.txt  bag-info.txt  manifest-sha256.txt  manifest-sha512.txt  tagmanifest-sha256.txt  …
    data/package.json          the index: which rows are proved, which files are which recording
    data/ledger/checkpoint.note the signed checkpoint (C2SP signed note) every proof is against
    data/ledger/leaves/*.json  the exact bytes of each ledger leaf
    data/recordings/<id>/…     the segment's bytes and its signed manifest text
    data/case/…, data/sessions/…, data/provenance/…, data/audit.csv

What :func:`verify_package` checks, each independently so one failure does not hide another:

1. BagIt: ``bagit.txt`` is there; every payload file is listed in every payload manifest and every
   listed file is there with that hash (RFC 8493 §3, §2.1.3); the tag manifests hold (§2.2.1);
   ``Payload-Oxum`` matches. ``manifest-sm3.txt`` and ``tagmanifest-sm3.txt`` are checked when present
   (a package of the ``sm3-ed25519`` suite, zfjl_verify/suite.py).
2. The checkpoint's signature verifies against a key the caller pinned out of band (never one inside
   the package).
3. Every leaf's inclusion proof leads to the checkpoint's root (RFC 9162 §2.1.3.2).
4. Every recording's bytes hash to the SHA-256 its ledger leaf committed to, and its manifest text is
   the one in that leaf: a changed byte is caught even if all the BagIt manifests were recomputed.
   A recording disposed of after its retention (JL-19) has no bytes: its index entry names a
   ``tombstone`` instead of ``media``, and it is accounted for only if that tombstone is a proved
   ``disposal_tombstones`` leaf of the same recording with the same SHA-256 and size as the recording's
   own leaf, and the tombstone file in the package says the same. A recording without media and without
   such a tombstone is reported missing, as before. Disposed recordings are counted apart (``disposed``).
5. Every row the index names (case events, session events, audit rows, the case's own files) has a
   proved leaf.
6. With the agency's seal key pinned (``agency_keys``): ``zfjl-seal.note`` is signed by that key and
   names the digests the tag manifests actually have (zfjl_verify/seal.py), so even a file the ledger
   does not commit to (the case record, the provenance notes) cannot be edited by recomputing manifests.
   The seal is checked with the suite it names: its scheme and one digest per algorithm of the suite.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from zfjl_verify.checkpoint import Checkpoint, open_checkpoint
from zfjl_verify.errors import VerifyError
from zfjl_verify.merkle import leaf_hash, verify_inclusion
from zfjl_verify.note import NoteKey, NoteVerifier
from zfjl_verify.proofs import InclusionProof
from zfjl_verify.seal import SEAL_FILE, parse_seal_text, seal_suite_name
from zfjl_verify.suite import KNOWN_DIGESTS, check_digest, get_suite

__all__ = ["PACKAGE_FORMAT", "PackageProblem", "PackageReport", "verify_package"]

PACKAGE_FORMAT = "zfjl.archive/1"
# RFC 8493 §2.4: sha512 or sha256 SHOULD be used; sm3 is added by the sm3 suites (zfjl_verify/suite.py).
_ALGORITHMS = KNOWN_DIGESTS


@dataclass(frozen=True, kw_only=True)
class PackageProblem:
    """One thing in the package that does not hold."""

    code: str
    message: str
    message_en: str


@dataclass(kw_only=True)
class PackageReport:
    """What was checked and every problem found."""

    files: int = 0
    leaves: int = 0
    recordings: int = 0
    disposed: int = 0
    checkpoint: Checkpoint | None = None
    sealed_by: str | None = None
    suite: str | None = None
    problems: list[PackageProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the package verifies."""
        return not self.problems

    def fail(self, code: str, message: str, message_en: str) -> None:
        """Record one problem."""
        self.problems.append(PackageProblem(code=code, message=message, message_en=message_en))


class _Unreadable(VerifyError):
    """The package cannot be opened at all."""

    code = "unreadable_package"


class _Bag:
    """The files of a bag, from a directory or from a zip holding one top-level directory."""

    def __init__(self, path: Path) -> None:
        self._zip: zipfile.ZipFile | None = None
        self._root = path
        self._prefix = ""
        if path.is_dir():
            self._names = {
                p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() or p.is_symlink()
            }
            return
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise _Unreadable(f"无法打开档案包 {path}：{exc}", f"cannot open package {path}: {exc}") from None
        names = [n for n in self._zip.namelist() if not n.endswith("/")]
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) == 1 and all("/" in n for n in names):
            self._prefix = f"{tops.pop()}/"
        self._names = {n[len(self._prefix) :] for n in names}

    def names(self) -> set[str]:
        """Every file, as a path relative to the bag's root."""
        return set(self._names)

    def open(self, name: str) -> IO[bytes]:
        """A binary stream of one file."""
        if self._zip is not None:
            return self._zip.open(self._prefix + name)
        return (self._root / name).open("rb")

    def read(self, name: str) -> bytes:
        """The whole of one (small) file."""
        with self.open(name) as fh:
            return fh.read()

    def digest(self, name: str, algorithm: str) -> tuple[int, str]:
        """Size and hex digest of one file, streamed (a segment can be hundreds of megabytes)."""
        with self.open(name) as fh:
            counted = _Counting(fh)
            digest = hashlib.file_digest(counted, algorithm).hexdigest()
            return counted.count, digest

    def close(self) -> None:
        """Close the zip, if any."""
        if self._zip is not None:
            self._zip.close()


class _Counting:
    """A reader that counts the bytes read through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.count = 0

    def readable(self) -> bool:
        """Always: it is a reader."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer`` and count."""
        data = self._fh.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


def _safe(name: str) -> bool:
    """A manifest path that stays inside the bag (RFC 8493 §7.2: no absolute or ``..`` paths)."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _manifest(bag: _Bag, name: str, report: PackageReport) -> dict[str, str]:
    """The lines ``<hex digest> <path>`` of a manifest (RFC 8493 §2.1.3), path → digest."""
    entries: dict[str, str] = {}
    try:
        text = bag.read(name).decode("utf-8")
    except UnicodeDecodeError:
        report.fail("bad_manifest", f"{name} 不是 UTF-8 文本", f"{name} is not UTF-8 text")
        return entries
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, path = line.partition(" ")
        path = path.lstrip(" ").replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
        if not path or not _safe(path):
            report.fail(
                "bad_manifest", f"{name} 第 {number} 行格式错误", f"{name} line {number} is malformed"
            )
            continue
        entries[path] = digest.lower()
    return entries


def _check_manifest(
    bag: _Bag, name: str, algorithm: str, report: PackageReport, *, payload: bool
) -> dict[str, int]:
    """Check one (tag) manifest; return the size of each payload file it covers."""
    sizes: dict[str, int] = {}
    entries = _manifest(bag, name, report)
    present = bag.names()
    for path, expected in sorted(entries.items()):
        if payload and not path.startswith("data/"):
            report.fail(
                "bad_manifest", f"{name} 列出了载荷以外的 {path}", f"{name} lists {path} outside data/"
            )
            continue
        if path not in present:
            report.fail(
                "file_missing", f"{path} 缺失（{name} 中有记录）", f"{path} is missing (listed in {name})"
            )
            continue
        size, actual = bag.digest(path, algorithm)
        sizes[path] = size
        if actual != expected:
            report.fail(
                "hash_mismatch",
                f"{path} 的 {algorithm} 与 {name} 不符（文件被改动）",
                f"{path} does not match its {algorithm} in {name} (the file was changed)",
            )
    if payload:
        for path in sorted(p for p in present if p.startswith("data/") and p not in entries):
            report.fail("file_unlisted", f"{path} 未列入 {name}", f"{path} is not listed in {name}")
    return sizes


def _computable(algorithm: str) -> bool:
    try:
        check_digest(algorithm)
    except VerifyError:
        return False
    return True


def _check_bagit(bag: _Bag, report: PackageReport) -> None:
    """The BagIt layer: declaration, payload and tag manifests, Payload-Oxum."""
    names = bag.names()
    if "bagit.txt" not in names:
        report.fail("not_a_bag", "缺少 bagit.txt，不是 BagIt 包", "no bagit.txt: not a BagIt bag")
        return
    declaration = bag.read("bagit.txt").decode("utf-8", "replace")
    if "BagIt-Version:" not in declaration or "Tag-File-Character-Encoding: UTF-8" not in declaration:
        report.fail("not_a_bag", "bagit.txt 的声明不完整", "bagit.txt does not declare version and UTF-8")
    present = {a for a in _ALGORITHMS if f"manifest-{a}.txt" in names or f"tagmanifest-{a}.txt" in names}
    for algorithm in sorted(present):
        try:
            check_digest(algorithm)
        except VerifyError as exc:
            report.fail(exc.code, exc.message, exc.message_en)
    payload = [a for a in _ALGORITHMS if f"manifest-{a}.txt" in names and _computable(a)]
    if "sha256" not in payload:
        report.fail("bad_manifest", "缺少 manifest-sha256.txt", "manifest-sha256.txt is missing")
    sizes: dict[str, int] = {}
    for algorithm in payload:
        sizes |= _check_manifest(bag, f"manifest-{algorithm}.txt", algorithm, report, payload=True)
    tags = [a for a in _ALGORITHMS if f"tagmanifest-{a}.txt" in names and _computable(a)]
    if not tags:
        report.fail("bad_manifest", "缺少标签清单 tagmanifest", "no tag manifest")
    for algorithm in tags:
        covered = _manifest(bag, f"tagmanifest-{algorithm}.txt", report)
        for manifest in (f"manifest-{a}.txt" for a in payload):
            if manifest not in covered:
                report.fail(
                    "bad_manifest", f"标签清单未覆盖 {manifest}", f"the tag manifest omits {manifest}"
                )
        _check_manifest(bag, f"tagmanifest-{algorithm}.txt", algorithm, report, payload=False)
    report.files = len([n for n in names if n.startswith("data/")])
    if "bag-info.txt" in names:
        info = bag.read("bag-info.txt").decode("utf-8", "replace")
        oxum = next(
            (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Payload-Oxum:")),
            None,
        )
        actual = f"{sum(sizes.values())}.{len(sizes)}"
        if oxum is not None and oxum != actual:
            report.fail(
                "oxum_mismatch",
                f"Payload-Oxum 为 {oxum}，实际为 {actual}",
                f"Payload-Oxum is {oxum}, the payload is {actual}",
            )


def _index(bag: _Bag, report: PackageReport) -> dict[str, Any] | None:
    if "data/package.json" not in bag.names():
        report.fail("no_index", "缺少 data/package.json", "data/package.json is missing")
        return None
    try:
        document = json.loads(bag.read("data/package.json"))
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict) or document.get("format") != PACKAGE_FORMAT:
        report.fail(
            "no_index", "data/package.json 不是 zfjl 档案包索引", "data/package.json is not a zfjl index"
        )
        return None
    return document


def _leaf_rows(
    bag: _Bag, index: dict[str, Any], checkpoint: Checkpoint, report: PackageReport
) -> dict[tuple[str, int], dict[str, Any]]:
    """Verify every leaf's proof against the checkpoint; return the proved rows by (table, id)."""
    proved: dict[tuple[str, int], dict[str, Any]] = {}
    leaves = index.get("leaves")
    if not isinstance(leaves, list):
        report.fail("no_index", "索引中没有 leaves", "the index has no leaves")
        return proved
    for entry in leaves:
        path = f"data/{entry.get('data')}" if isinstance(entry, dict) else ""
        if not isinstance(entry, dict) or path not in bag.names():
            report.fail("leaf_missing", f"叶数据文件缺失：{path}", f"leaf data file missing: {path}")
            continue
        data = bag.read(path)
        try:
            proof = InclusionProof.from_json(json.dumps(entry.get("proof")))
            if proof.tree_size != checkpoint.size:
                raise VerifyError(
                    f"证明针对 {proof.tree_size} 个叶的树，检查点有 {checkpoint.size} 个叶",
                    f"the proof is for {proof.tree_size} leaves, the checkpoint has {checkpoint.size}",
                )
            verify_inclusion(
                proof.leaf_index, proof.tree_size, leaf_hash(data), proof.hashes, checkpoint.root_hash
            )
        except VerifyError as exc:
            report.fail(
                "proof_failed",
                f"{path} 的包含证明不成立：{exc.message}",
                f"the inclusion proof of {path} fails: {exc.message_en}",
            )
            continue
        try:
            leaf = json.loads(data)
            key = (str(leaf["table"]), int(leaf["id"]))
            row = leaf["row"]
        except (ValueError, KeyError, TypeError):
            report.fail("leaf_malformed", f"{path} 不是账本叶", f"{path} is not a ledger leaf")
            continue
        proved[key] = row
        report.leaves += 1
    return proved


def _check_recordings(
    bag: _Bag, index: dict[str, Any], proved: dict[tuple[str, int], dict[str, Any]], report: PackageReport
) -> None:
    """Each recording's bytes and manifest text against what its proved ledger leaf committed to."""
    for entry in index.get("recordings") or []:
        recording_id = entry.get("id") if isinstance(entry, dict) else None
        row = proved.get(("recordings", recording_id)) if isinstance(recording_id, int) else None
        if row is None:
            report.fail(
                "unproved_recording",
                f"录像 {recording_id} 没有经证明的账本叶",
                f"recording {recording_id} has no proved ledger leaf",
            )
            continue
        media = f"data/{entry.get('media')}"
        manifest = f"data/{entry.get('manifest')}"
        if "media" not in entry and "tombstone" in entry:
            _check_tombstone(bag, entry, row, proved, report)
        elif media not in bag.names():
            report.fail(
                "file_missing",
                f"录像 {recording_id} 的文件 {media} 缺失",
                f"{media} of recording {recording_id} is missing",
            )
        else:
            size, digest = bag.digest(media, "sha256")
            if digest != row.get("sha256") or size != row.get("size"):
                report.fail(
                    "recording_changed",
                    f"录像 {recording_id} 的内容与账本记录的 SHA-256 不符",
                    f"recording {recording_id}'s bytes do not match the SHA-256 the ledger committed to",
                )
        if manifest not in bag.names() or bag.read(manifest).decode("utf-8", "replace") != row.get(
            "manifest_text"
        ):
            report.fail(
                "manifest_changed",
                f"录像 {recording_id} 的签名清单与账本不符",
                f"recording {recording_id}'s signed manifest does not match the ledger",
            )
        report.recordings += 1


# What a tombstone file must agree on with its proved leaf (the rest is descriptive).
_TOMBSTONE_FIELDS = ("recording_id", "sha256", "size", "reason", "requested_by", "approved_by")


def _check_tombstone(
    bag: _Bag,
    entry: dict[str, Any],
    recording: dict[str, Any],
    proved: dict[tuple[str, int], dict[str, Any]],
    report: PackageReport,
) -> None:
    """A disposed recording (JL-19): its proved tombstone names it, with the hash and size its leaf has."""
    recording_id = entry.get("id")
    stone_id = entry.get("tombstone_id")
    stone = proved.get(("disposal_tombstones", stone_id)) if isinstance(stone_id, int) else None
    if stone is None:
        report.fail(
            "unproved_disposal",
            f"录像 {recording_id} 没有文件，也没有经证明的销毁记录",
            f"recording {recording_id} has no file and no proved disposal tombstone",
        )
        return
    if (
        stone.get("recording_id") != recording_id
        or stone.get("sha256") != recording.get("sha256")
        or stone.get("size") != recording.get("size")
    ):
        report.fail(
            "disposal_mismatch",
            f"录像 {recording_id} 的销毁记录与其账本叶不符",
            f"the disposal tombstone of recording {recording_id} does not match its ledger leaf",
        )
        return
    path = f"data/{entry.get('tombstone')}"
    try:
        described = json.loads(bag.read(path)) if path in bag.names() else None
    except ValueError:
        described = None
    if not isinstance(described, dict) or any(described.get(k) != stone.get(k) for k in _TOMBSTONE_FIELDS):
        report.fail(
            "disposal_mismatch",
            f"录像 {recording_id} 的销毁记录文件 {path} 缺失或与账本不符",
            f"the tombstone file {path} of recording {recording_id} is missing or does not match the ledger",
        )
        return
    report.disposed += 1


def _check_rows(
    index: dict[str, Any], proved: dict[tuple[str, int], dict[str, Any]], report: PackageReport
) -> None:
    rows = index.get("rows") or {}
    for table, ids in sorted(rows.items()) if isinstance(rows, dict) else ():
        for row_id in ids if isinstance(ids, list) else ():
            if (table, row_id) not in proved:
                report.fail(
                    "unproved_row",
                    f"{table} #{row_id} 没有经证明的账本叶",
                    f"{table} #{row_id} has no proved ledger leaf",
                )


def _check_seal(bag: _Bag, agency_keys: Sequence[NoteKey], report: PackageReport) -> None:
    """The agency's seal: signed by a pinned agency key, over the tag manifests the bag really has."""
    if SEAL_FILE not in bag.names():
        report.fail(
            "seal_missing", f"缺少机关电子印章 {SEAL_FILE}", f"the agency seal {SEAL_FILE} is missing"
        )
        return
    sealed = bag.read(SEAL_FILE)
    try:
        suite = get_suite(seal_suite_name(sealed))
    except VerifyError as exc:
        report.fail("seal_suite", f"机关电子印章：{exc.message}", f"the agency seal: {exc.message_en}")
        return
    try:
        note = suite.seal.open(sealed, agency_keys)
    except VerifyError as exc:
        report.fail(
            "seal_signature",
            f"机关电子印章不是由指定的机关密钥签署：{exc.message}",
            f"the agency seal was not made with the pinned agency key: {exc.message_en}",
        )
        return
    stated = parse_seal_text(note.text)
    if stated is None:
        report.fail("seal_malformed", "机关电子印章的内容格式错误", "the agency seal's text is malformed")
        return
    report.sealed_by = note.signers[0]
    report.suite = stated.suite
    for algorithm in get_suite(stated.suite).digests:
        name = f"tagmanifest-{algorithm}.txt"
        present = name in bag.names() and _computable(algorithm)
        actual = bag.digest(name, algorithm)[1] if present else None
        if actual != stated.digests[algorithm]:
            report.fail(
                "seal_mismatch",
                f"{name} 与机关电子印章所盖的内容不符（清单被改动）",
                f"{name} is not what the agency sealed (a manifest was altered)",
            )


def verify_package(
    path: Path,
    verifiers: list[NoteVerifier],
    *,
    origin: str | None = None,
    agency_keys: Sequence[NoteKey] | None = None,
) -> PackageReport:
    """Check a package (directory or zip) completely; ``report.ok`` says whether it verifies.

    With ``agency_keys`` the agency's seal is required and checked too (JL-18).
    """
    if not path.exists():
        raise _Unreadable(f"档案包 {path} 不存在", f"package {path} does not exist")
    bag = _Bag(path)
    report = PackageReport()
    try:
        _check_bagit(bag, report)
        if agency_keys is not None:
            _check_seal(bag, agency_keys, report)
        index = _index(bag, report)
        if index is None:
            return report
        note_path = f"data/{index.get('checkpoint')}"
        if note_path not in bag.names():
            report.fail("no_checkpoint", "缺少检查点文件", f"the checkpoint {note_path} is missing")
            return report
        try:
            checkpoint, _ = open_checkpoint(bag.read(note_path), verifiers, origin=origin)
        except VerifyError as exc:
            report.fail(
                "checkpoint_signature",
                f"检查点无效：{exc.message}",
                f"the checkpoint does not verify: {exc.message_en}",
            )
            return report
        report.checkpoint = checkpoint
        proved = _leaf_rows(bag, index, checkpoint, report)
        _check_recordings(bag, index, proved, report)
        _check_rows(index, proved, report)
    finally:
        bag.close()
    return report
