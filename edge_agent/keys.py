"""The device's Ed25519 signing key: generate, store (PEM, mode 0600) and load."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import AgentError

__all__ = [
    "KeyFileError",
    "generate_private_key",
    "load_private_key",
    "public_key_pem",
    "public_key_raw",
    "save_private_key",
]

logger = logging.getLogger(__name__)


class KeyFileError(AgentError):
    """The device key file is missing, unreadable or not an Ed25519 PEM key."""


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: Path | str, *, overwrite: bool = False) -> None:
    """Write the key as unencrypted PKCS#8 PEM with mode 0600; refuse to replace a key unless asked."""
    path = Path(path)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        # Replacing a device key orphans every signature made with it: never by accident.
        raise KeyFileError(f"key file {path} already exists") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from PEM; warn if others can read the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "key file %s is accessible by group/others (mode %o); use chmod 600", path, mode & 0o777
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"key file {path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} does not hold an Ed25519 key")
    return key


def public_key_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public key (what the server registers)."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
