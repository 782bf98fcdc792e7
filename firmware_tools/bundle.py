"""Signed update bundles of the recorder agent: build, sign, verify, unpack.

A bundle is one uncompressed tar written deterministically (fixed order, mtime 0, uid/gid 0, mode 0644)::

    metadata.json   canonical JSON: format, name, version, created_at, min_agent_version, files[]
    metadata.sig    JSON {"key_id", "signature"}: detached Ed25519 over the exact metadata.json bytes
    files/<name>    the payload (agent wheels); each one's size and SHA-256 are pinned in metadata.json

The signature covers only ``metadata.json``; because that pins every file's SHA-256, a verified
signature plus matching hashes prove the whole bundle. Signing keys live offline (RAUC and TUF keep
theirs the same way); devices and the server hold only public keys. Rollback and replay (TUF's
rollback and freeze attacks) are refused by the device's updater comparing :func:`parse_version`
values, not here: a bundle by itself cannot know what a device already ran.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from zfjl_common.fsutil import sha256_file

__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "BundleFile",
    "BundleFormatError",
    "BundleHashError",
    "BundleMetadata",
    "BundleSignatureError",
    "add_bundle_commands",
    "build_bundle",
    "compare_versions",
    "extract_files",
    "generate_signing_key",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "parse_version",
    "read_metadata",
    "run_bundle_command",
    "sign_bundle",
    "unpack_wheel",
    "verify_bundle",
]

BUNDLE_FORMAT = "zfjl-bundle/1"
METADATA_NAME = "metadata.json"
SIGNATURE_NAME = "metadata.sig"
FILES_PREFIX = "files/"
MAX_METADATA_BYTES = 256 * 1024
MAX_MEMBERS = 64
_CHUNK = 1024 * 1024
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")
# Semantic Versioning 2.0.0 §2 and §9 (no build metadata: two builds of one version must not coexist).
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")


class BundleError(Exception):
    """A bundle cannot be trusted or used; the message says why."""


class BundleFormatError(BundleError):
    """The bundle is not a well-formed zfjl bundle."""


class BundleSignatureError(BundleError):
    """The metadata is unsigned or signed by a key that is not trusted."""


class BundleHashError(BundleError):
    """A payload file does not match the size or SHA-256 pinned in the signed metadata."""


@dataclass(frozen=True, kw_only=True)
class BundleFile:
    """One payload file as pinned by the metadata."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class BundleMetadata:
    """The signed description of a bundle."""

    name: str
    version: str
    created_at: str
    min_agent_version: str
    files: tuple[BundleFile, ...]

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no spaces): exactly what is signed."""
        body = {
            "format": BUNDLE_FORMAT,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "min_agent_version": self.min_agent_version,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON view."""
        data: dict[str, Any] = json.loads(self.to_bytes())
        return data

    @classmethod
    def from_bytes(cls, raw: bytes) -> BundleMetadata:
        """Parse and validate metadata bytes; BundleFormatError if anything is off."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleFormatError(f"metadata is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise BundleFormatError(f"metadata format must be {BUNDLE_FORMAT}")
        for key in ("name", "version", "created_at", "min_agent_version"):
            if not isinstance(data.get(key), str):
                raise BundleFormatError(f"metadata {key} must be a string")
        parse_version(data["version"])
        parse_version(data["min_agent_version"])
        files = data.get("files")
        if not isinstance(files, list) or not files:
            raise BundleFormatError("metadata must list at least one file")
        parsed: list[BundleFile] = []
        for entry in files:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("path"), str)
                and _SAFE_NAME.fullmatch(entry["path"])
                and isinstance(entry.get("size"), int)
                and entry["size"] >= 0
                and isinstance(entry.get("sha256"), str)
                and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
            ):
                raise BundleFormatError(f"bad file entry in metadata: {entry!r}")
            parsed.append(BundleFile(path=entry["path"], size=entry["size"], sha256=entry["sha256"]))
        if len({f.path for f in parsed}) != len(parsed):
            raise BundleFormatError("metadata lists a file twice")
        return cls(
            name=data["name"],
            version=data["version"],
            created_at=data["created_at"],
            min_agent_version=data["min_agent_version"],
            files=tuple(parsed),
        )


# -- versions ---------------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int, tuple[tuple[int, int | str], ...] | None]:
    """Semantic version as a sortable key part; BundleFormatError if it is not ``X.Y.Z[-pre]``."""
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise BundleFormatError(f"version {text!r} is not a semantic version X.Y.Z[-pre]")
    pre: tuple[tuple[int, int | str], ...] | None = None
    if match.group(4) is not None:
        # SemVer §11: numeric identifiers sort below alphanumeric ones and compare as numbers.
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in match.group(4).split("."))
    return int(match.group(1)), int(match.group(2)), int(match.group(3)), pre


def compare_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as ``left`` sorts before, equal to or after ``right`` (SemVer §11 precedence)."""
    a, b = parse_version(left), parse_version(right)
    if a[:3] != b[:3]:
        return -1 if a[:3] < b[:3] else 1
    # A pre-release sorts before its release (1.0.0-rc.1 < 1.0.0).
    if a[3] == b[3]:
        return 0
    if a[3] is None:
        return 1
    if b[3] is None:
        return -1
    return -1 if a[3] < b[3] else 1


# -- keys -------------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key: names a key without trusting it."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key(out: Path) -> Path:
    """Write a new Ed25519 private key (PEM, 0600) and its public key next to it (``.pub.pem``)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(pem)
    public_path = out.with_name(out.name.removesuffix(".pem") + ".pub.pem")
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The offline signing key from a PEM file."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path.name} is not an Ed25519 private key")
    return key


def load_public_keys(data: bytes) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in PEM text (several may be concatenated, for key rollover)."""
    keys: list[Ed25519PublicKey] = []
    for block in re.findall(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", data, re.S):
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, Ed25519PublicKey):
            raise BundleError("an update key must be Ed25519")
        keys.append(key)
    return keys


# -- building and signing ---------------------------------------------------------------------------


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    info.uname = info.gname = ""
    return info


def _write_tar(
    out: Path, metadata: bytes, signature: bytes | None, payload: Iterable[tuple[str, Path]]
) -> None:
    """Write the bundle atomically: tmp file, fsync, rename."""
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_info(METADATA_NAME, len(metadata)), io.BytesIO(metadata))
            if signature is not None:
                tar.addfile(_info(SIGNATURE_NAME, len(signature)), io.BytesIO(signature))
            for name, path in payload:
                with path.open("rb") as stream:
                    tar.addfile(_info(FILES_PREFIX + name, path.stat().st_size), stream)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, out)


def build_bundle(
    out: Path,
    *,
    version: str,
    files: Sequence[Path],
    name: str = "zfjl-agent",
    min_agent_version: str = "0.0.0",
    created_at: datetime | None = None,
) -> BundleMetadata:
    """Pack ``files`` (sorted by name) and their metadata into an unsigned bundle at ``out``."""
    parse_version(version)
    parse_version(min_agent_version)
    if not files:
        raise BundleError("a bundle needs at least one file")
    ordered = sorted(files, key=lambda p: p.name)
    for path in ordered:
        if not _SAFE_NAME.fullmatch(path.name):
            raise BundleError(f"unsafe file name {path.name!r}")
    moment = (created_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    metadata = BundleMetadata(
        name=name,
        version=version,
        created_at=moment.isoformat().replace("+00:00", "Z"),
        min_agent_version=min_agent_version,
        files=tuple(BundleFile(path=p.name, size=p.stat().st_size, sha256=sha256_file(p)) for p in ordered),
    )
    if len({f.path for f in metadata.files}) != len(metadata.files):
        raise BundleError("two files have the same name")
    _write_tar(out, metadata.to_bytes(), None, [(p.name, p) for p in ordered])
    return metadata


def sign_bundle(path: Path, key: Ed25519PrivateKey) -> BundleMetadata:
    """Add (or replace) the detached signature over the metadata; payload bytes are copied unchanged."""
    raw, _old, _members = _read_parts(path)
    metadata = BundleMetadata.from_bytes(raw)
    signature = json.dumps(
        {"key_id": key_id(key.public_key()), "signature": base64.b64encode(key.sign(raw)).decode()},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    workdir = path.with_name(f".{path.name}.parts")
    workdir.mkdir(exist_ok=True)
    try:
        extracted = extract_files(path, workdir, metadata)
        _write_tar(path, raw, signature, [(f.path, extracted[f.path]) for f in metadata.files])
    finally:
        for child in workdir.iterdir():
            child.unlink()
        workdir.rmdir()
    return metadata


# -- reading and verifying --------------------------------------------------------------------------


def _read_parts(path: Path) -> tuple[bytes, bytes | None, dict[str, tarfile.TarInfo]]:
    """Metadata bytes, signature bytes and the payload members, checking the tar's shape."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            members: dict[str, tarfile.TarInfo] = {}
            metadata: bytes | None = None
            signature: bytes | None = None
            for count, info in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise BundleFormatError("too many files in the bundle")
                # Only regular files with flat, known names: no links, devices or path tricks.
                if not info.isreg():
                    raise BundleFormatError(f"bundle member {info.name!r} is not a regular file")
                if info.name in (METADATA_NAME, SIGNATURE_NAME):
                    if info.size > MAX_METADATA_BYTES:
                        raise BundleFormatError(f"{info.name} is too large")
                    stream = tar.extractfile(info)
                    assert stream is not None
                    if info.name == METADATA_NAME and metadata is None:
                        metadata = stream.read()
                    elif info.name == SIGNATURE_NAME and signature is None:
                        signature = stream.read()
                    else:
                        raise BundleFormatError(f"{info.name} appears twice")
                    continue
                name = info.name.removeprefix(FILES_PREFIX)
                if not info.name.startswith(FILES_PREFIX) or not _SAFE_NAME.fullmatch(name):
                    raise BundleFormatError(f"unexpected bundle member {info.name!r}")
                if name in members:
                    raise BundleFormatError(f"{info.name} appears twice")
                members[name] = info
    except (tarfile.TarError, OSError) as exc:
        raise BundleFormatError(f"not a bundle: {exc}") from None
    if metadata is None:
        raise BundleFormatError("the bundle has no metadata.json")
    return metadata, signature, members


def read_metadata(path: Path) -> BundleMetadata:
    """The bundle's metadata, unverified (for display only)."""
    return BundleMetadata.from_bytes(_read_parts(path)[0])


def _check_signature(raw: bytes, signature: bytes | None, trusted: Sequence[Ed25519PublicKey]) -> str:
    if signature is None:
        raise BundleSignatureError("the bundle is not signed")
    try:
        data = json.loads(signature)
        sig = base64.b64decode(str(data["signature"]), validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BundleSignatureError("metadata.sig is malformed") from None
    for key in trusted:
        try:
            key.verify(sig, raw)
        except InvalidSignature:
            continue
        return key_id(key)
    raise BundleSignatureError("the signature does not verify with any trusted update key")


def verify_bundle(path: Path, trusted: Sequence[Ed25519PublicKey]) -> tuple[BundleMetadata, str]:
    """Metadata and signing key id, once the signature and every file's size and SHA-256 check out."""
    raw, signature, members = _read_parts(path)
    signer = _check_signature(raw, signature, trusted)
    metadata = BundleMetadata.from_bytes(raw)
    if set(members) != {f.path for f in metadata.files}:
        raise BundleHashError("the bundle's files differ from the ones its metadata lists")
    with tarfile.open(path, mode="r:") as tar:
        for entry in metadata.files:
            _hash_member(tar, members[entry.path], entry, None)
    return metadata, signer


def _hash_member(tar: tarfile.TarFile, info: tarfile.TarInfo, entry: BundleFile, out: Path | None) -> None:
    if info.size != entry.size:
        raise BundleHashError(f"{entry.path}: size {info.size}, metadata says {entry.size}")
    stream = tar.extractfile(info)
    assert stream is not None
    digest = hashlib.sha256()
    sink = out.open("xb") if out is not None else None
    try:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
    finally:
        if sink is not None:
            sink.close()
    if digest.hexdigest() != entry.sha256:
        if out is not None:
            out.unlink(missing_ok=True)
        raise BundleHashError(f"{entry.path}: SHA-256 does not match the signed metadata")


def extract_files(path: Path, dest: Path, metadata: BundleMetadata) -> dict[str, Path]:
    """Copy the payload into ``dest``, checking each file against ``metadata`` as it is written."""
    _raw, _sig, members = _read_parts(path)
    out: dict[str, Path] = {}
    with tarfile.open(path, mode="r:") as tar:
        for entry in metadata.files:
            info = members.get(entry.path)
            if info is None:
                raise BundleHashError(f"{entry.path} is missing from the bundle")
            target = dest / entry.path
            _hash_member(tar, info, entry, target)
            out[entry.path] = target
    return out


def unpack_wheel(wheel: Path, dest: Path) -> list[str]:
    """Unpack a wheel (a zip) into ``dest`` as ``pip install --target`` would lay it out, minus scripts."""
    names: list[str] = []
    root = dest.resolve()
    try:
        with zipfile.ZipFile(wheel) as archive:
            for item in archive.infolist():
                target = (dest / item.filename).resolve()
                # Zip slip: a member named ../x must not land outside the slot.
                if not target.is_relative_to(root):
                    raise BundleFormatError(f"{wheel.name}: member {item.filename!r} escapes the slot")
                if item.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(item) as src, target.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
                names.append(item.filename)
    except zipfile.BadZipFile as exc:
        raise BundleFormatError(f"{wheel.name} is not a wheel: {exc}") from None
    return names


# -- command line (``zfjl-fw bundle ...``) ------------------------------------------------------------


def add_bundle_commands(parser: argparse.ArgumentParser) -> None:
    """The ``keygen``, ``build``, ``sign`` and ``verify`` subcommands under ``zfjl-fw bundle``."""
    sub = parser.add_subparsers(dest="bundle_command", required=True)
    keygen = sub.add_parser("keygen", help="make an offline Ed25519 update signing key (+ .pub.pem)")
    keygen.add_argument("--out", required=True, type=Path, help="private key PEM to create")
    build = sub.add_parser("build", help="pack agent wheels and metadata into an unsigned bundle")
    build.add_argument("--version", required=True, help="bundle version X.Y.Z[-pre]")
    build.add_argument("--out", required=True, type=Path)
    build.add_argument("--wheel-dir", type=Path, default=None, help="use these *.whl instead of building")
    build.add_argument("--source", type=Path, default=Path("."), help="project to `pip wheel` (default .)")
    build.add_argument("--min-agent-version", default="0.0.0")
    sign = sub.add_parser("sign", help="add the detached signature over the metadata")
    sign.add_argument("--key", required=True, type=Path, help="offline private key PEM")
    sign.add_argument("bundle", type=Path)
    verify = sub.add_parser("verify", help="check the signature and every file hash")
    verify.add_argument("--pubkey", required=True, type=Path, help="trusted public key PEM(s)")
    verify.add_argument("bundle", type=Path)


def _wheels(args: argparse.Namespace, workdir: Path) -> list[Path]:
    if args.wheel_dir is not None:
        return sorted(args.wheel_dir.glob("*.whl"))
    # The agent is this project's own wheel; --no-deps because the device's base image holds the rest.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(args.source), "--no-deps", "-q", "-w", str(workdir)],
        check=True,
    )
    return sorted(workdir.glob("*.whl"))


def run_bundle_command(args: argparse.Namespace) -> int:
    """Run one ``zfjl-fw bundle`` subcommand; prints JSON, returns the exit code."""
    try:
        if args.bundle_command == "keygen":
            public = generate_signing_key(args.out)
            key = load_private_key(args.out)
            result: dict[str, Any] = {"key": str(args.out), "public_key": str(public)}
            result["key_id"] = key_id(key.public_key())
        elif args.bundle_command == "build":
            with tempfile.TemporaryDirectory() as workdir:
                wheels = _wheels(args, Path(workdir))
                if not wheels:
                    raise BundleError("no wheels to pack")
                metadata = build_bundle(
                    args.out, version=args.version, files=wheels, min_agent_version=args.min_agent_version
                )
            result = {"bundle": str(args.out), "metadata": metadata.to_dict()}
        elif args.bundle_command == "sign":
            key = load_private_key(args.key)
            metadata = sign_bundle(args.bundle, key)
            result = {"bundle": str(args.bundle), "version": metadata.version}
            result["key_id"] = key_id(key.public_key())
        else:
            keys = load_public_keys(args.pubkey.read_bytes())
            metadata, signer = verify_bundle(args.bundle, keys)
            result = {"ok": True, "version": metadata.version, "key_id": signer, "files": len(metadata.files)}
    except (BundleError, OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"bundle {args.bundle_command} failed / 升级包操作失败: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False))
    return 0
