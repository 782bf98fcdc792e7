"""``zfjl-server backup`` / ``restore``: database and objects, proved by re-checking every segment."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session

from server.cli import main
from server.domain.evidence.commit import commit_segment
from server.domain.evidence.models import Recording
from server.domain.fleet import devices
from server.infra.config import load_settings
from server.infra.db import get_engine, session_scope
from server.infra.storage import STORE_KEY, make_object_store, recording_key
from tests.conftest import SegmentFactory, migrated_app
from tests.fixtures.s3 import S3Endpoint
from zfjl_common.fsutil import sha256_file

SEGMENTS = 3


def _target(monkeypatch: pytest.MonkeyPatch, data_dir: Path, database_url: str) -> None:
    """Point the CLI at a data folder (its local object store) and a database."""
    monkeypatch.setenv("ZFJL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ZFJL_DATABASE_URL", database_url)


def _store_segments(tmp_path: Path, database_url: str) -> tuple[Path, list[str]]:
    """A server's data folder with SEGMENTS signed segments committed; their manifest hashes."""
    data_dir = tmp_path / "source"
    app = migrated_app(data_dir, database_url)
    staged = tmp_path / "staged"
    staged.mkdir()
    segments = SegmentFactory(staged)
    hashes = []
    with session_scope(app) as session:
        devices.register_device(session, segments.device_id, segments.public_key)
    for n in range(SEGMENTS):
        signed, path = segments.make(f"evidence {n} ".encode() * 3000)
        with session_scope(app) as session:
            commit_segment(session, app.extensions[STORE_KEY], signed, path)
        hashes.append(signed.manifest_hash)
    get_engine(app).dispose()
    return data_dir, hashes


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).get_table_names()
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """Makes fresh, empty databases of one engine, by name."""
    if request.param == "sqlite":
        return lambda name: f"sqlite:///{tmp_path / f'{name}.db'}"
    make: Callable[[], str] = request.getfixturevalue("fresh_pg_database")
    return lambda _name: make()


def test_jl6_backup_then_restore_into_a_fresh_target_reverifies_every_segment(
    tmp_path: Path,
    database: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source_url = database("source")
    source_dir, hashes = _store_segments(tmp_path, source_url)
    _target(monkeypatch, source_dir, source_url)
    backup_dir = tmp_path / "backup"
    assert main(["backup", "--out", str(backup_dir)]) == 0
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert len(manifest["objects"]) == SEGMENTS
    assert all(
        sha256_file(backup_dir / name) == entry["sha256"] for name, entry in manifest["files"].items()
    )

    target_url = database("target")
    _target(monkeypatch, tmp_path / "target", target_url)
    capsys.readouterr()
    assert main(["restore", "--from", str(backup_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{SEGMENTS} 段录像 recordings" in out and "findings: 0" in out

    engine = create_engine(target_url)
    try:
        with Session(engine) as session:
            rows = list(session.scalars(select(Recording).order_by(Recording.sequence)))
    finally:
        engine.dispose()
    assert [r.manifest_hash for r in rows] == hashes
    for row in rows:
        restored = tmp_path / "target" / "objects" / recording_key(row.device_id, row.sequence, row.sha256)
        assert sha256_file(restored) == row.sha256

    # Restoring again over the now-populated target is refused: a restore never merges or overwrites.
    assert main(["restore", "--from", str(backup_dir)]) == 1
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["object", "database", "manifest", "missing object"])
def test_a_damaged_backup_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    source_dir, _hashes = _store_segments(tmp_path, source_url)
    _target(monkeypatch, source_dir, source_url)
    backup_dir = tmp_path / "backup"
    assert main(["backup", "--out", str(backup_dir)]) == 0
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    victim = {
        "object": backup_dir / "objects" / manifest["objects"][1]["key"],
        "database": backup_dir / "database.sqlite3",
        "manifest": backup_dir / "manifest.json",
        "missing object": backup_dir / "objects" / manifest["objects"][0]["key"],
    }[damage]
    if damage == "missing object":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01  # one flipped bit
        victim.write_bytes(bytes(data))

    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    _target(monkeypatch, tmp_path / "target", target_url)
    capsys.readouterr()
    assert main(["restore", "--from", str(backup_dir)]) == 1
    err = capsys.readouterr().err
    assert "restore refused" in err
    assert ("manifest was altered" if damage == "manifest" else "the backup is damaged") in err
    # Nothing was written: no tables, no objects.
    assert _tables(target_url) == []
    objects = tmp_path / "target" / "objects"
    assert not objects.exists() or not any(p.is_file() for p in objects.rglob("*"))


def test_an_object_damaged_in_the_store_is_backed_up_as_found_and_reported_after_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    source_dir, _hashes = _store_segments(tmp_path, source_url)
    stored = sorted((source_dir / "objects").rglob("*.mp4"))[0]
    stored.chmod(0o600)
    stored.write_bytes(b"tampered" + stored.read_bytes()[8:])
    _target(monkeypatch, source_dir, source_url)
    backup_dir = tmp_path / "backup"
    assert main(["backup", "--out", str(backup_dir)]) == 1  # written, but the operator is told
    assert "differs from its SHA-256" in capsys.readouterr().err
    _target(monkeypatch, tmp_path / "target", f"sqlite:///{tmp_path / 'target.db'}")
    assert main(["restore", "--from", str(backup_dir)]) == 1
    captured = capsys.readouterr()
    assert "findings: 1" in captured.out and "dev-001" in captured.out


def test_backup_refuses_a_folder_that_is_not_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    source_dir, _hashes = _store_segments(tmp_path, source_url)
    _target(monkeypatch, source_dir, source_url)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    assert main(["backup", "--out", str(occupied)]) == 1
    assert "must be empty" in capsys.readouterr().err
    assert sorted(p.name for p in occupied.iterdir()) == ["keep.txt"]
    shutil.rmtree(occupied)


@pytest.mark.s3
def test_backup_and_restore_through_the_s3_store(
    tmp_path: Path,
    seaweedfs: S3Endpoint,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source_bucket, target_bucket = (f"zfjl-test-{uuid.uuid4().hex[:12]}" for _ in range(2))
    for name, value in (
        ("ZFJL_OBJECT_STORE", "s3"),
        ("ZFJL_S3_ENDPOINT", seaweedfs.url),
        ("ZFJL_S3_ACCESS_KEY", seaweedfs.access_key),
        ("ZFJL_S3_SECRET_KEY", seaweedfs.secret_key),
        ("ZFJL_S3_BUCKET", source_bucket),
        ("ZFJL_RETENTION_DAYS", "1"),
    ):
        monkeypatch.setenv(name, value)
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    store = make_object_store(load_settings({"data_dir": str(tmp_path / "source")}))
    store.ensure_bucket()  # type: ignore[attr-defined]
    source_dir, hashes = _store_segments(tmp_path, source_url)
    client = seaweedfs.client()
    assert client.list_objects_v2(Bucket=source_bucket)["KeyCount"] == SEGMENTS
    assert not (source_dir / "objects").exists()  # the evidence went to S3, not the local folder
    _target(monkeypatch, source_dir, source_url)
    backup_dir = tmp_path / "backup"
    assert main(["backup", "--out", str(backup_dir)]) == 0

    # Into the same, populated bucket: refused, a restore never overwrites.
    _target(monkeypatch, tmp_path / "again", f"sqlite:///{tmp_path / 'again.db'}")
    assert main(["restore", "--from", str(backup_dir)]) == 1
    assert "already holds" in capsys.readouterr().err

    monkeypatch.setenv("ZFJL_S3_BUCKET", target_bucket)
    _target(monkeypatch, tmp_path / "target", f"sqlite:///{tmp_path / 'target.db'}")
    assert main(["restore", "--from", str(backup_dir)]) == 0
    assert f"{SEGMENTS} 段录像 recordings" in capsys.readouterr().out
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=target_bucket).get("Contents", []))
    assert len(keys) == SEGMENTS and all(key.startswith("recordings/dev-001/") for key in keys)
    assert len(hashes) == SEGMENTS
