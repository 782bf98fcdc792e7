"""Segment transfer state machines for both ends, sans-IO (h11-style).

The device drives a :class:`SegmentSender`; the server drives a :class:`SegmentReceiver`. Neither
touches a socket, a file or a clock: they are fed events (acks, messages, the current time, the
outcome of I/O the caller did) and return the actions the caller must perform. Tests pair them over
an in-memory link with exact bytes.

Why the machines look like this (research/protocol.md):

* A broker PUBACK does not mean stored (Mosquitto drops queued QoS 1 messages past its queue limit),
  so the sender frees nothing on PUBACK: only an application-level ``complete`` ack, which the server
  sends after the object store and the database have committed, ends a transfer.
* Chunks are offset-addressed and hashed, so order and duplication do not matter (a shared
  subscription reorders, paho may resend after reconnect).
* EMQX's grammar has no status query, so a device that was offline for days could not resume; ours
  answers ``status`` with the byte ranges held, and the sender resumes from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from protocol.errors import LocalProtocolError
from protocol.manifest import SignedManifest
from protocol.messages import (
    AckState,
    FileAbort,
    FileChunk,
    FileFin,
    FileInit,
    FileStatusQuery,
    TransferAck,
)
from protocol.ranges import RangeSet

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_WINDOW",
    "RETRY_LATER_CODES",
    "Committed",
    "DiscardStaging",
    "Finalize",
    "FinalizeRejected",
    "ReceiverAction",
    "ReceiverView",
    "Reply",
    "SegmentReceiver",
    "SegmentSender",
    "SendChunk",
    "SendFin",
    "SendInit",
    "SendStatus",
    "SenderAction",
    "SenderState",
    "StageChunk",
    "StageOutcome",
    "StoreManifest",
    "TransferFailed",
    "TransferFinished",
]

DEFAULT_CHUNK_SIZE = 256 * 1024
DEFAULT_WINDOW = 8
# Refusals that say "not now", not "never": the device keeps the segment pending and tries again later.
RETRY_LATER_CODES = frozenset({"staging_quota"})


# --------------------------------------------------------------------------- sender (device side)


class SenderState(Enum):
    """Where a device's transfer of one segment stands."""

    IDLE = "idle"
    AWAIT_READY = "await_ready"  # init or status sent, waiting for the ranges the server holds
    SENDING = "sending"  # chunks in flight within the window
    AWAIT_COMPLETE = "await_complete"  # fin sent, waiting for the durable-commit ack
    COMPLETE = "complete"  # terminal: the server holds the segment durably
    FAILED = "failed"  # terminal: refused (conflict, bad signature…); the device keeps the file


@dataclass(frozen=True)
class SendInit:
    """Publish the init message (the signed manifest)."""


@dataclass(frozen=True)
class SendChunk:
    """Read ``length`` bytes at ``offset`` from the segment file and publish them."""

    offset: int
    length: int


@dataclass(frozen=True)
class SendFin:
    """Publish fin with the file's size and SHA-256."""


@dataclass(frozen=True)
class SendStatus:
    """Ask the server which ranges it holds."""


@dataclass(frozen=True)
class TransferFinished:
    """The server confirmed durable storage: the device may mark the segment stored."""

    recording_id: int | None
    duplicate: bool


@dataclass(frozen=True)
class TransferFailed:
    """The server refused the segment; keep it and raise the matter with a person."""

    state: AckState
    code: str
    message: str


SenderAction = SendInit | SendChunk | SendFin | SendStatus | TransferFinished | TransferFailed

_TERMINAL = frozenset({SenderState.COMPLETE, SenderState.FAILED})


@dataclass
class SegmentSender:
    """The device's side of one segment's transfer."""

    file_id: str
    size: int
    sha256: str  # the segment's own hash: a ``complete`` naming another is not about this segment
    chunk_size: int = DEFAULT_CHUNK_SIZE
    window: int = DEFAULT_WINDOW
    ack_timeout_s: float = 15.0
    max_chunk_retries: int = 5
    state: SenderState = SenderState.IDLE
    held: RangeSet = field(default_factory=RangeSet)
    in_flight: dict[int, float] = field(default_factory=dict)  # chunk offset -> time sent
    waiting_since: float = 0.0
    chunk_retries: dict[int, int] = field(default_factory=dict)
    chunks_sent: int = 0
    mismatched_completes: int = 0  # ``complete`` acks ignored because they named another sha256

    def __post_init__(self) -> None:
        if len(self.sha256) != 64:
            raise LocalProtocolError("the sender needs the segment's sha256")
        if self.size < 0 or self.chunk_size <= 0 or self.window <= 0:
            raise LocalProtocolError("size, chunk size and window must be positive")

    @property
    def done(self) -> bool:
        """Whether the transfer reached a terminal state."""
        return self.state in _TERMINAL

    def start(self, now: float) -> list[SenderAction]:
        """Begin (or begin again after a reconnect): init is idempotent and answered with held ranges."""
        if self.done:
            return []
        self.state = SenderState.AWAIT_READY
        self.in_flight.clear()
        self.waiting_since = now
        return [SendInit()]

    def resume(self, now: float) -> list[SenderAction]:
        """After a reconnect: ask what the server holds instead of resending everything."""
        if self.done:
            return []
        if self.state is SenderState.IDLE:
            return self.start(now)
        self.state = SenderState.AWAIT_READY
        self.in_flight.clear()
        self.waiting_since = now
        return [SendStatus()]

    def receive_ack(self, ack: TransferAck, now: float) -> list[SenderAction]:
        """Apply an acknowledgement; acks that do not fit the current state are stale and ignored."""
        if ack.file_id != self.file_id:
            raise LocalProtocolError(f"ack for {ack.file_id} given to the sender of {self.file_id}")
        handler = _SENDER_TRANSITIONS.get((self.state, ack.state))
        if handler is None:
            return []
        return handler(self, ack, now)

    def tick(self, now: float) -> list[SenderAction]:
        """Time passes: if an answer is overdue, ask for the server's status and resync from it."""
        if self.done or self.state is SenderState.IDLE:
            return []
        overdue = now - self.waiting_since > self.ack_timeout_s
        if self.state is SenderState.SENDING:
            overdue = any(now - sent > self.ack_timeout_s for sent in self.in_flight.values())
        if not overdue:
            return []
        return self.resume(now)

    # -- transitions -------------------------------------------------------------------------

    def _resync(self, ack: TransferAck, now: float) -> list[SenderAction]:
        self.held = ack.ranges if ack.ranges is not None else RangeSet()
        self.in_flight.clear()
        self.state = SenderState.SENDING
        return self._fill(now)

    def _chunk_held(self, ack: TransferAck, now: float) -> list[SenderAction]:
        if ack.offset is None or ack.offset not in self.in_flight:
            return []
        sent_length = min(self.chunk_size, self.size - ack.offset)
        self.in_flight.pop(ack.offset)
        self.held = self.held.add(ack.offset, ack.offset + sent_length)
        return self._fill(now)

    def _chunk_refused(self, ack: TransferAck, now: float) -> list[SenderAction]:
        if ack.offset is None:
            return self._fail(ack, now)
        if ack.offset not in self.in_flight:
            return []
        if ack.code in RETRY_LATER_CODES:
            return self._fail(ack, now)  # resending at once cannot help; the uploader retries later
        retries = self.chunk_retries.get(ack.offset, 0) + 1
        self.chunk_retries[ack.offset] = retries
        if retries > self.max_chunk_retries:
            return self._fail(ack, now)
        self.in_flight[ack.offset] = now
        self.chunks_sent += 1
        return [SendChunk(ack.offset, min(self.chunk_size, self.size - ack.offset))]

    def _complete(self, ack: TransferAck, now: float) -> list[SenderAction]:
        if ack.sha256 != self.sha256:
            # Finding 1: only a server that stored *these* bytes may let the device free them. Keep
            # waiting; the timeout asks for the status again.
            self.mismatched_completes += 1
            return []
        self.state = SenderState.COMPLETE
        self.in_flight.clear()
        return [TransferFinished(recording_id=ack.recording_id, duplicate=ack.code == "duplicate")]

    def _fail(self, ack: TransferAck, now: float) -> list[SenderAction]:
        self.state = SenderState.FAILED
        self.in_flight.clear()
        return [TransferFailed(state=ack.state, code=ack.code, message=ack.message)]

    def _unknown(self, ack: TransferAck, now: float) -> list[SenderAction]:
        if ack.offset is not None and ack.offset not in self.in_flight:
            return []  # a stale chunk ack: the first `no_manifest` of the window already restarted
        self.state = SenderState.IDLE
        return self.start(now)

    def _fill(self, now: float) -> list[SenderAction]:
        actions: list[SenderAction] = []
        for start, end in self.held.missing(self.size):
            # Chunks sit on a fixed grid so a resend names the same offset as the first try.
            offset = start - start % self.chunk_size
            while offset < end and len(self.in_flight) < self.window:
                if offset not in self.in_flight and not self.held.covers(
                    offset, min(offset + self.chunk_size, self.size)
                ):
                    self.in_flight[offset] = now
                    self.chunks_sent += 1
                    actions.append(SendChunk(offset, min(self.chunk_size, self.size - offset)))
                offset += self.chunk_size
            if len(self.in_flight) >= self.window:
                break
        if not self.in_flight and not self.held.missing(self.size):
            self.state = SenderState.AWAIT_COMPLETE
            self.waiting_since = now
            actions.append(SendFin())
        return actions


_SenderHandler = Callable[[SegmentSender, TransferAck, float], list[SenderAction]]
_S, _A = SenderState, AckState
_SENDER_TRANSITIONS: dict[tuple[SenderState, AckState], _SenderHandler] = {
    (_S.AWAIT_READY, _A.READY): SegmentSender._resync,
    (_S.AWAIT_READY, _A.COMPLETE): SegmentSender._complete,
    (_S.AWAIT_READY, _A.UNKNOWN): SegmentSender._unknown,
    (_S.AWAIT_READY, _A.REJECTED): SegmentSender._fail,
    (_S.AWAIT_READY, _A.CONFLICT): SegmentSender._fail,
    (_S.SENDING, _A.STORED): SegmentSender._chunk_held,
    (_S.SENDING, _A.DUPLICATE): SegmentSender._chunk_held,
    (_S.SENDING, _A.REJECTED): SegmentSender._chunk_refused,
    (_S.SENDING, _A.CONFLICT): SegmentSender._fail,
    (_S.SENDING, _A.READY): SegmentSender._resync,
    (_S.SENDING, _A.COMPLETE): SegmentSender._complete,
    # `no_manifest`: the server holds no accepted init for this transfer (cleaned, or never seen).
    (_S.SENDING, _A.UNKNOWN): SegmentSender._unknown,
    (_S.AWAIT_COMPLETE, _A.COMPLETE): SegmentSender._complete,
    (_S.AWAIT_COMPLETE, _A.INCOMPLETE): SegmentSender._resync,
    (_S.AWAIT_COMPLETE, _A.READY): SegmentSender._resync,
    (_S.AWAIT_COMPLETE, _A.UNKNOWN): SegmentSender._unknown,
    (_S.AWAIT_COMPLETE, _A.REJECTED): SegmentSender._fail,
    (_S.AWAIT_COMPLETE, _A.CONFLICT): SegmentSender._fail,
}


# ------------------------------------------------------------------------- receiver (server side)


@dataclass(frozen=True, kw_only=True)
class ReceiverView:
    """What the server knows of one transfer when a message for it arrives (loaded by the caller)."""

    device_id: str
    file_id: str
    device_key: bytes | None  # the device's registered Ed25519 public key; None = unknown device
    manifest: SignedManifest | None  # from an earlier init, if staged
    held: RangeSet = field(default_factory=RangeSet)
    recording_id: int | None = None  # set once the segment is durably stored
    recording_sha256: str = ""  # the stored segment's sha256 (named in ``complete``), with recording_id
    max_segment_bytes: int = 2 * 1024**3
    max_chunk_bytes: int = 1024 * 1024
    # Per-device staging quota (0 = none) and what the device's *other* transfers already stage.
    staging_quota_bytes: int = 0
    staged_elsewhere: int = 0


class StageOutcome(Enum):
    """What staging a chunk found."""

    WRITTEN = "written"  # new bytes, now staged
    SAME = "same"  # every byte was already staged, identical
    DIFFERENT = "different"  # some staged bytes differ: refused, nothing overwritten
    NO_MANIFEST = "no_manifest"  # the transfer has no accepted manifest (any more): nothing written
    BAD_HASH = "bad_hash"  # the bytes do not hash to the chunk's claimed SHA-256: nothing written


@dataclass(frozen=True)
class Reply:
    """Publish this ack to the device."""

    ack: TransferAck


@dataclass(frozen=True)
class StoreManifest:
    """Keep the verified signed manifest with the transfer's staging."""

    signed: SignedManifest


@dataclass(frozen=True)
class StageChunk:
    """Write the chunk into staging unless its range is held; compare overlaps; report the outcome."""

    chunk: FileChunk


@dataclass(frozen=True)
class Finalize:
    """Verify the staged file's hash, check the chain, store the object, commit the row; report back."""

    signed: SignedManifest


@dataclass(frozen=True)
class DiscardStaging:
    """Drop this transfer's staged bytes (never stored evidence)."""


ReceiverAction = Reply | StoreManifest | StageChunk | Finalize | DiscardStaging


@dataclass(frozen=True)
class Committed:
    """Finalize succeeded: the object and the row are durable."""

    recording_id: int
    duplicate: bool = False


@dataclass(frozen=True)
class FinalizeRejected:
    """Finalize refused the segment; ``hash_mismatch`` means the staged bytes were wrong, not the device."""

    code: str
    message: str
    conflict: bool = False
    # ``chunk_hash_mismatch``: the byte ranges still held once the chunks that do not hash to their
    # claimed SHA-256 were dropped; the device resends only what is missing.
    held: RangeSet | None = None


_NO_MANIFEST_MESSAGE = "no accepted init for this transfer; send init again"
_QUOTA_MESSAGE = "the device's staging quota is full; keep the segment and retry later"


class SegmentReceiver:
    """The server's side of one transfer, rebuilt from a :class:`ReceiverView` for each message."""

    def __init__(self, view: ReceiverView) -> None:
        self.view = view

    def _ack(
        self,
        state: AckState,
        *,
        offset: int | None = None,
        length: int | None = None,
        ranges: RangeSet | None = None,
        code: str = "",
        message: str = "",
        recording_id: int | None = None,
        sha256: str = "",
    ) -> Reply:
        return Reply(
            TransferAck(
                device_id=self.view.device_id,
                file_id=self.view.file_id,
                state=state,
                offset=offset,
                length=length,
                ranges=ranges,
                code=code,
                message=message,
                recording_id=recording_id,
                sha256=sha256,
            )
        )

    def _chunk_ack(self, state: AckState, chunk: FileChunk, code: str = "", message: str = "") -> Reply:
        return self._ack(state, offset=chunk.offset, length=len(chunk.data), code=code, message=message)

    def _complete(self, duplicate: bool = True) -> list[ReceiverAction]:
        return [
            self._ack(
                AckState.COMPLETE,
                recording_id=self.view.recording_id,
                code="duplicate" if duplicate else "",
                sha256=self.view.recording_sha256,
            )
        ]

    def receive(
        self, msg: FileInit | FileChunk | FileFin | FileStatusQuery | FileAbort
    ) -> list[ReceiverAction]:
        """Decide what to do with one message from the device."""
        if (msg.device_id, msg.file_id) != (self.view.device_id, self.view.file_id):
            raise LocalProtocolError("message given to the receiver of another transfer")
        if isinstance(msg, FileInit):
            return self._init(msg)
        if isinstance(msg, FileChunk):
            return self._chunk(msg)
        if isinstance(msg, FileFin):
            return self._fin(msg)
        if isinstance(msg, FileStatusQuery):
            return self._status()
        return self._abort()

    def _init(self, msg: FileInit) -> list[ReceiverAction]:
        if self.view.recording_id is not None:
            return self._complete()
        if self.view.device_key is None:
            return [self._ack(AckState.REJECTED, code="unknown_device", message="device is not registered")]
        if not msg.signed.verify(self.view.device_key):
            return [
                self._ack(
                    AckState.REJECTED,
                    code="bad_signature",
                    message="manifest signature does not verify with the device's registered key",
                )
            ]
        if msg.signed.manifest.size > self.view.max_segment_bytes:
            return [self._ack(AckState.REJECTED, code="too_large", message="segment exceeds the size limit")]
        quota = self.view.staging_quota_bytes
        if quota and self.view.staged_elsewhere + msg.signed.manifest.size > quota:
            # Reserve the whole segment up front, so an accepted transfer is never stuck half-way.
            return [self._ack(AckState.REJECTED, code="staging_quota", message=_QUOTA_MESSAGE)]
        return [StoreManifest(msg.signed), self._ack(AckState.READY, ranges=self.view.held)]

    def _chunk(self, chunk: FileChunk) -> list[ReceiverAction]:
        if self.view.recording_id is not None:
            return [self._chunk_ack(AckState.DUPLICATE, chunk)]
        if self.view.device_key is None:
            return [
                self._chunk_ack(
                    AckState.REJECTED, chunk, code="unknown_device", message="device is not registered"
                )
            ]
        if len(chunk.data) > self.view.max_chunk_bytes:
            return [
                self._chunk_ack(
                    AckState.REJECTED, chunk, code="chunk_too_large", message="chunk exceeds the limit"
                )
            ]
        if self.view.manifest is None:
            # No byte is staged for a transfer whose signed init was not accepted (finding: a chunk
            # flood for made-up file ids filled the staging disk). The device answers with init.
            return [
                self._chunk_ack(AckState.UNKNOWN, chunk, code="no_manifest", message=_NO_MANIFEST_MESSAGE)
            ]
        if chunk.end > self.view.manifest.manifest.size:
            return [
                self._chunk_ack(
                    AckState.REJECTED, chunk, code="out_of_bounds", message="chunk past end of file"
                )
            ]
        quota, held = self.view.staging_quota_bytes, self.view.held
        if (
            quota
            and not held.covers(chunk.offset, chunk.end)
            and self.view.staged_elsewhere + held.total + len(chunk.data) > quota
        ):
            # Only when transfers raced past their init-time reservation: retry later, nothing lost.
            return [self._chunk_ack(AckState.REJECTED, chunk, code="staging_quota", message=_QUOTA_MESSAGE)]
        return [StageChunk(chunk)]

    def chunk_staged(self, chunk: FileChunk, outcome: StageOutcome) -> list[ReceiverAction]:
        """Report the outcome of :class:`StageChunk`."""
        if outcome is StageOutcome.WRITTEN:
            return [self._chunk_ack(AckState.STORED, chunk)]
        if outcome is StageOutcome.SAME:
            return [self._chunk_ack(AckState.DUPLICATE, chunk)]
        if outcome is StageOutcome.BAD_HASH:
            return [
                self._chunk_ack(
                    AckState.REJECTED,
                    chunk,
                    code="chunk_hash_mismatch",
                    message=f"chunk at offset {chunk.offset} does not match its SHA-256; send it again",
                )
            ]
        if outcome is StageOutcome.NO_MANIFEST:
            return [
                self._chunk_ack(AckState.UNKNOWN, chunk, code="no_manifest", message=_NO_MANIFEST_MESSAGE)
            ]
        return [
            self._chunk_ack(
                AckState.CONFLICT,
                chunk,
                code="chunk_conflict",
                message="different bytes for an offset already held; nothing overwritten",
            )
        ]

    def _fin(self, fin: FileFin) -> list[ReceiverAction]:
        if self.view.recording_id is not None:
            return self._complete()
        signed = self.view.manifest
        if signed is None:
            return [self._ack(AckState.UNKNOWN, code="no_init", message="init not received; send init again")]
        if (fin.size, fin.sha256) != (signed.manifest.size, signed.manifest.sha256):
            return [
                self._ack(AckState.REJECTED, code="fin_mismatch", message="fin differs from the manifest")
            ]
        if self.view.held.missing(fin.size):
            return [self._ack(AckState.INCOMPLETE, ranges=self.view.held)]
        return [Finalize(signed)]

    def finalized(self, outcome: Committed | FinalizeRejected) -> list[ReceiverAction]:
        """Report the outcome of :class:`Finalize`."""
        if isinstance(outcome, Committed):
            if self.view.manifest is None:
                raise LocalProtocolError("finalized without the manifest that was finalized")
            return [
                self._ack(
                    AckState.COMPLETE,
                    recording_id=outcome.recording_id,
                    code="duplicate" if outcome.duplicate else "",
                    sha256=self.view.manifest.manifest.sha256,
                )
            ]
        if outcome.code == "chunk_hash_mismatch" and outcome.held is not None:
            # Chunks whose bytes did not hash to their claim were dropped (lazy check): resend those only.
            return [
                self._ack(
                    AckState.INCOMPLETE, ranges=outcome.held, code=outcome.code, message=outcome.message
                )
            ]
        if outcome.code == "hash_mismatch":
            # Staged bytes do not hash to the manifest: start the bytes over, keep the manifest.
            return [
                DiscardStaging(),
                self._ack(AckState.INCOMPLETE, ranges=RangeSet(), code=outcome.code, message=outcome.message),
            ]
        state = AckState.CONFLICT if outcome.conflict else AckState.REJECTED
        return [self._ack(state, code=outcome.code, message=outcome.message)]

    def _status(self) -> list[ReceiverAction]:
        if self.view.recording_id is not None:
            return self._complete()
        if self.view.manifest is None:
            return [self._ack(AckState.UNKNOWN)]
        return [self._ack(AckState.READY, ranges=self.view.held)]

    def _abort(self) -> list[ReceiverAction]:
        if self.view.recording_id is not None:
            return []  # stored evidence is never discarded, whatever the device says
        return [DiscardStaging()]
