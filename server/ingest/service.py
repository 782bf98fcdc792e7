"""Ingest: turn uplink MQTT messages into staged chunks, committed evidence, telemetry and acks.

:meth:`IngestService.handle` takes one ``(topic, payload)`` and returns the ``(topic, payload)`` acks to
publish; it knows nothing of MQTT, so it is tested without a broker and shared by every worker. It is
stateless between messages: what a transfer holds lives in :class:`~server.infra.staging.Staging` and the
database, so a transfer's messages may reach any worker (``$share``) or a restarted one.

Nothing is acknowledged before its effect happened: a chunk ack after the chunk is in staging, ``complete``
only after :func:`~server.domain.evidence.commit.commit_segment` returned. Unexpected failures (database or
object store down, disk full) send no ack at all: the device times out, asks for status and resends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol import topics
from protocol.errors import ChunkHashMismatch, ManifestError, ProtocolError, TopicError
from protocol.manifest import SignedManifest
from protocol.messages import (
    MAX_JSON_PAYLOAD,
    AckState,
    FileAbort,
    FileChunk,
    FileFin,
    FileInit,
    FileStatusQuery,
    Presence,
    PresenceState,
    TransferAck,
    encode,
)
from protocol.topics import TopicKind
from protocol.transfer import (
    Committed,
    DiscardStaging,
    Finalize,
    FinalizeRejected,
    ReceiverAction,
    ReceiverView,
    Reply,
    SegmentReceiver,
    StageChunk,
    StageOutcome,
    StoreManifest,
)
from server.domain.evidence.commit import EvidenceRejected, HashMismatch, commit_segment, record_rejection
from server.domain.evidence.transfers import record_chain_breaks, stored_segment
from server.domain.fleet.broker_accounts import sync_broker
from server.domain.fleet.devices import device_key_and_status
from server.domain.fleet.models import DeviceStatus
from server.errors import RETRY_KINDS, ZfjlError
from server.infra.config import Settings
from server.infra.db import session_scope
from server.infra.staging import Staging, StagingBusy, StagingSweep
from server.infra.storage import ObjectStore
from server.ingest.handlers import MALFORMED_CODES, Outgoing, decode_uplink, handle_uplink, refuse_malformed
from server.ingest.rejections import (
    REJECTION_ROWS_PER_DEVICE_MINUTE,
    REJECTION_ROWS_PER_MINUTE,
    REJECTION_WINDOW_S,
    RejectionLog,
)

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

__all__ = ["IngestService", "Outgoing"]

_LOG = logging.getLogger(__name__)
# An identical presence from the same device within this many seconds is not handled again.
PRESENCE_REPEAT_S = 60.0

_DOWNLINK_KINDS = frozenset(
    {TopicKind.ACK, TopicKind.SESSION_ACK, TopicKind.CONFIG_DESIRED, TopicKind.COMMAND}
)
FileMessage = FileInit | FileChunk | FileFin | FileStatusQuery | FileAbort

# Kept manifests of cleaned transfers, and leftovers of every kind, go after this long.
STAGING_MANIFEST_MAX_AGE_S = 14 * 86400


@dataclass(frozen=True)
class _DeviceInfo:
    """What ingest needs of a registered device."""

    public_key: bytes
    status: str


class IngestService:
    """Handles uplink messages for every ingest worker of this process (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        app: Flask,
        store: ObjectStore,
        staging: Staging,
        *,
        device_cache_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.app = app
        self.store = store
        self.staging = staging
        self.device_cache_ttl_s = device_cache_ttl_s
        # Unknown devices are cached briefly only, so a device registered a moment ago gets in soon.
        self.unknown_device_ttl_s = min(2.0, device_cache_ttl_s)
        self.clock = clock
        self._devices: dict[str, tuple[float, _DeviceInfo | None]] = {}
        self._devices_lock = threading.Lock()
        self._presence_seen: dict[str, tuple[tuple[PresenceState, str], float]] = {}
        self._rejection_log = RejectionLog(
            REJECTION_ROWS_PER_DEVICE_MINUTE, REJECTION_ROWS_PER_MINUTE, REJECTION_WINDOW_S, clock
        )
        self._stats_lock = threading.Lock()
        self._messages: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._totals: Counter[str] = Counter()

    @classmethod
    def from_app(cls, app: Flask) -> IngestService:
        """A service over the app's settings, object store and staging directory."""
        from server.infra.storage import STORE_KEY

        settings: Settings = app.extensions["zfjl.settings"]
        return cls(settings, app, app.extensions[STORE_KEY], Staging(settings.staging_dir))

    # -- metrics -----------------------------------------------------------------------------

    def _count(self, counter: Counter[str], key: str, amount: int = 1) -> None:
        with self._stats_lock:
            counter[key] += amount

    def stats(self) -> dict[str, Any]:
        """Counters since start: messages by kind, bytes staged, commits, duplicates, conflicts, refusals."""
        with self._stats_lock:
            return {
                "messages": dict(self._messages),
                "bytes_staged": self._totals["bytes_staged"],
                "chunks_staged": self._totals["chunks_staged"],
                "chunks_duplicate": self._totals["chunks_duplicate"],
                "segments_committed": self._totals["segments_committed"],
                "duplicates": self._totals["duplicates"],
                "conflicts": self._totals["conflicts"],
                "chain_breaks": self._totals["chain_breaks"],
                "errors": self._totals["errors"],
                "rejection_rows_suppressed": self._totals["rejection_rows_suppressed"],
                "rejection_summaries": self._totals["rejection_summaries"],
                "rejections": dict(self._rejections),
                "dropped": dict(self._dropped),
                # Finalizes that used the hash taken as chunks arrived / had to hash the staged file.
                "finalize_hashed_on_arrival": self.staging.finalize_hashed_on_arrival,
                "finalize_rehashed": self.staging.finalize_rehashed,
                # Chunks whose own SHA-256 was checked on arrival (not covered by the running hash).
                "chunks_checked_on_arrival": self.staging.chunks_checked_on_arrival,
            }

    # -- entry points ------------------------------------------------------------------------

    @staticmethod
    def is_finalize(topic: str) -> bool:
        """Whether handling this topic may commit a segment (slow: hash, object store, database)."""
        if "/fin/" not in topic:
            return False  # asked for every chunk on the network thread: no full parse for the common case
        try:
            return topics.parse(topic).kind is TopicKind.FILE_FIN
        except TopicError:
            return False

    def handle(self, topic: str, payload: bytes) -> list[Outgoing]:
        """Handle one uplink message; return the acks to publish (QoS 1). Never raises."""
        try:
            if self._rejection_log.flush_due():
                self.flush_rejections()
            return self._handle(topic, payload)
        except ZfjlError as exc:
            if exc.kind in RETRY_KINDS:
                _LOG.error("ingest: %s on %r: %s; no answer, the device resends", exc.code, topic[:300], exc)
                self._count(self._totals, "errors")
                return []
            # The message's fault, found below the handler: refused in the security log, never a crash.
            self.note_rejection(exc.code, exc.message_en, topics.device_id_hint(topic), None)
            return []
        except Exception:
            # No ack: the device's timeout, status query and resend are the recovery path.
            _LOG.exception("ingest: failed to handle a message on %r (%d bytes)", topic[:300], len(payload))
            self._count(self._totals, "errors")
            return []

    def _handle(self, topic: str, payload: bytes) -> list[Outgoing]:
        try:
            parsed = topics.parse(topic)
        except TopicError as exc:
            self.drop_bad_topic(topic, str(exc))
            return []
        self._count(self._messages, parsed.kind.value)
        if parsed.kind in _DOWNLINK_KINDS:
            # Our own answers (or someone's forgeries) are never input: never answer them.
            self._count(self._dropped, "not_uplink")
            return []
        if parsed.kind is TopicKind.FILE_INIT and len(payload) > MAX_JSON_PAYLOAD:
            # SignedManifest.from_envelope has no size limit of its own; never parse megabytes of JSON.
            return self._refuse(parsed, "bad_manifest", f"init payload too large ({len(payload)} bytes)")
        try:
            msg = decode_uplink(topic, parsed, payload)
        except ChunkHashMismatch as exc:
            return self._refuse(parsed, "chunk_hash_mismatch", str(exc), length=len(payload))
        except ProtocolError as exc:
            if parsed.kind in MALFORMED_CODES:
                return refuse_malformed(self, parsed, MALFORMED_CODES[parsed.kind], str(exc))
            code = "bad_manifest" if isinstance(exc, ManifestError) else "bad_message"
            return self._refuse(parsed, code, str(exc))
        return handle_uplink(self, parsed, msg)

    # -- refusals ----------------------------------------------------------------------------

    def drop_bad_topic(self, topic: str, reason: str) -> None:
        """A message on a topic (or a NATS subject) that is none of protocol v1's: counted, logged with
        the device it names if any, never answered."""
        self._count(self._messages, "malformed")
        self._drop("bad_topic", reason, topics.device_id_hint(topic), None)

    def _drop(self, reason: str, message: str, device_id: str | None, file_id: str | None) -> None:
        """Count and log a message we do not answer; keep a security-log row when a device is named."""
        self._count(self._dropped, reason)
        self._count(self._rejections, reason)
        _LOG.warning("ingest: dropped (%s): %s", reason, message)
        if device_id is not None:
            self._log_rejection(reason, message, device_id, file_id)

    def _refuse(
        self, parsed: topics.Topic, code: str, message: str, *, length: int | None = None
    ) -> list[Outgoing]:
        """A malformed message: log it, and tell the device when there is a transfer to answer on."""
        self._count(self._rejections, code)
        _LOG.warning("ingest: refused %s from %s: %s", parsed.kind.value, parsed.device_id, message)
        self._log_rejection(code, message, parsed.device_id, parsed.file_id)
        if parsed.file_id is None:
            return []
        ack = TransferAck(
            device_id=parsed.device_id,
            file_id=parsed.file_id,
            state=AckState.REJECTED,
            offset=parsed.offset,
            length=length if parsed.offset is not None else None,
            code=code,
            message=message[:500],
        )
        return [encode(ack)]

    def _log_rejection(
        self,
        code: str,
        message: str,
        device_id: str | None,
        file_id: str | None,
        manifest_text: str | None = None,
    ) -> None:
        """Write one security-log row, or hold it for its window's summary row when a flood is on."""
        admitted = self._rejection_log.admit(
            device_id,
            code[:32],
            lambda: device_id is not None and self._device(device_id) is not None,
            file_id=file_id,
            message=message[:500],
            manifest_text=manifest_text,
        )
        if not admitted:
            self._count(self._totals, "rejection_rows_suppressed")
            return
        try:
            with session_scope(self.app) as session:
                record_rejection(
                    session,
                    code=code[:32],
                    message=message[:2000],
                    device_id=device_id,
                    file_id=file_id,
                    manifest_text=manifest_text,
                )
        except Exception:
            _LOG.exception("ingest: could not record a %s rejection for %s", code, device_id)

    def flush_rejections(self, *, everything: bool = False) -> int:
        """Write the summary rows of closed flood windows (``everything``: the open one too); how many."""
        summaries = self._rejection_log.due(everything=everything)
        if not summaries:
            return 0
        try:
            with session_scope(self.app) as session:
                for summary in summaries:
                    record_rejection(
                        session,
                        code=summary.code,
                        message=summary.message[:2000],
                        device_id=summary.device_id,
                        file_id=summary.file_id,
                        manifest_text=summary.manifest_text,
                        occurrences=summary.count,
                    )
        except Exception:
            _LOG.exception(
                "ingest: could not record %d flood summaries; kept for the next try", len(summaries)
            )
            for summary in summaries:
                _LOG.warning("ingest: %s", summary.message[:300])
            self._rejection_log.requeue(summaries)
            return 0
        for summary in summaries:
            _LOG.warning("ingest: %s", summary.message[:300])
        self._count(self._totals, "rejection_summaries", len(summaries))
        return len(summaries)

    # -- housekeeping ------------------------------------------------------------------------

    def housekeep(self, now: float | None = None) -> dict[str, int]:
        """Clean abandoned staging (ZFJL_STAGING_ABANDON_HOURS) and write due flood summaries."""
        cleaned = self.staging.purge_abandoned(
            idle_s=self.settings.staging_abandon_hours * 3600.0,
            manifest_max_age_s=STAGING_MANIFEST_MAX_AGE_S,
            now=now,
        )
        self.flush_rejections()
        return {"staging_abandoned": len(cleaned)}

    def sweep_after_death(self, pid: int) -> StagingSweep:
        """Clean the staging a killed ingest process ``pid`` left (``Staging.sweep_after_death``)."""
        return self.staging.sweep_after_death(pid, lambda d, f: self._stored(d, f) is not None)

    # -- lookups -----------------------------------------------------------------------------

    def _device(self, device_id: str) -> _DeviceInfo | None:
        now = self.clock()
        with self._devices_lock:
            cached = self._devices.get(device_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        with session_scope(self.app) as session:
            found = device_key_and_status(session, device_id)
            info = None if found is None else _DeviceInfo(*found)
        ttl = self.device_cache_ttl_s if info is not None else self.unknown_device_ttl_s
        with self._devices_lock:
            if len(self._devices) > 10_000:
                self._devices.clear()  # ids come from the network: never let the cache grow unbounded
            self._devices[device_id] = (now + ttl, info)
        return info

    def _stored(self, device_id: str, file_id: str) -> tuple[int, str] | None:
        """The recording committed for this transfer and its sha256 (named in ``complete``), if any."""
        with session_scope(self.app) as session:
            return stored_segment(session, device_id, file_id)

    # -- transfers ---------------------------------------------------------------------------

    def _transfer(self, msg: FileMessage) -> list[Outgoing]:
        device = self._device(msg.device_id)
        if (
            device is not None
            and device.status not in DeviceStatus.ACCEPTING
            and not isinstance(msg, FileStatusQuery | FileAbort)
        ):
            # Refuse up front rather than after the whole upload: commit_segment would refuse it anyway.
            parsed = topics.Topic(
                kind=TopicKind.FILE_CHUNK if isinstance(msg, FileChunk) else TopicKind.FILE_INIT,
                device_id=msg.device_id,
                file_id=msg.file_id,
                offset=msg.offset if isinstance(msg, FileChunk) else None,
            )
            if isinstance(msg, FileFin):
                parsed = topics.Topic(kind=TopicKind.FILE_FIN, device_id=msg.device_id, file_id=msg.file_id)
            length = len(msg.data) if isinstance(msg, FileChunk) else None
            return self._refuse(
                parsed, "device_inactive", f"device {msg.device_id} is {device.status}", length=length
            )
        if isinstance(msg, FileChunk):
            # One lock for the chunk's view and its staging, and the transfer's files kept open between
            # chunks (docs/performance.md, "One lock per chunk, files kept open").
            with self.staging.hold(msg.device_id, msg.file_id):
                return self._transfer_held(msg, device)
        return self._transfer_held(msg, device)

    def _transfer_held(self, msg: FileMessage, device: _DeviceInfo | None) -> list[Outgoing]:
        manifest, held = self.staging.view_parts(msg.device_id, msg.file_id)
        # Committing discards the staging, so a chunk whose transfer still has its manifest staged
        # cannot belong to a stored segment: skip the database on the hot path.
        stored = (
            None
            if isinstance(msg, FileChunk) and manifest is not None
            else self._stored(msg.device_id, msg.file_id)
        )
        view = ReceiverView(
            device_id=msg.device_id,
            file_id=msg.file_id,
            device_key=None if device is None else device.public_key,
            manifest=manifest,
            held=held,
            recording_id=None if stored is None else stored[0],
            recording_sha256="" if stored is None else stored[1],
            max_segment_bytes=self.settings.max_segment_bytes,
            max_chunk_bytes=self.settings.max_chunk_bytes,
            staging_quota_bytes=self.settings.staging_quota_bytes,
            # Only an init or a chunk of an accepted transfer can be held to the quota.
            staged_elsewhere=self.staging.device_usage(
                msg.device_id, exclude_file_id=msg.file_id, fresh=not isinstance(msg, FileChunk)
            )
            if device is not None and (isinstance(msg, FileInit) or (isinstance(msg, FileChunk) and manifest))
            else 0,
        )
        receiver = SegmentReceiver(view)
        out: list[Outgoing] = []
        self._perform(receiver, msg, receiver.receive(msg), out, finalizing=False)
        return out

    def _perform(
        self,
        receiver: SegmentReceiver,
        msg: FileMessage,
        actions: list[ReceiverAction],
        out: list[Outgoing],
        *,
        finalizing: bool,
    ) -> None:
        view = receiver.view
        for action in actions:
            if isinstance(action, Reply):
                self._note_reply(action.ack, msg, view.manifest, logged=finalizing)
                out.append(encode(action.ack))
            elif isinstance(action, StoreManifest):
                self.staging.store_manifest(action.signed)
            elif isinstance(action, StageChunk):
                outcome = self.staging.stage(action.chunk)
                if outcome is StageOutcome.WRITTEN:
                    self._count(self._totals, "chunks_staged")
                    self._count(self._totals, "bytes_staged", len(action.chunk.data))
                elif outcome is StageOutcome.SAME:
                    self._count(self._totals, "chunks_duplicate")
                follow = receiver.chunk_staged(action.chunk, outcome)
                self._perform(receiver, msg, follow, out, finalizing=False)
            elif isinstance(action, Finalize):
                result = self._finalize(action.signed)
                self._perform(receiver, msg, receiver.finalized(result), out, finalizing=True)
                if isinstance(result, Committed):
                    self._discard_quietly(view.device_id, view.file_id)
            elif isinstance(action, DiscardStaging):
                # After a finalize hash mismatch only the bytes were bad: keep the verified manifest.
                self.staging.discard(view.device_id, view.file_id, keep_manifest=finalizing)

    def _note_reply(
        self, ack: TransferAck, msg: FileMessage, manifest: SignedManifest | None, *, logged: bool
    ) -> None:
        """Count refusals and log them to the security log (finalize refusals are logged by the service)."""
        refused = ack.state in (AckState.REJECTED, AckState.CONFLICT)
        if not refused and not (ack.state is AckState.UNKNOWN and ack.code == "no_manifest"):
            return
        self._count(self._rejections, ack.code)
        if ack.state is AckState.CONFLICT and not logged:
            self._count(self._totals, "conflicts")
        _LOG.warning(
            "ingest: %s %s/%s: %s (%s)", ack.state.value, ack.device_id, ack.file_id, ack.code, ack.message
        )
        if logged:
            return
        signed = msg.signed if isinstance(msg, FileInit) else manifest
        detail = ack.message if ack.offset is None else f"{ack.message} (offset {ack.offset})"
        self._log_rejection(
            ack.code, detail, ack.device_id, ack.file_id, None if signed is None else signed.manifest_text
        )

    def _discard_quietly(self, device_id: str, file_id: str) -> None:
        try:
            self.staging.discard(device_id, file_id)
        except (OSError, StagingBusy):
            # The segment is committed (its `complete` still goes out); leftover staging is only disk
            # space, and the janitor or a later commit of the same transfer removes it.
            _LOG.exception("ingest: could not discard staging of committed %s/%s", device_id, file_id)

    def _finalize(self, signed: SignedManifest) -> Committed | FinalizeRejected:
        """fsync the staged bytes, then commit them (the service hashes, stores and records them)."""
        device_id, file_id = signed.manifest.device_id, signed.file_id
        try:
            # The staged file's hash was taken as the chunks arrived when this process saw them all in
            # one generation; else ``staged.sha256`` is None and commit_segment hashes the file.
            staged = self.staging.finish(device_id, file_id, signed.manifest.size)
        except FileNotFoundError:
            # A repeated fin racing the first one: that commit discarded the staging after succeeding.
            stored = self._stored(device_id, file_id)
            recording_id = None if stored is None else stored[0]
            if recording_id is not None:
                self._count(self._totals, "duplicates")
                return Committed(recording_id, duplicate=True)
            return FinalizeRejected("hash_mismatch", "staged bytes are missing; send them again")
        try:
            with session_scope(self.app) as session:
                result = commit_segment(
                    session,
                    self.store,
                    signed,
                    staged.path,
                    expected_device_id=device_id,
                    max_segment_bytes=self.settings.max_segment_bytes,
                    staged_sha256=staged.sha256,
                )
                recording_id, duplicate = result.recording.id, result.duplicate
        except HashMismatch as exc:
            # size_mismatch included: either way the staged bytes are wrong and the device must resend them.
            self._count(self._rejections, exc.code)
            # Chunks staged in order were not hashed one by one on arrival: find the damaged ones now, so
            # the device resends those only and learns their offsets (docs/protocol.md, "Chunk hashes").
            bad = self.staging.drop_bad_claims(device_id, file_id)
            if bad:
                self._count(self._rejections, "chunk_hash_mismatch", len(bad))
                offsets = ", ".join(str(e.offset) for e in bad[:20])
                _, held = self.staging.view_parts(device_id, file_id)
                return FinalizeRejected(
                    "chunk_hash_mismatch",
                    f"{len(bad)} chunk(s) did not match their SHA-256 (offsets {offsets}); send them again",
                    held=held,
                )
            return FinalizeRejected("hash_mismatch", f"{exc.code}: {exc.message_en}")
        except EvidenceRejected as exc:
            conflict = exc.code == "segment_conflict"
            if conflict:
                self._count(self._totals, "conflicts")
            return FinalizeRejected(exc.code, exc.message_en, conflict=conflict)
        if duplicate:
            self._count(self._totals, "duplicates")
        else:
            self._count(self._totals, "segments_committed")
            self._check_chain(signed)
        _LOG.info(
            "ingest: %s segment %d of %s as recording %d",
            "duplicate" if duplicate else "committed",
            signed.manifest.sequence,
            device_id,
            recording_id,
        )
        return Committed(recording_id, duplicate)

    def _check_chain(self, signed: SignedManifest) -> None:
        """Alert when this segment and a stored neighbour disagree on their link; the evidence stays."""
        manifest = signed.manifest
        try:
            with session_scope(self.app) as session:
                breaks = record_chain_breaks(session, signed)
        except Exception:
            _LOG.exception("ingest: chain check of %s/%d failed", manifest.device_id, manifest.sequence)
            return
        for text in breaks:
            self._count(self._totals, "chain_breaks")
            _LOG.error("ingest: ALERT hash chain break of device %s: %s", manifest.device_id, text)

    # -- what the uplink handlers use (server/ingest/handlers.py) -------------------------------

    def presence_repeated(self, msg: Presence) -> bool:
        """Whether this is the same presence as one handled less than a minute ago (nothing to do).

        A device says ``online`` once per connection; something that repeats it as a heartbeat would
        otherwise cost a database commit and a command re-send walk per message (docs/performance.md).
        """
        now = time.monotonic()
        key = (msg.state, msg.agent_version)
        with self._devices_lock:
            seen = self._presence_seen.get(msg.device_id)
            if seen is not None and seen[0] == key and now - seen[1] < PRESENCE_REPEAT_S:
                return True
            if len(self._presence_seen) > 100_000:
                self._presence_seen.clear()  # ids come from the network: bound the memory
            self._presence_seen[msg.device_id] = (key, now)
        return False

    def session(self) -> AbstractContextManager[Session]:
        """A transaction on the app's database (committed when the block ends without an error)."""
        return session_scope(self.app)

    def device(self, device_id: str) -> _DeviceInfo | None:
        """The registered device's key and status (cached briefly), or None."""
        return self._device(device_id)

    def note_rejection(
        self, code: str, message: str, device_id: str | None, ref_id: str | None, text: str | None = None
    ) -> None:
        """Count a refusal and write it to the security log (bounded under a flood)."""
        self._count(self._rejections, code)
        self._log_rejection(code, message, device_id, ref_id, text)

    def count_dropped(self, reason: str) -> None:
        """Count a message that is not answered and not worth a security-log row."""
        self._count(self._dropped, reason)

    def transfer(self, msg: FileMessage) -> list[Outgoing]:
        """Drive one segment transfer message through its receiver; the acks to publish."""
        return self._transfer(msg)

    def sync_broker(self) -> None:
        """Regenerate the broker's account files after a committed credential change."""
        with session_scope(self.app) as session:
            sync_broker(session, self.settings)
