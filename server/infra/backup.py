"""``zfjl-server backup`` / ``restore``: the database and every stored object in one folder, with SHA-256s.

A backup folder holds ``database.sqlite3`` (SQLite's online backup API) or ``database.pgdump``
(``pg_dump --format=custom``), ``objects/<key>`` for every object the database refers to (recordings,
case attachments, update bundles), ``manifest.json`` listing each file's size and SHA-256, and
``manifest.sha256``, the hash of the manifest itself. The manifest is written last: a folder without it
is an unfinished backup.

The object list is read in the same snapshot as the dump (PostgreSQL: ``pg_export_snapshot`` and
``pg_dump --snapshot``; SQLite: read from the copy), so every row of the dump has its object. Objects are
write-once (JL-6), so copying them after the snapshot is safe.

``restore`` checks every file against the manifest BEFORE it writes anything and refuses a backup with a
missing or altered file; it writes only into an empty database and an object store holding none of the
keys. The caller then migrates and re-checks every segment against its signed manifest (the scrubber).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, make_url

from server.errors import ErrorKind, ZfjlError
from server.infra.config import Settings
from server.infra.storage import ObjectStore
from zfjl_common.fsutil import fsync_dir, sha256_file

__all__ = ["FORMAT", "MANIFEST", "BackupError", "BackupResult", "backup", "restore", "verify_backup"]

FORMAT = "zfjl-backup/1"
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
SQLITE_FILE = "database.sqlite3"
PG_FILE = "database.pgdump"
OBJECTS = "objects"
# Every table whose rows name an object in the store (key, size, sha256).
OBJECT_TABLES = ("recordings", "case_attachments", "update_bundles")
_COPY_CHUNK = 1024 * 1024


class BackupError(ZfjlError):
    """A backup cannot be made or restored; the message names the file or the reason, in zh and en."""

    kind = ErrorKind.INVALID
    code = "backup_error"


@dataclass(frozen=True)
class BackupResult:
    """What a backup or restore covered."""

    directory: Path
    engine: str
    objects: int
    object_bytes: int
    mismatched: tuple[str, ...] = ()
    """Objects whose stored bytes did not hash to the database's SHA-256 (copied as found)."""


@dataclass(frozen=True)
class _Object:
    key: str
    size: int
    sha256: str


def _engine_kind(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"不支持的数据库 / unsupported database: {backend}")
    return backend


def _list_objects(conn: Connection) -> list[_Object]:
    """Every object the database refers to, once per key."""
    tables = set(inspect(conn).get_table_names())
    seen: dict[str, _Object] = {}
    for table in OBJECT_TABLES:
        if table not in tables:
            continue
        for key, size, sha256 in conn.execute(text(f"SELECT object_key, size, sha256 FROM {table}")):
            seen.setdefault(key, _Object(str(key), int(size), str(sha256)))
    return sorted(seen.values(), key=lambda o: o.key)


def _pg_args(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password (it goes to PGPASSWORD, never onto a command line)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    libpq = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return libpq, env


def _run(argv: list[str], env: dict[str, str]) -> None:
    tool = shutil.which(argv[0])
    if tool is None:
        raise BackupError(
            f"未找到 {argv[0]}，请安装 postgresql-client / {argv[0]} not found: install postgresql-client"
        )
    result = subprocess.run([tool, *argv[1:]], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{argv[0]} 失败 / {argv[0]} failed: {result.stderr.strip()[-2000:]}")


def _dump_database(url: str, out: Path) -> tuple[str, str, list[_Object]]:
    """Dump the database into ``out``; return (engine, file name, objects of that same snapshot)."""
    kind = _engine_kind(url)
    if kind == "sqlite":
        source_path = make_url(url).database
        if not source_path or not Path(source_path).exists():
            raise BackupError(f"数据库文件不存在 / database file not found: {source_path}")
        target = out / SQLITE_FILE
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)  # a consistent copy while the server keeps writing
            finally:
                copy.close()
        finally:
            source.close()
        engine = create_engine(f"sqlite:///{target}")
        try:
            with engine.connect() as conn:
                objects = _list_objects(conn)
        finally:
            engine.dispose()
        return kind, SQLITE_FILE, objects
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            objects = _list_objects(conn)
            libpq, env = _pg_args(url)
            # The snapshot stays valid while this transaction is open: the dump sees what we listed.
            _run(
                [
                    "pg_dump",
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={out / PG_FILE}",
                    f"--dbname={libpq}",
                ],
                env,
            )
            conn.rollback()
    finally:
        engine.dispose()
    return kind, PG_FILE, objects


def _copy_object(store: ObjectStore, obj: _Object, target: Path) -> tuple[int, str]:
    """Stream one object to ``target``; return its size and SHA-256 as copied."""
    if obj.key.startswith("/") or ".." in obj.key.split("/"):
        raise BackupError(f"无效的对象键 / invalid object key in the database: {obj.key!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as dst:
        if obj.size > 0:
            for chunk in store.open_range(obj.key, 0, obj.size - 1):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> str:
    body = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return hashlib.sha256(body).hexdigest()


def backup(settings: Settings, store: ObjectStore, out: Path) -> BackupResult:
    """Back up the database of ``settings`` and every object it refers to into the new folder ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"备份目录必须为空 / the backup folder must be empty: {out}")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    kind, db_file, objects = _dump_database(settings.database_url, out)
    files: dict[str, dict[str, Any]] = {}
    size, sha = (out / db_file).stat().st_size, sha256_file(out / db_file)
    files[db_file] = {"size": size, "sha256": sha}
    mismatched: list[str] = []
    total = 0
    for obj in objects:
        relative = f"{OBJECTS}/{obj.key}"
        copied_size, copied_sha = _copy_object(store, obj, out / relative)
        if copied_sha != obj.sha256 or copied_size != obj.size:
            mismatched.append(obj.key)
        files[relative] = {"size": copied_size, "sha256": copied_sha}
        total += copied_size
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": {"engine": kind, "file": db_file},
        "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in objects],
        "files": files,
    }
    digest = _write_json(out / MANIFEST, manifest)
    (out / MANIFEST_HASH).write_text(f"{digest}  {MANIFEST}\n", encoding="ascii")
    fsync_dir(out)
    return BackupResult(out, kind, len(objects), total, tuple(mismatched))


def _intact(src: Path, relative: str, entry: dict[str, Any]) -> bool:
    """Whether the listed file is inside the folder and has its listed size and SHA-256."""
    if ".." in Path(relative).parts or Path(relative).is_absolute():
        return False
    path = src / relative
    return path.is_file() and path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]


def verify_backup(src: Path) -> dict[str, Any]:
    """The manifest of ``src`` after checking it and every file it lists; BackupError on any difference."""
    src = Path(src)
    try:
        expected = (src / MANIFEST_HASH).read_text(encoding="ascii").split()[0]
        body = (src / MANIFEST).read_bytes()
    except (OSError, IndexError, UnicodeDecodeError):
        raise BackupError(f"不是完整的备份 (缺少清单) / not a complete backup (no manifest): {src}") from None
    if hashlib.sha256(body).hexdigest() != expected:
        raise BackupError("备份清单已被改动 / the backup manifest was altered")
    try:
        manifest: dict[str, Any] = json.loads(body)
    except ValueError:
        raise BackupError("备份清单无法解析 / the backup manifest is not valid JSON") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"未知的备份格式 / unknown backup format: {manifest.get('format')!r}")
    bad: list[str] = []
    for relative, entry in sorted(manifest["files"].items()):
        if not _intact(src, relative, entry):
            bad.append(relative)
    for obj in manifest["objects"]:
        if f"{OBJECTS}/{obj['key']}" not in manifest["files"]:
            bad.append(f"{OBJECTS}/{obj['key']}")
    if bad:
        shown = ", ".join(sorted(set(bad))[:10])
        raise BackupError(
            f"备份已损坏，{len(set(bad))} 个文件与清单不符，未做任何恢复 / the backup is damaged: "
            f"{len(set(bad))} file(s) differ from the manifest, nothing was restored: {shown}"
        )
    return manifest


def _database_is_empty(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return not inspect(conn).get_table_names()
    finally:
        engine.dispose()


def _iter_objects(manifest: dict[str, Any]) -> Iterator[_Object]:
    for obj in manifest["objects"]:
        yield _Object(obj["key"], int(obj["size"]), obj["sha256"])


def restore(settings: Settings, store: ObjectStore, src: Path) -> BackupResult:
    """Restore ``src`` into the empty database and object store of ``settings`` (checked first)."""
    src = Path(src)
    manifest = verify_backup(src)
    kind = manifest["database"]["engine"]
    target_kind = _engine_kind(settings.database_url)
    if kind != target_kind:
        raise BackupError(
            f"备份来自 {kind}，目标是 {target_kind} / the backup is of {kind}, the target is {target_kind}"
        )
    if not _database_is_empty(settings.database_url):
        raise BackupError("目标数据库不是空的 / the target database is not empty")
    objects = list(_iter_objects(manifest))
    present = [o.key for o in objects if store.exists(o.key)]
    if present:
        raise BackupError(
            f"目标存储已有 {len(present)} 个同名对象 / the target store already holds {len(present)} of the "
            f"objects, e.g. {present[0]}"
        )
    db_path = src / manifest["database"]["file"]
    if kind == "sqlite":
        target = make_url(settings.database_url).database
        assert target
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            dest = sqlite3.connect(target)
            try:
                source.backup(dest)
            finally:
                dest.close()
        finally:
            source.close()
    else:
        libpq, env = _pg_args(settings.database_url)
        _run(
            [
                "pg_restore",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                f"--dbname={libpq}",
                str(db_path),
            ],
            env,
        )
    total = 0
    for obj in objects:
        # As copied: an object that was already damaged when backed up is restored as found, and the
        # scrub after the restore reports it against its signed manifest. put_file re-hashes the bytes.
        copied = manifest["files"][f"{OBJECTS}/{obj.key}"]
        store.put_file(obj.key, src / OBJECTS / obj.key, copied["sha256"])
        total += int(copied["size"])
    return BackupResult(src, kind, len(objects), total)
