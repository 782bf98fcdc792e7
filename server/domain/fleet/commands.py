"""Device commands (AWS IoT Jobs-like lifecycle) and delivery of commands and desired configuration.

Delivery survives offline devices: a command stays ``queued`` until the device answers, is sent when it
is created (if the device is online) and again every time the device's presence turns ``online``, and
expires when stale. :func:`uplink` handles what devices send back (used by ingest); :func:`on_presence`
returns what to re-send when a device comes online; :func:`publish_unsent` gives the dispatcher's round
(:mod:`server.domain.fleet.dispatch`) the new commands of online devices. No MQTT client and no Flask app
in here: the caller publishes what these functions return, after its commit.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import fleet as fleet_protocol
from protocol.errors import ProtocolError
from protocol.fleet import (
    COMMAND_TRANSITIONS,
    Command,
    CommandKind,
    CommandState,
    CommandStatus,
    ReportedConfig,
)
from protocol.manifest import format_time
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Conflict, Invalid, NotFound
from server.domain.fleet import config as config_service
from server.domain.fleet.devices import get_device
from server.domain.fleet.models import Device, DeviceCommand, DeviceCredential, DeviceStatus
from server.domain.fleet.telemetry_models import DevicePresence

__all__ = [
    "DEFAULT_TTL",
    "Publication",
    "apply_status",
    "apply_uplink",
    "command_message",
    "command_to_dict",
    "create_command",
    "credentials_rotated",
    "expire_stale",
    "get_command",
    "list_commands",
    "on_presence",
    "publish_unsent",
]

_LOG = logging.getLogger(__name__)
DEFAULT_TTL = timedelta(hours=24)
MAX_TTL = timedelta(days=30)
_HASH7 = re.compile(r"\$7\$[0-9]{3,7}\$[A-Za-z0-9+/=]{8,64}\$[A-Za-z0-9+/=]{80,100}")
# (topic, payload, retain) ready for an MQTT publish at QoS 1.
Publication = tuple[str, bytes, bool]


def create_command(
    session: Session,
    device_id: str,
    kind: str,
    *,
    params: dict[str, Any] | None = None,
    ttl: timedelta = DEFAULT_TTL,
    actor: str,
) -> DeviceCommand:
    """Queue a command for a device."""
    device = get_device(session, device_id)
    if device.status not in DeviceStatus.ACCEPTING:
        raise Conflict(f"设备状态为 {device.status}", f"device is {device.status}")
    try:
        kind_value = CommandKind(kind)
    except ValueError:
        raise Invalid(f"未知命令 {kind}", f"unknown command {kind}") from None
    try:
        fleet_protocol.validate_params(kind_value, dict(params or {}))
    except ProtocolError as exc:
        raise Invalid(f"命令参数无效：{exc}", f"invalid command parameters: {exc}") from None
    if kind_value in (CommandKind.BOOKMARK, CommandKind.SESSION_START, CommandKind.SESSION_END):
        # JL-15, JL-16: never tag, start or end recording at the wrong moment because it arrived late.
        ttl = min(ttl, fleet_protocol.BOOKMARK_TTL)
    if not timedelta(seconds=10) <= ttl <= MAX_TTL:
        raise Invalid("有效期须在 10 秒到 30 天之间", "ttl must be between 10 s and 30 days")
    now = utcnow()
    row = DeviceCommand(
        id=uuid.uuid4().hex,
        device_id=device_id,
        kind=kind_value.value,
        params=dict(params or {}),
        state=CommandState.QUEUED.value,
        result={},
        created_at=now,
        created_by=actor,
        expires_at=now + ttl,
        attempts=0,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    write_audit(
        session,
        actor=actor,
        action="device.command",
        target_type="device",
        target_id=device_id,
        detail={"command_id": row.id, "kind": row.kind},
    )
    return row


def command_message(row: DeviceCommand) -> Command:
    """The protocol message of a stored command."""
    return Command(
        device_id=row.device_id,
        command_id=row.id,
        kind=CommandKind(row.kind),
        params=row.params,
        expires_at=format_time(row.expires_at),
        issued_at=format_time(utcnow()),
    )


def _install_rotated_credential(session: Session, row: DeviceCommand, detail: dict[str, Any]) -> None:
    """rotate_credentials: the device made a new password and sent only its $7$ hash; install it."""
    password_hash = detail.get("password_hash")
    if not isinstance(password_hash, str) or not _HASH7.fullmatch(password_hash):
        raise Invalid("缺少有效的密码哈希", "rotate_credentials needs a $7$ password_hash")
    now = utcnow()
    for old in session.scalars(
        select(DeviceCredential).where(
            DeviceCredential.device_id == row.device_id, DeviceCredential.revoked_at.is_(None)
        )
    ):
        old.revoked_at, old.revoked_reason = now, "rotated"
    session.add(
        DeviceCredential(
            device_id=row.device_id,
            username=row.device_id,
            password_hash=password_hash,
            created_at=now,
            created_by=f"command:{row.id}",
            revoked_reason="",
        )
    )
    session.flush()


def apply_status(session: Session, msg: CommandStatus) -> DeviceCommand | None:
    """Move a command by the device's report, if COMMAND_TRANSITIONS allows it; None if ignored."""
    row = session.get(DeviceCommand, msg.command_id)
    if row is None or row.device_id != msg.device_id:
        return None
    current = CommandState(row.state)
    if msg.state is current or msg.state not in COMMAND_TRANSITIONS[current]:
        return None
    detail = dict(msg.detail)
    if msg.state is CommandState.SUCCEEDED and row.kind == CommandKind.ROTATE_CREDENTIALS.value:
        try:
            _install_rotated_credential(session, row, detail)
        except Invalid as exc:
            msg = CommandStatus(device_id=msg.device_id, command_id=msg.command_id, state=CommandState.FAILED)
            detail = {"error": exc.message_en}
        detail.pop("password_hash", None)
        detail["credential_rotated"] = msg.state is CommandState.SUCCEEDED
    row.state = msg.state.value
    row.result = detail
    row.updated_at = utcnow()
    session.flush()
    return row


def expire_stale(session: Session, now: datetime | None = None) -> int:
    """Expire queued or running commands past their deadline; return how many."""
    now = now or utcnow()
    count = 0
    for row in session.scalars(
        select(DeviceCommand).where(
            DeviceCommand.state.in_((CommandState.QUEUED.value, CommandState.IN_PROGRESS.value)),
            DeviceCommand.expires_at < now,
        )
    ):
        row.state, row.updated_at = CommandState.EXPIRED.value, now
        count += 1
    session.flush()
    return count


def _queued(session: Session, device_id: str | None, *, unsent_only: bool) -> list[DeviceCommand]:
    query = select(DeviceCommand).where(
        DeviceCommand.state == CommandState.QUEUED.value, DeviceCommand.expires_at > utcnow()
    )
    if device_id is not None:
        query = query.where(DeviceCommand.device_id == device_id)
    if unsent_only:
        query = query.where(DeviceCommand.sent_at.is_(None))
    return list(session.scalars(query.order_by(DeviceCommand.created_at, DeviceCommand.id)))


def _publish_command(row: DeviceCommand) -> Publication:
    topic, payload = fleet_protocol.encode(command_message(row))
    row.sent_at, row.attempts = utcnow(), row.attempts + 1
    return topic, payload, False


def on_presence(session: Session, device_id: str) -> list[Publication]:
    """A device came online: its desired config and every queued command, sent again."""
    device = session.get(Device, device_id)
    if device is None or device.status not in DeviceStatus.ACCEPTING:
        return []
    out: list[Publication] = []
    desired = config_service.desired_for(session, device_id)
    if desired is not None:
        topic, payload = fleet_protocol.encode(desired)
        out.append((topic, payload, True))
        config_service.record_published(session, device_id, desired.version)
    out.extend(_publish_command(row) for row in _queued(session, device_id, unsent_only=False))
    session.flush()
    return out


def credentials_rotated(result: DeviceCommand | ReportedConfig | None) -> bool:
    """Whether an uplink's result is a credential rotation that just succeeded (broker files are stale)."""
    return (
        isinstance(result, DeviceCommand)
        and result.kind == CommandKind.ROTATE_CREDENTIALS.value
        and result.state == CommandState.SUCCEEDED.value
    )


def apply_uplink(
    session: Session, msg: CommandStatus | ReportedConfig
) -> DeviceCommand | ReportedConfig | None:
    """Apply a command status or reported config; the updated command, the config, or None if ignored."""
    if isinstance(msg, CommandStatus):
        return apply_status(session, msg)
    config_service.record_reported(session, msg)
    return msg


def list_commands(session: Session, device_id: str, limit: int = 50) -> list[DeviceCommand]:
    """A device's commands, newest first."""
    get_device(session, device_id)
    return list(
        session.scalars(
            select(DeviceCommand)
            .where(DeviceCommand.device_id == device_id)
            .order_by(DeviceCommand.created_at.desc(), DeviceCommand.id)
            .limit(limit)
        )
    )


def get_command(session: Session, command_id: str) -> DeviceCommand:
    """One command, or NotFound."""
    row = session.get(DeviceCommand, command_id)
    if row is None:
        raise NotFound(f"命令 {command_id} 不存在", f"command {command_id} not found")
    return row


def command_to_dict(row: DeviceCommand) -> dict[str, Any]:
    """JSON view of a command (parameters included; no secrets are ever stored in them)."""
    return {
        "command_id": row.id,
        "device_id": row.device_id,
        "kind": row.kind,
        "params": row.params,
        "state": row.state,
        "result": row.result,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "expires_at": row.expires_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "attempts": row.attempts,
        "updated_at": row.updated_at.isoformat(),
    }


def publish_unsent(session: Session) -> list[Publication]:
    """Commands never sent yet to devices that are online now, marked sent (the dispatcher's round)."""
    online = set(session.scalars(select(DevicePresence.device_id).where(DevicePresence.state == "online")))
    return [
        _publish_command(row) for row in _queued(session, None, unsent_only=True) if row.device_id in online
    ]
