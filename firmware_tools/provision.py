"""Provision a recorder: make its key pair on the device, register the public key, write its config.

The private key never leaves the device (or the factory station acting for it): only the raw 32-byte
public key is sent to the server, which from then on verifies every segment manifest against it.
Provisioning the same device again with the same key folder is idempotent for the key; it issues fresh
MQTT credentials (the server keeps only their hash, so they cannot be sent twice).

Two ways in: with an admin token (``POST /api/v1/fleet/provision``), or without one by serial number
(``POST /provisioning/v1/requests``): an allow-listed serial is approved at once, any other
waits for an admin; the claim secret is kept in ``claim`` so a later run can collect the credentials.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.downlink import decode_public_key
from protocol.manifest import public_key_fingerprint
from protocol.topics import valid_device_id

__all__ = ["ProvisionError", "ProvisionPending", "ProvisionResult", "load_or_create_key", "provision"]

KEY_FILE = "device-key.pem"
CONFIG_FILE = "agent.toml"
CLAIM_FILE = "claim"


class ProvisionError(Exception):
    """Provisioning failed; the message says why in words an installer can act on."""


class ProvisionPending(ProvisionError):
    """The request waits for an admin's approval; run the same command again later."""


@dataclass(frozen=True, kw_only=True)
class ProvisionResult:
    """What provisioning produced."""

    device_id: str
    config_path: Path
    key_path: Path
    key_fingerprint: str


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the device key, or make one (file mode 0600) if there is none yet."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ProvisionError(f"{path.name} is not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def _post(
    server_url: str, path: str, token: str | None, body: dict[str, object], timeout: float
) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        urllib.parse.urljoin(server_url.rstrip("/") + "/", path),
        data=json.dumps(body).encode("utf-8"),
        method="POST",
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error", {})
            detail = f"{error.get('code', exc.code)}: {error.get('message_en') or error.get('message')}"
        except (ValueError, AttributeError):
            detail = str(exc)
        raise ProvisionError(f"server refused the registration ({detail})") from None
    except urllib.error.URLError as exc:
        raise ProvisionError(f"cannot reach the server at {server_url}: {exc.reason}") from None
    return status, answer if isinstance(answer, dict) else {}


def _register(
    server_url: str, token: str | None, body: dict[str, object], out_dir: Path, timeout: float
) -> dict[str, object]:
    """Token path, or serial path (first request, then claims with the stored secret)."""
    if token:
        return _post(server_url, "api/v1/fleet/provision", token, body, timeout)[1]
    claim_path = out_dir / CLAIM_FILE
    if claim_path.exists():
        claim = claim_path.read_text(encoding="ascii").strip()
        status, answer = _post(server_url, "provisioning/v1/claim", None, {"claim": claim}, timeout)
    else:
        if not body.get("serial"):
            raise ProvisionError("without --token a --serial is required")
        status, answer = _post(server_url, "provisioning/v1/requests", None, body, timeout)
        claim = str(answer.get("claim", ""))
        if status == 202 and claim:
            fd = os.open(claim_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(claim + "\n")
    if status == 202:
        raise ProvisionPending(
            f"request {answer.get('request_id')} for {answer.get('device_id')} awaits an admin's approval; "
            "run the same command again once approved"
        )
    claim_path.unlink(missing_ok=True)
    return answer


def _ingest_keys(answer: dict[str, object]) -> list[str]:
    """The ingest public keys the server says to pin; refuse to write a config that could trust nobody."""
    keys = answer.get("ingest_public_keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise ProvisionError(
            "the server's answer names no ingest public key to pin; the recorder could not verify any "
            "ack (upgrade the server, or give the key by hand in agent.toml: ingest_public_keys)"
        )
    for text in keys:
        try:
            decode_public_key(text)
        except ValueError:
            raise ProvisionError(f"the server sent an invalid ingest public key {text!r}") from None
    return [str(k) for k in keys]


def _advertised_broker(answer: dict[str, object], server_url: str) -> str:
    """The first broker URL the server advertises, else the server's host on the default port."""
    urls = answer.get("mqtt_urls")
    if isinstance(urls, list) and urls and isinstance(urls[0], str) and urls[0]:
        return urls[0]
    advertised = answer.get("mqtt_url")
    if isinstance(advertised, str) and advertised:
        return advertised
    host = urllib.parse.urlsplit(server_url).hostname or "127.0.0.1"
    return f"mqtt://{host}:1883"


def _advertised_brokers(answer: dict[str, object], server_url: str) -> list[str]:
    """Every broker URL the server advertises, first one first, for the agent's ``mqtt_urls`` failover
    list (docs/agent.md, "Several brokers"); those with another scheme than the first are left out (one
    TLS setting per agent)."""
    first = _advertised_broker(answer, server_url)
    brokers = [first]
    urls = answer.get("mqtt_urls")
    scheme = urllib.parse.urlsplit(first).scheme
    for url in urls[1:] if isinstance(urls, list) else []:
        if isinstance(url, str) and url not in brokers and urllib.parse.urlsplit(url).scheme == scheme:
            brokers.append(url)
    return brokers


def _toml_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def provision(
    *,
    server_url: str,
    token: str | None,
    device_id: str,
    out_dir: Path,
    mqtt_url: str | None = None,
    serial: str | None = None,
    model: str | None = None,
    timeout: float = 10.0,
) -> ProvisionResult:
    """Make or load the device key in ``out_dir``, register it, and write the agent's config there.

    Raises :class:`ProvisionPending` while a serial-number request waits for an admin.
    """
    if not valid_device_id(device_id):
        raise ProvisionError(f"invalid device id {device_id!r}: use 1–64 of A-Z a-z 0-9 _ -")
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path = out_dir / KEY_FILE
    key = load_or_create_key(key_path)
    public_raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body: dict[str, object] = {
        "device_id": device_id,
        "public_key": base64.b64encode(public_raw).decode("ascii"),
    }
    if serial:
        body["serial"] = serial
    if model:
        body["model"] = model
    answer = _register(server_url, token, body, out_dir, timeout)
    ingest_keys = _ingest_keys(answer)
    brokers = [mqtt_url] if mqtt_url else _advertised_brokers(answer, server_url)
    settings: dict[str, object] = {
        "device_id": device_id,
        "private_key_file": KEY_FILE,
        "data_dir": "data",
        "mqtt_url": brokers[0],
        # Several advertised brokers (a cluster's nodes, a standby): the agent fails over along them.
        **({"mqtt_urls": brokers} if len(brokers) > 1 else {}),
        "server_url": server_url,
        # Pinned: the recorder trusts acks signed by these keys only (docs/protocol.md, "Signed acks").
        "ingest_public_keys": ingest_keys,
    }
    # Per-device broker login (issued once by the server; only its hash is kept there).
    if isinstance(answer.get("mqtt_username"), str) and isinstance(answer.get("mqtt_password"), str):
        settings["mqtt_username"] = answer["mqtt_username"]
        settings["mqtt_password"] = answer["mqtt_password"]
    config_path = out_dir / CONFIG_FILE
    text = "".join(f"{name} = {_toml_value(value)}\n" for name, value in settings.items())
    tmp = config_path.with_suffix(".tmp")
    # 0600: the file holds the broker password.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# zfjl recorder configuration, written by zfjl-fw provision\n" + text)
    os.replace(tmp, config_path)
    return ProvisionResult(
        device_id=device_id,
        config_path=config_path,
        key_path=key_path,
        key_fingerprint=public_key_fingerprint(public_raw),
    )
