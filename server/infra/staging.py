"""Durable staging of uploaded chunks, shared by every ingest worker on a host.

One directory per transfer, ``{root}/{device_id}/{file_id}/``:

* ``manifest.json`` — the init envelope bytes, replaced atomically (tmp + rename);
* ``data.part`` — chunk bytes written with ``pwrite`` at their offset;
* ``index`` — a ``# <token>`` header naming this generation of the index, then append-only lines
  ``offset length sha256``, each one ``write`` on an ``O_APPEND`` fd;
* ``lock`` — ``flock``-ed around every change, so workers (threads or processes) never race on the
  compare-then-write of one transfer; it is never replaced, unlike ``index`` (see ``_rewrite_index``).

Workers are stateless: a transfer's chunks may reach different workers through ``$share``, and
everything they need to know is on disk here. Chunk acks are flow control, not durability (only the
``complete`` ack lets a device free its copy), so chunks are not fsynced; :meth:`Staging.sync` fsyncs
before the finalize hash. After an unclean stop the index may name bytes that never reached the disk:
views trust the index, finalize re-hashes the whole file and a mismatch makes the device resend.

Each process also keeps, in memory, a running SHA-256 of every transfer's contiguous prefix as chunks are
staged (:class:`_RunningHash`), so finalize does not hash the file a second time (docs/performance.md,
"Each byte hashed once"). It is bound to one generation of the index and one data file; a restart, a
discard, a rewritten index or a prefix this process never saw makes finalize hash the staged file instead.
The hashing itself runs in one thread per process, off the MQTT network thread that stages the chunks;
finalize waits for it (docs/performance.md, "The running hash off the network thread").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import ProtocolError
from protocol.manifest import SignedManifest
from protocol.messages import MAX_JSON_PAYLOAD, FileChunk
from protocol.ranges import RangeSet
from protocol.topics import valid_device_id, valid_file_id
from protocol.transfer import StageOutcome
from server.errors import ErrorKind, ZfjlError
from server.infra.fsmode import create_private_file, private_dir
from server.infra.staging_files import (
    DATA_NAME,
    INDEX_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    IndexEntry,
    ParsedIndex,
    new_header,
    parse_index,
    pwrite_all,
    read_at,
)
from server.infra.staging_handles import HandleTable, TransferHandle
from server.infra.staging_seal import _crc32_fd, _file_times_show_every_write, _RunningHash, _seal, _seal_of

__all__ = [
    "DATA_NAME",
    "INDEX_NAME",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "TRANSFER_CHARGE",
    "Staged",
    "Staging",
    "StagingBusy",
    "StagingError",
    "StagingSweep",
]

_LOG = logging.getLogger(__name__)

# A discarded transfer is renamed ``.trash-<pid>-<random>`` under its lock, then deleted.
TRASH_PREFIX = ".trash-"
# Each staged transfer counts at least this much against its device's quota (an init's largest size).
TRANSFER_CHARGE = MAX_JSON_PAYLOAD
# How old a scan of a device's staging a chunk's quota check may use (Staging.device_usage).
_USAGE_TTL_S = 1.0


# How long a worker waits for a transfer's lock before it gives the message up (StagingBusy). Locks are
# held for a write or an fsync; only a holder that is paused (SIGSTOP, a frozen machine) holds one longer.
_LOCK_WAIT_S = 5.0


class StagingError(ZfjlError):
    """A staging operation was asked for something impossible (bad ids, path escaping the root)."""

    kind = ErrorKind.INVALID
    code = "staging_error"


class StagingBusy(StagingError):
    """A transfer's lock stayed held past the wait: its holder is paused. The message is not answered
    (the device asks the status again and resends), so one paused process cannot hold up another's
    network thread, and every other device's messages, for longer than the wait."""

    kind = ErrorKind.UNAVAILABLE
    code = "staging_busy"


@dataclass(frozen=True)
class StagingSweep:
    """What :meth:`Staging.sweep_after_death` removed, and what it left to a live process."""

    stored_leftovers: int  # staging folders of segments already stored
    trash_folders: int  # half-deleted folders of the dead process (``.trash-PID-*``)
    busy: int  # folders of stored segments a live process held the lock of: left to it


@dataclass(frozen=True)
class Staged:
    """A finalized transfer's fsynced file, and its SHA-256 when this process hashed it as it arrived."""

    path: Path
    sha256: str | None  # None: nobody hashed these bytes yet, the caller must hash the file


class Staging:
    """Chunk staging under one root directory (safe for concurrent workers on the same host)."""

    def __init__(self, root: Path, *, lock_wait_s: float = _LOCK_WAIT_S) -> None:
        self.root = Path(root).resolve()
        self.lock_wait_s = lock_wait_s
        private_dir(self.root)
        # Each active transfer's files stay open, with its parsed index and manifest, between messages.
        self._handles = HandleTable()
        self._paths: dict[tuple[str, str], Path] = {}
        self._running: dict[Path, _RunningHash] = {}
        # device id -> (monotonic time of the scan, {file id: bytes}): see device_usage(fresh=False).
        self._usage: dict[str, tuple[float, dict[str, int]]] = {}
        self._times_show_writes = _file_times_show_every_write(self.root)
        self._parsed_lock = threading.Lock()
        # How often finalize used the running hash, and how often it had to hash the staged file.
        self.finalize_hashed_on_arrival = 0
        self.finalize_rehashed = 0
        # Chunks whose own SHA-256 was taken on arrival (out of order, resent, no running hash).
        self.chunks_checked_on_arrival = 0

    # -- paths -------------------------------------------------------------------------------

    def path_of(self, device_id: str, file_id: str) -> Path:
        """The staging directory of one transfer; ids that could leave the root are refused."""
        key = (device_id, file_id)
        known = self._paths.get(key) if isinstance(device_id, str) and isinstance(file_id, str) else None
        if known is not None:
            return known  # only ids that passed the checks below are kept
        if not (isinstance(device_id, str) and valid_device_id(device_id)):
            raise StagingError(f"invalid device id {device_id!r}")
        if not (isinstance(file_id, str) and valid_file_id(file_id)):
            raise StagingError(f"invalid file id {file_id!r}")
        # The id grammar has no '/' and cannot be '.' or '..', so the path stays under the root without
        # resolving it (resolve() costs several lstat calls on every chunk).
        path = self.root / device_id / file_id
        # A chunk asks for its transfer's path three times: checking the ids and joining the path (and
        # hashing a new Path object for every lookup keyed by it) cost more than a stat. Bounded: ids
        # come from the network.
        if len(self._paths) >= 4096:
            self._paths.clear()
        self._paths[key] = path
        return path

    def exists(self, device_id: str, file_id: str) -> bool:
        """Whether anything is staged for the transfer."""
        return self.path_of(device_id, file_id).is_dir()

    def hold(self, device_id: str, file_id: str) -> contextlib.AbstractContextManager[Path | None]:
        """Hold a transfer's lock across several calls (the ingest service's view of a chunk and its
        staging): calls for the same transfer inside, from this thread, take no lock of their own.
        Yields None, as the calls inside will see, when the transfer has no staging."""
        return self._locked(device_id, file_id, create=False)

    @contextlib.contextmanager
    def _locked(
        self, device_id: str, file_id: str, *, create: bool, shared: bool = False, wait: bool = True
    ) -> Iterator[Path | None]:
        """Hold the transfer's lock; yields None when the transfer has no staging and ``create`` is off,
        or, with ``wait`` off, when someone else holds the lock now.

        Re-entrant for the thread that holds it (see :meth:`hold`). The lock is the transfer's ``flock``
        and, because the descriptor is shared by this process's threads, its handle's mutex
        (server/infra/staging_handles.py)."""
        path = self.path_of(device_id, file_id)
        me = threading.get_ident()
        while True:
            handle = self._handles.get(path)
            if handle.owner == me:
                yield from self._nested(handle, path, create=create, shared=shared, wait=wait)
                return
            if not self._take_mutex(handle, wait):
                yield None
                return
            if handle.closed:  # evicted between the lookup and the mutex: take a fresh one
                handle.mutex.release()
                continue
            break
        handle.owner, handle.checked = me, False
        try:
            yield self._flock_transfer(handle, path, create=create, shared=shared, wait=wait)
        finally:
            try:
                if handle.locked and handle.lock_fd is not None:
                    fcntl.flock(handle.lock_fd, fcntl.LOCK_UN)
            finally:
                handle.locked = False
                handle.owner = None
                if handle.doomed:
                    self._handles.remove(handle)
                handle.mutex.release()

    def _nested(
        self, handle: TransferHandle, path: Path, *, create: bool, shared: bool, wait: bool
    ) -> Iterator[Path | None]:
        """A lock asked for inside this thread's own hold of the same transfer."""
        if handle.doomed:
            yield None  # discarded inside this hold
            return
        if not handle.locked and (create or not shared):
            # The outer hold found no staging; a writer inside may create it now.
            result = self._flock_transfer(handle, path, create=create, shared=shared, wait=wait)
        else:
            result = path if handle.locked else None
        yield result

    def _take_mutex(self, handle: TransferHandle, wait: bool) -> bool:
        if handle.mutex.acquire(blocking=False):
            return True
        if not wait:
            return False
        if handle.mutex.acquire(timeout=self.lock_wait_s):
            return True
        raise self._busy()

    def _busy(self) -> StagingBusy:
        return StagingBusy(
            f"暂存锁被占用超过 {self.lock_wait_s:g} 秒",
            f"a staging lock stayed held for {self.lock_wait_s:g} s (is its holder paused?)",
        )

    def _flock_transfer(
        self, handle: TransferHandle, path: Path, *, create: bool, shared: bool, wait: bool
    ) -> Path | None:
        """Take the ``flock`` of the transfer's lock file (caller holds the handle's mutex); the path, or
        None when there is no staging (``create`` off) or, with ``wait`` off, another process holds it."""
        lock_path = handle.lock_name
        while True:
            if handle.lock_fd is None:
                if create:
                    private_dir(path)
                try:
                    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except FileNotFoundError:
                    if not create:
                        return None
                    continue  # discarded between mkdir and open: make it again
                held = os.fstat(fd)
                handle.lock_fd, handle.lock_id = fd, (held.st_ino, held.st_dev)
            if not self._flock(handle.lock_fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, wait):
                return None  # only reachable with wait off: a live worker is changing this transfer
            handle.locked = True
            # A discard moves the directory away while holding the lock; whoever waited on it must not
            # write into the moved directory, so check the lock we hold is still the one in place.
            try:
                current = os.stat(lock_path)
                same = (current.st_ino, current.st_dev) == handle.lock_id
            except FileNotFoundError:
                same = False
            if same:
                return path
            fcntl.flock(handle.lock_fd, fcntl.LOCK_UN)
            handle.locked = False
            handle.drop_all()
            if not create:
                return None

    def _flock(self, fd: int, mode: int, wait: bool) -> bool:
        """Take the lock; False at once when ``wait`` is off and it is held, StagingBusy when it stays
        held for ``lock_wait_s`` (polled: ``flock`` itself cannot time out)."""
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not wait:
                return False
        deadline = time.monotonic() + self.lock_wait_s
        pause = 0.0005
        while True:
            time.sleep(pause)
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise self._busy() from None
                pause = min(pause * 2, 0.02)

    # -- reading -----------------------------------------------------------------------------

    def _held(self, path: Path) -> TransferHandle:
        """The handle of a transfer whose lock this thread holds."""
        handle = self._handles.peek(path)
        assert handle is not None and handle.owner == threading.get_ident(), "caller must hold the lock"
        return handle

    def _index(self, path: Path) -> ParsedIndex:
        """The transfer's index (caller holds the lock), parsed incrementally from the open index file.

        One ``stat`` of the index path tells whether the open file is still the index (another process's
        :meth:`_rewrite_index` replaces it, a discard unlinks it) and how much was appended since.
        """
        handle = self._held(path)
        if handle.checked and handle.parsed is not None:
            return handle.parsed  # checked under this hold, and only this thread writes it meanwhile
        try:
            info = os.stat(handle.index_name)
        except FileNotFoundError:
            handle.drop_index()
            return ParsedIndex(b"", 0, (), RangeSet())
        if handle.index_id != (info.st_ino, info.st_dev):
            handle.drop_index()  # replaced (a new generation) or first seen: open the one in place
            try:
                _, info = self._open_index(handle, create=False)
            except FileNotFoundError:
                return ParsedIndex(b"", 0, (), RangeSet())
        assert handle.index_fd is not None
        parsed = handle.parsed
        size = info.st_size
        if parsed is None or parsed.consumed > size:
            head = read_at(handle.index_fd, 0, min(size, 64))
            header = head[: head.find(b"\n") + 1] if head.startswith(b"#") else b""
            parsed = ParsedIndex(header, 0, (), RangeSet())
        if size > parsed.consumed:
            tail = read_at(handle.index_fd, parsed.consumed, size - parsed.consumed)
            complete = tail.rfind(b"\n") + 1
            new = parse_index(tail[:complete])
            parsed = ParsedIndex(
                parsed.header,
                parsed.consumed + complete,
                parsed.entries + tuple(new),
                RangeSet.of((*parsed.held.spans, *((e.offset, e.end) for e in new))),
            )
        handle.parsed, handle.checked = parsed, True
        return parsed

    @staticmethod
    def _open_index(handle: TransferHandle, *, create: bool) -> tuple[int, os.stat_result]:
        """Open the index in place for appending, held by the handle; its descriptor and ``fstat``."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        fd = os.open(handle.index_name, flags, 0o600)
        opened = os.fstat(fd)
        handle.index_fd, handle.index_id = fd, (opened.st_ino, opened.st_dev)
        return fd, opened

    def _entries(self, path: Path) -> list[IndexEntry]:
        return list(self._index(path).entries)

    def _manifest(self, path: Path) -> SignedManifest | None:
        """The staged manifest (caller holds the lock), kept with the handle once read: a transfer's
        manifest never changes (its file id is its hash) and goes only with its folder."""
        handle = self._held(path)
        if handle.manifest is not None:
            return handle.manifest
        try:
            with open(handle.manifest_name, "rb") as fh:
                envelope = fh.read()
        except FileNotFoundError:
            return None
        try:
            handle.manifest = SignedManifest.from_envelope(envelope)
        except ProtocolError:
            # Written only after the signature verified, so this means the disk lost it: ask for init again.
            _LOG.warning("staging: unreadable manifest in %s; waiting for a new init", path)
            return None
        return handle.manifest

    def _data_fd(self, handle: TransferHandle) -> tuple[int, tuple[int, int, int, int]]:
        """The open data file and its seal (see ``_seal``), checked by path before a write: a file removed
        or replaced is opened again (caller holds the lock)."""
        try:
            info = os.stat(handle.data_name)
            if handle.data_fd is not None and info.st_ino == handle.data_ino:
                return handle.data_fd, _seal_of(info)
        except FileNotFoundError:
            pass
        if handle.data_fd is not None:
            os.close(handle.data_fd)
            handle.data_fd = None
        fd = os.open(handle.data_name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        seal = _seal(fd)
        handle.data_fd, handle.data_ino = fd, seal[0]
        return fd, seal

    def view_parts(self, device_id: str, file_id: str) -> tuple[SignedManifest | None, RangeSet]:
        """The staged manifest (if any) and the byte ranges the index names."""
        with self._locked(device_id, file_id, create=False, shared=True) as path:
            if path is None:
                return None, RangeSet()
            return self._manifest(path), self._index(path).held

    def entries(self, device_id: str, file_id: str) -> list[IndexEntry]:
        """The index entries of a transfer, in the order they were written."""
        with self._locked(device_id, file_id, create=False, shared=True) as path:
            return [] if path is None else self._entries(path)

    # -- writing -----------------------------------------------------------------------------

    def store_manifest(self, signed: SignedManifest) -> None:
        """Keep the verified init envelope with the transfer (atomic replace, not fsynced).

        Not fsynced because nothing durable hangs on it: the init's ``ready`` is flow control, like a chunk
        ack, and the commit reads the manifest it already holds. A power cut that loses it (or leaves it
        empty) makes the next chunk answer ``no_manifest`` and the device sends its init again (see
        ``SegmentSender._unknown``). Two fsyncs here held the MQTT network thread ≈ 11 ms per segment.
        """
        device_id, file_id = signed.manifest.device_id, signed.file_id
        with self._locked(device_id, file_id, create=True) as path:
            assert path is not None
            target = path / MANIFEST_NAME
            envelope = signed.to_envelope()
            with contextlib.suppress(FileNotFoundError):
                if target.read_bytes() == envelope:
                    return
            tmp = path / f".{MANIFEST_NAME}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            with os.fdopen(create_private_file(tmp), "wb") as fh:
                fh.write(envelope)
            os.replace(tmp, target)
            self._held(path).manifest = signed
        self._note_usage(device_id, file_id, len(envelope))

    def stage(self, chunk: FileChunk, *, require_manifest: bool = True) -> StageOutcome:
        """Write a chunk at its offset unless it contradicts staged bytes; report what happened.

        Only a transfer whose verified manifest is staged takes bytes (``NO_MANIFEST`` otherwise). The
        check is made under the transfer's lock, so a discard racing the chunk cannot let bytes in.
        """
        with self._locked(chunk.device_id, chunk.file_id, create=not require_manifest) as path:
            if path is None or (require_manifest and self._manifest(path) is None):
                return StageOutcome.NO_MANIFEST
            handle = self._held(path)
            index = self._index(path)
            data_fd, seal = self._data_fd(handle)
            # _compare may drop entries lost by an unclean stop: it gives back the index it left.
            outcome, index = self._compare(path, data_fd, index, chunk)
            if outcome is not None:
                return outcome
            untouched = self._sealed_since_last_write(path, seal)
            data_ino = seal[0]
            if not (chunk.hash_checked or self._extends_prefix(path, data_ino, index, chunk, untouched)):
                # Out of order, resent or not covered by a running hash: check the claim now.
                if not chunk.hash_matches():
                    return StageOutcome.BAD_HASH
                with self._parsed_lock:
                    self.chunks_checked_on_arrival += 1
            pwrite_all(data_fd, chunk.data, chunk.offset)
            entry = IndexEntry(chunk.offset, len(chunk.data), chunk.sha256)
            line = self._append_index(handle, index, entry)
            after = self._index(path)  # kept in step by _append_index: no read unless the index was torn
            generation = (after.header, data_ino)
            self._advance(path, data_fd, chunk, generation, after.held, untouched)
        self._note_usage(chunk.device_id, chunk.file_id, len(chunk.data) + len(line))
        return StageOutcome.WRITTEN

    def _append_index(self, handle: TransferHandle, index: ParsedIndex, entry: IndexEntry) -> bytes:
        """Append one entry to the index (caller holds the lock) and keep the parsed index in step,
        without reading it back; a new index starts with a fresh header. Gives the bytes written."""
        line = entry.line()
        index_fd = handle.index_fd
        if index_fd is None:
            # No index yet (or it was removed): we hold the lock, so nobody else creates it meanwhile.
            index_fd, _ = self._open_index(handle, create=True)
        torn = False
        if index.consumed == 0:
            # A new index starts with a fresh header; one holding only a torn line (a crash) gets none,
            # as before: the line is read back from the file next time rather than trusted from memory.
            if os.fstat(index_fd).st_size == 0:
                header = new_header()
                line = header + line
                index = ParsedIndex(header, 0, (), RangeSet())
            else:
                torn = True
        # One write() per line: O_APPEND makes it land whole at the end, never interleaved.
        os.write(index_fd, line)
        if torn:
            handle.parsed, handle.checked = None, False
            return line
        handle.parsed = ParsedIndex(
            index.header,
            index.consumed + len(line),
            (*index.entries, entry),
            index.held.add(entry.offset, entry.end),
        )
        handle.checked = True
        return line

    def _generation(self, path: Path, data_fd: int) -> tuple[tuple[bytes, int], RangeSet]:
        """(index header, data inode) naming this generation of the transfer, and the ranges it holds."""
        index = self._index(path)
        return (index.header, os.fstat(data_fd).st_ino), index.held

    def _extends_prefix(
        self, path: Path, data_ino: int, index: ParsedIndex, chunk: FileChunk, untouched: bool
    ) -> bool:
        """Whether :meth:`_advance` will feed every byte of this chunk to the running hash as it is written.

        Then its own SHA-256 need not be taken on arrival: the whole-file hash at finalize covers it, and
        a mismatch there finds the chunks that do not match their claims (:meth:`drop_bad_claims`). True
        for the chunk at byte 0 of a transfer and for the chunk that starts where the prefix ends, when
        no staged bytes overlap it (caller holds the lock).
        """
        if any(True for _ in index.held.overlaps(chunk.offset, chunk.end)):
            return False
        if chunk.offset == 0:
            return True  # _advance starts (or restarts) the running hash at byte 0
        with self._parsed_lock:
            running = self._running.get(path)
        if running is None or not untouched:
            return False
        return running.generation == (index.header, data_ino) and running.position == chunk.offset

    def drop_bad_claims(self, device_id: str, file_id: str) -> list[IndexEntry]:
        """Drop index entries whose staged bytes do not hash to their claimed SHA-256; return them.

        Run when finalize found the whole file wrong: chunks staged in order were not hashed one by one on
        arrival, so this one pass finds which of them (if any) came damaged, and the device resends only
        those. Bytes that match their claims stay; an empty answer means the claims were all kept and the
        file as a whole is wrong (the device's file changed, or a staged byte no chunk claims).
        """
        with self._locked(device_id, file_id, create=False) as path:
            if path is None:
                return []
            try:
                data_fd = os.open(path / DATA_NAME, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return []
            try:
                entries = self._entries(path)
                bad = [
                    e
                    for e in entries
                    if hashlib.sha256(read_at(data_fd, e.offset, e.length)).hexdigest() != e.sha256
                ]
            finally:
                os.close(data_fd)
            if bad:
                # A new index generation: the running hash (which took the bad bytes) no longer applies.
                self._rewrite_index(path, [e for e in entries if e not in bad])
                with self._parsed_lock:
                    self._running.pop(path, None)
            return bad

    def _sealed_since_last_write(self, path: Path, seal: tuple[int, int, int, int]) -> bool:
        """False when the data file changed since this process's last write (file-times seal only).

        Checked before each write, so a change by anyone else while the transfer is still arriving
        (another worker process, anything) ends the running hash, not only a change after the last chunk.
        """
        with self._parsed_lock:
            running = self._running.get(path)
        return running is None or running.with_crc or running.seal == seal

    def _advance(
        self,
        path: Path,
        data_fd: int,
        chunk: FileChunk,
        generation: tuple[bytes, int],
        held: RangeSet,
        untouched: bool,
    ) -> None:
        """Feed a just-staged chunk (and staged bytes it joins up with) to the transfer's running hash."""
        with self._parsed_lock:
            running = self._running.get(path)
        if running is None or running.generation != generation or not untouched:
            # Only a prefix that starts at byte 0 in this generation can be hashed as it arrives; a
            # transfer this process first meets mid-way (a restart, another worker) is hashed at finalize.
            running = None
            if chunk.offset == 0 and generation[0]:
                running = _RunningHash(generation, with_crc=not self._times_show_writes)
        if running is not None:
            if chunk.offset <= running.position < chunk.end:
                running.feed(memoryview(chunk.data)[running.position - chunk.offset :])
            running.catch_up(data_fd, held)
            running.seal = _seal(data_fd)  # after this process's own write: anyone else's changes it
        with self._parsed_lock:
            if running is None:
                self._running.pop(path, None)
                return
            if len(self._running) > 4096 and path not in self._running:
                self._running.clear()  # bounded memory: the transfers dropped are hashed at finalize
            self._running[path] = running

    def _compare(
        self, path: Path, data_fd: int, index: ParsedIndex, chunk: FileChunk
    ) -> tuple[StageOutcome | None, ParsedIndex]:
        """SAME / DIFFERENT / BAD_HASH when the chunk overlaps held bytes, None when it must be written.

        Also gives the index as it stands afterwards (entries lost by an unclean stop may be dropped).
        """
        held = index.held
        overlaps = list(held.overlaps(chunk.offset, chunk.end))
        if not overlaps:
            return None, index
        if self._overlaps_equal(data_fd, chunk, overlaps):
            return (StageOutcome.SAME if held.covers(chunk.offset, chunk.end) else None), index
        if not chunk.hash_checked and not chunk.hash_matches():
            # Damaged on the way (its claim was not checked yet): refuse it, never call it a conflict.
            return StageOutcome.BAD_HASH, index
        # Either the device sent other bytes (a conflict), or an unclean stop lost staged bytes the
        # index still names. Tell them apart by the entries' own hashes; drop the lost ones and retry.
        damaged = [
            e
            for e in index.entries
            if e.offset < chunk.end
            and chunk.offset < e.end
            and hashlib.sha256(read_at(data_fd, e.offset, e.length)).hexdigest() != e.sha256
        ]
        if not damaged:
            return StageOutcome.DIFFERENT, index
        _LOG.warning(
            "staging: %d index entries of %s/%s name bytes that are not on disk; dropping them",
            len(damaged),
            chunk.device_id,
            chunk.file_id,
        )
        self._rewrite_index(path, [e for e in index.entries if e not in damaged])
        return self._compare(path, data_fd, self._index(path), chunk)

    @staticmethod
    def _overlaps_equal(data_fd: int, chunk: FileChunk, overlaps: list[tuple[int, int]]) -> bool:
        for start, end in overlaps:
            staged = read_at(data_fd, start, end - start)
            if staged != chunk.data[start - chunk.offset : end - chunk.offset]:
                return False
        return True

    def _rewrite_index(self, path: Path, entries: list[IndexEntry]) -> None:
        """Atomically replace the index (caller holds the lock, so no append can be lost)."""
        tmp = path / f".{INDEX_NAME}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        with os.fdopen(create_private_file(tmp), "wb") as fh:
            fh.write(new_header() + b"".join(e.line() for e in entries))
        os.replace(tmp, path / INDEX_NAME)
        self._held(path).drop_index()

    def sync(self, device_id: str, file_id: str, size: int) -> Path:
        """Make the staged file exactly ``size`` bytes on disk (fsynced) and return its path for hashing.

        Bytes past ``size`` are not part of the segment (a stray chunk sent before init), so they are cut.
        Raises FileNotFoundError when nothing is staged.
        """
        return self._sync(device_id, file_id, size, digest=False).path

    def finish(self, device_id: str, file_id: str, size: int) -> Staged:
        """Like :meth:`sync`, and give the file's SHA-256 when it was hashed as the chunks arrived.

        The running hash is used only when it covers exactly ``size`` bytes of the current generation and
        its seal holds (the file's times unchanged since this process's last write, or, re-read, the
        CRC-32 of the bytes that were hashed); otherwise ``sha256`` is None and the caller hashes the
        file, as after a restart.
        """
        return self._sync(device_id, file_id, size, digest=True)

    def _sync(self, device_id: str, file_id: str, size: int, *, digest: bool) -> Staged:
        with self._locked(device_id, file_id, create=False) as path:
            if path is None:
                raise FileNotFoundError(f"no staging for {device_id}/{file_id}")
            data = path / DATA_NAME
            fd = os.open(data, os.O_RDWR | os.O_CLOEXEC)
            try:
                # Checked before the truncate below, which would itself change the seal.
                sha256 = self._running_digest(path, fd, size) if digest else None
                if os.fstat(fd).st_size > size:
                    os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        if digest:
            with self._parsed_lock:
                if sha256 is None:
                    self.finalize_rehashed += 1
                else:
                    self.finalize_hashed_on_arrival += 1
        return Staged(data, sha256)

    def _running_digest(self, path: Path, data_fd: int, size: int) -> str | None:
        """The running SHA-256 of the whole staged file, if it can be trusted (caller holds the lock)."""
        with self._parsed_lock:
            running = self._running.get(path)
        if running is None:
            return None
        generation, held = self._generation(path, data_fd)
        if running.generation != generation:
            return None
        if not running.with_crc:
            # Fine-grained file times: any write since this process's last one (another worker's chunk,
            # anything else) shows; then the file is hashed, as after a restart.
            if _seal(data_fd) != running.seal:
                return None
        else:
            running.catch_up(data_fd, held)  # bytes another worker staged after this process's last chunk
        if running.position != size or os.fstat(data_fd).st_size != size:
            return None
        hashed = running.settled()
        if hashed is None:
            return None
        sha256, crc = hashed
        if running.with_crc and _crc32_fd(data_fd, size) != crc:
            _LOG.warning("staging: %s changed on disk after it was staged; hashing it again", path)
            return None
        return sha256

    def discard(
        self, device_id: str, file_id: str, *, keep_manifest: bool = False, wait: bool = True
    ) -> bool:
        """Drop a transfer's staged bytes (and its manifest unless ``keep_manifest``). With ``wait`` off,
        a transfer whose lock another worker holds now is left alone. Whether anything was dropped."""
        with self._parsed_lock:
            self._running.pop(self.path_of(device_id, file_id), None)
        self._note_usage(device_id, file_id, None)
        with self._locked(device_id, file_id, create=False, wait=wait) as path:
            if path is None:
                return False
            handle = self._held(path)
            if keep_manifest:
                # Index first: an index entry must never outlive the bytes it names.
                for name in (INDEX_NAME, DATA_NAME):
                    (path / name).unlink(missing_ok=True)
                handle.drop_files()
                return True
            # Move the directory out of the way under the lock, so nobody can write into it any more.
            trash = self.root / f"{TRASH_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
            os.rename(path, trash)
            handle.doomed = True  # its files are in the trash: closed when the outermost hold ends
        shutil.rmtree(trash, ignore_errors=True)
        self._remove_empty_device_dir(path.parent)
        return True

    def sweep_after_death(self, pid: int, is_stored: Callable[[str, str], bool]) -> StagingSweep:
        """Remove what a killed ingest process ``pid`` can have left in staging (its runner calls this
        once the process is dead and replaced).

        * The staging of a segment already stored: the process died between its commit and discarding
          the staging. Nobody needs those bytes again (a status query is answered from the database),
          and while its manifest stays, chunks resent for it would be staged instead of answered.
        * Its ``.trash-PID-*`` folders: it died between moving a discarded transfer away and deleting it.

        A transfer not stored yet is kept whoever staged it: the recorder resumes it through another
        process. A transfer whose lock a live process holds is skipped (that process is finishing it and
        discards it itself), so this never touches a transfer being handled.
        """
        trash = 0
        for folder in self.root.glob(f"{TRASH_PREFIX}{int(pid)}-*"):
            shutil.rmtree(folder, ignore_errors=True)
            trash += 1
        stored = busy = 0
        for device_id, file_id in list(self.transfers()):
            if not is_stored(device_id, file_id):
                continue
            if self.discard(device_id, file_id, wait=False):
                stored += 1
            elif self.exists(device_id, file_id):
                busy += 1
        return StagingSweep(stored_leftovers=stored, trash_folders=trash, busy=busy)

    @staticmethod
    def _remove_empty_device_dir(device_dir: Path) -> None:
        try:
            device_dir.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise

    # -- housekeeping ------------------------------------------------------------------------

    def transfers(self) -> Iterator[tuple[str, str]]:
        """(device_id, file_id) of every staged transfer."""
        for device_dir in sorted(self.root.iterdir()):
            if not device_dir.is_dir() or not valid_device_id(device_dir.name):
                continue
            for transfer_dir in sorted(device_dir.iterdir()):
                if transfer_dir.is_dir() and valid_file_id(transfer_dir.name):
                    yield device_dir.name, transfer_dir.name

    def device_usage(self, device_id: str, *, exclude_file_id: str | None = None, fresh: bool = True) -> int:
        """Disk bytes a device's staged transfers take, for its quota (each at least TRANSFER_CHARGE).

        Allocated blocks, not declared sizes, so sparse writes count as what they cost. Every transfer
        is charged at least one init's largest size, so a device cannot fill the disk's inodes with
        tiny transfers either. Stats only (no locks, no index parsing).

        ``fresh=False`` (every chunk) may answer from a scan up to ``_USAGE_TTL_S`` old, to which this
        process adds the bytes it staged since: the scan of a device's transfers cost more than the rest
        of a chunk's staging. What it can miss is what *other* ingest processes staged for the device in
        that last second, so with several workers the quota may be passed by about one second of that
        device's upload; an init, which reserves a whole segment, always scans.
        """
        if not valid_device_id(device_id):
            raise StagingError(f"invalid device id {device_id!r}")
        now = time.monotonic()
        with self._parsed_lock:
            cached = self._usage.get(device_id)
        if fresh or cached is None or now - cached[0] > _USAGE_TTL_S:
            cached = (now, self._scan_usage(device_id))
            with self._parsed_lock:
                if len(self._usage) > 4096:
                    self._usage.clear()  # bounded memory: a device dropped is scanned again
                self._usage[device_id] = cached
        with self._parsed_lock:  # another thread's _note_usage may change the dict meanwhile
            usage = [used for name, used in cached[1].items() if name != exclude_file_id]
        return sum(max(TRANSFER_CHARGE, used) for used in usage)

    def _scan_usage(self, device_id: str) -> dict[str, int]:
        try:
            transfers = os.scandir(self.root / device_id)
        except FileNotFoundError:
            return {}
        usage: dict[str, int] = {}
        with transfers:
            for transfer in transfers:
                if not valid_file_id(transfer.name):
                    continue
                used = 0
                for name in (MANIFEST_NAME, DATA_NAME, INDEX_NAME):
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        used += os.stat(os.path.join(transfer.path, name)).st_blocks * 512
                usage[transfer.name] = used
        return usage

    def _note_usage(self, device_id: str, file_id: str, added: int | None) -> None:
        """Keep the cached usage in step with this process's own changes (None: the transfer is gone)."""
        with self._parsed_lock:
            cached = self._usage.get(device_id)
            if cached is None:
                return
            if added is None:
                cached[1].pop(file_id, None)
            else:
                cached[1][file_id] = cached[1].get(file_id, 0) + added

    def last_touched(self, device_id: str, file_id: str) -> float:
        """Latest mtime of the transfer's files (epoch seconds)."""
        path = self.path_of(device_id, file_id)
        times = [path.stat().st_mtime]
        for name in (MANIFEST_NAME, DATA_NAME, INDEX_NAME):
            with contextlib.suppress(FileNotFoundError):
                times.append((path / name).stat().st_mtime)
        return max(times)

    def purge_abandoned(
        self, *, idle_s: float, manifest_max_age_s: float, now: float | None = None
    ) -> list[tuple[str, str]]:
        """Janitor: clean transfers nobody touched for ``idle_s``; returns what was cleaned.

        The staged bytes go, the signed manifest stays (for ``manifest_max_age_s``): the device's status
        query is then answered ``ready`` with no ranges and it restarts the segment from byte 0. Bytes
        without a manifest (staged by an older server) go whole after ``idle_s``.
        """
        moment = time.time() if now is None else now
        for trash in self.root.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)  # an interrupted discard's leftovers
        cleaned: list[tuple[str, str]] = []
        for device_id, file_id in list(self.transfers()):
            path = self.path_of(device_id, file_id)
            try:
                touched = self.last_touched(device_id, file_id)
            except FileNotFoundError:
                continue
            has_manifest = (path / MANIFEST_NAME).is_file()
            has_bytes = (path / DATA_NAME).exists() or (path / INDEX_NAME).exists()
            # Bytes (with or without a manifest) go after idle_s; a manifest left alone after the long age.
            limit = manifest_max_age_s if has_manifest and not has_bytes else idle_s
            if touched >= moment - limit:
                continue
            keep_manifest = has_manifest and has_bytes
            _LOG.info(
                "staging: %s/%s untouched for %.1f h; %s",
                device_id,
                file_id,
                (moment - touched) / 3600,
                "bytes cleaned, signed manifest kept" if keep_manifest else "removed",
            )
            self.discard(device_id, file_id, keep_manifest=keep_manifest)
            cleaned.append((device_id, file_id))
        return cleaned

    def purge_stale(self, max_age_days: float, now: float | None = None) -> list[tuple[str, str]]:
        """Janitor: discard transfers untouched for ``max_age_days``; returns what was removed."""
        cutoff = (time.time() if now is None else now) - max_age_days * 86400
        for trash in self.root.glob(".trash-*"):
            # Left behind when a discard was interrupted between its rename and its rmtree.
            shutil.rmtree(trash, ignore_errors=True)
        removed: list[tuple[str, str]] = []
        for device_id, file_id in list(self.transfers()):
            try:
                if self.last_touched(device_id, file_id) >= cutoff:
                    continue
            except FileNotFoundError:
                continue
            _LOG.info("staging: discarding %s/%s, untouched for %s days", device_id, file_id, max_age_days)
            self.discard(device_id, file_id)
            removed.append((device_id, file_id))
        return removed
