"""Everything the server writes under its data directory is private to its account, whatever the umask."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from protocol.messages import FileChunk
from server.app import create_app
from server.domain.accounts.service import create_user
from server.infra.db import get_engine, run_migrations, session_scope
from server.infra.staging import Staging
from server.infra.storage import LocalObjectStore
from tests.conftest import SegmentFactory


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a given process umask."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of everything under ``root`` (and root itself as '.')."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def test_data_dir_database_secret_staging_and_objects_are_private(
    tmp_path: Path, umask: int, segments: SegmentFactory
) -> None:
    """The SQLite files were 0644 and objects 0444 under the default umask: readable by any local user."""
    data_dir = tmp_path / "srv" / "zfjl"
    app = create_app({"data_dir": str(data_dir), "TESTING": True})  # default SQLite and a generated secret
    settings = app.extensions["zfjl.settings"]
    run_migrations(settings.database_url)
    with session_scope(app) as session:
        create_user(session, "someone", "long-enough-1", "officer")
    with get_engine(app).connect() as conn:  # keep a connection open so -wal and -shm exist
        conn.execute(text("SELECT count(*) FROM users"))

        store = LocalObjectStore(settings.object_dir)
        blob = tmp_path / "blob"
        blob.write_bytes(b"evidence bytes")
        store.put_file("recordings/dev-001/0/ab", blob, hashlib.sha256(b"evidence bytes").hexdigest())

        staging = Staging(settings.staging_dir)
        signed, _ = segments.make(b"x" * 100)
        staging.store_manifest(signed)
        staging.stage(FileChunk(device_id="dev-001", file_id=signed.file_id, offset=0, data=b"x" * 40))

        modes = _modes(data_dir)
    get_engine(app).dispose()

    for name in ("zfjl.db", "zfjl.db-wal", "zfjl.db-shm", "jwt-secret"):
        assert modes.get(name) == 0o600, (name, oct(modes.get(name, 0)))
    assert modes["."] == 0o700
    assert modes["objects/recordings/dev-001/0/ab"] == 0o400
    for name, mode in modes.items():
        path = data_dir / name
        if path.is_dir():
            assert mode == 0o700, (name, oct(mode))
        elif name.startswith("objects/"):
            assert mode == 0o400, (name, oct(mode))
        else:
            assert mode == 0o600, (name, oct(mode))
    assert any(name.startswith("staging/dev-001/") for name in modes)
    # The parent folders the server had to create are private too.
    assert stat.S_IMODE((tmp_path / "srv").stat().st_mode) == 0o700


def test_an_existing_world_readable_data_dir_and_database_are_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    db = data_dir / "zfjl.db"
    db.touch()
    os.chmod(db, 0o644)
    app = create_app({"data_dir": str(data_dir), "jwt_secret": "s" * 32, "TESTING": True})
    run_migrations(app.extensions["zfjl.settings"].database_url)
    get_engine(app).dispose()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
