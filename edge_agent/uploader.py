"""Uploads journalled segments, oldest first, each driven by a sans-IO ``SegmentSender``.

Threading: paho's network thread only puts acks and "connected" events on a queue; the worker thread
alone owns the senders and the open files, so no sender is ever touched by two threads.

Scheduling: up to ``max_active`` transfers *send* at once. A transfer whose every chunk the server
holds and which waits only for fin's ``complete`` (the server is committing it: fsync, object store,
database) no longer holds one of those slots, so the next segment's init and chunks go out during the
commit instead of after it. Up to ``max_awaiting`` transfers may wait so; each keeps its file open and
its segment pending until its own signed ``complete`` arrives, exactly as before, and a ``complete``
is never taken for a segment it does not name (finding 1). Segments therefore may be committed out of
sequence order, as they already could with two active transfers: the server checks each segment's
chain link against both stored neighbours whenever either arrives (JL-23), not in arrival order.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from edge_agent.config import AgentConfig, ConfigError
from edge_agent.outbox import Outbox, OutboxSegment
from protocol.messages import (
    AckState,
    FileChunk,
    FileFin,
    FileInit,
    FileStatusQuery,
    Message,
    TransferAck,
)
from protocol.transfer import (
    RETRY_LATER_CODES,
    SegmentSender,
    SendChunk,
    SenderAction,
    SenderState,
    SendFin,
    SendInit,
    SendStatus,
    TransferFailed,
    TransferFinished,
)
from zfjl_common.fsutil import sha256_fd

if TYPE_CHECKING:
    from edge_agent.effective_config import EffectiveConfig

__all__ = ["Link", "Uploader", "UploaderStats", "require_pinned_ingest_keys"]

logger = logging.getLogger(__name__)

_POLL_S = 0.25  # timeouts and the outbox are checked at least this often
# A segment whose file is missing or altered is retried this often (and reported each time).
_BLOCKED_RETRY_S = 60.0
# How often an idle uploader looks for new segments (a finished transfer triggers a look at once).
_OUTBOX_POLL_S = 0.5


# Refusals about the device's registration or the server's room, not the segment: retried after
# _BLOCKED_RETRY_S (staging_quota: the server's per-device staging is full for now).
RETRYABLE_REFUSALS = frozenset({"unknown_device", "device_inactive"}) | RETRY_LATER_CODES


def require_pinned_ingest_keys(config: AgentConfig) -> None:
    """Refuse (:class:`ConfigError`) a configuration that pins no ingest public key (finding 1)."""
    if not config.ingest_public_keys:
        raise ConfigError(
            "no ingest_public_keys pinned in the agent configuration: uploading is refused because "
            "the server's acks cannot be verified; provision the device again with zfjl-fw provision "
            "or add the server's ingest public key (docs/agent.md)"
        )


class Link(Protocol):
    """What the uploader needs from the MQTT connection (``MqttLink`` fits)."""

    @property
    def connected(self) -> bool: ...

    def publish(self, msg: Message) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class UploaderStats:
    """Counters for status and health."""

    active: int  # every open transfer, sending or awaiting its complete
    awaiting_complete: int  # of those, the ones whose bytes are all held, waiting for the commit
    bytes_sent: int
    chunks_sent: int
    chunks_resent: int
    segments_completed: int
    segments_failed: int
    blocked: int


@dataclass
class _Transfer:
    segment: OutboxSegment
    sender: SegmentSender
    fd: int
    sent_offsets: set[int] = field(default_factory=set)
    cap_bps: int = 0  # bandwidth cap fixed when the transfer started; 0 = none
    # Each chunk's SHA-256 taken when the recorder sealed the segment, on this transfer's chunk grid;
    # None: hash each chunk as it is sent (no digests stored, or a server answer showed them untrusted).
    chunk_digests: list[bytes] | None = None

    @property
    def awaiting_complete(self) -> bool:
        """Every byte sent and held, fin sent: only the server's commit is outstanding (no slot held)."""
        return self.sender.state is SenderState.AWAIT_COMPLETE


class _Connected:
    """Event: the link (re)connected."""


_Event = TransferAck | _Connected


class Uploader:
    """Keeps up to ``max_active`` segment transfers sending (and up to ``max_awaiting`` more waiting for
    their ``complete``) until the outbox has nothing pending."""

    def __init__(
        self,
        outbox: Outbox,
        link: Link,
        config: AgentConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_active: int = 2,
        max_awaiting: int | None = None,
        poll_interval: float = _POLL_S,
        retry_blocked_s: float = _BLOCKED_RETRY_S,
        policy: Callable[[], EffectiveConfig] | None = None,
        wall_clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        """Prepare; call :meth:`start` to run the worker thread (or drive :meth:`step` in tests).

        Refuses (:class:`ConfigError`) when no ingest public key is pinned: without one no ack can be
        verified, and an unverified ``complete`` must never mark evidence stored (finding 1).
        ``max_awaiting`` (default: ``max_active``) bounds the transfers waiting only for their
        ``complete`` besides the ``max_active`` sending ones; 0 keeps the old one-slot-until-complete.
        """
        require_pinned_ingest_keys(config)
        if max_active < 1 or (max_awaiting is not None and max_awaiting < 0):
            raise ValueError("max_active must be at least 1 and max_awaiting not negative")
        self.outbox = outbox
        self.link = link
        self.config = config
        self.clock = clock
        self.max_active = max_active
        # Bounded so a server that stops answering fins cannot make the device open every segment it
        # holds (file descriptors, and staging reserved per init on the server: docs/protocol.md).
        self.max_awaiting = max_active if max_awaiting is None else max_awaiting
        self.poll_interval = poll_interval
        self.retry_blocked_s = retry_blocked_s
        # Fleet upload window and bandwidth cap (LiveConfig.current), read as each new transfer starts.
        self.policy = policy
        self.wall_clock = wall_clock  # local time of day, for the upload window
        self._paced_until = 0.0
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        # Set whenever an ack or a reconnect is queued: the worker reacts at once instead of polling, so
        # a window of W chunks is refilled per round trip, not per poll interval.
        self._wake = threading.Event()
        self._active: dict[str, _Transfer] = {}
        self._blocked: dict[int, float] = {}
        # Segments refused `staging_quota` while others of this device awaited their commit: the
        # server frees their staging as it commits them, so these are retried at the next complete
        # instead of a minute later (up to 2 × max_active segments may be staged now).
        self._retry_at_commit: set[int] = set()
        # Segments whose file was found not to match its signed hash: checked in full before any resend.
        self._suspect: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._next_outbox_poll = 0.0
        self.bytes_sent = 0
        self.chunks_sent = 0
        self.chunks_resent = 0
        self.segments_completed = 0
        self.segments_failed = 0

    # -- called from other threads --------------------------------------------------------------

    def on_ack(self, ack: TransferAck) -> None:
        """Queue an ack for the worker (called from paho's network thread)."""
        self._events.put(ack)
        self._wake.set()

    def on_connected(self) -> None:
        """Queue a resync of active transfers (called from paho's network thread)."""
        self._events.put(_Connected())
        self._wake.set()

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker and close open files; unfinished transfers resume at the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("uploader thread did not stop within %.1f s", timeout)
                return
            self._thread = None
        for transfer in self._active.values():
            os.close(transfer.fd)
        self._active.clear()

    def drain(self, timeout: float, abort: threading.Event | None = None) -> bool:
        """Wait until nothing is pending in the outbox (failed ones do not count); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.outbox.stats().segments_pending == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (abort is not None and abort.is_set()):
                return False
            with self._idle:
                self._idle.wait(min(remaining, 0.2))

    def stats(self) -> UploaderStats:
        """Current counters."""
        return UploaderStats(
            active=len(self._active),
            awaiting_complete=sum(1 for t in self._active.values() if t.awaiting_complete),
            bytes_sent=self.bytes_sent,
            chunks_sent=self.chunks_sent,
            chunks_resent=self.chunks_resent,
            segments_completed=self.segments_completed,
            segments_failed=self.segments_failed,
            blocked=len(self._blocked),
        )

    # -- worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                # Never let one bad segment end uploading for all others; the outbox keeps everything.
                logger.exception("uploader step failed")
                self._stop.wait(1.0)
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def step(self) -> None:
        """One round: apply queued events, start new transfers, check timeouts (worker thread only)."""
        now = self.clock()
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, _Connected):
                for transfer in list(self._active.values()):
                    self._execute(transfer, transfer.sender.resume(now))
            else:
                transfer_or_none = self._active.get(event.file_id)
                if transfer_or_none is None:
                    logger.debug("ack %s for inactive transfer %s ignored", event.state.value, event.file_id)
                    continue
                sender = transfer_or_none.sender
                if self._file_altered(transfer_or_none, event):
                    continue
                ignored = sender.mismatched_completes
                self._execute(transfer_or_none, sender.receive_ack(event, now))
                if sender.mismatched_completes != ignored:
                    logger.warning(
                        "segment %d: complete ack names sha256 %s, not this segment's; ignored, kept",
                        transfer_or_none.segment.sequence,
                        event.sha256[:16],
                    )
        if not self.link.connected:
            # Timeouts would only produce status queries nobody can receive; resume on reconnect.
            return
        self._start_new(now)
        for transfer in list(self._active.values()):
            self._execute(transfer, transfer.sender.tick(now))

    def _sending(self) -> int:
        """Transfers holding a sending slot: all but those waiting only for their ``complete``."""
        return sum(1 for t in self._active.values() if not t.awaiting_complete)

    def _room(self) -> bool:
        """Whether one more transfer may start: a sending slot free and the total bound not reached."""
        return self._sending() < self.max_active and len(self._active) < self.max_active + self.max_awaiting

    def _start_new(self, now: float) -> None:
        if not self._room() or now < self._next_outbox_poll:
            return
        self._next_outbox_poll = now + _OUTBOX_POLL_S
        effective = self.policy() if self.policy is not None else None
        if effective is not None and not effective.upload_allowed(self.wall_clock()):
            # JL-17: segments wait in the outbox; the health report still shows their age.
            return
        cap_bps = effective.bandwidth_cap_kbps * 1000 if effective is not None else 0
        active_seqs = {t.segment.sequence for t in self._active.values()}
        wanted = self.max_active + len(self._active) + len(self._blocked)
        for segment in self.outbox.pending(limit=wanted):
            if not self._room():
                break
            if segment.sequence in active_seqs:
                continue
            blocked_at = self._blocked.get(segment.sequence)
            if blocked_at is not None and now - blocked_at < self.retry_blocked_s:
                continue
            fd = self._open_checked(segment)
            if fd is None:
                self._blocked[segment.sequence] = now
                continue
            self._blocked.pop(segment.sequence, None)
            # Paced chunks leave late: a capped transfer waits that much longer for its acks.
            pacing_s = self.config.window * self.config.chunk_bytes * 8 / cap_bps if cap_bps else 0.0
            sender = SegmentSender(
                file_id=segment.file_id,
                size=segment.size,
                sha256=segment.sha256,
                chunk_size=self.config.chunk_bytes,
                window=self.config.window,
                ack_timeout_s=self.config.ack_timeout_s + pacing_s,
            )
            transfer = _Transfer(
                segment=segment,
                sender=sender,
                fd=fd,
                cap_bps=cap_bps,
                chunk_digests=self.outbox.chunk_digests(segment.sequence, self.config.chunk_bytes),
            )
            self._active[segment.file_id] = transfer
            logger.info("uploading segment %d (%d bytes)", segment.sequence, segment.size)
            self._execute(transfer, sender.start(now))

    def _open_checked(self, segment: OutboxSegment) -> int | None:
        """Open the segment file if it still is what was signed; else report and skip it.

        At most one pass over each byte per upload: the chunks' own SHA-256 (the topic needs it), and
        none at all when the recorder stored them at seal; the server checks the whole file against the
        signed hash before it stores anything. So a file is hashed in full here only when its size
        changed or the server already found it wrong (:meth:`_file_altered`); an altered file is then
        reported here instead of being sent again.
        """
        try:
            fd = os.open(segment.path, os.O_RDONLY)
        except OSError as exc:
            logger.error("segment %d: cannot open %s: %s", segment.sequence, segment.path, exc.strerror)
            return None
        if os.fstat(fd).st_size == segment.size and segment.sequence not in self._suspect:
            return fd
        size, sha256 = sha256_fd(fd)
        if size != segment.size or sha256 != segment.sha256:
            os.close(fd)
            self._suspect.add(segment.sequence)
            logger.error(
                "segment %d: file %s no longer matches its signed manifest; not uploaded, kept",
                segment.sequence,
                segment.path,
            )
            return None
        self._suspect.discard(segment.sequence)
        return fd

    def _file_altered(self, transfer: _Transfer, ack: TransferAck) -> bool:
        """After the server found the staged bytes wrong, check the file; True (and blocked) if it changed.

        ``hash_mismatch`` means the bytes the server holds do not hash to the signed manifest: either they
        were damaged on the way or in staging (resend), or the file here changed since it was signed (a
        resend would fail the same way forever, so the segment is kept and reported instead).
        ``chunk_hash_mismatch`` (at fin) means some chunks did not hash to the SHA-256 their topic named.
        With digests from the seal, an altered file looks exactly so (old claims, new bytes): it is
        checked the same way. If the file is intact the stored digests are not trusted any more: they
        are dropped and every chunk sent again is hashed, so neither can make the resends go on forever.
        """
        if not (ack.state is AckState.INCOMPLETE and ack.code in ("hash_mismatch", "chunk_hash_mismatch")):
            return False
        segment = transfer.segment
        size, sha256 = sha256_fd(transfer.fd)
        if size == segment.size and sha256 == segment.sha256:
            if ack.code == "chunk_hash_mismatch" and transfer.chunk_digests is not None:
                logger.warning(
                    "segment %d: the server found chunks not matching the digests stored at seal, the "
                    "file is intact; the digests are dropped and each chunk is hashed as it is sent",
                    segment.sequence,
                )
                transfer.chunk_digests = None
                self.outbox.forget_chunk_digests(segment.sequence)
            return False
        self._suspect.add(segment.sequence)
        logger.error(
            "segment %d: the server found its bytes wrong and file %s no longer matches its signed "
            "manifest; not uploaded again, kept",
            segment.sequence,
            segment.path,
        )
        self._drop(transfer, block=True)
        return True

    def _execute(self, transfer: _Transfer, actions: list[SenderAction]) -> None:
        seg = transfer.segment
        device_id, file_id = seg.device_id, seg.file_id
        for action in actions:
            if isinstance(action, SendChunk):
                self._pace(transfer.cap_bps, action.length)
                data = os.pread(transfer.fd, action.length, action.offset)
                if len(data) != action.length:
                    logger.error("segment %d: short read at offset %d", seg.sequence, action.offset)
                    self._drop(transfer, block=True)
                    return
                claim = self._sealed_claim(transfer, action)
                if claim:
                    # The digest from the seal is the topic's claim: nothing is hashed here. The server
                    # checks claims lazily and the whole file against the signed manifest (JL-6).
                    chunk = FileChunk(
                        device_id=device_id,
                        file_id=file_id,
                        offset=action.offset,
                        data=data,
                        sha256=claim,
                        hash_checked=False,
                    )
                else:
                    chunk = FileChunk(device_id=device_id, file_id=file_id, offset=action.offset, data=data)
                self.link.publish(chunk)
                self.chunks_sent += 1
                self.bytes_sent += len(data)
                if action.offset in transfer.sent_offsets:
                    self.chunks_resent += 1
                transfer.sent_offsets.add(action.offset)
            elif isinstance(action, SendInit):
                self.link.publish(FileInit(device_id=device_id, file_id=file_id, signed=seg.signed))
            elif isinstance(action, SendFin):
                self.link.publish(
                    FileFin(device_id=device_id, file_id=file_id, size=seg.size, sha256=seg.sha256)
                )
                # The transfer now waits only for the server's commit and gives up its sending slot:
                # look for the next segment at once (the segment itself stays pending until complete).
                self._next_outbox_poll = 0.0
            elif isinstance(action, SendStatus):
                self.link.publish(FileStatusQuery(device_id=device_id, file_id=file_id))
            elif isinstance(action, TransferFinished):
                # Only the server's "complete" ack (durably stored) marks the segment; never a PUBACK.
                self.outbox.mark_complete(seg.sequence, action.recording_id)
                self.segments_completed += 1
                logger.info(
                    "segment %d stored by the server (recording %s%s)",
                    seg.sequence,
                    action.recording_id,
                    ", duplicate" if action.duplicate else "",
                )
                self._drop(transfer)
                for sequence in self._retry_at_commit:
                    self._blocked.pop(sequence, None)
                self._retry_at_commit.clear()
            elif isinstance(action, TransferFailed) and action.code in RETRYABLE_REFUSALS:
                # Not a verdict on the evidence: the device is not (yet, or no longer) registered or
                # active. Keep it pending and try again later instead of failing it for good.
                logger.warning(
                    "segment %d not accepted yet (%s: %s); retrying in %.0f s",
                    seg.sequence,
                    action.code,
                    action.message,
                    self.retry_blocked_s,
                )
                if action.code in RETRY_LATER_CODES and any(
                    t.awaiting_complete for t in self._active.values() if t is not transfer
                ):
                    self._retry_at_commit.add(seg.sequence)
                self._drop(transfer, block=True)
            elif isinstance(action, TransferFailed):
                self.outbox.mark_failed(seg.sequence, action.code, action.message)
                self.segments_failed += 1
                logger.error(
                    "segment %d REFUSED by the server (%s %s: %s); file kept (JL-19), needs attention",
                    seg.sequence,
                    action.state.value,
                    action.code,
                    action.message,
                )
                self._drop(transfer)

    def _sealed_claim(self, transfer: _Transfer, action: SendChunk) -> str:
        """Hex SHA-256 stored at seal for a chunk's FIRST send in this transfer; "" to hash it instead.

        A resend hashes the bytes it sends: if the first claim was refused, the claim is what is in
        doubt, and a chunk off the grid the digests were made for has none.
        """
        digests = transfer.chunk_digests
        chunk_bytes = self.config.chunk_bytes
        if digests is None or action.offset in transfer.sent_offsets or action.offset % chunk_bytes:
            return ""
        index = action.offset // chunk_bytes
        if index >= len(digests) or action.length != min(chunk_bytes, transfer.segment.size - action.offset):
            return ""
        return digests[index].hex()

    def _pace(self, cap_bps: int, length: int) -> None:
        """Token bucket over all capped transfers: wait until ``length`` more bytes fit the cap."""
        if cap_bps <= 0:
            return
        now = self.clock()
        if self._paced_until > now:
            self._stop.wait(self._paced_until - now)
        self._paced_until = max(now, self._paced_until) + length * 8 / cap_bps

    def _drop(self, transfer: _Transfer, *, block: bool = False) -> None:
        if self._active.pop(transfer.segment.file_id, None) is not None:
            os.close(transfer.fd)
        if block:
            self._blocked[transfer.segment.sequence] = self.clock()
        self._next_outbox_poll = 0.0  # a slot is free: look for the next segment right away
        with self._idle:
            self._idle.notify_all()
