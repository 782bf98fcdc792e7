"""The outbox: the device's source of truth for every recorded segment, its chain link and upload state.

SQLite in WAL mode with ``synchronous=FULL``: a row is on disk before ``add_segment`` returns, and a
crash at any point leaves either the whole row (file, manifest, signature, chain link) or none of it.
Segment rows are never deleted (JL-19); a trigger refuses it even if a bug tries. (The chunk digests
kept beside them for the upload are not evidence and go once a segment is stored.) Segment files are
deleted only by :meth:`Outbox.free_space`, and only for segments the server has confirmed ``complete``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import AgentError
from protocol.errors import ManifestError
from protocol.manifest import GENESIS_HASH, SegmentManifest, SignedManifest, format_time, parse_time
from protocol.session import SessionEvent, SignedSessionEvent
from zfjl_common.fsutil import chunk_count, sha256_file

__all__ = [
    "Outbox",
    "OutboxError",
    "OutboxSegment",
    "OutboxStats",
    "RecoveryReport",
    "SegmentLike",
    "read_boot_id",
]

logger = logging.getLogger(__name__)

# Tables added later are created IF NOT EXISTS, so an older outbox upgrades in place and keeps version 1
# (an older agent ignores a table it does not know): the version changes only for an incompatible schema.
_SCHEMA_VERSION = 1
_DIGEST_BYTES = 32  # one raw SHA-256 per chunk in ``chunk_digests.digests``
_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
# The recorder names files "<prefix>-YYYYmmddTHHMMSSffffffZ.mp4" after the UTC of their first frame.
_NAME_TIME = re.compile(r"(\d{8}T\d{12})Z")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    sequence INTEGER PRIMARY KEY CHECK (sequence >= 0),
    device_id TEXT NOT NULL,
    file_path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    manifest_text TEXT NOT NULL,
    signature BLOB NOT NULL,
    manifest_hash TEXT NOT NULL UNIQUE,
    prev_manifest_hash TEXT NOT NULL,
    file_id TEXT NOT NULL UNIQUE,
    started_utc TEXT NOT NULL,
    ended_utc TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'complete', 'failed')),
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    recording_id INTEGER,
    recovered INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    failed_at TEXT,
    file_deleted_at TEXT
);
CREATE INDEX IF NOT EXISTS segments_state ON segments (state, sequence);
CREATE TRIGGER IF NOT EXISTS segments_never_deleted BEFORE DELETE ON segments
BEGIN
    SELECT RAISE(ABORT, 'outbox rows are never deleted (JL-19)');
END;
CREATE TRIGGER IF NOT EXISTS segments_signed_facts_immutable BEFORE UPDATE OF
    sequence, device_id, file_path, size, sha256, manifest_text, signature, manifest_hash,
    prev_manifest_hash, file_id ON segments
BEGIN
    SELECT RAISE(ABORT, 'signed segment facts are immutable');
END;
CREATE TABLE IF NOT EXISTS session_events (
    seq INTEGER PRIMARY KEY CHECK (seq >= 0),
    event_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    marker_id TEXT NOT NULL DEFAULT '',
    event_text TEXT NOT NULL,
    signature BLOB NOT NULL,
    created_at TEXT NOT NULL,
    ack_state TEXT NOT NULL DEFAULT 'pending' CHECK (ack_state IN ('pending', 'stored', 'duplicate',
        'rejected')),
    ack_code TEXT NOT NULL DEFAULT '',
    acked_at TEXT
);
CREATE INDEX IF NOT EXISTS session_events_session ON session_events (session_id, seq);
-- Each chunk's SHA-256, taken when the recorder sealed the segment (docs/performance.md): the uploader
-- names them in the chunks' topics instead of hashing every chunk as it sends it. Not evidence (the
-- signed manifest's whole-file hash is): a row may be missing (older agents, recovered files) or be
-- dropped when a server answer shows it cannot be trusted; the chunks are then hashed at send.
CREATE TABLE IF NOT EXISTS chunk_digests (
    sequence INTEGER NOT NULL REFERENCES segments (sequence),
    chunk_bytes INTEGER NOT NULL CHECK (chunk_bytes > 0),
    digests BLOB NOT NULL,
    PRIMARY KEY (sequence, chunk_bytes)
);
CREATE TRIGGER IF NOT EXISTS session_events_never_deleted BEFORE DELETE ON session_events
BEGIN
    SELECT RAISE(ABORT, 'session events are never deleted (JL-16, JL-19)');
END;
CREATE TRIGGER IF NOT EXISTS session_events_signed_facts_immutable BEFORE UPDATE OF
    seq, event_id, session_id, kind, marker_id, event_text, signature ON session_events
BEGIN
    SELECT RAISE(ABORT, 'signed session events are immutable');
END;
"""

_COLUMNS = (
    "sequence, device_id, file_path, size, sha256, kind, manifest_text, signature, state, error_code, "
    "error_message, recording_id, recovered, created_at, completed_at, file_deleted_at"
)


class OutboxError(AgentError):
    """The outbox cannot do what was asked without risking the record's integrity."""


class SegmentLike(Protocol):
    """What the outbox needs from a closed segment (``edge_agent.encoder.SegmentFile`` fits)."""

    @property
    def path(self) -> Path: ...

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    @property
    def started_utc(self) -> datetime: ...

    @property
    def ended_utc(self) -> datetime: ...

    @property
    def started_mono_ns(self) -> int: ...

    @property
    def ended_mono_ns(self) -> int: ...

    # Optional, read with getattr: ``chunk_digests`` (raw SHA-256 of each piece, or None) and the
    # ``chunk_bytes`` they were made for, as ``SegmentFile`` carries them from the seal.


@dataclass(frozen=True, kw_only=True)
class _RecoveredSegment:
    """A segment rebuilt from a file found on disk after a crash."""

    path: Path
    size: int
    sha256: str
    started_utc: datetime
    ended_utc: datetime
    started_mono_ns: int
    ended_mono_ns: int


@dataclass(frozen=True, kw_only=True)
class OutboxSegment:
    """One outbox row."""

    sequence: int
    device_id: str
    path: Path
    size: int
    sha256: str
    kind: str
    signed: SignedManifest
    state: str
    error_code: str
    error_message: str
    recording_id: int | None
    recovered: bool
    created_at: str
    completed_at: str | None
    file_deleted_at: str | None

    @property
    def file_id(self) -> str:
        """Transfer id of the segment."""
        return self.signed.file_id


@dataclass(frozen=True, kw_only=True)
class OutboxStats:
    """Counts for status output and health messages."""

    segments_recorded: int
    segments_pending: int
    segments_complete: int
    segments_failed: int
    backlog_bytes: int
    oldest_pending_age_s: float | None
    last_sequence: int | None
    files_deleted: int

    def to_dict(self) -> dict[str, int | float | None]:
        """Plain JSON values."""
        return {
            "segments_recorded": self.segments_recorded,
            "segments_pending": self.segments_pending,
            "segments_complete": self.segments_complete,
            "segments_failed": self.segments_failed,
            "backlog_bytes": self.backlog_bytes,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "last_sequence": self.last_sequence,
            "files_deleted": self.files_deleted,
        }


@dataclass
class RecoveryReport:
    """What start-up recovery found in the segment folder."""

    added: list[int] = field(default_factory=list)
    unrecoverable: list[Path] = field(default_factory=list)


def read_boot_id() -> str:
    """This boot's id (Linux), so a verifier knows which boot the monotonic times belong to; else ''."""
    try:
        return _BOOT_ID_PATH.read_text(encoding="ascii").strip()[:128]
    except OSError:
        return ""


def _now_text() -> str:
    return format_time(datetime.now(UTC))


def _digest_blob(segment_file: SegmentLike) -> tuple[int, bytes] | None:
    """(chunk size, concatenated raw digests) of a segment that carries its chunk digests, else None.

    Refuses (:class:`OutboxError`) digests that cannot be the segment's: their count must be
    ceil(size / chunk_bytes) (none for an empty file) and each one 32 bytes.
    """
    digests = getattr(segment_file, "chunk_digests", None)
    if digests is None:
        return None
    chunk_bytes = getattr(segment_file, "chunk_bytes", 0)
    if not isinstance(chunk_bytes, int) or chunk_bytes <= 0:
        raise OutboxError(f"chunk digests of {segment_file.path} name no valid chunk size ({chunk_bytes!r})")
    expected = chunk_count(segment_file.size, chunk_bytes)
    if len(digests) != expected:
        raise OutboxError(
            f"{segment_file.path}: {len(digests)} chunk digests, a {segment_file.size}-byte file"
            f" has {expected} chunks of {chunk_bytes} bytes"
        )
    if any(not isinstance(d, bytes) or len(d) != _DIGEST_BYTES for d in digests):
        raise OutboxError(f"{segment_file.path}: each chunk digest must be {_DIGEST_BYTES} raw bytes")
    return chunk_bytes, b"".join(digests)


class Outbox:
    """The on-device segment journal; safe to use from several threads (one connection, one lock)."""

    def __init__(self, db_path: Path | str, *, readonly: bool = False) -> None:
        """Open (creating if needed) the outbox database; ``readonly`` for status readers."""
        self.db_path = Path(db_path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._boot_id = read_boot_id()
        if readonly:
            if not self.db_path.exists():
                raise OutboxError(f"no outbox at {self.db_path}")
            uri = f"{self.db_path.resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA query_only=ON")
            return
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves so each multi-step change is one transaction.
        self._conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed segment row survives power loss, not just a process crash.
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._create_schema()

    def _create_schema(self) -> None:
        # executescript commits implicitly; every statement is idempotent (IF NOT EXISTS).
        self._conn.executescript(_SCHEMA)
        with self._transaction():
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),)
                )
            elif int(row[0]) != _SCHEMA_VERSION:
                raise OutboxError(f"outbox schema version {row[0]} is not {_SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            # IMMEDIATE takes the write lock up front, so "read last row, insert next" cannot interleave.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    # -- paths ----------------------------------------------------------------------------------

    def _store_path(self, path: Path) -> str:
        # Relative to the database folder when inside it, so the data folder can be moved whole.
        resolved = path.resolve()
        base = self.db_path.resolve().parent
        if resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
        return str(resolved)

    def _load_path(self, stored: str) -> Path:
        return self.db_path.resolve().parent / stored

    # -- writing --------------------------------------------------------------------------------

    def add_segment(
        self,
        segment_file: SegmentLike,
        *,
        device_id: str,
        officer_id: str,
        private_key: Ed25519PrivateKey,
        session_id: str = "",
        kind: str = "segment",
        marker_id: str = "",
        _recovered: bool = False,
        _boot_id: str | None = None,
    ) -> SignedManifest:
        """Chain, sign and journal a closed segment in one transaction; return its signed manifest.

        A segment that carries ``chunk_digests`` (and the ``chunk_bytes`` they were made for) has them
        stored in the same transaction; one without them (recovered, joined pre-record) has none.
        """
        path = Path(segment_file.path)
        actual = path.stat().st_size
        if actual != segment_file.size:
            raise OutboxError(f"{path} is {actual} bytes, not the {segment_file.size} the recorder reported")
        digests = _digest_blob(segment_file)
        stored_path = self._store_path(path)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM segments WHERE file_path=?", (stored_path,)).fetchone():
                raise OutboxError(f"{path} is already in the outbox")
            last = conn.execute(
                "SELECT sequence, manifest_hash, device_id FROM segments ORDER BY sequence DESC LIMIT 1"
            ).fetchone()
            if last is not None and last[2] != device_id:
                raise OutboxError(f"this outbox belongs to device {last[2]!r}, not {device_id!r}")
            sequence = 0 if last is None else int(last[0]) + 1
            manifest = SegmentManifest(
                device_id=device_id,
                sequence=sequence,
                size=segment_file.size,
                sha256=segment_file.sha256,
                started_at=segment_file.started_utc,
                ended_at=segment_file.ended_utc,
                started_mono_ns=segment_file.started_mono_ns,
                ended_mono_ns=segment_file.ended_mono_ns,
                prev_manifest_hash=GENESIS_HASH if last is None else str(last[1]),
                kind=kind,
                officer_id=officer_id,
                session_id=session_id,
                marker_id=marker_id,
                boot_id=self._boot_id if _boot_id is None else _boot_id,
            )
            signed = SignedManifest.sign(manifest, private_key)
            conn.execute(
                "INSERT INTO segments (sequence, device_id, file_path, size, sha256, kind, manifest_text,"
                " signature, manifest_hash, prev_manifest_hash, file_id, started_utc, ended_utc, state,"
                " recovered, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',?,?)",
                (
                    sequence,
                    device_id,
                    stored_path,
                    manifest.size,
                    manifest.sha256,
                    kind,
                    signed.manifest_text,
                    signed.signature,
                    signed.manifest_hash,
                    manifest.prev_manifest_hash,
                    signed.file_id,
                    format_time(manifest.started_at),
                    format_time(manifest.ended_at),
                    int(_recovered),
                    _now_text(),
                ),
            )
            if digests is not None:
                conn.execute(
                    "INSERT INTO chunk_digests (sequence, chunk_bytes, digests) VALUES (?,?,?)",
                    (sequence, digests[0], digests[1]),
                )
        logger.info("segment %d journalled: %s (%d bytes)", sequence, path.name, manifest.size)
        return signed

    def mark_complete(self, sequence: int, recording_id: int | None) -> None:
        """The server holds the segment durably: only now may its file ever be freed."""
        with self._transaction() as conn:
            row = conn.execute("SELECT state FROM segments WHERE sequence=?", (sequence,)).fetchone()
            if row is None:
                raise OutboxError(f"no segment {sequence} in the outbox")
            if row[0] == "complete":
                return
            if row[0] == "failed":
                logger.warning("segment %d was marked failed but the server now reports it stored", sequence)
            conn.execute(
                "UPDATE segments SET state='complete', recording_id=?, completed_at=? WHERE sequence=?",
                (recording_id, _now_text(), sequence),
            )
            # Only an upload needs them, and a stored segment is never uploaded again.
            conn.execute("DELETE FROM chunk_digests WHERE sequence=?", (sequence,))

    def chunk_digests(self, sequence: int, chunk_bytes: int) -> list[bytes] | None:
        """The SHA-256 of each ``chunk_bytes`` chunk of a segment, taken at seal; None if none are stored.

        A row that does not fit the segment (wrong length) is reported and treated as absent, so a
        damaged row costs a hash per chunk, never a wrong claim on every resend.
        """
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT d.digests, s.size FROM chunk_digests d JOIN segments s USING (sequence)"
                    " WHERE d.sequence=? AND d.chunk_bytes=?",
                    (sequence, chunk_bytes),
                ).fetchone()
            except sqlite3.OperationalError as exc:
                # A read-only view of an outbox written by an older agent: the table does not exist.
                if "no such table" not in str(exc):
                    raise
                return None
        if row is None:
            return None
        blob, size = row
        if not isinstance(blob, bytes) or len(blob) != chunk_count(int(size), chunk_bytes) * _DIGEST_BYTES:
            logger.warning("segment %d: stored chunk digests do not fit the segment; ignored", sequence)
            return None
        return [blob[i : i + _DIGEST_BYTES] for i in range(0, len(blob), _DIGEST_BYTES)]

    def forget_chunk_digests(self, sequence: int) -> None:
        """Drop a segment's stored chunk digests (a server answer showed they cannot be trusted)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM chunk_digests WHERE sequence=?", (sequence,))

    def mark_failed(self, sequence: int, code: str, message: str) -> None:
        """The server refused the segment: keep it forever (JL-19) and report it."""
        with self._transaction() as conn:
            row = conn.execute("SELECT state FROM segments WHERE sequence=?", (sequence,)).fetchone()
            if row is None:
                raise OutboxError(f"no segment {sequence} in the outbox")
            if row[0] == "complete":
                logger.warning("ignoring failure of segment %d: the server already stored it", sequence)
                return
            conn.execute(
                "UPDATE segments SET state='failed', error_code=?, error_message=?, failed_at=?"
                " WHERE sequence=?",
                (code, message, _now_text(), sequence),
            )

    def retry_failed(self, sequence: int) -> None:
        """Put a failed segment back in the queue (after a person fixed the cause, e.g. the device key)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE segments SET state='pending', error_code='', error_message='', failed_at=NULL"
                " WHERE sequence=? AND state='failed'",
                (sequence,),
            )

    # -- reading --------------------------------------------------------------------------------

    def _row(self, row: tuple[object, ...]) -> OutboxSegment:
        (seq, device_id, path, size, sha, kind, text, sig, state, code, msg, rec_id, recovered, created,
         completed, deleted) = row  # fmt: skip
        manifest = SegmentManifest.from_json_dict(json.loads(str(text)))
        assert isinstance(sig, bytes)
        signed = SignedManifest(manifest=manifest, manifest_text=str(text), signature=sig)
        return OutboxSegment(
            sequence=int(str(seq)),
            device_id=str(device_id),
            path=self._load_path(str(path)),
            size=int(str(size)),
            sha256=str(sha),
            kind=str(kind),
            signed=signed,
            state=str(state),
            error_code=str(code),
            error_message=str(msg),
            recording_id=None if rec_id is None else int(str(rec_id)),
            recovered=bool(recovered),
            created_at=str(created),
            completed_at=None if completed is None else str(completed),
            file_deleted_at=None if deleted is None else str(deleted),
        )

    def _query(self, where: str, params: tuple[object, ...] = ()) -> list[OutboxSegment]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM segments {where}", params).fetchall()
        return [self._row(r) for r in rows]

    def pending(self, limit: int = 100) -> list[OutboxSegment]:
        """Segments not yet stored by the server: spoken explanations first (JL-16), then oldest first."""
        return self._query(
            "WHERE state='pending' ORDER BY kind='explanation' DESC, sequence LIMIT ?", (limit,)
        )

    def failed(self) -> list[OutboxSegment]:
        """Segments the server refused, oldest first."""
        return self._query("WHERE state='failed' ORDER BY sequence")

    def get(self, sequence: int) -> OutboxSegment | None:
        """One segment by sequence number."""
        found = self._query("WHERE sequence=?", (sequence,))
        return found[0] if found else None

    def all_segments(self) -> list[OutboxSegment]:
        """Every segment, in sequence order."""
        return self._query("ORDER BY sequence")

    def contains_path(self, path: Path) -> bool:
        """Whether a file is already journalled."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM segments WHERE file_path=?", (self._store_path(path),)
            ).fetchone()
        return row is not None

    def stats(self, now: datetime | None = None) -> OutboxStats:
        """Counts, backlog and the age of the oldest segment not yet stored (JL-17: must stay under 24 h)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*),"
                " COALESCE(SUM(state='pending'), 0),"
                " COALESCE(SUM(state='complete'), 0),"
                " COALESCE(SUM(state='failed'), 0),"
                " COALESCE(SUM(CASE WHEN state='pending' THEN size ELSE 0 END), 0),"
                " MIN(CASE WHEN state='pending' THEN started_utc END),"
                " MAX(sequence),"
                " COALESCE(SUM(file_deleted_at IS NOT NULL), 0)"
                " FROM segments"
            ).fetchone()
        oldest: float | None = None
        if row[5] is not None:
            # Age since recording started: the conservative reading of JL-17's 24 h limit.
            moment = now or datetime.now(UTC)
            oldest = max(0.0, (moment - parse_time(str(row[5]))).total_seconds())
        return OutboxStats(
            segments_recorded=int(row[0]),
            segments_pending=int(row[1]),
            segments_complete=int(row[2]),
            segments_failed=int(row[3]),
            backlog_bytes=int(row[4]),
            oldest_pending_age_s=oldest,
            last_sequence=None if row[6] is None else int(row[6]),
            files_deleted=int(row[7]),
        )

    def verify_chain(self, public_key_raw: bytes | None = None) -> list[str]:
        """Problems with the journal: sequence gaps, broken links, bad signatures, altered pending files."""
        problems: list[str] = []
        prev_hash = GENESIS_HASH
        for expected, seg in enumerate(self.all_segments()):
            if seg.sequence != expected:
                problems.append(f"sequence gap: expected {expected}, found {seg.sequence}")
            manifest = seg.signed.manifest
            if manifest.sequence != seg.sequence:
                problems.append(f"segment {seg.sequence}: manifest says sequence {manifest.sequence}")
            if manifest.prev_manifest_hash != prev_hash:
                problems.append(f"segment {seg.sequence}: chain link does not match the previous manifest")
            if public_key_raw is not None and not seg.signed.verify(public_key_raw):
                problems.append(f"segment {seg.sequence}: signature does not verify")
            if seg.state != "complete" and not seg.path.exists():
                problems.append(f"segment {seg.sequence} ({seg.state}): file {seg.path} is missing")
            prev_hash = seg.signed.manifest_hash
        return problems

    # -- session events (JL-16) ----------------------------------------------------------------

    def add_session_event(
        self, build: Callable[[int], SessionEvent], private_key: Ed25519PrivateKey
    ) -> SignedSessionEvent:
        """Number (next per-device seq), sign and journal one session event in one transaction."""
        with self._transaction() as conn:
            row = conn.execute("SELECT MAX(seq) FROM session_events").fetchone()
            seq = 0 if row[0] is None else int(row[0]) + 1
            event = build(seq)
            if event.seq != seq:
                raise OutboxError(f"session event built with seq {event.seq}, expected {seq}")
            signed = SignedSessionEvent.sign(event, private_key)
            conn.execute(
                "INSERT INTO session_events (seq, event_id, session_id, kind, marker_id, event_text,"
                " signature, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    seq,
                    event.event_id,
                    event.session_id,
                    event.kind.value,
                    event.marker_id,
                    signed.event_text,
                    signed.signature,
                    _now_text(),
                ),
            )
        logger.info("session event %d journalled: %s %s", seq, event.kind.value, event.event_id)
        return signed

    def _session_rows(self, where: str, params: tuple[object, ...] = ()) -> list[SignedSessionEvent]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT event_text, signature FROM session_events {where}", params
            ).fetchall()
        out = []
        for text, sig in rows:
            event = SessionEvent.from_json_dict(json.loads(str(text)))
            out.append(SignedSessionEvent(event=event, event_text=str(text), signature=bytes(sig)))
        return out

    def session_events(self, session_id: str | None = None) -> list[SignedSessionEvent]:
        """Journalled session events in seq order, of one session or all."""
        if session_id is None:
            return self._session_rows("ORDER BY seq")
        return self._session_rows("WHERE session_id=? ORDER BY seq", (session_id,))

    def unacked_session_events(self) -> list[SignedSessionEvent]:
        """Events the server has not yet stored; sent again until it does."""
        return self._session_rows("WHERE ack_state='pending' ORDER BY seq")

    def session_event_state(self, event_id: str) -> str | None:
        """``pending``, ``stored``, ``duplicate`` or ``rejected`` (None if unknown)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT ack_state FROM session_events WHERE event_id=?", (event_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def mark_session_event_acked(self, event_id: str, state: str, code: str = "") -> bool:
        """Record the server's answer; False if the event is unknown or was already answered."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE session_events SET ack_state=?, ack_code=?, acked_at=?"
                " WHERE event_id=? AND ack_state='pending'",
                (state, code, _now_text(), event_id),
            )
            return cursor.rowcount == 1

    def open_session_id(self) -> str | None:
        """The session whose last event is not ENDED (left open by a crash or power loss), if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT session_id, kind FROM session_events"
                " WHERE kind IN ('started', 'ended') ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        if row is None or str(row[1]) == "ended":
            return None
        return str(row[0])

    def last_segment_end(self) -> datetime | None:
        """UTC end of the newest journalled segment."""
        with self._lock:
            row = self._conn.execute(
                "SELECT ended_utc FROM segments ORDER BY sequence DESC LIMIT 1"
            ).fetchone()
        return None if row is None else parse_time(str(row[0]))

    # -- disk space -----------------------------------------------------------------------------

    def free_space(self, min_free_bytes: int, directory: Path | None = None) -> list[int]:
        """Delete files of server-confirmed segments, oldest first, until ``min_free_bytes`` are free."""
        # Pending and failed segments are never touched (JL-19): if only they are left, the disk fills
        # and the recorder stops, which is reported, rather than evidence being lost.
        folder = directory or self.db_path.parent
        freed: list[int] = []
        while shutil.disk_usage(folder).free < min_free_bytes:
            with self._lock:
                row = self._conn.execute(
                    "SELECT sequence, file_path FROM segments"
                    " WHERE state='complete' AND file_deleted_at IS NULL ORDER BY sequence LIMIT 1"
                ).fetchone()
                if row is None:
                    logger.warning(
                        "free space below %d bytes and no stored segment left to delete (JL-19: "
                        "pending/failed segments are kept)",
                        min_free_bytes,
                    )
                    break
                sequence, stored = int(row[0]), str(row[1])
                self._load_path(stored).unlink(missing_ok=True)
                with self._transaction() as conn:
                    conn.execute(
                        "UPDATE segments SET file_deleted_at=? WHERE sequence=? AND state='complete'",
                        (_now_text(), sequence),
                    )
            freed.append(sequence)
            logger.info("deleted the local copy of stored segment %d to free space", sequence)
        return freed

    # -- crash recovery -------------------------------------------------------------------------

    def recover(
        self,
        segment_dir: Path,
        recover_fn: Callable[[Path], int | None],
        *,
        device_id: str,
        officer_id: str,
        private_key: Ed25519PrivateKey,
        segment_seconds: float = 60.0,
        session_id: str = "",
    ) -> RecoveryReport:
        """Journal segment files left behind by a crash; keep (renamed) any that cannot be repaired."""
        # Times of a recovered segment: ``started`` is the UTC in the recorder's file name (the first
        # frame's capture time); ``ended`` is the file's mtime, i.e. when the last fragment reached disk,
        # the real end of what survived. Without a name timestamp, ``started`` is estimated as
        # ``ended - segment_seconds``. The dead process's monotonic times are unknown, so they are given
        # as 0 and the duration in ns, with an empty ``boot_id`` to say they belong to no known boot.
        report = RecoveryReport()
        if not segment_dir.is_dir():
            return report
        for path in sorted(segment_dir.glob("*.mp4")):
            if self.contains_path(path):
                continue
            logger.warning("found segment %s not in the outbox (cut off by a crash?): recovering", path.name)
            try:
                size = recover_fn(path)
            except (OSError, ValueError) as exc:
                logger.error("cannot repair %s: %s", path.name, exc)
                size = None
            if size is None or size <= 0:
                kept = path.with_name(path.name + ".unrecoverable")
                path.rename(kept)
                logger.error(
                    "segment %s holds nothing playable; kept as %s (never deleted)", path.name, kept.name
                )
                report.unrecoverable.append(kept)
                continue
            ended = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            match = _NAME_TIME.search(path.name)
            started = (
                datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
                if match
                else ended - timedelta(seconds=segment_seconds)
            )
            started = min(started, ended)
            segment = _RecoveredSegment(
                path=path,
                size=size,
                sha256=sha256_file(path),
                started_utc=started,
                ended_utc=ended,
                started_mono_ns=0,
                ended_mono_ns=int((ended - started).total_seconds() * 1e9),
            )
            try:
                signed = self.add_segment(
                    segment,
                    device_id=device_id,
                    officer_id=officer_id,
                    private_key=private_key,
                    session_id=session_id,  # JL-16: the session left open by the crash, if any
                    _recovered=True,
                    _boot_id="",
                )
            except ManifestError as exc:
                logger.error("cannot journal recovered segment %s: %s", path.name, exc)
                continue
            report.added.append(signed.manifest.sequence)
        return report
