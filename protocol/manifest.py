"""Segment manifests: what a recorder asserts about each segment, canonically encoded and signed.

A manifest names the segment's bytes (size, SHA-256), who and when (device, officer, UTC and
monotonic times), its place in the device's sequence and the hash of the previous manifest, so the
segments of one device form a hash chain. The device signs the canonical bytes with its own Ed25519
key; a chain alone proves nothing without a signature (research/integrity.md), so both are required.

Canonical form: JSON with sorted keys, no spaces, UTF-8, integers only (no floats: GPS is in
micro-degrees), times as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The exact text that was signed travels in
the envelope; a verifier checks the signature over those bytes, then that they are canonical.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import LocalProtocolError, ManifestError
from protocol.topics import valid_device_id

__all__ = [
    "GENESIS_HASH",
    "MANIFEST_VERSION",
    "GpsFix",
    "SegmentManifest",
    "SignedManifest",
    "format_time",
    "manifest_hash",
    "parse_time",
    "public_key_fingerprint",
]

MANIFEST_VERSION = 1
GENESIS_HASH = "0" * 64
SEGMENT_KINDS = frozenset({"segment", "explanation"})
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_MAX_TEXT = 128


def format_time(moment: datetime) -> str:
    """Canonical UTC text of a tz-aware time, microsecond precision."""
    if moment.tzinfo is None:
        raise LocalProtocolError("manifest times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse canonical UTC text back into a tz-aware datetime."""
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise ManifestError(f"bad time {text!r}: expected YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def public_key_fingerprint(public_key_raw: bytes) -> str:
    """SHA-256 hex of a raw 32-byte Ed25519 public key: how the key is named in logs and the UI."""
    return hashlib.sha256(public_key_raw).hexdigest()


@dataclass(frozen=True, kw_only=True)
class GpsFix:
    """A position fix in integer micro-degrees (no floats in signed data) with accuracy in metres (JL-13)."""

    lat_microdeg: int
    lon_microdeg: int
    accuracy_m: int
    at: str

    def __post_init__(self) -> None:
        if not -90_000_000 <= self.lat_microdeg <= 90_000_000:
            raise ManifestError(f"latitude out of range: {self.lat_microdeg}")
        if not -180_000_000 <= self.lon_microdeg <= 180_000_000:
            raise ManifestError(f"longitude out of range: {self.lon_microdeg}")
        if self.accuracy_m < 0:
            raise ManifestError("GPS accuracy must not be negative")
        parse_time(self.at)


def _check_int(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ManifestError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _check_text(name: str, value: object, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT or (not allow_empty and not value):
        raise ManifestError(f"{name} must be a string of at most {_MAX_TEXT} characters")
    return value


@dataclass(frozen=True, kw_only=True)
class SegmentManifest:
    """One segment's signed facts (issue: recording pipeline; JL-6, JL-19)."""

    device_id: str
    sequence: int
    size: int
    sha256: str
    started_at: datetime
    ended_at: datetime
    started_mono_ns: int
    ended_mono_ns: int
    prev_manifest_hash: str
    media_type: str = "video/mp4"
    kind: str = "segment"
    officer_id: str = ""
    session_id: str = ""
    marker_id: str = ""  # for kind "explanation": the interruption marker it explains (JL-16)
    boot_id: str = ""
    gps: GpsFix | None = None
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        if self.version != MANIFEST_VERSION:
            raise ManifestError(f"unsupported manifest version {self.version!r}")
        if not isinstance(self.device_id, str) or not valid_device_id(self.device_id):
            raise ManifestError(f"bad device id {self.device_id!r}")
        _check_int("sequence", self.sequence)
        _check_int("size", self.size)
        _check_int("started_mono_ns", self.started_mono_ns)
        _check_int("ended_mono_ns", self.ended_mono_ns)
        for name in ("sha256", "prev_manifest_hash"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SHA256.fullmatch(value):
                raise ManifestError(f"{name} must be 64 lowercase hex characters")
        for name in ("started_at", "ended_at"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ManifestError(f"{name} must be a timezone-aware datetime")
        if self.ended_at < self.started_at or self.ended_mono_ns < self.started_mono_ns:
            raise ManifestError("a segment cannot end before it starts")
        if self.kind not in SEGMENT_KINDS:
            raise ManifestError(f"unknown segment kind {self.kind!r}")
        _check_text("media_type", self.media_type, allow_empty=False)
        _check_text("officer_id", self.officer_id)
        _check_text("session_id", self.session_id)
        _check_text("marker_id", self.marker_id)
        _check_text("boot_id", self.boot_id)

    def to_json_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON values (times as canonical text)."""
        data = asdict(self)
        data["started_at"] = format_time(self.started_at)
        data["ended_at"] = format_time(self.ended_at)
        if self.gps is None:
            data.pop("gps")
        return data

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed and hashed into the chain."""
        return _canonical(self.to_json_dict())

    @classmethod
    def from_json_dict(cls, data: object) -> SegmentManifest:
        """Build a manifest from decoded JSON, refusing unknown or missing fields."""
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ManifestError(f"unknown manifest fields: {sorted(unknown)}")
        values = dict(data)
        try:
            values["started_at"] = parse_time(values["started_at"])
            values["ended_at"] = parse_time(values["ended_at"])
            gps = values.get("gps")
            if gps is not None:
                if not isinstance(gps, dict):
                    raise ManifestError("gps must be an object")
                values["gps"] = GpsFix(**gps)
            return cls(**values)
        except KeyError as exc:
            raise ManifestError(f"manifest field missing: {exc.args[0]}") from None
        except TypeError as exc:
            raise ManifestError(f"bad manifest: {exc}") from None

    @property
    def file_id(self) -> str:
        """The transfer id of this segment: unique per device and stable across restarts."""
        return manifest_hash(self)[:32]


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_hash(manifest: SegmentManifest) -> str:
    """SHA-256 hex of a manifest's canonical bytes: the link the next segment points back to."""
    return hashlib.sha256(manifest.canonical_bytes()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class SignedManifest:
    """A manifest, the exact text that was signed, and the device's Ed25519 signature over it."""

    manifest: SegmentManifest
    manifest_text: str
    signature: bytes = field(repr=False)

    @classmethod
    def sign(cls, manifest: SegmentManifest, private_key: Ed25519PrivateKey) -> SignedManifest:
        """Sign a manifest with the device's key."""
        body = manifest.canonical_bytes()
        return cls(manifest=manifest, manifest_text=body.decode("utf-8"), signature=private_key.sign(body))

    def verify(self, public_key_raw: bytes) -> bool:
        """Whether the signature is valid for this device key (raw 32 bytes)."""
        try:
            Ed25519PublicKey.from_public_bytes(public_key_raw).verify(
                self.signature, self.manifest_text.encode("utf-8")
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    @property
    def manifest_hash(self) -> str:
        """SHA-256 hex of the signed text."""
        return hashlib.sha256(self.manifest_text.encode("utf-8")).hexdigest()

    @property
    def file_id(self) -> str:
        """The transfer id (first 32 hex characters of the manifest hash)."""
        return self.manifest_hash[:32]

    def to_envelope(self) -> bytes:
        """The init payload: ``{"manifest": <signed text>, "signature": <base64>, "v": 1}``."""
        return _canonical(
            {
                "manifest": self.manifest_text,
                "signature": base64.b64encode(self.signature).decode("ascii"),
                "v": MANIFEST_VERSION,
            }
        )

    @classmethod
    def from_envelope(cls, payload: bytes) -> SignedManifest:
        """Decode an init payload; the signature is NOT checked here (the verifier knows the key)."""
        try:
            envelope = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"manifest envelope is not JSON: {exc}") from None
        if not isinstance(envelope, dict) or set(envelope) != {"manifest", "signature", "v"}:
            raise ManifestError("manifest envelope must have exactly manifest, signature and v")
        if envelope["v"] != MANIFEST_VERSION:
            raise ManifestError(f"unsupported envelope version {envelope['v']!r}")
        text, sig_text = envelope["manifest"], envelope["signature"]
        if not isinstance(text, str) or not isinstance(sig_text, str):
            raise ManifestError("manifest and signature must be strings")
        try:
            signature = base64.b64decode(sig_text, validate=True)
        except ValueError:
            raise ManifestError("signature is not base64") from None
        if len(signature) != 64:
            raise ManifestError("an Ed25519 signature is 64 bytes")
        try:
            manifest = SegmentManifest.from_json_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest is not JSON: {exc}") from None
        if manifest.canonical_bytes().decode("utf-8") != text:
            # Two texts for one manifest would give two hashes for one chain link.
            raise ManifestError("manifest text is not in canonical form")
        return cls(manifest=manifest, manifest_text=text, signature=signature)
