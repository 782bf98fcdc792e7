"""A verified staged file is linked into the local store, not copied: same bytes, read-only, independent."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from server.infra.storage import LocalObjectStore


def test_verified_file_is_adopted_read_only_and_survives_the_staging_copy_being_removed(
    tmp_path: Path,
) -> None:
    data = os.urandom(300_000)
    staged = tmp_path / "staging" / "data.part"
    staged.parent.mkdir()
    staged.write_bytes(data)
    store = LocalObjectStore(tmp_path / "objects")
    digest = hashlib.sha256(data).hexdigest()
    stored = store.put_file("recordings/dev/0000000001-x.mp4", staged, digest, verified=True)
    assert stored.created and stored.size == len(data)
    target = tmp_path / "objects" / "recordings/dev/0000000001-x.mp4"
    assert os.stat(target).st_ino == os.stat(staged).st_ino  # linked, not copied
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o400  # owner-only, read-only
    staged.unlink()  # staging is discarded after the commit
    assert target.read_bytes() == data
    # Storing the same key again is a no-op; nothing was left behind in the objects folder.
    assert not store.put_file("recordings/dev/0000000001-x.mp4", target, digest).created
    assert sorted(p.name for p in target.parent.iterdir()) == ["0000000001-x.mp4"]
