"""File modes of what the server writes: folders 0700, files 0600, stored objects 0400, whatever the umask.

Evidence, the database and the signing secrets are for the server's own account only; a umask can only
drop permission bits, so files are created with an explicit mode instead of relying on it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "READ_ONLY_FILE",
    "create_private_file",
    "private_dir",
    "tighten",
]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Objects are written once and never replaced (JL-6); read-only for the owner as well.
READ_ONLY_FILE = 0o400


def private_dir(path: Path) -> Path:
    """Make ``path`` (and any missing parents) as 0700 folders; folders that already exist are left alone."""
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by another process or thread
        os.chmod(folder, PRIVATE_DIR)
    return path


def tighten(path: Path, mode: int) -> None:
    """Remove group and other bits from an existing file or folder the server owns (older installations)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)


def create_private_file(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    """Open (creating) ``path`` as a 0600 file and return its descriptor."""
    return os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)
