"""Protocol v1 messages as frozen dataclasses, with pure ``encode`` and ``decode``.

``encode(msg) -> (topic, payload)`` and ``decode(topic, payload) -> msg`` are the only ways a message
becomes bytes or comes back from them. Every QoS and retain flag is part of the protocol and is given
by :func:`qos_of` / :func:`retain_of`, so agent and server cannot disagree on it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import topics
from protocol.errors import ChunkHashMismatch, LocalProtocolError, RemoteProtocolError
from protocol.manifest import SignedManifest
from protocol.ranges import RangeSet
from protocol.topics import TopicKind

__all__ = [
    "AckState",
    "ChainHead",
    "DeviceHealth",
    "FileAbort",
    "FileChunk",
    "FileFin",
    "FileInit",
    "FileStatusQuery",
    "Message",
    "Presence",
    "PresenceState",
    "TransferAck",
    "decode",
    "encode",
    "qos_of",
    "retain_of",
]

MAX_JSON_PAYLOAD = 64 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class FileInit:
    """Start (or restart) the transfer of one segment: carries its signed manifest."""

    device_id: str
    file_id: str
    signed: SignedManifest

    def __post_init__(self) -> None:
        if self.signed.manifest.device_id != self.device_id:
            raise RemoteProtocolError("manifest device id differs from the topic's")
        if self.signed.file_id != self.file_id:
            raise RemoteProtocolError("file id is not derived from this manifest")


@dataclass(frozen=True, kw_only=True)
class FileChunk:
    """Bytes of a segment at an offset; the topic names their SHA-256.

    Built with ``hash_checked=False`` (the server's :func:`decode` with ``check_chunk_hash=False``), the
    topic's SHA-256 is only a *claim*: the receiver checks it lazily, when the bytes are not covered by
    another hash (docs/protocol.md, "Chunk hashes"), so each byte is hashed once on arrival.
    """

    device_id: str
    file_id: str
    offset: int
    data: bytes = field(repr=False)
    sha256: str = ""
    hash_checked: bool = field(default=True, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())
            object.__setattr__(self, "hash_checked", True)
        elif self.hash_checked and not self.hash_matches():
            raise ChunkHashMismatch(self.device_id, self.file_id, self.offset)
        if not self.data:
            raise RemoteProtocolError("empty chunk")
        if self.offset < 0:
            raise RemoteProtocolError("negative offset")

    @property
    def end(self) -> int:
        """Offset just past the chunk."""
        return self.offset + len(self.data)

    def hash_matches(self) -> bool:
        """Whether the bytes hash to the SHA-256 the topic names (one pass over the chunk)."""
        return hashlib.sha256(self.data).hexdigest() == self.sha256


@dataclass(frozen=True, kw_only=True)
class FileFin:
    """End of transfer: the whole file's size and SHA-256. Repeating it is safe."""

    device_id: str
    file_id: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class FileAbort:
    """The device gives up this transfer (e.g. the file was found corrupt on the device)."""

    device_id: str
    file_id: str


@dataclass(frozen=True, kw_only=True)
class FileStatusQuery:
    """Which byte ranges of this transfer does the server hold? (EMQX has no such query.)"""

    device_id: str
    file_id: str


class AckState(Enum):
    """What an acknowledgement says. Only ``COMPLETE`` lets a device free its copy."""

    READY = "ready"  # init accepted; ``ranges`` = what is already held
    STORED = "stored"  # one chunk staged (flow control; not yet durable evidence)
    DUPLICATE = "duplicate"  # chunk already held with the same bytes
    INCOMPLETE = "incomplete"  # fin arrived but ``ranges`` do not cover the file
    COMPLETE = "complete"  # object store and database committed: the device may free the file
    CONFLICT = "conflict"  # different bytes for held offsets, or another manifest for this sequence
    REJECTED = "rejected"  # refused: ``code`` says why (bad signature, unknown device, bad chunk…)
    UNKNOWN = "unknown"  # status query for a transfer the server has never seen


@dataclass(frozen=True, kw_only=True)
class TransferAck:
    """The server's application-level acknowledgement, sent only after the state it names is durable."""

    device_id: str
    file_id: str
    state: AckState
    offset: int | None = None
    length: int | None = None
    ranges: RangeSet | None = None
    code: str = ""
    message: str = ""
    recording_id: int | None = None
    # ``complete`` names the SHA-256 of the segment the server stored: the device frees nothing unless it
    # equals its own (a genuine ack for another file id cannot stand in for this one).
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.sha256 and not _SHA256.fullmatch(self.sha256):
            raise RemoteProtocolError("ack sha256 must be 64 lowercase hex characters")
        if self.state is AckState.COMPLETE and not self.sha256:
            raise RemoteProtocolError("a complete ack must name the stored segment's sha256")


class PresenceState(Enum):
    """Retained device presence."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, kw_only=True)
class Presence:
    """A device's retained presence; the ``offline`` one is also its last will."""

    device_id: str
    state: PresenceState
    at: str = ""
    agent_version: str = ""


CHAIN_HEAD_DOMAIN = b"zfjl/v1 chain head\n"


@dataclass(frozen=True, kw_only=True)
class ChainHead:
    """The newest segment a device has journalled (sequence + manifest hash), signed with its device key.

    Health carries it so the server can tell "not uploaded yet" from "stored once, gone now": a head the
    server does not hold for longer than a grace period, or a hash it never stored, raises an alert
    (finding 1: deleting the newest recordings row must not go unnoticed; JL-19).
    """

    device_id: str
    sequence: int
    manifest_hash: str
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int) or self.sequence < 0:
            raise RemoteProtocolError("chain head sequence must be a non-negative integer")
        if not isinstance(self.manifest_hash, str) or not _SHA256.fullmatch(self.manifest_hash):
            raise RemoteProtocolError("chain head manifest_hash must be 64 lowercase hex characters")
        if len(self.signature) != 64:
            raise RemoteProtocolError("an Ed25519 signature is 64 bytes")

    @staticmethod
    def signing_input(device_id: str, sequence: int, manifest_hash: str) -> bytes:
        """The exact bytes the device key signs (its own domain: never valid as a manifest or an event)."""
        return CHAIN_HEAD_DOMAIN + _json(
            {"device_id": device_id, "manifest_hash": manifest_hash, "sequence": sequence}
        )

    @classmethod
    def sign(
        cls, device_id: str, sequence: int, manifest_hash: str, private_key: Ed25519PrivateKey
    ) -> ChainHead:
        """Sign a head with the device key."""
        signature = private_key.sign(cls.signing_input(device_id, sequence, manifest_hash))
        return cls(device_id=device_id, sequence=sequence, manifest_hash=manifest_hash, signature=signature)

    def verify(self, public_key_raw: bytes) -> bool:
        """Whether the device key signed exactly this head."""
        try:
            Ed25519PublicKey.from_public_bytes(public_key_raw).verify(
                self.signature, self.signing_input(self.device_id, self.sequence, self.manifest_hash)
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values for the health payload."""
        return {
            "manifest_hash": self.manifest_hash,
            "sequence": self.sequence,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, device_id: str, value: object) -> ChainHead:
        """Parse the health payload's ``chain_head``; the signature is checked by :meth:`verify`."""
        if not isinstance(value, dict) or set(value) != {"manifest_hash", "sequence", "signature"}:
            raise RemoteProtocolError("chain_head must have exactly manifest_hash, sequence and signature")
        try:
            signature = base64.b64decode(str(value["signature"]), validate=True)
        except ValueError:
            raise RemoteProtocolError("chain_head signature is not base64") from None
        return cls(
            device_id=device_id,
            sequence=value["sequence"],
            manifest_hash=value["manifest_hash"],
            signature=signature,
        )


@dataclass(frozen=True, kw_only=True)
class DeviceHealth:
    """Periodic health: the backlog and the age of the oldest segment not yet stored (JL-17: 24 h)."""

    device_id: str
    at: str
    backlog_bytes: int
    backlog_segments: int
    oldest_pending_age_s: float | None
    free_bytes: int | None = None
    battery_pct: int | None = None
    recording: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    chain_head: ChainHead | None = None  # None before the first segment is journalled


Message = FileInit | FileChunk | FileFin | FileAbort | FileStatusQuery | TransferAck | Presence | DeviceHealth


def qos_of(msg: Message) -> int:
    """MQTT QoS of a message: everything is QoS 1 except health, which is superseded soon anyway."""
    return 0 if isinstance(msg, DeviceHealth) else 1


def retain_of(msg: Message) -> bool:
    """Only presence is retained, so a new subscriber learns who is online."""
    return isinstance(msg, Presence)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode(msg: Message) -> tuple[str, bytes]:
    """Topic and payload bytes of a message."""
    if isinstance(msg, FileInit):
        return topics.file_init(msg.device_id, msg.file_id), msg.signed.to_envelope()
    if isinstance(msg, FileChunk):
        return topics.file_chunk(msg.device_id, msg.file_id, msg.offset, msg.sha256), msg.data
    if isinstance(msg, FileFin):
        return topics.file_fin(msg.device_id, msg.file_id, msg.size, msg.sha256), b""
    if isinstance(msg, FileAbort):
        return topics.file_abort(msg.device_id, msg.file_id), b""
    if isinstance(msg, FileStatusQuery):
        return topics.file_status(msg.device_id, msg.file_id), b""
    if isinstance(msg, TransferAck):
        body: dict[str, Any] = {"state": msg.state.value}
        if msg.offset is not None:
            body["offset"] = msg.offset
        if msg.length is not None:
            body["length"] = msg.length
        if msg.ranges is not None:
            body["ranges"] = msg.ranges.to_json()
        if msg.code:
            body["code"] = msg.code
        if msg.message:
            body["message"] = msg.message
        if msg.recording_id is not None:
            body["recording_id"] = msg.recording_id
        if msg.sha256:
            body["sha256"] = msg.sha256
        return topics.ack(msg.device_id, msg.file_id), _json(body)
    if isinstance(msg, Presence):
        body = {"state": msg.state.value, "at": msg.at, "agent_version": msg.agent_version}
        return topics.presence(msg.device_id), _json(body)
    if isinstance(msg, DeviceHealth):
        body = {
            "at": msg.at,
            "backlog_bytes": msg.backlog_bytes,
            "backlog_segments": msg.backlog_segments,
            "oldest_pending_age_s": msg.oldest_pending_age_s,
            "free_bytes": msg.free_bytes,
            "battery_pct": msg.battery_pct,
            "recording": msg.recording,
            "extra": msg.extra,
        }
        if msg.chain_head is not None:
            body["chain_head"] = msg.chain_head.to_json()
        return topics.health(msg.device_id), _json(body)
    raise LocalProtocolError(f"not a protocol message: {msg!r}")


def _load_json(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_JSON_PAYLOAD:
        raise RemoteProtocolError(f"{what} payload too large ({len(payload)} bytes)")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RemoteProtocolError(f"{what} payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RemoteProtocolError(f"{what} payload must be a JSON object")
    return data


def _opt_int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RemoteProtocolError(f"{key} must be a non-negative integer")
    return value


def _opt_number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RemoteProtocolError(f"{key} must be a number")
    return float(value)


def _ranges(value: object) -> RangeSet:
    if not isinstance(value, list):
        raise RemoteProtocolError("ranges must be a list of [start, end] pairs")
    spans: list[tuple[int, int]] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in item)
            or item[1] < item[0]
        ):
            raise RemoteProtocolError(f"bad range {item!r}")
        spans.append((item[0], item[1]))
    return RangeSet.of(spans)


def decode(topic: str, payload: bytes, *, check_chunk_hash: bool = True) -> Message:
    """Parse a topic and its payload into a message; raise a ``RemoteProtocolError`` for bad input.

    ``check_chunk_hash=False`` leaves a chunk's SHA-256 a claim for the receiver to check lazily.
    """
    parsed = topics.parse(topic)
    kind, device_id = parsed.kind, parsed.device_id
    file_id = parsed.file_id or ""
    if kind is TopicKind.FILE_INIT:
        if len(payload) > MAX_JSON_PAYLOAD:
            raise RemoteProtocolError(f"init payload too large ({len(payload)} bytes)")
        return FileInit(device_id=device_id, file_id=file_id, signed=SignedManifest.from_envelope(payload))
    if kind is TopicKind.FILE_CHUNK:
        assert parsed.offset is not None and parsed.sha256 is not None
        return FileChunk(
            device_id=device_id,
            file_id=file_id,
            offset=parsed.offset,
            data=payload,
            sha256=parsed.sha256,
            hash_checked=check_chunk_hash,
        )
    if kind in (TopicKind.FILE_FIN, TopicKind.FILE_ABORT, TopicKind.FILE_STATUS) and payload:
        raise RemoteProtocolError(f"{kind.value} must have an empty payload")
    if kind is TopicKind.FILE_FIN:
        assert parsed.size is not None and parsed.sha256 is not None
        return FileFin(device_id=device_id, file_id=file_id, size=parsed.size, sha256=parsed.sha256)
    if kind is TopicKind.FILE_ABORT:
        return FileAbort(device_id=device_id, file_id=file_id)
    if kind is TopicKind.FILE_STATUS:
        return FileStatusQuery(device_id=device_id, file_id=file_id)
    if kind is TopicKind.ACK:
        data = _load_json(payload, "ack")
        try:
            state = AckState(data.get("state"))
        except ValueError:
            raise RemoteProtocolError(f"unknown ack state {data.get('state')!r}") from None
        code, message = data.get("code", ""), data.get("message", "")
        sha256 = data.get("sha256", "")
        if not isinstance(code, str) or not isinstance(message, str) or not isinstance(sha256, str):
            raise RemoteProtocolError("code, message and sha256 must be strings")
        return TransferAck(
            device_id=device_id,
            file_id=file_id,
            state=state,
            offset=_opt_int(data, "offset"),
            length=_opt_int(data, "length"),
            ranges=_ranges(data["ranges"]) if "ranges" in data else None,
            code=code,
            message=message,
            recording_id=_opt_int(data, "recording_id"),
            sha256=sha256,
        )
    if kind is TopicKind.PRESENCE:
        data = _load_json(payload, "presence")
        try:
            presence_state = PresenceState(data.get("state"))
        except ValueError:
            raise RemoteProtocolError(f"unknown presence state {data.get('state')!r}") from None
        return Presence(
            device_id=device_id,
            state=presence_state,
            at=str(data.get("at", "")),
            agent_version=str(data.get("agent_version", "")),
        )
    if kind is not TopicKind.HEALTH:
        # Fleet topics (config, commands) have their own messages: protocol.fleet.decode.
        raise RemoteProtocolError(f"{kind.value} is a fleet message: use protocol.fleet.decode")
    data = _load_json(payload, "health")
    backlog_bytes, backlog_segments = _opt_int(data, "backlog_bytes"), _opt_int(data, "backlog_segments")
    if backlog_bytes is None or backlog_segments is None:
        raise RemoteProtocolError("health needs backlog_bytes and backlog_segments")
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        raise RemoteProtocolError("extra must be an object")
    battery = _opt_int(data, "battery_pct")
    if battery is not None and battery > 100:
        raise RemoteProtocolError("battery_pct must be 0–100")
    return DeviceHealth(
        device_id=device_id,
        at=str(data.get("at", "")),
        backlog_bytes=backlog_bytes,
        backlog_segments=backlog_segments,
        oldest_pending_age_s=_opt_number(data, "oldest_pending_age_s"),
        free_bytes=_opt_int(data, "free_bytes"),
        battery_pct=battery,
        recording=bool(data.get("recording", False)),
        extra=extra,
        chain_head=None
        if data.get("chain_head") is None
        else ChainHead.from_json(device_id, data["chain_head"]),
    )
