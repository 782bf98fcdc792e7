"""A minimal ingest peer for agent tests: ``protocol.transfer.SegmentReceiver`` + in-memory staging.

It does not use the real server package: the agent is
tested against the protocol alone, so a bug in the server cannot hide one in the agent.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from protocol import topics
from protocol.downlink import encode_public_key, seal
from protocol.errors import ProtocolError
from protocol.manifest import SignedManifest
from protocol.messages import (
    DeviceHealth,
    FileAbort,
    FileChunk,
    FileFin,
    FileInit,
    FileStatusQuery,
    decode,
    encode,
    qos_of,
)
from protocol.ranges import RangeSet
from protocol.session import EventAck, EventAckState, SignedSessionEvent
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

__all__ = ["INGEST_KEY", "INGEST_PUBLIC_KEYS", "StubIngest", "wait_until"]

# The stub's ingest key (test-only, fixed): agent configs in tests pin its public half, and the stub
# signs every ack with it as the real server does (protocol.downlink).
INGEST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
INGEST_PUBLIC_RAW = INGEST_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
INGEST_PUBLIC_KEYS = (encode_public_key(INGEST_PUBLIC_RAW),)


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class _Staging:
    manifest: SignedManifest | None = None
    data: bytearray = field(default_factory=bytearray)
    held: RangeSet = field(default_factory=RangeSet)
    recording_id: int | None = None
    recording_sha256: str = ""


class StubIngest:
    """Answers a device's transfer messages exactly as ``SegmentReceiver`` says; keeps files in memory."""

    def __init__(self, url_port: int, device_keys: dict[str, bytes]) -> None:
        """``device_keys``: registered raw Ed25519 public keys by device id."""
        self.port = url_port
        self.device_keys = device_keys
        self.lock = threading.Lock()
        self.staging: dict[tuple[str, str], _Staging] = {}
        self.stored: dict[tuple[str, int], bytes] = {}  # (device, sequence) -> committed bytes
        self.commits: dict[tuple[str, int], int] = {}  # how many times each sequence was committed
        self.rejected: list[str] = []
        self.health: list[DeviceHealth] = []
        # Session events (JL-16) as received and verified, by event id; acked "stored" or "duplicate".
        self.session_events: dict[str, SignedSessionEvent] = {}
        self.session_event_deliveries = 0
        self.ack_session_events = threading.Event()
        self.ack_session_events.set()  # clear to leave session events unanswered
        self.chunks_staged = 0
        self.paused = threading.Event()  # while set, every incoming message is dropped unanswered
        self.hold_finalize = threading.Event()  # while set, fin is dropped (nothing completes)
        self._next_recording = 1
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="stub-ingest", protocol=mqtt.MQTTv311
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)

    def start(self) -> None:
        """Connect and subscribe to every device's uplink."""
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("stub ingest could not connect")

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        client.subscribe(topics.ingest_filter(), qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.paused.is_set():
            return
        if self._on_session_event(message):
            return
        try:
            msg = decode(message.topic, bytes(message.payload))
        except ProtocolError:
            return
        if isinstance(msg, DeviceHealth):
            self.health.append(msg)
            return
        if not isinstance(msg, FileInit | FileChunk | FileFin | FileStatusQuery | FileAbort):
            return
        if isinstance(msg, FileFin) and self.hold_finalize.is_set():
            return
        with self.lock:
            key = (msg.device_id, msg.file_id)
            st = self.staging.setdefault(key, _Staging())
            view = ReceiverView(
                device_id=msg.device_id,
                file_id=msg.file_id,
                device_key=self.device_keys.get(msg.device_id),
                manifest=st.manifest,
                held=st.held,
                recording_id=st.recording_id,
                recording_sha256=st.recording_sha256,
            )
            receiver = SegmentReceiver(view)
            self._perform(receiver, st, receiver.receive(msg))

    def _on_session_event(self, message: mqtt.MQTTMessage) -> bool:
        """Verify and store a session event, answer with an ``EventAck``; False if not one."""
        try:
            parsed = topics.parse(message.topic)
        except ProtocolError:
            return False
        if parsed.kind is not topics.TopicKind.SESSION_EVENT or parsed.event_id is None:
            return False
        with self.lock:
            self.session_event_deliveries += 1
            if not self.ack_session_events.is_set():
                return True
            try:
                signed = SignedSessionEvent.from_envelope(bytes(message.payload))
            except ProtocolError:
                return True
            key = self.device_keys.get(parsed.device_id)
            if key is None or not signed.verify(key) or signed.event.event_id != parsed.event_id:
                state = EventAckState.REJECTED
            elif parsed.event_id in self.session_events:
                state = EventAckState.DUPLICATE
            else:
                self.session_events[parsed.event_id] = signed
                state = EventAckState.STORED
        ack = EventAck(device_id=parsed.device_id, event_id=parsed.event_id, state=state)
        topic = topics.session_ack(parsed.device_id, parsed.event_id)
        self.client.publish(topic, seal(topic, ack.to_payload(), INGEST_KEY), qos=1)
        return True

    def _perform(self, receiver: SegmentReceiver, st: _Staging, actions: list[ReceiverAction]) -> None:
        for action in actions:
            if isinstance(action, Reply):
                if action.ack.code and action.ack.state.value in ("rejected", "conflict"):
                    self.rejected.append(action.ack.code)
                topic, payload = encode(action.ack)
                self.client.publish(topic, seal(topic, payload, INGEST_KEY), qos=qos_of(action.ack))
            elif isinstance(action, StoreManifest):
                st.manifest = action.signed
            elif isinstance(action, StageChunk):
                self._perform(
                    receiver, st, receiver.chunk_staged(action.chunk, self._stage(st, action.chunk))
                )
            elif isinstance(action, Finalize):
                self._perform(receiver, st, receiver.finalized(self._finalize(st, action.signed)))
            elif isinstance(action, DiscardStaging):
                st.data = bytearray()
                st.held = RangeSet()

    def _stage(self, st: _Staging, chunk: FileChunk) -> StageOutcome:
        self.chunks_staged += 1
        for lo, hi in st.held.overlaps(chunk.offset, chunk.end):
            if bytes(st.data[lo:hi]) != chunk.data[lo - chunk.offset : hi - chunk.offset]:
                return StageOutcome.DIFFERENT
        if st.held.covers(chunk.offset, chunk.end):
            return StageOutcome.SAME
        if len(st.data) < chunk.end:
            st.data.extend(b"\0" * (chunk.end - len(st.data)))
        st.data[chunk.offset : chunk.end] = chunk.data
        st.held = st.held.add(chunk.offset, chunk.end)
        return StageOutcome.WRITTEN

    def _finalize(self, st: _Staging, signed: SignedManifest) -> Committed | FinalizeRejected:
        data = bytes(st.data[: signed.manifest.size])
        if hashlib.sha256(data).hexdigest() != signed.manifest.sha256:
            return FinalizeRejected(code="hash_mismatch", message="staged bytes differ from the manifest")
        key = (signed.manifest.device_id, signed.manifest.sequence)
        if key in self.stored and self.stored[key] != data:
            return FinalizeRejected(
                code="sequence_conflict", message="another segment has this sequence", conflict=True
            )
        duplicate = key in self.stored
        self.stored[key] = data
        self.commits[key] = self.commits.get(key, 0) + 1
        st.recording_id = self._next_recording
        st.recording_sha256 = signed.manifest.sha256
        self._next_recording += 1
        return Committed(recording_id=st.recording_id, duplicate=duplicate)
