"""Broker security from the registry: Mosquitto ``password_file`` and ``acl_file`` per device.

Each device has its own MQTT account and may publish only under ``zfjl/v1/{id}/up/#`` and read only
``zfjl/v1/{id}/down/#``; the ingest service account reads every ``up`` tree and writes every ``down``
tree. A lost or retired device, or one whose credential was revoked, is simply not in the files, so the
broker refuses it at connect once the files are reloaded (SIGHUP).

The accounts come from :mod:`server.infra.mqtt_acl`, the model the embedded broker enforces live
(:func:`registry_accounts`); the files are refused when a login appears twice or a device carries a
reserved name (issue finding 8).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.domain.fleet.models import Device, DeviceCredential, DeviceStatus
from server.infra.config import Settings
from server.infra.fsmode import create_private_file, private_dir
from server.infra.mqtt_acl import (
    BrokerAccount,
    BrokerAccountError,
    check_accounts,
    device_account,
    hash_broker_password,
    is_reserved_name,
    service_account,
    verify_broker_password,
)

__all__ = [
    "ACL_FILE",
    "PASSWORD_FILE",
    "SERVICE_CREDENTIAL_FILE",
    "BrokerAccount",
    "BrokerAccountError",
    "add_live_broker",
    "broker_accounts",
    "device_account_for",
    "embedded_service_password",
    "hash_broker_password",
    "registry_accounts",
    "remove_live_broker",
    "render_acl",
    "render_password_file",
    "service_account_from_url",
    "sync_broker",
    "verify_broker_password",
    "write_broker_files",
]

_LOG = logging.getLogger(__name__)

PASSWORD_FILE = "passwords"
ACL_FILE = "acl"
# The embedded broker's service (ingest) password, generated once, readable by the server's user only.
SERVICE_CREDENTIAL_FILE = "mqtt-service-password"


def service_account_from_url(url: str) -> BrokerAccount | None:
    """The service account named by the ``user:password`` of a broker URL (``ZFJL_MQTT_URL``), if any."""
    service = urlsplit(url) if url else None
    if service is None or not service.username or not service.password:
        return None
    return service_account(unquote(service.username), hash_broker_password(unquote(service.password)))


def broker_accounts(
    session: Session, settings: Settings, *, service: BrokerAccount | None = None
) -> list[BrokerAccount]:
    """Every account the broker should accept: the ingest service account and each connecting device.

    ``service`` defaults to the login in ``ZFJL_MQTT_URL`` (the account the ingest workers use).
    """
    accounts: list[BrokerAccount] = []
    if service is None:
        service = service_account_from_url(settings.mqtt_url)
    if service is not None:
        accounts.append(service)
    rows = session.execute(
        select(DeviceCredential.username, DeviceCredential.password_hash, Device.id)
        .join(Device, Device.id == DeviceCredential.device_id)
        .where(DeviceCredential.revoked_at.is_(None), Device.status.in_(DeviceStatus.ACCEPTING))
        .order_by(Device.id, DeviceCredential.id)
    )
    for username, password_hash, device_id in rows:
        if username != device_id:
            raise BrokerAccountError(f"credential login {username!r} does not name its device {device_id!r}")
        accounts.append(device_account(device_id, password_hash))
    return accounts


def device_account_for(session: Session, username: str) -> BrokerAccount | None:
    """The live account of one device login, or None if unknown, revoked, or its device is cut off.

    The embedded broker asks this at every connect, so a revoked or suspended device is refused at its
    next connect.
    """
    row = session.execute(
        select(DeviceCredential.password_hash, Device.id)
        .join(Device, Device.id == DeviceCredential.device_id)
        .where(
            DeviceCredential.username == username,
            DeviceCredential.revoked_at.is_(None),
            Device.status.in_(DeviceStatus.ACCEPTING),
        )
        .order_by(DeviceCredential.id.desc())
        .limit(1)
    ).first()
    if row is None or row.id != username:
        return None
    return device_account(row.id, row.password_hash)


def registry_accounts(engine: Engine, service: BrokerAccount | None) -> Callable[[str], BrokerAccount | None]:
    """An account lookup for the embedded broker: the service account, else the device registry.

    Each call reads the registry afresh, so a device revoked, lost, retired or suspended is refused at
    its next connect, and a rotated password replaces the old one at once.
    """

    def lookup(username: str) -> BrokerAccount | None:
        if service is not None and username == service.username:
            return service
        if is_reserved_name(username):
            return None
        with Session(engine) as session:
            return device_account_for(session, username)

    return lookup


def embedded_service_password(data_dir: Path) -> str:
    """The embedded broker's service password from ``data_dir``, created (mode 0600) on first use."""
    path = Path(data_dir) / SERVICE_CREDENTIAL_FILE
    private_dir(path.parent)  # 0700 whatever the umask, like the rest of the data folder
    try:
        fd = create_private_file(path)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)  # a copy restored with a loose mode: tighten it before use
        password = path.read_text(encoding="ascii").strip()
        if password:
            return password
        path.unlink()
        return embedded_service_password(data_dir)
    password = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(password + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return password


# Running embedded brokers told about registry changes: each callback gets the changed registry
# (the caller's session) and drops clients whose login no longer holds.
_LIVE_BROKERS: list[Callable[[Session], None]] = []
_LIVE_LOCK = threading.Lock()


def add_live_broker(callback: Callable[[Session], None]) -> None:
    """Call ``callback(session)`` at every :func:`sync_broker` (the embedded broker's revocation hook)."""
    with _LIVE_LOCK:
        _LIVE_BROKERS.append(callback)


def remove_live_broker(callback: Callable[[Session], None]) -> None:
    """Stop calling ``callback``."""
    with _LIVE_LOCK:
        if callback in _LIVE_BROKERS:
            _LIVE_BROKERS.remove(callback)


def render_password_file(accounts: list[BrokerAccount]) -> str:
    """Mosquitto ``password_file`` text (``username:$7$...`` per line); refuses duplicates, reserved names."""
    check_accounts(accounts)
    return "".join(f"{a.username}:{a.password_hash}\n" for a in accounts)


def render_acl(accounts: list[BrokerAccount]) -> str:
    """Mosquitto ``acl_file`` text: no anonymous rules, then one ``user`` block per account."""
    check_accounts(accounts)
    lines = ["# Generated by zfjl from the device registry; do not edit by hand.", ""]
    for account in accounts:
        lines.append(f"user {account.username}")
        lines.extend(f"topic write {flt}" for flt in account.write)
        lines.extend(f"topic read {flt}" for flt in account.read)
        lines.append("")
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_broker_files(session: Session, settings: Settings, out_dir: Path) -> tuple[Path, Path]:
    """Write ``passwords`` and ``acl`` into ``out_dir`` (atomically, mode 0600); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    accounts = broker_accounts(session, settings)
    password_path, acl_path = out_dir / PASSWORD_FILE, out_dir / ACL_FILE
    _write_atomic(password_path, render_password_file(accounts))
    _write_atomic(acl_path, render_acl(accounts))
    return password_path, acl_path


def sync_broker(session: Session, settings: Settings) -> bool:
    """After a registry change: rewrite the files (if a directory is configured) and SIGHUP the broker.

    A running embedded broker is told too, and drops clients whose login was revoked.
    """
    with _LIVE_LOCK:
        live = list(_LIVE_BROKERS)
    for callback in live:
        try:
            callback(session)
        except Exception:
            _LOG.exception("could not update the embedded broker after a registry change")
    if not settings.broker_acl_dir:
        return False
    try:
        write_broker_files(session, settings, Path(settings.broker_acl_dir))
    except BrokerAccountError as exc:
        # The previous files stay in force; the registry change itself is committed and stands.
        _LOG.error("broker files not regenerated (the previous ones stay in force): %s", exc)
        return False
    if settings.broker_pid_file:
        try:
            pid = int(Path(settings.broker_pid_file).read_text(encoding="ascii").strip())
            os.kill(pid, signal.SIGHUP)  # Mosquitto reloads password_file and acl_file on SIGHUP.
        except (OSError, ValueError) as exc:
            _LOG.error("could not signal the broker to reload its ACL: %s", exc)
    return True
