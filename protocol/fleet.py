"""Fleet messages of protocol v1: desired/reported configuration (a device shadow) and commands.

Like :mod:`protocol.messages`: frozen, keyword-only dataclasses validated when built, and pure
``encode(msg) -> (topic, payload)`` / ``decode(topic, payload) -> msg``. Topics come from
:mod:`protocol.topics`.

Commands follow AWS IoT Jobs' lifecycle: the server creates a command ``queued``; the device answers
``in_progress`` and then ``succeeded`` / ``failed``, or ``rejected`` (unknown kind, bad parameters,
already expired). The server alone moves a command to ``expired``. :data:`COMMAND_TRANSITIONS` is the
one table of allowed moves. Parameters are free-form except where :func:`validate_params` knows the kind
(``bookmark``: JL-8(1), JL-15).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from protocol import topics
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.session import BOOKMARK_TYPES
from protocol.topics import TopicKind

__all__ = [
    "BOOKMARK_TTL",
    "COMMAND_TRANSITIONS",
    "CONFIG_FIELDS",
    "Command",
    "CommandKind",
    "CommandState",
    "CommandStatus",
    "DesiredConfig",
    "FleetMessage",
    "ReportedConfig",
    "decode",
    "encode",
    "retain_of",
    "validate_config",
    "validate_params",
]

MAX_FLEET_PAYLOAD = 16 * 1024
_RESOLUTIONS = ("640x480", "1280x720", "1920x1080")
_WINDOW = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]")

# name -> (type, minimum, maximum); strings are checked separately. Seconds, kbit/s.
CONFIG_FIELDS: dict[str, tuple[type, float, float]] = {
    "segment_seconds": (int, 10, 3600),
    "prerecord_seconds": (int, 0, 120),
    "bitrate_kbps": (int, 100, 20_000),
    "bandwidth_cap_kbps": (int, 0, 1_000_000),  # 0 = no cap
    # JL-16: the spoken explanation recorded on resuming after an interruption.
    "explanation_clip_seconds": (int, 5, 300),
    "fps": (int, 1, 60),  # frames per second; only a source that can change rate applies it
    "resolution": (str, 0, 0),
    "upload_window": (str, 0, 0),  # "HH:MM-HH:MM" local time, "" = any time
}


def validate_config(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings if every key is known and every value in range; RemoteProtocolError otherwise."""
    if not isinstance(settings, dict):
        raise RemoteProtocolError("config settings must be an object")
    for name, value in settings.items():
        spec = CONFIG_FIELDS.get(name)
        if spec is None:
            raise RemoteProtocolError(f"unknown config setting {name!r}")
        kind, low, high = spec
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise RemoteProtocolError(f"{name} must be an integer {low:g}..{high:g}")
        elif name == "resolution" and value not in _RESOLUTIONS:
            raise RemoteProtocolError(f"resolution must be one of {', '.join(_RESOLUTIONS)}")
        elif name == "upload_window" and not (
            value == "" or (isinstance(value, str) and _WINDOW.fullmatch(value))
        ):
            raise RemoteProtocolError("upload_window must be HH:MM-HH:MM or empty")
    return dict(settings)


class CommandKind(Enum):
    """What a command asks a device to do."""

    SYNC_CLOCK = "sync_clock"
    UPLOAD_NOW = "upload_now"
    LOCATE = "locate"
    ROTATE_CREDENTIALS = "rotate_credentials"
    APPLY_UPDATE = "apply_update"
    BOOKMARK = "bookmark"  # JL-8(1), JL-15: tag this moment in the open session (e.g. credential shown)
    SESSION_START = "session_start"  # JL-16: arrival, started from the backend (dispatch centre)
    SESSION_END = "session_end"  # JL-16: the enforcement is over


# JL-15: a bookmark marks *this* moment; one delivered much later would tag the wrong footage.
BOOKMARK_TTL = timedelta(minutes=2)
_BOOKMARK_PARAMS = frozenset({"bookmark_type", "note", "case_id"})
_SESSION_PARAMS = {
    "session_start": frozenset({"officer_id", "case_id", "note"}),
    "session_end": frozenset({"note"}),
}
_MAX_NOTE = 500


def validate_params(kind: CommandKind, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters if valid for ``kind`` (bookmark and session commands are checked)."""
    if not isinstance(params, dict):
        raise RemoteProtocolError("command params must be an object")
    if kind is CommandKind.BOOKMARK:
        unknown = set(params) - _BOOKMARK_PARAMS
        if unknown:
            raise RemoteProtocolError(f"unknown bookmark parameter {sorted(unknown)[0]!r}")
        if params.get("bookmark_type") not in BOOKMARK_TYPES:
            raise RemoteProtocolError(f"bookmark_type must be one of {', '.join(sorted(BOOKMARK_TYPES))}")
        note = params.get("note", "")
        if not isinstance(note, str) or len(note) > _MAX_NOTE:
            raise RemoteProtocolError(f"note must be a string of at most {_MAX_NOTE} characters")
        case_id = params.get("case_id")
        if case_id is not None and (isinstance(case_id, bool) or not isinstance(case_id, int) or case_id < 1):
            raise RemoteProtocolError("case_id must be a positive integer or null")
    if kind in (CommandKind.SESSION_START, CommandKind.SESSION_END):
        unknown = set(params) - _SESSION_PARAMS[kind.value]
        if unknown:
            raise RemoteProtocolError(f"unknown {kind.value} parameter {sorted(unknown)[0]!r}")
        for name, limit in (("officer_id", 64), ("case_id", 64), ("note", _MAX_NOTE)):
            value = params.get(name, "")
            if not isinstance(value, str) or len(value) > limit:
                raise RemoteProtocolError(f"{name} must be a string of at most {limit} characters")
    return params


class CommandState(Enum):
    """Lifecycle of a command (AWS IoT Jobs-like)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """Whether no further change is possible."""
        return self in (
            CommandState.SUCCEEDED,
            CommandState.FAILED,
            CommandState.REJECTED,
            CommandState.EXPIRED,
        )


_S = CommandState
# Allowed moves; a device reports any state but QUEUED and EXPIRED, the server alone expires.
COMMAND_TRANSITIONS: dict[CommandState, frozenset[CommandState]] = {
    _S.QUEUED: frozenset({_S.IN_PROGRESS, _S.SUCCEEDED, _S.FAILED, _S.REJECTED, _S.EXPIRED}),
    _S.IN_PROGRESS: frozenset({_S.SUCCEEDED, _S.FAILED, _S.EXPIRED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
}
_DEVICE_REPORTABLE = frozenset({_S.IN_PROGRESS, _S.SUCCEEDED, _S.FAILED, _S.REJECTED})


@dataclass(frozen=True, kw_only=True)
class DesiredConfig:
    """The configuration the server wants a device to run (retained; a higher version supersedes)."""

    device_id: str
    version: int
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise RemoteProtocolError("config version must be a non-negative integer")
        validate_config(self.settings)


@dataclass(frozen=True, kw_only=True)
class ReportedConfig:
    """The configuration a device applied (``error`` set when it could not apply a version)."""

    device_id: str
    version: int
    settings: dict[str, Any] = field(default_factory=dict)
    at: str = ""
    error: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise RemoteProtocolError("config version must be a non-negative integer")
        validate_config(self.settings)


@dataclass(frozen=True, kw_only=True)
class Command:
    """One command to a device; ``expires_at`` (ISO 8601 UTC) after which it must not run."""

    device_id: str
    command_id: str
    kind: CommandKind
    expires_at: str
    params: dict[str, Any] = field(default_factory=dict)
    issued_at: str = ""

    def __post_init__(self) -> None:
        validate_params(self.kind, self.params)


@dataclass(frozen=True, kw_only=True)
class CommandStatus:
    """A device's report on a command."""

    device_id: str
    command_id: str
    state: CommandState
    detail: dict[str, Any] = field(default_factory=dict)
    at: str = ""

    def __post_init__(self) -> None:
        if self.state not in _DEVICE_REPORTABLE:
            raise RemoteProtocolError(f"a device cannot report {self.state.value}")


FleetMessage = DesiredConfig | ReportedConfig | Command | CommandStatus


def retain_of(msg: FleetMessage) -> bool:
    """Only the desired configuration is retained, so a device gets it on every (re)connect."""
    return isinstance(msg, DesiredConfig)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode(msg: FleetMessage) -> tuple[str, bytes]:
    """Topic and payload bytes of a fleet message (all QoS 1)."""
    if isinstance(msg, DesiredConfig):
        return topics.config_desired(msg.device_id), _json({"version": msg.version, "settings": msg.settings})
    if isinstance(msg, ReportedConfig):
        body = {"version": msg.version, "settings": msg.settings, "at": msg.at, "error": msg.error}
        return topics.config_reported(msg.device_id), _json(body)
    if isinstance(msg, Command):
        body = {
            "kind": msg.kind.value,
            "params": msg.params,
            "expires_at": msg.expires_at,
            "issued_at": msg.issued_at,
        }
        return topics.command(msg.device_id, msg.command_id), _json(body)
    if isinstance(msg, CommandStatus):
        body = {"state": msg.state.value, "detail": msg.detail, "at": msg.at}
        return topics.command_status(msg.device_id, msg.command_id), _json(body)
    raise LocalProtocolError(f"not a fleet message: {msg!r}")


def _load(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_FLEET_PAYLOAD:
        raise RemoteProtocolError(f"{what} payload too large ({len(payload)} bytes)")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RemoteProtocolError(f"{what} payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RemoteProtocolError(f"{what} payload must be a JSON object")
    return data


def _dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{key} must be an object")
    return value


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{key} must be a string")
    return value


def _version(data: dict[str, Any]) -> int:
    value = data.get("version")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RemoteProtocolError("config version must be a non-negative integer")
    return value


def decode(topic: str, payload: bytes) -> FleetMessage:
    """Parse a fleet topic and its payload; RemoteProtocolError for anything else."""
    parsed = topics.parse(topic)
    if parsed.kind is TopicKind.CONFIG_DESIRED:
        data = _load(payload, "config")
        return DesiredConfig(
            device_id=parsed.device_id, version=_version(data), settings=_dict(data, "settings")
        )
    if parsed.kind is TopicKind.CONFIG_REPORTED:
        data = _load(payload, "reported config")
        return ReportedConfig(
            device_id=parsed.device_id,
            version=_version(data),
            settings=_dict(data, "settings"),
            at=_str(data, "at"),
            error=_str(data, "error")[:500],
        )
    if parsed.kind is TopicKind.COMMAND:
        assert parsed.command_id is not None
        data = _load(payload, "command")
        try:
            kind = CommandKind(data.get("kind"))
        except ValueError:
            raise RemoteProtocolError(f"unknown command kind {data.get('kind')!r}") from None
        return Command(
            device_id=parsed.device_id,
            command_id=parsed.command_id,
            kind=kind,
            params=_dict(data, "params"),
            expires_at=_str(data, "expires_at"),
            issued_at=_str(data, "issued_at"),
        )
    if parsed.kind is TopicKind.COMMAND_STATUS:
        assert parsed.command_id is not None
        data = _load(payload, "command status")
        try:
            state = CommandState(data.get("state"))
        except ValueError:
            raise RemoteProtocolError(f"unknown command state {data.get('state')!r}") from None
        return CommandStatus(
            device_id=parsed.device_id,
            command_id=parsed.command_id,
            state=state,
            detail=_dict(data, "detail"),
            at=_str(data, "at"),
        )
    raise RemoteProtocolError(f"not a fleet topic: {topic!r}")
