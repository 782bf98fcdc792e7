"""Segment manifests: canonical bytes, Ed25519 signatures, tamper detection (JL-6, JL-19)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.errors import ManifestError
from protocol.manifest import GENESIS_HASH, GpsFix, SegmentManifest, SignedManifest, manifest_hash

SEED = bytes(range(32))
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def make_manifest(**changes: object) -> SegmentManifest:
    base = SegmentManifest(
        device_id="rec-0001",
        sequence=0,
        size=1024,
        sha256="ab" * 32,
        started_at=datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC),
        ended_at=datetime(2026, 11, 26, 8, 1, 0, 500000, tzinfo=UTC),
        started_mono_ns=1_000,
        ended_mono_ns=60_500_001_000,
        prev_manifest_hash=GENESIS_HASH,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_canonical_bytes_are_sorted_compact_json_with_utc_text() -> None:
    text = make_manifest().canonical_bytes().decode()
    assert text == (
        '{"boot_id":"","device_id":"rec-0001","ended_at":"2026-11-26T08:01:00.500000Z",'
        '"ended_mono_ns":60500001000,"kind":"segment","marker_id":"","media_type":"video/mp4","officer_id":"",'
        f'"prev_manifest_hash":"{GENESIS_HASH}","sequence":0,"session_id":"","sha256":"{"ab" * 32}",'
        '"size":1024,"started_at":"2026-11-26T08:00:00.000000Z","started_mono_ns":1000,"version":1}'
    )


def test_signature_verifies_and_envelope_round_trips_exactly() -> None:
    signed = SignedManifest.sign(make_manifest(), KEY)
    assert signed.verify(PUB)
    again = SignedManifest.from_envelope(signed.to_envelope())
    assert again == signed
    assert again.manifest_hash == manifest_hash(signed.manifest)
    assert signed.file_id == signed.manifest_hash[:32]


def test_signature_fails_for_another_key_or_a_changed_byte() -> None:
    signed = SignedManifest.sign(make_manifest(), KEY)
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert not signed.verify(other)
    tampered_text = signed.manifest_text.replace('"size":1024', '"size":1025')
    tampered = SignedManifest(
        manifest=make_manifest(size=1025), manifest_text=tampered_text, signature=signed.signature
    )
    assert not tampered.verify(PUB)


def test_gps_is_integer_microdegrees_and_round_trips() -> None:
    gps = GpsFix(
        lat_microdeg=31_820_591, lon_microdeg=117_227_219, accuracy_m=8, at="2026-11-26T08:00:05.000000Z"
    )
    signed = SignedManifest.sign(make_manifest(gps=gps), KEY)
    assert '"gps":{"accuracy_m":8,"at":"2026-11-26T08:00:05.000000Z"' in signed.manifest_text
    assert SignedManifest.from_envelope(signed.to_envelope()).manifest.gps == gps


def envelope(text: str, signature: bytes = b"\0" * 64, version: object = 1) -> bytes:
    return json.dumps(
        {"manifest": text, "signature": base64.b64encode(signature).decode(), "v": version}
    ).encode()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "exactly"),
        (envelope("{}", version=2), "unsupported envelope version"),
        (envelope("{}", signature=b"short"), "64 bytes"),
        (envelope("{}"), "field missing"),
        (envelope('{"device_id": 1}'), "field missing"),
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(payload: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        SignedManifest.from_envelope(payload)


def test_non_canonical_text_is_refused_because_it_would_fork_the_chain() -> None:
    data = make_manifest().to_json_dict()
    spaced = json.dumps(data, sort_keys=True)  # spaces after separators
    with pytest.raises(ManifestError, match="canonical"):
        SignedManifest.from_envelope(envelope(spaced))


def test_unknown_fields_and_bad_values_are_refused() -> None:
    data = make_manifest().to_json_dict()
    with pytest.raises(ManifestError, match="unknown manifest fields"):
        SegmentManifest.from_json_dict({**data, "extra": 1})
    with pytest.raises(ManifestError, match="sequence"):
        make_manifest(sequence=-1)
    with pytest.raises(ManifestError, match="sha256"):
        make_manifest(sha256="AB" * 32)
    with pytest.raises(ManifestError, match="end before"):
        make_manifest(ended_mono_ns=0)
    with pytest.raises(ManifestError, match="kind"):
        make_manifest(kind="movie")
    with pytest.raises(ManifestError, match="time"):
        SegmentManifest.from_json_dict({**data, "started_at": "2026-11-26 08:00:00"})
