"""Provision a recorder: make its key pair on the device, register the public key, write its config.

The private key never leaves the device (or the factory station acting for it): only the raw 32-byte
public key is sent to the server, which from then on verifies every segment manifest against it.
Provisioning the same device again with the same key folder is idempotent.
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

from protocol.manifest import public_key_fingerprint
from protocol.topics import valid_device_id

__all__ = ["ProvisionError", "ProvisionResult", "load_or_create_key", "provision"]

KEY_FILE = "device-key.pem"
CONFIG_FILE = "agent.toml"


class ProvisionError(Exception):
    """Provisioning failed; the message says why in words an installer can act on."""


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


def _register(server_url: str, token: str, body: dict[str, object], timeout: float) -> dict[str, object]:
    request = urllib.request.Request(
        urllib.parse.urljoin(server_url.rstrip("/") + "/", "api/v1/devices"),
        data=json.dumps(body).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
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
    return answer if isinstance(answer, dict) else {}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def provision(
    *,
    server_url: str,
    token: str,
    device_id: str,
    out_dir: Path,
    mqtt_url: str | None = None,
    serial: str | None = None,
    model: str | None = None,
    timeout: float = 10.0,
) -> ProvisionResult:
    """Make or load the device key in ``out_dir``, register it, and write the agent's config there."""
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
    answer = _register(server_url, token, body, timeout)
    if not mqtt_url:
        advertised = answer.get("mqtt_url")
        host = urllib.parse.urlsplit(server_url).hostname or "127.0.0.1"
        mqtt_url = advertised if isinstance(advertised, str) and advertised else f"mqtt://{host}:1883"
    settings: dict[str, object] = {
        "device_id": device_id,
        "private_key_file": KEY_FILE,
        "data_dir": "data",
        "mqtt_url": mqtt_url,
        "server_url": server_url,
    }
    config_path = out_dir / CONFIG_FILE
    text = "".join(f"{name} = {_toml_value(value)}\n" for name, value in settings.items())
    tmp = config_path.with_suffix(".tmp")
    tmp.write_text("# zfjl recorder configuration, written by zfjl-fw provision\n" + text, encoding="utf-8")
    os.replace(tmp, config_path)
    return ProvisionResult(
        device_id=device_id,
        config_path=config_path,
        key_path=key_path,
        key_fingerprint=public_key_fingerprint(public_raw),
    )
