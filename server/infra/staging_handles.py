"""A transfer's staging files kept open by one process between the messages that touch them.

Every chunk used to open, ``fstat``, read and close the lock, index and data files of its transfer, twice
(once for the view the receiver decides on, once to stage): ≈ 30 system calls per chunk on the MQTT
network thread, each a chance for another thread to take the GIL (docs/performance.md, "One lock per
chunk, files kept open"). A :class:`TransferHandle` keeps the three descriptors open while the transfer
is active, and the parsed index and verified manifest with them, so a chunk costs one ``flock``, three
``stat`` calls that prove the files are still the ones held, the two writes, and the unlock.

What stays true with the descriptors cached:

* **Whose lock.** ``flock`` belongs to an open file description, so threads of one process sharing the
  lock descriptor would all "hold" it; each handle therefore also has a mutex, taken before the
  ``flock``, which also makes the lock re-entrant for the thread that holds it (the ingest service holds
  a chunk's transfer across its view and its staging: one lock per chunk instead of two).
* **Which files.** Under the lock, ``stat`` of the lock path must still name the held lock file (a
  discard renames the transfer's folder away), and ``stat`` of the index path the held index (another
  process's ``_rewrite_index`` replaces it, a janitor's discard unlinks it); the data file is checked by
  path before each write. A file replaced, moved or removed is dropped and opened again. An open
  descriptor also keeps its inode number from being reused, so an inode match is proof.
* **Bounded.** At most :data:`MAX_OPEN` handles per process (three descriptors each), the least
  recently used closed first; a handle unused for :data:`IDLE_CLOSE_S` is closed, so the bytes of a
  transfer another process committed and removed are not kept alive on disk for long. A forked child
  forgets the parent's handles without unlocking them (``LOCK_UN`` on a shared descriptor would release
  the parent's lock).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from server.infra.staging_files import DATA_NAME, INDEX_NAME, LOCK_NAME, MANIFEST_NAME

if TYPE_CHECKING:
    from protocol.manifest import SignedManifest
    from server.infra.staging_files import ParsedIndex

__all__ = ["IDLE_CLOSE_S", "MAX_OPEN", "HandleTable", "TransferHandle"]

# Handles (three descriptors each) one process keeps open; the default soft limit of 1,024 descriptors
# per process leaves room for sockets, the database pool and the object store's files.
MAX_OPEN = 128
# A handle nobody used for this long is closed (checked at most once a second, when a handle is taken).
IDLE_CLOSE_S = 10.0


class TransferHandle:
    """One transfer's open staging files in this process, and what was read from them."""

    __slots__ = (
        "checked",
        "closed",
        "data_fd",
        "data_ino",
        "data_name",
        "doomed",
        "index_fd",
        "index_id",
        "index_name",
        "lock_fd",
        "lock_id",
        "lock_name",
        "locked",
        "manifest",
        "manifest_name",
        "mutex",
        "owner",
        "parsed",
        "path",
        "used",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        # The files' paths as strings, made once: pathlib's joins cost more than the stat calls on them.
        folder = os.fspath(path)
        self.lock_name = os.path.join(folder, LOCK_NAME)
        self.index_name = os.path.join(folder, INDEX_NAME)
        self.data_name = os.path.join(folder, DATA_NAME)
        self.manifest_name = os.path.join(folder, MANIFEST_NAME)
        self.mutex = threading.Lock()
        self.owner: int | None = None  # thread id holding the mutex (its nested calls take no lock)
        self.locked = False  # the flock is held (the folder may not exist: a hold can be of nothing)
        self.checked = False  # the index identity was checked under this hold
        self.closed = False  # evicted or forgotten: take a new handle
        self.doomed = False  # discarded under this hold: close when the outermost hold ends
        self.lock_fd: int | None = None
        self.lock_id: tuple[int, int] | None = None
        self.index_fd: int | None = None
        self.index_id: tuple[int, int] | None = None
        self.parsed: ParsedIndex | None = None
        self.data_fd: int | None = None
        self.data_ino: int | None = None
        self.manifest: SignedManifest | None = None
        self.used = time.monotonic()

    def drop_index(self) -> None:
        """Close the index file (replaced or removed): it is opened again, and parsed anew, when needed."""
        if self.index_fd is not None:
            os.close(self.index_fd)
        self.index_fd = None
        self.index_id = None
        self.parsed = None
        self.checked = False

    def drop_files(self) -> None:
        """Close the index and data files (replaced or removed): they are opened again when needed."""
        self.drop_index()
        if self.data_fd is not None:
            os.close(self.data_fd)
        self.data_fd = None
        self.data_ino = None

    def drop_all(self) -> None:
        """Close every descriptor (the folder was moved away, or the handle is evicted)."""
        self.drop_files()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
        self.lock_fd = None
        self.lock_id = None
        self.manifest = None

    def close(self) -> None:
        """Close every descriptor and retire the handle. Never unlocks: in a forked child the inherited
        descriptors share the parent's lock, and ``LOCK_UN`` would release it."""
        self.drop_all()
        self.closed = True


class HandleTable:
    """The open handles of one :class:`~server.infra.staging.Staging`, least recently used first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: OrderedDict[Path, TransferHandle] = OrderedDict()
        self._swept = time.monotonic()
        _TABLES.add(self)

    def get(self, path: Path) -> TransferHandle:
        """The handle of ``path`` (made if needed); closes idle and surplus handles on the way."""
        now = time.monotonic()
        with self._lock:
            handle = self._handles.get(path)
            if handle is None or handle.closed:
                handle = self._handles[path] = TransferHandle(path)
            else:
                self._handles.move_to_end(path)
            handle.used = now
            if len(self._handles) > MAX_OPEN or now - self._swept > 1.0:
                self._sweep(now)
        return handle

    def peek(self, path: Path) -> TransferHandle | None:
        with self._lock:
            return self._handles.get(path)

    def remove(self, handle: TransferHandle) -> None:
        """Close a handle its owner is done with (caller holds its mutex)."""
        handle.close()
        with self._lock:
            if self._handles.get(handle.path) is handle:
                del self._handles[handle.path]

    def open_count(self) -> int:
        with self._lock:
            return len(self._handles)

    def _sweep(self, now: float) -> None:
        self._swept = now
        surplus = len(self._handles) - MAX_OPEN
        for path, handle in list(self._handles.items()):
            idle = now - handle.used > IDLE_CLOSE_S
            if not (idle or surplus > 0):
                break  # least recently used first: the rest are newer
            if not handle.mutex.acquire(blocking=False):
                continue  # in use now: not idle, whatever its time says
            try:
                handle.close()
                del self._handles[path]
                surplus -= 1
            finally:
                handle.mutex.release()

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
        for handle in self._handles.values():
            handle.close()
        self._handles = OrderedDict()


_TABLES: weakref.WeakSet[HandleTable] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for table in list(_TABLES):
        table._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
