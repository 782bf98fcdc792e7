"""The server's ingest key: it signs every ack a recorder acts on, and provisioning pins its public half.

A recorder frees a segment only on a ``complete`` ack signed by a key pinned in its ``agent.toml``
(finding 1 of the zero-trust review; JL-19: nothing destroyed before it is stored). The private key is
``ZFJL_INGEST_KEY`` (base64 of the 32 raw Ed25519 bytes) or, when unset, generated once into
``<data_dir>/ingest-key`` with mode 0600, like the JWT secret. Every server process of one deployment
must use the same key (or one of the keys the recorders pin: rotation, docs/protocol.md).

Provisioning answers carry what a recorder must trust and where it must connect:
``ingest_public_keys`` (the current key first, then ``ZFJL_INGEST_EXTRA_PUBLIC_KEYS`` — the next key
before a rotation, the previous one during it) and ``mqtt_urls`` (``ZFJL_MQTT_ADVERTISED_URLS``; else
``ZFJL_MQTT_URL`` without its login; else the embedded broker's actual port on the host the device
asked).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from protocol.downlink import decode_public_key, encode_public_key, is_signed_topic, key_id, seal
from server.infra.fsmode import create_private_file, private_dir

if TYPE_CHECKING:  # the app is only passed through: no runtime dependency on Flask here
    from flask import Flask

    from server.infra.config import Settings

__all__ = [
    "EMBEDDED_BROKER_KEY",
    "IngestSigner",
    "advertised_broker_urls",
    "generate_ingest_key_file",
    "note_embedded_broker",
    "parse_private_key",
    "provisioning_trust",
]

EMBEDDED_BROKER_KEY = "zfjl.embedded_broker_url"
INGEST_KEY_FILE = "ingest-key"


def parse_private_key(text: str) -> Ed25519PrivateKey:
    """An ingest private key from base64 of its 32 raw bytes; ValueError if it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 private key is 32 raw bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def generate_ingest_key_file(data_dir: Path) -> str:
    """Read or create ``<data_dir>/ingest-key`` (mode 0600, never overwritten); return its base64 text."""
    path = data_dir / INGEST_KEY_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    private_dir(data_dir)  # 0700 whatever the umask, like the rest of the data folder
    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    text = base64.b64encode(raw).decode("ascii")
    try:
        # O_EXCL: two processes starting at once must not each write a different key.
        fd = create_private_file(path)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return text


@dataclass(frozen=True)
class IngestSigner:
    """Seals the acks the server publishes; knows the public keys provisioning hands out."""

    private_key: Ed25519PrivateKey
    extra_public_keys: tuple[bytes, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestSigner:
        """The signer of these settings (``ingest_key`` is already resolved by ``load_settings``)."""
        extras = tuple(decode_public_key(text) for text in _split(settings.ingest_extra_public_keys))
        return cls(parse_private_key(settings.ingest_key), extras)

    @property
    def public_key_raw(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        """The id acks name the key by."""
        return key_id(self.public_key_raw)

    def public_keys(self) -> list[str]:
        """What a recorder pins (base64): the signing key first, then the extra ones, no repeats."""
        out: list[str] = []
        for raw in (self.public_key_raw, *self.extra_public_keys):
            text = encode_public_key(raw)
            if text not in out:
                out.append(text)
        return out

    def seal(self, topic: str, payload: bytes) -> bytes:
        """The payload to publish on ``topic``: acks are sealed, everything else passes unchanged."""
        if not is_signed_topic(topic):
            return payload
        return seal(topic, payload, self.private_key)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def note_embedded_broker(app: Flask, url: str) -> None:
    """Remember the embedded broker's actual URL, so provisioning can point devices at its real port."""
    app.extensions[EMBEDDED_BROKER_KEY] = url


def _without_login(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def advertised_broker_urls(settings: Settings, embedded_url: str, request_host: str) -> list[str]:
    """The broker URL(s) devices must use, never with a login in them (the ingest password stays here)."""
    configured = _split(settings.mqtt_advertised_urls)
    if configured:
        return [_without_login(url) for url in configured]
    if settings.mqtt_url:
        return [_without_login(settings.mqtt_url)]
    if embedded_url:
        port = urlsplit(embedded_url).port or 1883
        host = request_host or urlsplit(embedded_url).hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        return [f"mqtt://{netloc}:{port}"]
    return []


def provisioning_trust(app: Flask, request_host: str) -> dict[str, Any]:
    """The part of every provisioning answer that tells a recorder whom to trust and where to connect."""
    settings: Settings = app.extensions["zfjl.settings"]
    signer = IngestSigner.from_settings(settings)
    urls = advertised_broker_urls(settings, app.extensions.get(EMBEDDED_BROKER_KEY, ""), request_host)
    answer: dict[str, Any] = {"ingest_public_keys": signer.public_keys(), "mqtt_urls": urls}
    if urls:
        answer["mqtt_url"] = urls[0]
    return answer
